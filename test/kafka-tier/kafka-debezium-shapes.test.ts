import assert from 'node:assert/strict';
import path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { enrichedRows, expectedRow, SHAPES } from '../fixtures/source-shapes.js';
import type { CliProcess } from '../helpers/cli.js';
import { kcatAvailable, startKafkaMock, type KafkaMock } from '../helpers/kafka-mock.js';
import { startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { cliEnv, createHarness, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = kcatAvailable()
  ? false
  : 'kcat (librdkafka mock cluster) is not installed: apt-get install kcat';

describe("work --format debezium on a user's own tables (librdkafka mock cluster)", { skip }, () => {
  let procs: CliProcess[] = [];
  let harnesses: Harness[] = [];
  let clusters: KafkaMock[] = [];
  async function cluster(): Promise<KafkaMock> {
    const kafka = await startKafkaMock(1);
    clusters.push(kafka);
    return kafka;
  }

  afterEach(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    for (const h of harnesses) await h.cleanup();
    for (const k of clusters) await k.stop();
    procs = [];
    harnesses = [];
    clusters = [];
  });

  const integer = SHAPES.find((s) => s.env.EVENTS_TABLE)!;
  it(`work --format debezium: ${integer.name}`, async () => {
    const kafka = await cluster();
    const h = await createHarness({ tables: integer.tables, settings: integer.settings });
    harnesses.push(h);
    const client = new Kafka({ brokers: kafka.brokers.split(','), logLevel: logLevel.NOTHING });
    const producer = client.producer();
    await producer.connect();
    const envelope = (after: Record<string, unknown>, op: string) =>
      JSON.stringify({ before: null, after, source: { ts_ms: 1793000010123 }, op, ts_ms: 1793000010200 });
    await producer.send({
      topic: `dbz.${integer.contentTopic}`,
      messages: [{ key: JSON.stringify({ content_id: 1 }), value: envelope(integer.debezium.content, 'r') }],
    });
    await producer.send({
      topic: `dbz.${integer.eventsTopic}`,
      messages: [
        { key: JSON.stringify({ play_id: 41 }), value: envelope(integer.debezium.event(41, 7000), 'c') },
      ],
    });
    await producer.disconnect();
    const duckdbFile = path.join(path.dirname(h.duckdbFile), 'dbz.duckdb');
    const env = cliEnv(h, {
      ...integer.env,
      KAFKA_BROKERS: kafka.brokers,
      ANALYTICS_URL: `duckdb:${duckdbFile}`,
      LOG_LEVEL: 'info',
    });
    const worker = await startWorker(env, [
      '--group',
      'shapes-dbz',
      '--format',
      'debezium',
      '--topic-prefix',
      'dbz',
    ]);
    procs.push(worker);
    await waitFor(
      'the Debezium event counted',
      async () => (await h.redis.client.get(`${h.redis.prefix}content:count:1`)) === '1',
      60_000,
    );
    assert.match(worker.output(), /topic dbz\.media\.plays/);
    assert.equal(await stopCli(worker), 0, worker.output().slice(-3000));
    assert.deepEqual(await enrichedRows(duckdbFile), [expectedRow(integer)]);
  });
});
