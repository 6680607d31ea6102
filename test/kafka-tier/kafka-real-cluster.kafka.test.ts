import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { CONTENT_TOPIC, EVENTS_TOPIC } from '../../src/kafka/client.js';
import { nativeFormat } from '../../src/source/kafka/native-wire.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';
import type { CliProcess } from '../helpers/cli.js';
import {
  describeTopic,
  realKafkaUnavailable,
  saveOutputs,
  startKafkaCluster,
  type KafkaCluster,
} from '../helpers/kafka-cluster.js';
import {
  assignedPartitions,
  externalStats,
  insertTraffic,
  killAll,
  redisTopSum,
  redisTotal,
  startCapture,
  startWorker,
  stopCli,
} from '../helpers/kafka-pipeline.js';
import { createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = realKafkaUnavailable();
const PARTITIONS = 6;
const ENRICHED_TOPIC = 'engagement.enriched';

/**
 * The scale-out proof on a real Kafka (3 KRaft brokers): topic settings as created by capture
 * and read back from the cluster, then capture + 2 workers through a worker kill -9, a
 * capture kill -9 and a kill -9 of the broker leading the busiest partition (restarted).
 * (It replaced the same scenario on librdkafka's mock cluster, where a group of two is not
 * reliable: every rebalance there waits session.timeout - 1 s.)
 */
describe('scale-out on a real Kafka cluster (3 brokers): capture -> 2 workers', { skip }, () => {
  let cluster: KafkaCluster;
  let h: Harness;
  let external: RunningMockExternal;
  let clickhouse: ChdbHttp;
  const procs: CliProcess[] = [];
  let env: Record<string, string>;

  before(async () => {
    cluster = await startKafkaCluster(3);
    h = await createHarness();
    await seedContent(h);
    external = await startMockExternal({ port: 0 });
    clickhouse = await startChdbHttp({ user: 'pipeline', password: 'secret' });
    env = {
      DATABASE_URL: h.databaseUrl,
      KAFKA_BROKERS: cluster.brokers,
      KAFKA_TOPIC_PARTITIONS: String(PARTITIONS),
      REDIS_URL: h.redis.url,
      REDIS_PREFIX: h.redis.prefix,
      ANALYTICS_URL: `clickhouse://pipeline:secret@127.0.0.1:${clickhouse.port}/engagement`,
      EXTERNAL_URL: external.url,
      BATCH_MAX_ROWS: '200',
      KAFKA_ENRICHED_TOPIC: ENRICHED_TOPIC,
    };
  });
  afterEach(() => killAll(procs));
  after(async () => {
    await killAll(procs);
    saveOutputs('kafka-real-cluster', procs);
    await external?.close();
    await clickhouse?.close();
    await h?.cleanup();
    await cluster?.stop();
  });

  it('creates replicated topics and delivers every event exactly once through kill -9 of a worker, the capture and a partition leader', async () => {
    const capture = await startCapture(env);
    procs.push(capture);

    // Topic settings, as the cluster reports them (not as we asked).
    const events = await describeTopic(cluster.brokers, EVENTS_TOPIC);
    const content = await describeTopic(cluster.brokers, CONTENT_TOPIC);
    process.stdout.write(
      `# ${EVENTS_TOPIC}: ${JSON.stringify({ partitions: events.partitions, replicationFactor: events.replicationFactor, configs: events.configs })}\n` +
        `# ${CONTENT_TOPIC}: ${JSON.stringify({ partitions: content.partitions, replicationFactor: content.replicationFactor, configs: content.configs })}\n`,
    );
    assert.equal(events.partitions, PARTITIONS);
    assert.equal(events.replicationFactor, 3);
    assert.equal(events.configs['min.insync.replicas'], '2');
    assert.equal(content.replicationFactor, 3);
    assert.equal(content.configs['min.insync.replicas'], '2');
    assert.equal(content.configs['cleanup.policy'], 'compact');

    const a = await startWorker(env, ['--group', 'g1']);
    procs.push(a);
    const b = await startWorker(env, ['--group', 'g1']);
    procs.push(b);
    await waitFor(
      'both workers share the partitions',
      () => {
        const pa = assignedPartitions(a);
        const pb = assignedPartitions(b);
        return pa.length > 0 && pb.length > 0 && pa.length + pb.length === PARTITIONS;
      },
      60_000,
    );

    await insertTraffic(h, 2000, 100);
    await waitFor('first part in Redis', async () => (await redisTotal(h)) >= 2000, 90_000, 200);

    // kill -9 worker A while traffic flows; B takes over its partitions.
    const traffic = insertTraffic(h, 2000, 50);
    await new Promise((r) => setTimeout(r, 400));
    a.child.kill('SIGKILL');
    await a.exited;
    await traffic;
    await waitFor('B owns every partition', () => assignedPartitions(b).length === PARTITIONS, 60_000);

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

    // kill -9 the broker leading the busiest partition while traffic flows, then restart it.
    const busiest = await busiestPartition(cluster.brokers);
    const leader = (await describeTopic(cluster.brokers, EVENTS_TOPIC)).leaders[busiest];
    const flowing = insertTraffic(h, 2000, 50);
    await new Promise((r) => setTimeout(r, 300));
    await cluster.kill(leader);
    await flowing;
    await insertTraffic(h, 1000, 100);
    await cluster.restart(leader);
    const after = await describeTopic(cluster.brokers, EVENTS_TOPIC);
    process.stdout.write(
      `# killed broker ${leader} (leader of ${EVENTS_TOPIC}/${busiest}); leaders now ${JSON.stringify(after.leaders)}\n`,
    );

    const n = 9000;
    await waitFor('every event in Redis', async () => (await redisTotal(h)) >= n, 120_000, 250).catch(
      async (err) => {
        process.stdout.write(`# diagnostics: ${JSON.stringify(await diagnostics(h, cluster.brokers))}\n`);
        const [row] = await clickhouse.rows<{ n: string }>(
          'SELECT uniqExact(event_id) AS n FROM engagement.events_enriched',
        );
        const inTopic = await consumeEvents(cluster.brokers);
        const missing = [];
        for (let id = 1; id <= 9000; id++) if (!inTopic.has(id)) missing.push(id);
        process.stdout.write(
          `# clickhouse distinct ${row.n}; events topic distinct ids ${inTopic.size}, missing ${missing.slice(0, 40).join(',')}\n`,
        );
        throw err;
      },
    );
    await waitFor(
      'every event at the external system',
      async () => (await externalStats(external.url)).uniqueEventIds >= n,
      120_000,
      250,
    );
    await waitFor(
      'every event in ClickHouse',
      async () => {
        const [row] = await clickhouse.rows<{ n: string }>(
          'SELECT uniqExact(event_id) AS n FROM engagement.events_enriched',
        );
        return Number(row.n) >= n;
      },
      120_000,
      250,
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
    // The enriched topic, written by the workers (one killed -9): every event once.
    const enriched = await consumeAll(cluster.brokers, ENRICHED_TOPIC, n);
    const ids = new Set(enriched.map((e) => e.event_id));
    const topicInfo = await describeTopic(cluster.brokers, ENRICHED_TOPIC);
    process.stdout.write(
      `# ${ENRICHED_TOPIC}: ${JSON.stringify({ partitions: topicInfo.partitions, replicationFactor: topicInfo.replicationFactor, configs: topicInfo.configs })}; records ${enriched.length}, distinct event_id ${ids.size}\n`,
    );
    assert.equal(ids.size, n, 'enriched topic: every event');
    assert.equal(enriched.length, n, 'enriched topic: no duplicates across the worker kill -9');
    assert.ok(
      enriched.every((e) => e.key === e.content_id),
      'keyed by content_id',
    );
    process.stdout.write(
      `# real cluster: ${n} events, 2 workers (one kill -9), capture kill -9, leader broker kill -9 + restart; ` +
        `Redis ${n}, ClickHouse ${ch.d}, external unique ${stats.uniqueEventIds} (redelivered with the same key: ${stats.duplicates})\n`,
    );
  });
});

/** Where the events are when a wait times out: Postgres, the slot, Kafka, the group, Redis. */
async function diagnostics(h: Harness, brokers: string): Promise<unknown> {
  const [pg] = await h.sql<{ n: string }>('SELECT count(*)::text AS n FROM engagement_events');
  const slot = await h.sql(
    'SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text AS wal FROM pg_replication_slots',
  );
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const topic = await admin.fetchTopicOffsets(EVENTS_TOPIC);
    const group = await admin.fetchOffsets({ groupId: 'g1', topics: [EVENTS_TOPIC] });
    return {
      postgres: Number(pg.n),
      slot,
      redis: await redisTotal(h),
      topic: topic.map((p) => `${p.partition}:${p.high}`),
      group: group[0]?.partitions.map((p) => `${p.partition}:${p.offset}`),
    };
  } finally {
    await admin.disconnect();
  }
}

/** Every record of a topic from the beginning (a fresh group), until `atLeast` arrived and 2 s passed quietly. */
async function consumeAll(
  brokers: string,
  topic: string,
  atLeast: number,
): Promise<{ key: string | undefined; event_id: number; content_id: string | null }[]> {
  const kafka = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `verify-${Date.now()}` });
  const out: { key: string | undefined; event_id: number; content_id: string | null }[] = [];
  let lastAt = Date.now();
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        const v = JSON.parse(m.value!.toString()) as { event_id: number; content_id: string | null };
        out.push({ key: m.key?.toString(), event_id: v.event_id, content_id: v.content_id });
      }
      lastAt = Date.now();
    },
  });
  await waitFor(
    `${atLeast} records in ${topic}`,
    () => out.length >= atLeast && Date.now() - lastAt > 2_000,
    90_000,
    200,
  );
  await consumer.disconnect();
  return out;
}

/** Distinct event ids in engagement.events (native format). */
async function consumeEvents(brokers: string): Promise<Set<number>> {
  const kafka = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `diag-${Date.now()}` });
  const ids = new Set<number>();
  let lastAt = Date.now();
  await consumer.connect();
  await consumer.subscribe({ topic: EVENTS_TOPIC, fromBeginning: true });
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        const r = nativeFormat.decodeEvent(m.key, m.value, m.timestamp);
        if (r.kind === 'event') ids.add(Number(r.row.id));
      }
      lastAt = Date.now();
    },
  });
  await waitFor('events topic read', () => Date.now() - lastAt > 3_000, 60_000, 200).catch(() => undefined);
  await consumer.disconnect();
  return ids;
}

/** The events-topic partition holding the most records. */
async function busiestPartition(brokers: string): Promise<number> {
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(EVENTS_TOPIC);
    offsets.sort((x, y) => Number(BigInt(y.high) - BigInt(y.low) - (BigInt(x.high) - BigInt(x.low))));
    return offsets[0].partition;
  } finally {
    await admin.disconnect();
  }
}
