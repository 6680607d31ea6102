import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { EVENTS_TOPIC } from '../../src/kafka/client.js';
import type { CliProcess } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import {
  realKafkaUnavailable,
  saveOutputs,
  startKafkaCluster,
  type KafkaCluster,
} from '../helpers/kafka-cluster.js';
import { killAll, redisTotal, startCapture, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { CONTENT_IDS, cliEnv, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = realKafkaUnavailable();
const ENRICHED_TOPIC = 'engagement.enriched';
/** The enriched topic takes less than the broker's default (1048588 bytes), as an operator may set it. */
const ENRICHED_LIMIT = 200_000;

/**
 * Message size on a real broker (1 KRaft node, message.max.bytes at its default): a broker
 * refuses a record batch larger than its limit (MESSAGE_TOO_LARGE, not retriable). Every
 * topic here has one partition, so one capture unit (BATCH_MAX_ROWS 2000 messages) and one
 * worker batch each go to a single partition. Produce requests must be split by size; an
 * event that is too large even alone is dead-lettered, and everything after it flows.
 */
describe('message size on a real Kafka broker: capture -> worker, one partition', { skip }, () => {
  let cluster: KafkaCluster;
  let h: Harness;
  let env: Record<string, string>;
  const procs: CliProcess[] = [];
  let capture: CliProcess;
  let worker: CliProcess;

  before(async () => {
    cluster = await startKafkaCluster(1);
    h = await createHarness();
    await seedContent(h);
    const admin = new Kafka({ brokers: cluster.brokers.split(','), logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({
      waitForLeaders: true,
      topics: [
        {
          topic: ENRICHED_TOPIC,
          numPartitions: 1,
          replicationFactor: 1,
          configEntries: [{ name: 'max.message.bytes', value: String(ENRICHED_LIMIT) }],
        },
      ],
    });
    await admin.disconnect();
    env = cliEnv(h, {
      KAFKA_BROKERS: cluster.brokers,
      KAFKA_TOPIC_PARTITIONS: '1',
      KAFKA_REPLICATION_FACTOR: '1',
      KAFKA_ENRICHED_TOPIC: ENRICHED_TOPIC,
      LOG_LEVEL: 'info',
    });
    capture = await startCapture(env);
    procs.push(capture);
    worker = await startWorker(env, ['--group', 'size']);
    procs.push(worker);
  });
  after(async () => {
    await killAll(procs);
    saveOutputs('kafka-message-size', procs);
    await h?.cleanup();
    await cluster?.stop();
  });

  it('a 1-partition topic takes 3000 events of ~810 B in one transaction: every event arrives once', async () => {
    // One transaction: capture's unit is BATCH_MAX_ROWS (2000) messages, all for partition 0.
    await insertPadded(h, 1, 3000, 200);
    await waitFor('3000 events in Redis', async () => (await redisTotal(h)) >= 3000, 60_000, 250).catch(
      (err) => {
        throw new Error(`${(err as Error).message}; capture:\n${capture.output().slice(-3000)}`);
      },
    );
    const size = await nativeSize(cluster.brokers);
    process.stdout.write(`# ${EVENTS_TOPIC} message: ~${size} bytes\n`);
    assert.ok(size >= 750 && size <= 850, `~810 B per message (${size})`);
    const enriched = await readTopic(cluster.brokers, ENRICHED_TOPIC, 3000);
    assert.equal(new Set(enriched.map((e) => e.event_id)).size, 3000, 'enriched topic: every event');
    assert.equal(enriched.length, 3000, 'enriched topic: each once');
    assert.equal(await redisTotal(h), 3000);
  });

  it('an event over the broker limit is dead-lettered with its reason; the events after it arrive', async () => {
    // id 3001: small; 3002: 1.1 MB payload (over the limit even alone, twice over in the
    // native format); 3003: 240 KB payload (fits engagement.events alone and DuckDB, not the
    // enriched topic's 200 KB); then 500 small ones, all in one transaction.
    const mark = capture.output().length;
    await h.sql(
      `INSERT INTO engagement_events (id, content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
       SELECT v.id, $1::uuid, gen_random_uuid(), 'play', now(), 1000, 'ios', v.payload
       FROM (VALUES (3001, '{"n":3001}'::jsonb),
                    (3002, jsonb_build_object('pad', repeat('x', 1100000))),
                    (3003, jsonb_build_object('pad', repeat('y', 240000)))) AS v(id, payload)
       UNION ALL
       SELECT g, $1::uuid, gen_random_uuid(), 'play', now(), 1000, 'web-chrome', jsonb_build_object('n', g, 'pad', repeat('p', 200))
       FROM generate_series(3004, 3503) AS g`,
      [CONTENT_IDS[0]],
    );
    await h.sql(`SELECT setval(pg_get_serial_sequence('engagement_events', 'id'), 3503)`);
    const total = 3000 + 503 - 1;
    await waitFor(
      'every other event in Redis',
      async () => (await redisTotal(h)) >= total,
      60_000,
      250,
    ).catch((err) => {
      throw new Error(`${(err as Error).message}; capture:\n${capture.output().slice(-3000)}`);
    });
    // The sinks go at their own pace: the enriched topic's refusal is found by splitting its batch.
    const readLetters = () =>
      h.sql<{ sink: string; event_id: string; last_error: string }>(
        `SELECT sink, event_id::text, last_error FROM engagement_pipeline.dead_letters ORDER BY id`,
      );
    await waitFor('two dead letters', async () => (await readLetters()).length >= 2, 60_000, 250);
    const letters = await readLetters();
    process.stdout.write(`# dead letters: ${JSON.stringify(letters.map((l) => ({ ...l })))}\n`);
    const source = letters.filter((l) => l.sink === 'source');
    assert.deepEqual(
      source.map((l) => l.event_id),
      ['3002'],
      'the oversized event, dead-lettered by capture',
    );
    assert.match(source[0].last_error, /too large/i);
    const kafka = letters.filter((l) => l.sink === 'kafka');
    assert.deepEqual(
      kafka.map((l) => l.event_id),
      ['3003'],
      'the event too large for the enriched topic, dead-lettered for that sink only',
    );
    assert.match(kafka[0].last_error, /too large/i);
    // One error line per refused event, naming it, its size and the limit.
    const lines = capture
      .output()
      .slice(mark)
      .split('\n')
      .filter((l) => /"level":50/.test(l));
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0], /event 3002 is too large .*2\d{6} bytes.*limit of 1048588 bytes/);

    const enriched = await readTopic(cluster.brokers, ENRICHED_TOPIC, total - 1);
    const ids = new Set(enriched.map((e) => e.event_id));
    assert.equal(enriched.length, total - 1, 'enriched topic: each once');
    assert.ok(!ids.has(3002) && !ids.has(3003) && ids.has(3001) && ids.has(3503));

    assert.equal(await stopCli(worker), 0, worker.output().slice(-2000));
    assert.equal(await stopCli(capture), 0, capture.output().slice(-2000));
    const [row] = await duckdbQuery(
      h.duckdbFile,
      'SELECT count(*) AS n, count(DISTINCT event_id) AS d, bool_or(event_id = 3002) AS big FROM engagement.events_enriched',
    );
    assert.deepEqual(
      [Number(row.n), Number(row.d), row.big],
      [total, total, false],
      'DuckDB: every other event once',
    );
    assert.equal(await redisTotal(h), total, 'Redis: every other event once');
    const [slot] = await h.sql<{ lag: string }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text AS lag FROM pg_replication_slots`,
    );
    assert.ok(
      Number(slot.lag) < 1_000_000,
      `the slot moved past the oversized event (lag ${slot.lag} bytes)`,
    );
  });
});

/** `n` events from id `first` in one transaction, each with a `pad`-character payload. */
async function insertPadded(h: Harness, first: number, n: number, pad: number): Promise<void> {
  await h.sql(
    `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
     SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), 'play', now(), (g * 37) % 600000,
            (ARRAY['ios','android','web-chrome','tv'])[1 + (g % 4)], jsonb_build_object('n', g, 'pad', repeat('p', $4))
     FROM generate_series($2::int, $3::int) AS g`,
    [CONTENT_IDS, first, first + n - 1, pad],
  );
}

/** The size of the first engagement.events message, once it is there. */
async function nativeSize(brokers: string): Promise<number> {
  const kafka = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `size-${Date.now()}` });
  let size = 0;
  await consumer.connect();
  await consumer.subscribe({ topic: EVENTS_TOPIC, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      size ||= message.value?.length ?? 0;
    },
  });
  await waitFor('a message in engagement.events', () => size > 0, 60_000, 100).finally(() =>
    consumer.disconnect(),
  );
  return size;
}

/** Every record of a topic from the beginning, once `atLeast` arrived and 2 s passed quietly. */
async function readTopic(brokers: string, topic: string, atLeast: number): Promise<{ event_id: number }[]> {
  const kafka = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `verify-${Date.now()}` });
  const out: { event_id: number }[] = [];
  let lastAt = Date.now();
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) out.push(JSON.parse(m.value!.toString()) as { event_id: number });
      lastAt = Date.now();
    },
  });
  await waitFor(
    `${atLeast} records in ${topic}`,
    () => out.length >= atLeast && Date.now() - lastAt > 2_000,
    60_000,
    200,
  ).finally(() => consumer.disconnect());
  return out;
}
