import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { CONTENT_IDS, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

/**
 * While backpressure pauses the replication socket, the library neither reads nor answers
 * keepalives; Postgres drops a walsender that hears nothing for wal_sender_timeout. The
 * source sends standby status updates on its own timer. Here wal_sender_timeout is 2 s (set
 * per connection through DATABASE_URL's `options`) and the external system answers in 3 s,
 * so the socket stays paused for far longer than the timeout, many times.
 */
describe('a replication stream paused by a slow sink', () => {
  let h: Harness;
  let mock: RunningMockExternal;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    mock = await startMockExternal({ port: 0, latencyMs: 3000 });
  });
  after(async () => {
    await mock.close();
    await h.cleanup();
  });

  it('keeps its connection past wal_sender_timeout and then delivers everything once', async () => {
    const url = new URL(h.databaseUrl);
    url.searchParams.set('options', '-c wal_sender_timeout=2s');
    const runtime = await h.start({
      databaseUrl: url.toString(),
      externalUrl: mock.url,
      externalBatchSize: 50,
      batchMaxRows: 50,
      maxInFlightBatches: 1,
    });
    const activePid = async () =>
      (
        await h.sql<{ pid: number | null }>(
          `SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = 'engagement_pipeline'`,
        )
      )[0].pid;
    try {
      const pid = await waitFor('slot active', activePid, 20_000);
      // Transactions larger than a batch: the source must pause mid-transaction until the
      // slow sink frees the one write slot (3 s a batch, more than the 2 s timeout).
      for (let i = 0; i < 2; i++) {
        await h.sql(
          `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device)
           SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), 'play', now(), 1000, 'web' FROM generate_series(1, 100) g`,
          [CONTENT_IDS],
        );
      }
      const pids = new Set<number | null>();
      await waitFor(
        'all 200 at the external system',
        async () => {
          pids.add(await activePid());
          const stats = (await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number };
          return stats.uniqueEventIds >= 200;
        },
        120_000,
        250,
      );
      assert.deepEqual([...pids], [pid], 'one walsender the whole time: the connection was never dropped');
    } finally {
      await runtime.stop();
    }
    const stats = (await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number };
    assert.equal(stats.uniqueEventIds, 200);
  });
});
