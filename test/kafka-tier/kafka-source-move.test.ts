import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { EVENTS_TOPIC } from '../../src/kafka/client.js';
import { JsonText } from '../../src/domain/json-text.js';
import { encodeEvent } from '../../src/source/kafka/native-format.js';
import { startMockExternal } from '../../src/mock-external/server.js';
import type { CliProcess } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { kcatAvailable } from '../helpers/kafka-mock.js';
import { kafkaCasesSetup, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { cliEnv, CONTENT_IDS, seedContent } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = kcatAvailable()
  ? false
  : 'kcat (librdkafka mock cluster) is not installed: apt-get install kcat';

const tail = (p: CliProcess) => p.output().slice(-4000);

/**
 * Native messages of one content id (one partition) as `capture --to-kafka` writes them, from
 * the cluster `src`, one event per transaction at `lsnBase + id`.
 */
function messages(src: string, lsnBase: number, ids: number[]) {
  const committedAt = new Date().toISOString();
  return ids.map((id) => ({
    key: CONTENT_IDS[0],
    value: encodeEvent(
      {
        id,
        content_id: CONTENT_IDS[0],
        user_id: null,
        event_type: 'play',
        event_ts: committedAt,
        duration_ms: 1000,
        device: 'ios',
        raw_payload: new JsonText(`{"n":${id}}`),
      },
      `0/${(lsnBase + id * 0x100).toString(16).toUpperCase()}`,
      0,
      committedAt,
      src,
    ),
  }));
}

/**
 * Postgres moved into a new cluster (dump/restore, capture restarted against it): its LSNs
 * restart lower while event ids go on. The messages name their cluster, so a worker neither
 * takes the new cluster's events for copies of the old one's (in the same fetch, against the
 * Redis watermark of the partition, or against the enriched topic's last record) nor counts or
 * publishes a cluster's re-sent copies again (the external system, at least once, may see them).
 */

const ENRICHED = 'engagement.enriched.move';

/** The event ids of every record of `topic` (a fresh group from the beginning), once `n` arrived. */
async function topicEventIds(brokers: string, topic: string, n: number): Promise<number[]> {
  const consumer = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).consumer({
    groupId: `verify-${Date.now()}`,
  });
  const ids: number[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) =>
        void ids.push((JSON.parse(message.value!.toString()) as { event_id: number }).event_id),
    });
    await waitFor(`${n} records in ${topic}`, () => ids.length >= n, 30_000);
    await new Promise((r) => setTimeout(r, 1_000)); // and no more after them
  } finally {
    await consumer.disconnect();
  }
  return ids.sort((a, b) => a - b);
}
describe(
  'work --from-kafka: the source cluster changes (Postgres moved, capture restarted)',
  { skip },
  () => {
    const cases = kafkaCasesSetup();

    it("the new cluster's lower positions reach every sink; each cluster's copies are not counted or published twice", async () => {
      const kafka = await cases.cluster();
      const h = await cases.harness();
      await seedContent(h);
      const external = await startMockExternal({ port: 0 });
      const env = cliEnv(h, {
        KAFKA_BROKERS: kafka.brokers,
        LOG_LEVEL: 'info',
        EXTERNAL_URL: external.url,
        KAFKA_ENRICHED_TOPIC: ENRICHED,
      });
      const worker = cases.track(await startWorker(env));
      const client = new Kafka({ brokers: kafka.brokers.split(','), logLevel: logLevel.NOTHING });
      const producer = client.producer();
      await producer.connect();
      const count = async () =>
        Number((await h.redis.client.get(`${h.redis.prefix}content:count:${CONTENT_IDS[0]}`)) ?? 0);
      try {
        // Old cluster at high LSNs, then (one send, so one fetch) its last copies and the new
        // cluster's first events at low LSNs.
        await producer.send({
          topic: EVENTS_TOPIC,
          messages: messages('postgres:111', 0x50_000_000, [1, 2, 3]),
        });
        await waitFor('the old cluster counted', async () => (await count()) === 3, 30_000);
        await producer.send({
          topic: EVENTS_TOPIC,
          messages: [
            ...messages('postgres:111', 0x50_000_000, [2, 3]),
            ...messages('postgres:222', 0x1_000_000, [4, 5, 6]),
          ],
        });
        await waitFor('the new cluster counted', async () => (await count()) === 6, 30_000);
        // The new cluster's own re-sent copies (a capture restart), and its next events.
        await producer.send({
          topic: EVENTS_TOPIC,
          messages: [
            ...messages('postgres:222', 0x1_000_000, [5, 6]),
            ...messages('postgres:222', 0x1_000_000, [7]),
          ],
        });
        await waitFor('the next event counted', async () => (await count()) === 7, 30_000);
      } finally {
        await producer.disconnect();
      }
      await waitFor(
        'the external system has all 7',
        async () => {
          const stats = (await (await fetch(`${external.url}_stats`)).json()) as { uniqueEventIds: number };
          return stats.uniqueEventIds === 7;
        },
        30_000,
      );
      assert.equal(await stopCli(worker), 0, tail(worker));
      await external.close();
      assert.deepEqual(await topicEventIds(kafka.brokers, ENRICHED, 7), [1, 2, 3, 4, 5, 6, 7]);
      assert.equal(await count(), 7, 'copies counted once');
      const rows = await duckdbQuery(
        h.duckdbFile,
        'SELECT event_id FROM engagement.events_enriched ORDER BY 1',
      );
      assert.deepEqual(
        rows.map((r) => Number(r.event_id)),
        [1, 2, 3, 4, 5, 6, 7],
      );
      const watermarks = await h.redis.client.keys(`${h.redis.prefix}pipeline:watermark:kafka:*`);
      assert.equal(watermarks.length, 1);
      assert.match((await h.redis.client.get(watermarks[0]))!, /\|postgres:222$/);
    });
  },
);
