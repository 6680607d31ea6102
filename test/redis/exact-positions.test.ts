import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { compareLsn } from '../../src/domain/position.js';
import { clientConfig } from '../../src/db/postgres.js';
import type { Change } from '../../src/source/changes.js';
import { spawnCli, type CliProcess } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import {
  CONTENT_IDS,
  cliEnv,
  createHarness,
  harnessSource,
  insertEvents,
  seedContent,
  type Harness,
} from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';
import { confirmedFlush, exactBackToBack } from '../helpers/wal-shapes.js';

/**
 * The position confirmed to Postgres must be exact. Postgres skips, on the next start,
 * every transaction whose commit record starts before the confirmed flush position; one
 * byte too far and a transaction whose commit starts right where the confirmed one ended
 * (back-to-back commits, or our heartbeat message right before a big commit) is never
 * streamed again. Ordinary traffic rarely makes that WAL shape, so these tests make it.
 */

async function redisTotal(h: Harness): Promise<number> {
  const counts = await Promise.all(
    CONTENT_IDS.map((id) => h.redis.client.get(`${h.redis.prefix}content:count:${id}`)),
  );
  return counts.reduce((sum, c) => sum + Number(c ?? 0), 0);
}

async function eventCount(h: Harness): Promise<number> {
  return Number((await h.sql<{ n: string }>('SELECT count(*) AS n FROM engagement_events'))[0].n);
}

describe('exact positions: back-to-back commits survive a restart', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
  });
  after(async () => h.cleanup());

  for (const [first, stop] of [
    ['commit', 'SIGKILL'],
    ['heartbeat', 'SIGKILL'],
    ['commit', 'SIGINT'],
  ] as const) {
    it(`a big transaction committed right after a ${first === 'commit' ? 'one-row commit' : 'heartbeat message'} is delivered after ${stop}`, async () => {
      const env = cliEnv(h, { PORT: '0', LOG_LEVEL: 'info', HEARTBEAT_INTERVAL_MS: '600000' });
      let p: CliProcess = spawnCli(['run'], env);
      try {
        await waitFor('pipeline streaming', () => /replication streaming/.test(p.output()), 60_000);
        await insertEvents(h, 10);
        const base = await eventCount(h);
        await waitFor('warm-up delivered', async () => (await redisTotal(h)) >= base, 30_000);
        const { aEnd, bCommitEnd } = await exactBackToBack(h.databaseUrl, 150_000, first);
        // Stop as soon as A is confirmed, while B (150k rows) is still being delivered.
        await waitFor(
          'A confirmed',
          async () => compareLsn(await confirmedFlush(h.databaseUrl), aEnd) >= 0,
          60_000,
          10,
        );
        p.child.kill(stop);
        await p.exited;
        const atStop = await confirmedFlush(h.databaseUrl);
        assert.ok(
          compareLsn(atStop, bCommitEnd) < 0,
          `B was not yet confirmed when the pipeline stopped (confirmed ${atStop}, B ends ${bCommitEnd})`,
        );
        const n = await eventCount(h);
        p = spawnCli(['run'], env);
        await waitFor('every event in Redis', async () => (await redisTotal(h)) >= n, 120_000, 200);
        p.child.kill('SIGINT');
        assert.equal((await p.exited).code, 0, p.output());
        assert.equal(await redisTotal(h), n, 'Redis: every event once');
        assert.match(
          String(await h.redis.client.get(`${h.redis.prefix}pipeline:watermark:engagement_pipeline`)),
          /^[0-9A-F]{16}:[0-9a-f]{8}\|postgres:\d+$/,
          "Redis: the slot's watermark names the Postgres cluster it belongs to",
        );
        const duck = await duckdbQuery(
          h.duckdbFile,
          'SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM engagement.events_enriched',
        );
        assert.deepEqual(duck[0], { n: String(n), d: String(n) }, 'DuckDB: every event once');
        process.stdout.write(
          `# back-to-back (${first} then a 150k-row commit, ${stop}): ${n} events, DuckDB ${duck[0].n}, Redis ${n}\n`,
        );
      } finally {
        p.child.kill('SIGKILL');
      }
    });
  }
});

describe('exact positions: an error in the change handler skips nothing', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
  });
  after(async () => h.cleanup());

  it('restarts the stream from the confirmed position and hands the failed event over again', async () => {
    const seen: number[] = [];
    let thrown = 0;
    const source = harnessSource(h);
    const handler = async (change: Change): Promise<void> => {
      if (change.kind === 'event') {
        // Fails on the 5th event of the stream, once (e.g. a lookup that timed out).
        if (change.row.id === 5 && thrown === 0) {
          thrown += 1;
          throw new Error('lookup failed: lock timeout');
        }
        seen.push(change.row.id);
      }
      // Confirm nothing: the replay must start before the failed event.
    };
    await source.start(handler);
    try {
      await insertEvents(h, 10);
      await waitFor('all 10 events handed over', () => new Set(seen).size === 10, 30_000);
      assert.equal(thrown, 1);
      assert.ok(seen.includes(5), 'the event whose handling failed came again');
    } finally {
      await source.stop();
    }
  });
});

describe('TRUNCATE of the events table', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
  });
  after(async () => h.cleanup());

  it('with RESTART IDENTITY: stops with one clear error and confirms nothing past it', async () => {
    const env = cliEnv(h, { PORT: '0', LOG_LEVEL: 'info' });
    const p = spawnCli(['run'], env);
    try {
      await waitFor('pipeline streaming', () => /replication streaming/.test(p.output()), 60_000);
      await insertEvents(h, 10);
      await waitFor('10 delivered', async () => (await redisTotal(h)) >= 10, 30_000);
      // The bound is read inside the truncating transaction, just before its commit record: a
      // position taken before the TRUNCATE let WAL written in between (the pipeline's own slot
      // heartbeat, a keepalive's sent position) be confirmed legitimately and fail the test
      // (seen once in a clean-clone CI run). Postgres skips on restart only a transaction whose
      // commit record starts before the confirmed position.
      const client = new pg.Client(clientConfig(h.databaseUrl));
      await client.connect();
      let truncateCommit: string;
      try {
        await client.query('BEGIN');
        await client.query('TRUNCATE engagement_events RESTART IDENTITY');
        truncateCommit = (
          await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')
        ).rows[0].lsn;
        await client.query('COMMIT');
      } finally {
        await client.end();
      }
      await insertEvents(h, 5); // ids 1..5 again
      const exit = await Promise.race([
        p.exited,
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 60_000)),
      ]);
      assert.ok(exit, `the pipeline stopped by itself:\n${p.output()}`);
      assert.notEqual(exit.code, 0);
      assert.match(p.output(), /EP_ERR_TRUNCATE_RESTART_IDENTITY/);
      const confirmed = await confirmedFlush(h.databaseUrl);
      assert.ok(
        compareLsn(confirmed, truncateCommit) <= 0,
        `nothing past the truncate confirmed: confirmed ${confirmed}, the truncate commits at ${truncateCommit}`,
      );
      assert.equal(await redisTotal(h), 10, 'the reused ids were not dropped as duplicates');
    } finally {
      p.child.kill('SIGKILL');
    }
  });
});

describe('a database with unusual session settings', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    const db = new URL(h.databaseUrl).pathname.slice(1);
    await h.sql(`ALTER DATABASE ${db} SET datestyle = 'SQL, DMY'`);
    await h.sql(`ALTER DATABASE ${db} SET timezone = 'Asia/Kolkata'`);
    await h.sql(`ALTER DATABASE ${db} SET intervalstyle = 'sql_standard'`);
    await h.sql(`ALTER DATABASE ${db} SET extra_float_digits = -3`);
  });
  after(async () => h.cleanup());

  it('DateStyle SQL, DMY and a non-UTC TimeZone deliver exact ISO timestamps', async () => {
    await h.sql(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device)
       VALUES ($1, gen_random_uuid(), 'play', '2026-01-12 06:11:00.740001+00', 7000, 'web'),
              ($1, gen_random_uuid(), 'play', '2026-12-01 23:59:59.999999+00', 1, 'web')`,
      [CONTENT_IDS[0]],
    );
    const runtime = await h.start();
    try {
      await waitFor('2 delivered', async () => (await redisTotal(h)) >= 2, 30_000);
    } finally {
      await runtime.stop();
    }
    const rows = await duckdbQuery(
      h.duckdbFile,
      `SELECT strftime(event_ts AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S.%f') AS ts, engagement_seconds
         FROM engagement.events_enriched ORDER BY event_id`,
    );
    assert.deepEqual(
      rows.map((r) => r.ts),
      ['2026-01-12 06:11:00.740001', '2026-12-01 23:59:59.999999'],
    );
    const dead = await h.sql<{ n: string }>('SELECT count(*) AS n FROM engagement_pipeline.dead_letters');
    assert.equal(dead[0].n, '0');
  });
});
