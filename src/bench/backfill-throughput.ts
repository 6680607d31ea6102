/**
 * Backfill throughput: seeds N historical engagement_events (default 1,000,000) server-side,
 * then runs the real backfill (runBackfill, the code behind `engagement backfill`) into a
 * fresh DuckDB file and Redis, and writes bench/results/backfill.json.
 * Three timed runs: analytics alone (the DuckDB figure); analytics + redis, where only the
 * last minutes of history are inside the Redis bucket retention; and redis alone over 200k
 * events all inside the retention (Redis's worst case).
 * Uses DATABASE_URL when set (it must be a scratch database), else starts an embedded Postgres.
 * Usage: node --import tsx src/bench/backfill-throughput.ts [--rows 1000000] [--chunk 50000]
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../ports.js';
import { runBackfill } from '../backfill/backfill.js';
import { startEmbeddedPostgres } from '../db/embedded.js';
import { migrate } from '../db/migrate.js';
import { withClient } from '../db/postgres.js';
import { silentLogger } from '../logger.js';
import { DuckDbSink } from '../sinks/analytics/duckdb-sink.js';
import { RedisSink } from '../sinks/redis/redis-sink.js';
import { makeDirs } from '../make-dirs.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const rows = Number(arg('rows', '1000000'));
const chunk = Number(arg('chunk', '50000'));
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

let cluster: Awaited<ReturnType<typeof startEmbeddedPostgres>> | null = null;
let databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  cluster = await startEmbeddedPostgres({
    dataDir: path.join(tmpdir(), `engagement-bench-backfill-${process.pid}`),
    port: await freePort(),
    fresh: true,
  });
  await cluster.createDatabase('bench_backfill');
  databaseUrl = cluster.urlFor('bench_backfill');
}
const dir = mkdtempSync(path.join(tmpdir(), 'engagement-bench-backfill-'));
const prefix = `bench:${randomBytes(4).toString('hex')}:`;
try {
  await migrate(databaseUrl, { slotName: 'bench_backfill', publicationName: 'bench_backfill' });
  const seedStarted = performance.now();
  // Server-side generation: as fast as COPY and needs no client round trips for 1M rows.
  await withClient(databaseUrl, async (c) => {
    await c.query(`DROP PUBLICATION IF EXISTS bench_backfill`);
    await c.query(`SELECT pg_drop_replication_slot('bench_backfill')`);
    await c.query(`DELETE FROM engagement_pipeline.slot_state`);
    await c.query(
      `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
       SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'c-' || g, 'Content ' || g,
              (ARRAY['podcast','newsletter','video'])[1 + g % 3], CASE WHEN g % 10 = 0 THEN NULL ELSE 60 + g * 7 END, now()
       FROM generate_series(1, 500) g ON CONFLICT DO NOTHING`,
    );
    await c.query(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
       SELECT ('00000000-0000-4000-8000-' || lpad((1 + g % 500)::text, 12, '0'))::uuid, gen_random_uuid(),
              (ARRAY['play','pause','finish','click'])[1 + g % 4],
              now() - make_interval(secs => ($1 - g) * 0.6), (g * 37) % 600000,
              (ARRAY['ios','android','web-chrome','tv'])[1 + g % 4], jsonb_build_object('n', g, 'src', 'bench')
       FROM generate_series(1, $1::int) g`,
      [rows],
    );
    await c.query('VACUUM ANALYZE engagement_events');
  });
  const seedSeconds = (performance.now() - seedStarted) / 1000;
  const range = await withClient(
    databaseUrl,
    async (c) =>
      (
        await c.query(
          `SELECT min(event_ts)::text AS a, (max(event_ts) + interval '1 second')::text AS b FROM engagement_events`,
        )
      ).rows[0],
  );
  const fromTs = new Date(Date.parse(range.a.replace(' ', 'T').replace(/\+00$/, 'Z'))).toISOString();
  const toTs = new Date(Date.parse(range.b.replace(' ', 'T').replace(/\+00$/, 'Z')) + 1000).toISOString();

  const timed = async (label: string, sinkNames: ('analytics' | 'redis')[], file: string) => {
    const result = await runBackfill({
      databaseUrl: databaseUrl!,
      fromTs,
      toTs,
      sinks: sinkNames,
      // Each timed run writes a fresh file and prefix: a run of its own, never resumed.
      destinations: `${label} ${file}`,
      chunkSize: chunk,
      rate: 0,
      logger: silentLogger(),
      createSinks: () => ({
        analytics: sinkNames.includes('analytics')
          ? new DuckDbSink({ path: file, logger: silentLogger() })
          : undefined,
        redis: sinkNames.includes('redis')
          ? new RedisSink({ url: redisUrl, prefix, logger: silentLogger() })
          : undefined,
      }),
    });
    const seconds = result.elapsedMs / 1000;
    const figures = {
      label,
      sinks: sinkNames,
      rows: result.rowsDone,
      seconds: Number(seconds.toFixed(2)),
      rowsPerSecond: Math.round(result.rowsDone / seconds),
      redisEventsCounted: result.redisApplied,
    };
    process.stdout.write(`${JSON.stringify(figures)}\n`);
    return figures;
  };
  const analyticsOnly = await timed('analytics (DuckDB) only', ['analytics'], path.join(dir, 'a.duckdb'));
  const both = await timed('analytics (DuckDB) + redis', ['analytics', 'redis'], path.join(dir, 'b.duckdb'));
  // Redis's worst case: every row inside the bucket retention (200k events in the last 10 minutes).
  const recent = Math.min(200_000, rows);
  await withClient(databaseUrl, async (c) => {
    await c.query(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
       SELECT ('00000000-0000-4000-8000-' || lpad((1 + g % 500)::text, 12, '0'))::uuid, gen_random_uuid(), 'play',
              now() - make_interval(secs => (g % 600)), (g * 37) % 600000,
              (ARRAY['ios','android','web-chrome','tv'])[1 + g % 4], jsonb_build_object('n', g)
       FROM generate_series(1, $1::int) g`,
      [recent],
    );
    await c.query('ANALYZE engagement_events');
  });
  const recentRun = await runBackfill({
    databaseUrl,
    destinations: 'bench recent',
    fromTs: new Date(Date.now() - 11 * 60_000).toISOString(),
    toTs: new Date(Date.now() + 60_000).toISOString(),
    sinks: ['redis'],
    chunkSize: chunk,
    rate: 0,
    logger: silentLogger(),
    createSinks: () => ({ redis: new RedisSink({ url: redisUrl, prefix, logger: silentLogger() }) }),
  });
  const redisOnly = {
    label: 'redis only, every row inside the bucket retention',
    sinks: ['redis'],
    rows: recentRun.rowsDone,
    seconds: Number((recentRun.elapsedMs / 1000).toFixed(2)),
    rowsPerSecond: Math.round(recentRun.rowsDone / (recentRun.elapsedMs / 1000)),
    redisEventsCounted: recentRun.redisApplied,
  };
  process.stdout.write(`${JSON.stringify(redisOnly)}\n`);
  const report = {
    when: new Date().toISOString(),
    machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
    seededRows: rows,
    seedSeconds: Number(seedSeconds.toFixed(1)),
    chunkSize: chunk,
    note: 'event_ts spread over the last ~7 days; redis counts every event in content:count/content:last, minute buckets only inside the 14-minute retention',
    runs: [analyticsOnly, both, redisOnly],
  };
  makeDirs('bench/results');
  writeFileSync('bench/results/backfill.json', `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write('wrote bench/results/backfill.json\n');
} finally {
  const redis = new Redis(redisUrl);
  const keys = await redis.keys(`${prefix}*`);
  for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
  redis.disconnect();
  rmSync(dir, { recursive: true, force: true });
  await cluster?.stop();
}
