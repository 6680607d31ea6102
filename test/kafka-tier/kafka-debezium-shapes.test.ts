import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { publish } from '../fixtures/debezium.js';
import { enrichedRows, expectedRow, SHAPES } from '../fixtures/source-shapes.js';
import { kcatAvailable } from '../helpers/kafka-mock.js';
import { kafkaCasesSetup, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { cliEnv } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = kcatAvailable()
  ? false
  : 'kcat (librdkafka mock cluster) is not installed: apt-get install kcat';

describe("work --format debezium on a user's own tables (librdkafka mock cluster)", { skip }, () => {
  const cases = kafkaCasesSetup();

  const integer = SHAPES.find((s) => s.env.EVENTS_TABLE)!;
  it(`work --format debezium: ${integer.name}`, async () => {
    const kafka = await cases.cluster();
    const h = await cases.harness({ tables: integer.tables, settings: integer.settings });
    const envelope = (after: Record<string, unknown>, op: string) =>
      JSON.stringify({ before: null, after, source: { ts_ms: 1793000010123 }, op, ts_ms: 1793000010200 });
    await publish(kafka.brokers, [
      [
        `dbz.${integer.contentTopic}`,
        [{ key: JSON.stringify({ content_id: 1 }), value: envelope(integer.debezium.content, 'r') }],
      ],
      [
        `dbz.${integer.eventsTopic}`,
        [{ key: JSON.stringify({ play_id: 41 }), value: envelope(integer.debezium.event(41, 7000), 'c') }],
      ],
    ]);
    const duckdbFile = path.join(path.dirname(h.duckdbFile), 'dbz.duckdb');
    const env = cliEnv(h, {
      ...integer.env,
      KAFKA_BROKERS: kafka.brokers,
      ANALYTICS_URL: `duckdb:${duckdbFile}`,
      LOG_LEVEL: 'info',
    });
    const worker = cases.track(
      await startWorker(env, ['--group', 'shapes-dbz', '--format', 'debezium', '--topic-prefix', 'dbz']),
    );
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
