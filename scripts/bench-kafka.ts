/**
 * Scale-out throughput: a backlog of N events in Postgres -> `capture --to-kafka` -> Kafka
 * -> 1 worker, then -> 2 workers; events/s until Redis counted all N (Redis + ClickHouse
 * through the test's chdb front as sinks); with --real, then commit -> Redis latency of
 * single-row transactions while 2 workers run. Run:
 *   node --import tsx scripts/bench-kafka.ts [N]          # librdkafka's mock cluster (kcat)
 *   node --import tsx scripts/bench-kafka.ts --real [N]   # a real 3-broker KRaft cluster (test/kafka jars)
 * Writes bench/results/kafka.json (mock) or bench/results/kafka-real.json. Everything runs on this one machine (2 cores shared by
 * Postgres, capture, the mock brokers, the workers and chdb), so this is a floor, not a ceiling.
 */
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { migrate } from '../src/db/migrate.js';
import { startChdbHttp } from '../test/helpers/chdb-http.js';
import { spawnCli, type CliProcess } from '../test/helpers/cli.js';
import { startKafkaCluster } from '../test/helpers/kafka-cluster.js';
import { startKafkaMock } from '../test/helpers/kafka-mock.js';
import { query } from '../test/helpers/postgres.js';
import { waitFor } from '../test/helpers/wait.js';

const REAL = process.argv.includes('--real');
const N = Number(process.argv.filter((a) => a !== '--real')[2] ?? 20_000);
// Brokers with the full JIT (the tests cap it at C1 to start faster).
if (REAL) process.env.KAFKA_TEST_FULL_JIT = '1';
const CONTENT = [
  '00000000-0000-4000-8000-000000000001',
  '00000000-0000-4000-8000-000000000002',
  '00000000-0000-4000-8000-000000000003',
];

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function redisTotal(redis: Redis, prefix: string): Promise<number> {
  const v = await Promise.all(CONTENT.map((id) => redis.get(`${prefix}content:count:${id}`)));
  return v.reduce((s, x) => s + Number(x ?? 0), 0);
}

/** 100 single-row transactions, one every 100 ms: commit (client-side) -> Redis count moved. */
async function commitToRedisLatency(db: string, redis: Redis, prefix: string) {
  const samples: number[] = [];
  for (let i = 0; i < 100; i++) {
    const before = await redisTotal(redis, prefix);
    await query(
      db,
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device)
       VALUES ($1, gen_random_uuid(), 'play', now(), 1000, 'ios')`,
      [CONTENT[i % 3]],
    );
    const t = performance.now();
    await waitFor('live event in Redis', async () => (await redisTotal(redis, prefix)) > before, 30_000, 2);
    samples.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 100));
  }
  samples.sort((a, b) => a - b);
  const q = (p: number) => Math.round(samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]);
  return {
    samples: samples.length,
    p50: q(0.5),
    p95: q(0.95),
    p99: q(0.99),
    max: Math.round(samples.at(-1)!),
  };
}

const port = await freePort();
const pg = await startEmbeddedPostgres({
  dataDir: path.join(tmpdir(), `engagement-kbench-${process.pid}`),
  port,
  fresh: true,
});
const kafka = REAL ? await startKafkaCluster(3) : await startKafkaMock(3);
const chdb = await startChdbHttp({ user: 'b', password: 'b' });
const redis = new Redis('redis://127.0.0.1:6379');
const procs: CliProcess[] = [];
const results: Record<string, unknown> = {
  events: N,
  machine: '2 cores, Debian 12, Node 20',
  kafka: REAL
    ? 'Apache Kafka 4.4.0, 3 KRaft nodes (broker+controller) on loopback, -Xmx256m each; topics 6 partitions, RF 3, min.insync.replicas 2, acks=all'
    : 'librdkafka mock cluster (kcat), 3 brokers, 4 partitions',
};
try {
  const db = pg.url;
  await migrate(db, { slotName: 'engagement_pipeline', publicationName: 'engagement_pipeline' });
  await query(
    db,
    `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts) VALUES
     ($1,'v','V','video',300,now()),($2,'p','P','podcast',NULL,now()),($3,'n','N','newsletter',0,now())`,
    CONTENT,
  );
  for (let i = 0; i < N; i += 5000) {
    await query(
      db,
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
       SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), 'play', now(), g % 600000, 'ios', jsonb_build_object('n', g)
       FROM generate_series($2::int, $3::int) g`,
      [CONTENT, i + 1, Math.min(N, i + 5000)],
    );
  }
  const base = {
    DATABASE_URL: db,
    KAFKA_BROKERS: kafka.brokers,
    LOG_LEVEL: 'warn',
    ANALYTICS_URL: `clickhouse://b:b@127.0.0.1:${chdb.port}/engagement`,
  };
  // 1) capture alone: backlog -> Kafka (acked), measured by the capture's published count.
  let t0 = performance.now();
  const capture = spawnCli(['capture', '--to-kafka'], { ...base, LOG_LEVEL: 'info' });
  procs.push(capture);
  const { Kafka, logLevel } = await import('kafkajs');
  const admin = new Kafka({ brokers: kafka.brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await waitFor(
    'capture published the backlog',
    async () => {
      const offsets = await admin.fetchTopicOffsets('engagement.events').catch(() => []);
      return offsets.reduce((s, o) => s + Number(o.high), 0) >= N;
    },
    600_000,
    100,
  );
  results.captureEventsPerSecond = Math.round(N / ((performance.now() - t0) / 1000));
  await admin.disconnect();

  for (const workers of [1, 2]) {
    const prefix = `kbench:${workers}:${Date.now()}:`;
    t0 = performance.now();
    for (let i = 0; i < workers; i++) {
      const w = spawnCli(['work', '--from-kafka', '--group', `bench-${workers}`], {
        ...base,
        REDIS_PREFIX: prefix,
        ANALYTICS_URL: `clickhouse://b:b@127.0.0.1:${chdb.port}/bench${workers}`,
      });
      procs.push(w);
    }
    await waitFor(
      'workers counted every event',
      async () => (await redisTotal(redis, prefix)) >= N,
      900_000,
      100,
    );
    const seconds = (performance.now() - t0) / 1000;
    results[`workers${workers}`] = {
      eventsPerSecond: Math.round(N / seconds),
      seconds: Number(seconds.toFixed(1)),
      note: 'from worker start (includes group join + content load) until Redis counted all N',
    };
    if (REAL && workers === 2) results.commitToRedisMs = await commitToRedisLatency(db, redis, prefix);
    for (const p of procs.splice(1)) {
      p.child.kill('SIGINT');
      await p.exited;
    }
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
  }
  results.at = new Date().toISOString();
  writeFileSync(
    REAL ? 'bench/results/kafka-real.json' : 'bench/results/kafka.json',
    `${JSON.stringify(results, null, 2)}\n`,
  );
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
} finally {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  redis.disconnect();
  await chdb.close();
  await kafka.stop();
  await pg.stop();
}
