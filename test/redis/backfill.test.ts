import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { minuteBucketOfIso } from '../../src/domain/windows.js';
import { isoToMicros, microsToIso } from '../../src/domain/timestamps.js';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { BACKFILL_REDIS_HORIZON_MINUTES } from '../../src/sinks/redis/keys.js';
import { runCli, spawnCli } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { cliEnv, CONTENT_IDS, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

/** Events spread over the content, some inside the Redis bucket retention, some days old. */
async function insertHistory(h: Harness, n: number, offset: number, recentEvery = 2): Promise<void> {
  await h.sql(
    `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
     SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), (ARRAY['play','pause','finish','click'])[1 + (g % 4)],
            CASE WHEN g % $4 = 0 THEN now() - make_interval(secs => (g % 300))
                 ELSE now() - interval '2 days' - make_interval(secs => g) END,
            CASE WHEN g % 7 = 3 THEN NULL WHEN g % 11 = 5 THEN -5 ELSE (g * 37) % 600000 END,
            (ARRAY['ios','android','web-chrome', NULL])[1 + (g % 4)], jsonb_build_object('n', g)
     FROM generate_series($2::int, $3::int) AS g`,
    [CONTENT_IDS, offset + 1, offset + n, recentEvery],
  );
}

/** Per (minute bucket, content) counts of Redis's minute buckets inside the backfill horizon. */
async function redisBuckets(h: Harness, minutes: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of minutes) {
    const flat = await h.redis.client.zrange(
      `${h.redis.prefix}top:content:bucket:${m}`,
      '0',
      '-1',
      'WITHSCORES',
    );
    for (let i = 0; i < flat.length; i += 2) out.set(`${m}/${flat[i]}`, Number(flat[i + 1]));
  }
  return out;
}

async function sqlBuckets(h: Harness, minutes: string[]): Promise<Map<string, number>> {
  const rows = await h.sql<{ m: string; c: string; n: string }>(
    `SELECT to_char(event_ts AT TIME ZONE 'UTC', 'YYYYMMDDHH24MI') AS m, content_id::text AS c, count(*)::text AS n
       FROM engagement_events WHERE content_id IS NOT NULL
        AND to_char(event_ts AT TIME ZONE 'UTC', 'YYYYMMDDHH24MI') = ANY($1) GROUP BY 1, 2`,
    [minutes],
  );
  return new Map(rows.map((r) => [`${r.m}/${r.c}`, Number(r.n)]));
}

/** content:count and content:last's event_id per content, from Redis and from SQL (the truth). */
async function redisTotals(h: Harness): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const id of CONTENT_IDS) {
    const count = await h.redis.client.get(`${h.redis.prefix}content:count:${id}`);
    const last = await h.redis.client.get(`${h.redis.prefix}content:last:${id}`);
    if (count !== null || last !== null)
      out.set(id, `${count} events, last ${last === null ? null : JSON.parse(last).event_id}`);
  }
  return out;
}

async function sqlTotals(h: Harness): Promise<Map<string, string>> {
  const rows = await h.sql<{ c: string; n: string; last: string }>(
    `SELECT content_id::text AS c, count(*)::text AS n,
            (array_agg(id ORDER BY event_ts DESC, id DESC))[1]::text AS last
       FROM engagement_events WHERE content_id IS NOT NULL GROUP BY 1`,
  );
  return new Map(rows.map((r) => [r.c, `${r.n} events, last ${r.last}`]));
}

/**
 * DuckDB's rows (n) and distinct event ids (d) from the events now in the table: after a
 * TRUNCATE, ids come from the sequence, so the test's rows are those from the smallest id up.
 */
async function duckDbRowsOfTable(h: Harness): Promise<Record<string, unknown>> {
  const [{ min }] = await h.sql<{ min: string }>('SELECT min(id)::text AS min FROM engagement_events');
  const duck = await duckdbQuery(
    h.duckdbFile,
    `SELECT count(*)::VARCHAR AS n, count(DISTINCT event_id)::VARCHAR AS d FROM engagement.events_enriched WHERE event_id >= ${min}`,
  );
  return duck[0];
}

/** kill -9 of a running backfill (of the range starting at `fromTs`) once 3,000 rows are stored as done. */
async function killAfterProgress(
  h: Harness,
  child: ReturnType<typeof spawnCli>,
  fromTs: string,
): Promise<void> {
  await waitFor(
    'some progress',
    async () => {
      const rows = await h.sql<{ n: string }>(
        `SELECT rows_done::text AS n FROM engagement_pipeline.backfill_progress
          WHERE from_ts = $1 AND status = 'running'`,
        [fromTs],
      );
      return rows.length > 0 && Number(rows[0].n) >= 3000;
    },
    30_000,
  );
  child.child.kill('SIGKILL');
  await child.exited;
}

function horizonMinutes(): string[] {
  const now = Date.now();
  return Array.from({ length: BACKFILL_REDIS_HORIZON_MINUTES + 1 }, (_, i) =>
    minuteBucketOfIso(new Date(now - i * 60_000).toISOString()),
  );
}

describe('engagement backfill', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
  });
  after(async () => h.cleanup());

  it('writes exactly what SQL computes into DuckDB and Redis, and a re-run changes nothing', async () => {
    await insertHistory(h, 2000, 0);
    const args = ['backfill', '--from', '2000-01-01T00:00:00Z', '--to', 'now', '--chunk-size', '300'];
    const first = await runCli(args, cliEnv(h));
    assert.equal(first.code, 0, first.output);
    assert.match(first.output, /done: 2000 rows/);
    const check = async () => {
      const duck = await duckdbQuery(
        h.duckdbFile,
        `SELECT event_id::VARCHAR AS id, engagement_seconds::VARCHAR AS secs, engagement_pct::VARCHAR AS pct, content_type
           FROM engagement.events_enriched ORDER BY event_id`,
      );
      const pg = await h.sql<{
        id: string;
        secs: string | null;
        pct: string | null;
        content_type: string | null;
      }>(
        `SELECT e.id::text, CASE WHEN e.duration_ms < 0 THEN NULL ELSE round(e.duration_ms / 1000.0, 3)::text END AS secs,
                CASE WHEN c.length_seconds IS NULL OR c.length_seconds = 0 OR e.duration_ms < 0 THEN NULL
                     ELSE round((e.duration_ms / 1000.0) / c.length_seconds, 2)::text END AS pct, c.content_type
           FROM engagement_events e LEFT JOIN content c ON c.id = e.content_id ORDER BY e.id`,
      );
      assert.deepEqual(duck, pg);
      const minutes = horizonMinutes();
      assert.deepEqual(await redisBuckets(h, minutes), await sqlBuckets(h, minutes));
      // Old minutes are never resurrected; totals and content:last cover all of history.
      const old = await h.redis.client.keys(`${h.redis.prefix}top:content:bucket:*`);
      assert.ok(
        old.every((k) => minutes.includes(k.split(':').pop()!)),
        'only live buckets touched',
      );
      assert.deepEqual(await redisTotals(h), await sqlTotals(h));
    };
    await check();
    const second = await runCli(args, cliEnv(h));
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /redis: 0 events newly counted/);
    await check();
  });

  it('runs concurrently with the live stream over the same rows without double counting anywhere', async () => {
    const mock: RunningMockExternal = await startMockExternal();
    const count = async () =>
      Number((await h.sql<{ n: string }>('SELECT count(*)::text AS n FROM engagement_events'))[0].n);
    let runtime: Awaited<ReturnType<Harness['start']>> | null = null;
    try {
      // In the slot (inserted after migrate) and in the table: both paths see every row,
      // including the first test's rows, which the backfill already counted in Redis.
      await insertHistory(h, 3000, 10_000, 1);
      runtime = await h.start({ externalUrl: mock.url });
      const backfill = spawnCli(
        [
          'backfill',
          '--from',
          '2000-01-01T00:00:00Z',
          '--to',
          'now',
          '--sinks',
          'redis,external',
          '--chunk-size',
          '250',
        ],
        cliEnv(h, { EXTERNAL_URL: mock.url }),
      );
      await insertHistory(h, 1000, 20_000, 1); // more while both run
      const exit = await backfill.exited;
      assert.equal(exit.code, 0, backfill.output());
      const total = await count();
      const countSum = async () =>
        (
          await Promise.all(
            CONTENT_IDS.map((id) => h.redis.client.get(`${h.redis.prefix}content:count:${id}`)),
          )
        ).reduce((s, c) => s + Number(c ?? 0), 0);
      await waitFor('stream to deliver everything', async () => (await countSum()) === total, 30_000);
      await runtime.stop();
      runtime = null;
      const minutes = horizonMinutes();
      assert.deepEqual(await redisBuckets(h, minutes), await sqlBuckets(h, minutes));
      assert.equal(await countSum(), total);
      assert.deepEqual(await redisTotals(h), await sqlTotals(h));
      const stats = (await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number };
      assert.equal(stats.uniqueEventIds, total);
      const duck = await duckdbQuery(
        h.duckdbFile,
        `SELECT count(*)::VARCHAR AS n, count(DISTINCT event_id)::VARCHAR AS d FROM engagement.events_enriched`,
      );
      assert.deepEqual(duck[0], { n: String(total), d: String(total) });
    } finally {
      await runtime?.stop();
      await mock.close();
    }
  });

  it('resumes from stored progress after kill -9', async () => {
    await h.sql('TRUNCATE engagement_events');
    await insertHistory(h, 20_000, 100_000, 1_000_000);
    const args = ['backfill', '--from', '2020-01-01T00:00:00Z', '--to', '2100-01-01T00:00:00Z'];
    const flags = ['--sinks', 'analytics', '--chunk-size', '500', '--rate', '4000'];
    await killAfterProgress(h, spawnCli([...args, ...flags], cliEnv(h)), '2020-01-01T00:00:00Z');
    const status = await runCli(['status', '--json'], cliEnv(h));
    const report = JSON.parse(status.output.slice(status.output.indexOf('{')));
    const pending = report.backfills.find((b: { fromTs: string }) => b.fromTs.startsWith('2020-01-01'));
    assert.ok(pending && !pending.live && pending.rowsDone < 20_000, status.output);
    // The stored position is about the destination it was written to: the same command aimed
    // at another DuckDB file starts from the beginning (it resumed, and the rows before the
    // position never reached the new file).
    const dryRun = [...args, ...flags.slice(0, 4), '--dry-run'];
    const elsewhere = await runCli(dryRun, { ...cliEnv(h), ANALYTICS_URL: `duckdb:${h.duckdbFile}.other` });
    assert.equal(elsewhere.code, 0, elsewhere.output);
    assert.doesNotMatch(elsewhere.output, /would resume/);
    const same = await runCli(dryRun, cliEnv(h));
    assert.match(same.output, /would resume backfill #\d+/);
    const resumed = await runCli([...args, ...flags.slice(0, 4)], cliEnv(h));
    assert.equal(resumed.code, 0, resumed.output);
    assert.match(resumed.output, /resumed after \d+/);
    assert.deepEqual(await duckDbRowsOfTable(h), { n: '20000', d: '20000' });
  });

  it('SIGTERM stops a backfill with its exit code; it stays resumable, listed as interrupted, not failed', async () => {
    const args = ['backfill', '--from', '2020-01-01T00:00:01Z', '--to', '2100-01-01T00:00:00Z'];
    const child = spawnCli(
      [...args, '--sinks', 'analytics', '--chunk-size', '500', '--rate', '2000'],
      cliEnv(h),
    );
    await waitFor(
      'some progress',
      async () =>
        (
          await h.sql<{ n: string }>(
            `SELECT rows_done::text AS n FROM engagement_pipeline.backfill_progress WHERE from_ts = $1`,
            ['2020-01-01T00:00:01Z'],
          )
        ).some((r) => Number(r.n) >= 1000),
      30_000,
    );
    child.child.kill('SIGTERM');
    const exit = await child.exited;
    assert.equal(exit.code, 143, child.output());
    assert.match(child.output(), /backfill stopped by SIGTERM; run the same command again to resume/);
    const status = await runCli(['status', '--json'], cliEnv(h));
    const stopped = JSON.parse(status.output.slice(status.output.indexOf('{'))).backfills.find(
      (b: { fromTs: string }) => b.fromTs.startsWith('2020-01-01T00:00:01'),
    );
    assert.ok(stopped && stopped.status !== 'failed' && !stopped.live, status.output);
    const text = await runCli(['status'], cliEnv(h));
    assert.match(text.output, /interrupted \(its process stopped\)/);
    const resumed = await runCli([...args, '--sinks', 'analytics'], cliEnv(h));
    assert.equal(resumed.code, 0, resumed.output);
    assert.match(resumed.output, /resumed after \d+/);
  });

  it('a backfill whose receiver refuses some events says how many were dead-lettered', async () => {
    const mock = await startMockExternal();
    try {
      await fetch(`${mock.url}_control`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ mode: 'reject400', count: 5 }),
      });
      const run = await runCli(
        ['backfill', '--from', '2020-01-01T00:00:02Z', '--to', '2100-01-01T00:00:00Z', '--sinks', 'external'],
        { ...cliEnv(h), EXTERNAL_URL: mock.url, EXTERNAL_CONCURRENCY: '1' },
      );
      assert.equal(run.code, 0, run.output);
      assert.match(run.output, /; 5 events dead-lettered by a sink \(engagement dlq list\)/);
    } finally {
      await mock.close();
    }
  });

  it('--to now resumes a killed --to now run, then covers what came after its end', async () => {
    await h.sql('TRUNCATE engagement_events');
    await insertHistory(h, 20_000, 300_000, 1_000_000);
    const args = ['backfill', '--from', '2019-01-01T00:00:00Z', '--to', 'now', '--sinks', 'analytics'];
    const child = spawnCli([...args, '--chunk-size', '500', '--rate', '4000'], cliEnv(h));
    await killAfterProgress(h, child, '2019-01-01T00:00:00Z');
    // Inserted after the killed run's "now": only the second range can take them.
    await h.sql(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms)
       SELECT $1::uuid, gen_random_uuid(), 'play', now() + interval '1 second', 1000 FROM generate_series(1, 50)`,
      [CONTENT_IDS[0]],
    );
    await new Promise((r) => setTimeout(r, 1_100));
    const resumed = await runCli(args, cliEnv(h));
    assert.equal(resumed.code, 0, resumed.output);
    assert.match(resumed.output, /resumed after \d+/);
    assert.deepEqual(await duckDbRowsOfTable(h), { n: '20050', d: '20050' });
    const open = await h.sql(
      `SELECT id FROM engagement_pipeline.backfill_progress WHERE from_ts = '2019-01-01T00:00:00Z' AND status <> 'done'`,
    );
    assert.equal(open.length, 0, 'the killed run was finished, not left behind');
  });

  it('--dry-run writes nothing and bad flags exit 2 with one line', async () => {
    const dry = await runCli(
      ['backfill', '--from', '2000-01-01T00:00:00Z', '--to', 'now', '--dry-run'],
      cliEnv(h),
    );
    assert.equal(dry.code, 0, dry.output);
    assert.match(dry.output, /dry run: \d+ rows/);
    const bad = await runCli(['backfill', '--from', 'yesterday', '--to', 'now'], cliEnv(h));
    assert.equal(bad.code, 2);
    assert.equal(bad.output.trim().split('\n').length, 1, bad.output);
    const sinks = await runCli(
      ['backfill', '--from', '2000-01-01', '--to', 'now', '--sinks', 'kafka'],
      cliEnv(h),
    );
    assert.equal(sinks.code, 2);
  });

  it('time flags: microseconds reach Postgres, no offset is UTC, impossible dates refused', async () => {
    // 1 µs .. 998 µs apart within one millisecond: cut to milliseconds they were equal.
    const micro = await runCli(
      [
        'backfill',
        '--from',
        '2026-11-01T10:00:53.791001Z',
        '--to',
        '2026-11-01T10:00:53.791999Z',
        '--dry-run',
      ],
      cliEnv(h),
    );
    assert.equal(micro.code, 0, micro.output);
    assert.match(micro.output, /\[2026-11-01T10:00:53\.791001Z, 2026-11-01T10:00:53\.791999Z\)/);
    // Read as UTC whatever TZ says (was local time, while a date alone was UTC).
    const local = await runCli(
      ['backfill', '--from', '2026-11-01T10:00', '--to', '2026-11-02', '--dry-run'],
      { ...cliEnv(h), TZ: 'America/New_York' },
    );
    assert.equal(local.code, 0, local.output);
    assert.match(local.output, /\[2026-11-01T10:00:00\.000000Z, 2026-11-02T00:00:00\.000000Z\)/);
    // A row at an exact microsecond is inside [t, t + 1 µs) and outside [t + 1 µs, …).
    const [{ ts }] = await h.sql<{ ts: string }>(
      `SELECT to_json(event_ts) #>> '{}' AS ts FROM engagement_events ORDER BY id LIMIT 1`,
    );
    const micros = isoToMicros(ts);
    const exact = await runCli(
      ['backfill', '--from', microsToIso(micros), '--to', microsToIso(micros + 1n), '--dry-run'],
      cliEnv(h),
    );
    assert.match(exact.output, /dry run: [1-9]\d* rows/, exact.output);
    const after = await runCli(
      ['backfill', '--from', microsToIso(micros + 1n), '--to', microsToIso(micros + 2n), '--dry-run'],
      cliEnv(h),
    );
    assert.match(after.output, /dry run: 0 rows/, after.output);
    // All of history: rows of any year Postgres keeps (4713 BC, 10000) are inside -infinity .. infinity.
    await h.sql(
      `INSERT INTO engagement_events (content_id, event_type, event_ts, duration_ms, device)
       VALUES ($1, 'play', '4713-01-01 00:00:00+00 BC', 1, 'tv'), ($1, 'play', '10000-01-01 00:00:00+00', 1, 'tv')`,
      [CONTENT_IDS[0]],
    );
    const [{ n: all }] = await h.sql<{ n: string }>(`SELECT count(*) AS n FROM engagement_events`);
    const history = await runCli(
      ['backfill', '--from', '-infinity', '--to', 'infinity', '--dry-run'],
      cliEnv(h),
    );
    assert.equal(history.code, 0, history.output);
    assert.match(
      history.output,
      new RegExp(`dry run: ${all} rows with event_ts in \\[-infinity, infinity\\)`),
    );
    // The other refusals are the unit tier's (test/unit/cli-times.test.ts); one per command here.
    for (const from of ['2026-02-30T00:00:00Z']) {
      const bad = await runCli(['backfill', '--from', from, '--to', 'now', '--dry-run'], cliEnv(h));
      assert.equal(bad.code, 2, bad.output);
      assert.equal(bad.output.trim().split('\n').length, 1, bad.output);
      assert.match(bad.output, /EP_ERR_CONFIG: --from/);
    }
    const purge = await runCli(['dlq', 'purge', '--before', '2026-04-31'], cliEnv(h));
    assert.equal(purge.code, 2, purge.output);
    const list = await runCli(['dlq', 'list', '--since', '2026-13-01'], cliEnv(h));
    assert.equal(list.code, 2, list.output);
  });
});
