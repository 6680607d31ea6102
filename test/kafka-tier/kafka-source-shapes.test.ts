import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { enrichedRows, expectedRow, SHAPES } from '../fixtures/source-shapes.js';
import type { CliProcess } from '../helpers/cli.js';
import { kcatAvailable, startKafkaMock, type KafkaMock } from '../helpers/kafka-mock.js';
import { startCapture, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { cliEnv, createHarness, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = kcatAvailable()
  ? false
  : 'kcat (librdkafka mock cluster) is not installed: apt-get install kcat';

describe('scale-out on every source shape (librdkafka mock cluster)', { skip }, () => {
  let procs: CliProcess[] = [];
  let harnesses: Harness[] = [];
  let clusters: KafkaMock[] = [];
  /** A cluster per case: the cases' topics (engagement.events) must not mix. */
  async function cluster(): Promise<KafkaMock> {
    const kafka = await startKafkaMock(1);
    clusters.push(kafka);
    return kafka;
  }

  // After each case: its slot (named like every case's) must be gone before the next case's migrate.
  afterEach(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    for (const h of harnesses) await h.cleanup();
    for (const k of clusters) await k.stop();
    procs = [];
    harnesses = [];
    clusters = [];
  });

  for (const [i, shape] of SHAPES.entries()) {
    it(`capture -> work (native): ${shape.name}`, async () => {
      const kafka = await cluster();
      const h = await createHarness({ tables: shape.tables, settings: shape.settings });
      harnesses.push(h);
      await h.sql(shape.content);
      const env = cliEnv(h, { ...shape.env, KAFKA_BROKERS: kafka.brokers, LOG_LEVEL: 'info' });
      const capture = await startCapture(env);
      procs.push(capture);
      const worker = await startWorker(env, ['--group', `shapes-${i}`]);
      procs.push(worker);
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
