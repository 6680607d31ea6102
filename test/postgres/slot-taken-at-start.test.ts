import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { migrate } from '../../src/db/migrate.js';
import { clientConfig } from '../../src/db/postgres.js';
import { ErrorCodes, PipelineError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { ReplicationSource } from '../../src/source/replication-source.js';
import { freshDatabase } from '../helpers/postgres.js';

const SLOT = 'engagement_pipeline';

/** Another reader streaming from the slot, as a second pipeline's walsender would. */
async function holdSlot(url: string): Promise<LogicalReplicationService> {
  const service = new LogicalReplicationService(clientConfig(url, 'other-pipeline'), {
    acknowledge: { auto: false, timeoutSeconds: 0 },
  });
  service.on('error', () => undefined);
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: ['engagement_pipeline'] });
  // Streaming, or the reason it could not (instead of waiting for the test's timeout).
  const ended = service.subscribe(plugin, SLOT, '0/00000000').then(() => {
    throw new Error('the holder stream ended before it started');
  });
  ended.catch(() => undefined); // it ends when the test stops it, after streaming
  await Promise.race([new Promise<void>((resolve) => service.on('start', () => resolve())), ended]);
  return service;
}

describe('a replication slot taken at start', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
  });

  it('between the check and the connect (two pipelines started at once): one line naming the other reader, not a raw Postgres error', async () => {
    const db = await freshDatabase('slot_taken');
    cleanups.push(() => db.drop());
    await migrate(db.url, { slotName: SLOT, publicationName: 'engagement_pipeline' });
    const source = new ReplicationSource({
      databaseUrl: db.url,
      slotName: SLOT,
      publicationName: 'engagement_pipeline',
      logger: silentLogger(),
      metrics: createMetrics(),
      isDrained: () => false,
      // Read after the slot was found free and before the connect: the other reader takes it here.
      systemIdentifier: async () => {
        const other = await holdSlot(db.url);
        cleanups.push(() => other.stop());
        return 'test-cluster';
      },
    });
    await assert.rejects(
      source.start(() => undefined),
      (err: unknown) => {
        assert.ok(err instanceof PipelineError, `a PipelineError, not: ${String(err)}`);
        assert.equal(err.code, ErrorCodes.SLOT_IN_USE);
        assert.match(
          err.message,
          /is in use by another process \(PID \d+, application_name 'other-pipeline'\)/,
        );
        return true;
      },
    );
    await source.stop();
  });
});
