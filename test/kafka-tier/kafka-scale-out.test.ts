import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';
import type { CliProcess } from '../helpers/cli.js';
import { kcatAvailable, startKafkaMock, type KafkaMock } from '../helpers/kafka-mock.js';
import {
  assignedPartitions,
  externalStats,
  insertTraffic,
  redisTopSum,
  redisTotal,
  startCapture,
  startWorker,
  stopCli,
} from '../helpers/kafka-pipeline.js';
import { createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = kcatAvailable()
  ? false
  : 'kcat (librdkafka mock cluster) is not installed: apt-get install kcat';

describe('scale-out: capture -> Kafka (mock cluster, 3 brokers, 4 partitions) -> 2 workers', { skip }, () => {
  let kafka: KafkaMock;
  let h: Harness;
  let external: RunningMockExternal;
  let clickhouse: ChdbHttp;
  const procs: CliProcess[] = [];
  let env: Record<string, string>;

  before(async () => {
    kafka = await startKafkaMock(3);
    h = await createHarness();
    await seedContent(h);
    external = await startMockExternal({ port: 0 });
    clickhouse = await startChdbHttp({ user: 'pipeline', password: 'secret' });
    env = {
      DATABASE_URL: h.databaseUrl,
      KAFKA_BROKERS: kafka.brokers,
      REDIS_URL: h.redis.url,
      REDIS_PREFIX: h.redis.prefix,
      ANALYTICS_URL: `clickhouse://pipeline:secret@127.0.0.1:${clickhouse.port}/engagement`,
      EXTERNAL_URL: external.url,
      BATCH_MAX_ROWS: '200',
    };
  });
  after(async () => {
    if (process.env.KAFKA_TEST_DEBUG)
      for (const p of procs) process.stderr.write(`---\n${p.output().slice(-6000)}\n`);
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await external?.close();
    await clickhouse?.close();
    await h?.cleanup();
    await kafka?.stop();
  });

  // Skipped: on librdkafka's mock cluster the first worker sometimes never logs "joined group"
  // within 120 s (1 of 3 clean runs here; cause not found yet). The same scenario runs on the
  // real 3-broker KRaft cluster, with a broker kill -9 added, in kafka-real-cluster.kafka.test.ts.
  it(
    'delivers every event exactly once to ClickHouse, Redis and the external system, through a worker kill -9 and a capture kill -9',
    {
      skip: 'flaky on the mock cluster (worker join); proven on the real cluster: kafka-real-cluster.kafka.test.ts',
    },
    async () => {
      const capture = await startCapture(env);
      procs.push(capture);
      const a = await startWorker(env, ['--group', 'g1']);
      procs.push(a);
      const b = await startWorker(env, ['--group', 'g1']);
      procs.push(b);
      await waitFor('both workers share the 4 partitions', () => {
        const pa = assignedPartitions(a);
        const pb = assignedPartitions(b);
        return pa.length > 0 && pb.length > 0 && pa.length + pb.length === 4;
      });

      await insertTraffic(h, 3000, 100);
      await waitFor('first part in Redis', async () => (await redisTotal(h)) >= 3000, 60_000, 100);

      // Mid-stream: kill -9 worker A while traffic flows; B takes over its partitions.
      const traffic = insertTraffic(h, 3000, 50);
      await new Promise((r) => setTimeout(r, 400));
      a.child.kill('SIGKILL');
      await a.exited;
      await traffic;
      await waitFor('B owns all 4 partitions', () => assignedPartitions(b).length === 4, 60_000);

      // kill -9 the capture: the slot replays from its last confirmed commit into Kafka again.
      const more = insertTraffic(h, 2000, 50);
      await new Promise((r) => setTimeout(r, 300));
      capture.child.kill('SIGKILL');
      await capture.exited;
      await more;
      const capture2 = await startCapture(env);
      procs.push(capture2);
      const a2 = await startWorker(env, ['--group', 'g1']);
      procs.push(a2);
      await insertTraffic(h, 1000, 100);

      const n = 9000;
      await waitFor('every event in Redis', async () => (await redisTotal(h)) >= n, 90_000, 200);
      await waitFor(
        'every event at the external system',
        async () => (await externalStats(external.url)).uniqueEventIds >= n,
        90_000,
        200,
      );
      await waitFor(
        'every event in ClickHouse',
        async () => {
          const [row] = await clickhouse.rows<{ n: string }>(
            'SELECT uniqExact(event_id) AS n FROM engagement.events_enriched',
          );
          return Number(row.n) >= n;
        },
        90_000,
        200,
      );
      // Let any straggling duplicate land before counting.
      await new Promise((r) => setTimeout(r, 1_000));
      for (const p of [a2, b, capture2]) assert.equal(await stopCli(p), 0, p.output().slice(-2000));

      assert.equal(await redisTotal(h), n, 'Redis content:count: no loss, no double count');
      assert.equal(await redisTopSum(h), n, 'top:content:10m sums to N');
      const stats = await externalStats(external.url);
      assert.equal(stats.uniqueEventIds, n, 'external: every event');
      const [ch] = await clickhouse.rows<{ n: string; d: string }>(
        'SELECT count() AS n, uniqExact(event_id) AS d FROM engagement.events_enriched FINAL',
      );
      assert.deepEqual([Number(ch.n), Number(ch.d)], [n, n], 'ClickHouse: one row per event');
      // Enrichment is the same rule as direct mode: compare with Postgres's own numeric maths.
      const expected = await h.sql<{ id: string; pct: string | null }>(
        `SELECT e.id::text, round((e.duration_ms / 1000.0) / nullif(c.length_seconds, 0), 2)::text AS pct
       FROM engagement_events e JOIN content c ON c.id = e.content_id ORDER BY e.id LIMIT 50`,
      );
      const got = await clickhouse.rows<{ event_id: string; engagement_pct: number | null }>(
        `SELECT event_id, engagement_pct FROM engagement.events_enriched FINAL WHERE event_id <= 50 ORDER BY event_id`,
      );
      assert.deepEqual(
        got.map((r) => (r.engagement_pct === null ? null : Number(r.engagement_pct))),
        expected.map((r) => (r.pct === null ? null : Number(r.pct))),
      );
      process.stdout.write(
        `# scale-out: ${n} events, 2 workers (one kill -9), capture kill -9; Redis ${n}, ClickHouse ${ch.d}, external unique ${stats.uniqueEventIds} (redelivered with the same key: ${stats.duplicates})\n`,
      );
    },
  );
});
