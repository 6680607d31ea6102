import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { lsnToBigInt } from '../../src/domain/position.js';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { createHarness, insertEvents, seedContent, type Harness } from '../helpers/pipeline.js';
import { startRedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';

async function slotConfirmed(h: Harness): Promise<string> {
  const rows = await h.sql<{ lsn: string }>(
    `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'engagement_pipeline'`,
  );
  return rows[0].lsn;
}

async function metricValue(
  runtime: { metrics: { registry: { getSingleMetricAsString(n: string): Promise<string> } } },
  name: string,
  sink: string,
): Promise<number> {
  const text = await runtime.metrics.registry.getSingleMetricAsString(name);
  const line = text.split('\n').find((l) => l.startsWith(`${name}{sink="${sink}"}`));
  return line ? Number(line.split(' ').pop()) : NaN;
}

describe('sink outages: Redis down 10 s, external answering 500 for 10 s', () => {
  let h: Harness;
  let mock: RunningMockExternal;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    mock = await startMockExternal({ port: 0 });
  });
  after(async () => {
    await mock.close();
    await h.cleanup();
  });

  it('holds the LSN during the outage, recovers by itself, loses nothing, and shows it in metrics', async () => {
    const redisServer = await startRedisServer();
    const runtime = await h.start({
      redisUrl: redisServer.url,
      externalUrl: mock.url,
      externalMaxAttempts: 3,
      externalPolicy: 'block',
    });
    const redis = () => new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
    try {
      await insertEvents(h, 200);
      await waitFor('first events delivered', async () => {
        const stats = (await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number };
        return stats.uniqueEventIds === 200;
      });
      await waitFor(
        'ack after first events',
        async () => lsnToBigInt(await slotConfirmed(h)) >= lsnToBigInt(runtime.pipeline.source.confirmed),
      );

      // Outage: Redis gone, the external system failing with 500.
      await redisServer.stop();
      await fetch(`${mock.url}_control`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ mode: 'fail500' }),
      });
      await insertEvents(h, 500, 1000);
      // Where the 500 undelivered events end: nothing at or past their commit may be confirmed.
      // (Heartbeats before them may still be confirmed: nothing is pending before them.)
      const afterOutageEvents = (await h.sql<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn'))[0]
        .lsn;
      await waitFor(
        'redis marked down',
        async () => (await metricValue(runtime, 'engagement_sink_up', 'redis')) === 0,
      );
      await new Promise((r) => setTimeout(r, 10_000));
      assert.ok(
        lsnToBigInt(await slotConfirmed(h)) < lsnToBigInt(afterOutageEvents),
        'the LSN is held before the undelivered events while a sink is down',
      );
      assert.ok((await metricValue(runtime, 'engagement_sink_errors_total', 'redis')) > 0);

      // Recovery: same port, empty Redis (the watermark is gone too, but nothing was applied meanwhile).
      const restarted = await startRedisServer(redisServer.port);
      await fetch(`${mock.url}_control`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ mode: 'ok' }),
      });
      const client = redis();
      try {
        await waitFor(
          'backlog in Redis after recovery',
          async () => {
            const counts = await Promise.all(
              ['1', '2', '3'].map((d) =>
                client.get(`${h.redis.prefix}content:count:00000000-0000-4000-8000-00000000000${d}`),
              ),
            );
            return counts.reduce((s, c) => s + Number(c ?? 0), 0) === 500;
          },
          30_000,
        );
      } finally {
        client.disconnect();
      }
      await waitFor(
        'external received everything',
        async () => {
          const stats = (await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number };
          return stats.uniqueEventIds === 700;
        },
        30_000,
      );
      await waitFor(
        'LSN advanced past the outage events after recovery',
        async () => lsnToBigInt(await slotConfirmed(h)) >= lsnToBigInt(afterOutageEvents),
        60_000,
      );
      assert.equal(await metricValue(runtime, 'engagement_sink_up', 'redis'), 1);
      // Under the block policy nothing is dead-lettered: the external system got every event itself.
      const dead = await h.sql<{ n: string }>('SELECT count(*) AS n FROM engagement_pipeline.dead_letters');
      assert.equal(dead[0].n, '0');
      await restarted.stop();
    } finally {
      await runtime.stop();
    }
  });
});
