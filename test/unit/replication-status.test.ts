import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { ReplicationSource } from '../../src/source/replication-source.js';

/** The replication library's service, as far as a standby status update goes. */
class FakeService {
  readonly sent: string[] = [];
  async acknowledge(lsn: string): Promise<boolean> {
    this.sent.push(lsn);
    return true;
  }
}

const turn = () => new Promise((r) => setImmediate(r));

describe('ReplicationSource standby status updates', () => {
  it('positions confirmed together (one DuckDB commit confirming the batches it held) go out in one update', async () => {
    const source = new ReplicationSource({
      databaseUrl: 'postgres://unused',
      slotName: 's',
      publicationName: 'p',
      logger: silentLogger(),
      metrics: createMetrics(),
    });
    const service = new FakeService();
    (source as unknown as { service: FakeService }).service = service;

    const ends = [0x1000, 0x1800, 0x2000, 0x2800, 0x3000, 0x3800, 0x4000, 0x4800];
    for (const end of ends) assert.equal(source.acknowledge(`0/${end.toString(16)}`), true);
    assert.equal(source.acknowledge('0/2000'), false, 'never backwards');
    assert.deepEqual(service.sent, [], 'not yet: the rest of this turn may confirm more');
    await turn();
    // The library reports lsn + 1: handed the exact position - 1 (see sendStatus).
    assert.deepEqual(service.sent, ['0/47FF'], 'one update, with the last position');
    assert.equal(source.confirmed, '0/4800');

    source.acknowledge('0/5000');
    await turn();
    assert.deepEqual(service.sent, ['0/47FF', '0/4FFF'], 'a later confirmation: its own update');
  });
});
