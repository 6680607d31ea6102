import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { spawnCli } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { CONTENT_IDS, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor, waitForCount } from '../helpers/wait.js';

/** Inserts small transactions until stopped; returns how many rows committed. */
function startTraffic(h: Harness): { stop(): Promise<number> } {
  let running = true;
  let inserted = 0;
  const loop = (async () => {
    while (running) {
      const n = 20 + Math.floor(Math.random() * 60);
      await h.sql(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device)
         SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), 'play', now(), g * 100, 'ios' FROM generate_series(1, $2::int) g`,
        [CONTENT_IDS, n],
      );
      inserted += n;
      await new Promise((r) => setTimeout(r, 15));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return inserted;
    },
  };
}

async function redisTotal(h: Harness): Promise<number> {
  const counts = await Promise.all(
    CONTENT_IDS.map((id) => h.redis.client.get(`${h.redis.prefix}content:count:${id}`)),
  );
  return counts.reduce((sum, c) => sum + Number(c ?? 0), 0);
}

describe('crash safety: kill -9 at random moments while traffic flows', () => {
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

  it('loses nothing and counts nothing twice across 10 kill -9 cycles', async () => {
    const env = {
      DATABASE_URL: h.databaseUrl,
      REDIS_URL: h.redis.url,
      REDIS_PREFIX: h.redis.prefix,
      ANALYTICS_URL: `duckdb:${h.duckdbFile}`,
      EXTERNAL_URL: mock.url,
      EXTERNAL_BATCH_SIZE: '1',
      PORT: '0',
    };
    // Every wait below shares one deadline inside the runner's per-test timeout (600 s), so a
    // slow machine fails here, with the counts reached and the pipeline's output, not cancelled.
    const deadline = Date.now() + 540_000;
    const left = () => Math.max(1_000, deadline - Date.now());
    const traffic = startTraffic(h);
    const cycles = 10;
    let n = 0;
    try {
      for (let i = 0; i < cycles; i++) {
        const p = spawnCli(['run'], env);
        try {
          // A cold start of the CLI through tsx takes several seconds when the CPUs are saturated.
          await waitFor(
            'pipeline streaming',
            () => /replication streaming/.test(p.output()),
            Math.min(120_000, left()),
          );
          await new Promise((r) => setTimeout(r, 200 + Math.random() * 1200));
        } finally {
          p.child.kill('SIGKILL');
          await p.exited;
        }
      }
    } finally {
      n = await traffic.stop();
    }
    const final = spawnCli(['run'], env);
    try {
      // The catch-up sends one event per HTTP request (EXTERNAL_BATCH_SIZE=1), so its length
      // scales with how much traffic the crash loop let in: wait while it makes progress, and
      // fail with how far it got (a loss shows up as a count that stops short of N).
      await waitForCount('every row in Redis', () => redisTotal(h), n, { capMs: left() });
      await waitForCount(
        'every row at the external system',
        async () =>
          ((await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number }).uniqueEventIds,
        n,
        { capMs: left() },
      );
    } catch (err) {
      process.stdout.write(`# final pipeline output (tail):\n${final.output().slice(-4000)}\n`);
      // Gone before cleanup drops the database and its slot.
      final.child.kill('SIGKILL');
      await final.exited;
      throw err;
    } finally {
      final.child.kill('SIGINT');
    }
    const exit = await final.exited;
    assert.equal(exit.code, 0, final.output());

    const total = Number((await h.sql<{ n: string }>('SELECT count(*) AS n FROM engagement_events'))[0].n);
    assert.equal(total, n);
    assert.equal(await redisTotal(h), n, 'Redis counts: no loss, no double count');
    const top = await h.redis.client.zrange(`${h.redis.prefix}top:content:10m`, '0', '-1', 'WITHSCORES');
    let topSum = 0;
    for (let i = 1; i < top.length; i += 2) topSum += Number(top[i]);
    assert.equal(topSum, n, 'top:content:10m sums to N');
    const duck = await duckdbQuery(
      h.duckdbFile,
      'SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM engagement.events_enriched',
    );
    assert.deepEqual(duck[0], { n: String(n), d: String(n) }, 'DuckDB: one row per event');
    const stats = (await (await fetch(`${mock.url}_stats`)).json()) as {
      uniqueEventIds: number;
      duplicates: number;
      events: number;
    };
    assert.equal(stats.uniqueEventIds, n, 'external: every event, once per Idempotency-Key');
    // Redeliveries after a crash reuse the Idempotency-Key: the receiver's dedupe absorbs them.
    process.stdout.write(
      `# crash test: ${cycles} kill -9 cycles, ${n} events; DuckDB ${duck[0].n}, Redis ${n}, external unique ${stats.uniqueEventIds} (redelivered with the same key: ${stats.duplicates})\n`,
    );
  });
});
