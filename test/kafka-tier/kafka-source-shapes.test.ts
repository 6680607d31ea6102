import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { enrichedRows, expectedRow, SHAPES } from '../fixtures/source-shapes.js';
import { kcatAvailable } from '../helpers/kafka-mock.js';
import { kafkaCasesSetup, startCapture, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { cliEnv } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = kcatAvailable()
  ? false
  : 'kcat (librdkafka mock cluster) is not installed: apt-get install kcat';

describe('scale-out on every source shape (librdkafka mock cluster)', { skip }, () => {
  // A cluster per case: the cases' topics (engagement.events) must not mix.
  const cases = kafkaCasesSetup();

  for (const [i, shape] of SHAPES.entries()) {
    it(`capture -> work (native): ${shape.name}`, async () => {
      const kafka = await cases.cluster();
      const h = await cases.harness({ tables: shape.tables, settings: shape.settings });
      await h.sql(shape.content);
      const env = cliEnv(h, { ...shape.env, KAFKA_BROKERS: kafka.brokers, LOG_LEVEL: 'info' });
      const capture = cases.track(await startCapture(env));
      const worker = cases.track(await startWorker(env, ['--group', `shapes-${i}`]));
      await h.sql(shape.event, [7000]);
      await waitFor(
        'the event counted by the worker',
        async () => (await h.redis.client.get(`${h.redis.prefix}content:count:${shape.contentKey}`)) === '1',
        60_000,
      );
      assert.equal(await stopCli(worker), 0, worker.output().slice(-3000));
      assert.equal(await stopCli(capture), 0, capture.output().slice(-3000));
      assert.deepEqual(await enrichedRows(h.duckdbFile), [expectedRow(shape)]);
    });
  }
});
