import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import * as fx from '../fixtures/debezium.js';
import { spawnCli, type CliProcess } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import {
  realKafkaUnavailable,
  saveOutputs,
  startKafkaCluster,
  type KafkaCluster,
} from '../helpers/kafka-cluster.js';
import { killAll, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { cliEnv, createHarness, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = realKafkaUnavailable();

/**
 * Two workers in one consumer group need a real group rebalance: on librdkafka's mock
 * cluster every rebalance waits session.timeout - 1 s and a slow member can miss it, so
 * these run on one real KRaft broker (the Debezium fixture set of kafka-debezium.test.ts).
 */
describe('one consumer group, two workers, on a real Kafka broker', { skip }, () => {
  let cluster: KafkaCluster;
  let h: Harness;
  let env: Record<string, string>;
  const procs: CliProcess[] = [];

  before(async () => {
    cluster = await startKafkaCluster(1);
    h = await createHarness();
    const client = new Kafka({ brokers: cluster.brokers.split(','), logLevel: logLevel.NOTHING });
    const admin = client.admin();
    await admin.connect();
    await admin.createTopics({
      waitForLeaders: true,
      topics: [fx.CONTENT_TOPIC, fx.EVENTS_TOPIC].map((topic) => ({
        topic,
        numPartitions: 4,
        replicationFactor: 1,
      })),
    });
    await admin.disconnect();
    await fx.publishFixtures(cluster.brokers);
    env = cliEnv(h, { KAFKA_BROKERS: cluster.brokers, LOG_LEVEL: 'info' });
  });
  // A test that fails half way must not leave a worker holding the DuckDB file for the next one.
  afterEach(() => killAll(procs));
  after(async () => {
    await killAll(procs);
    saveOutputs('kafka-group', procs);
    await h?.cleanup();
    await cluster?.stop();
  });

  it('a second worker with DuckDB in the same group refuses with one line and writes nothing', async () => {
    const args = ['--group', 'dbz-2', '--format', 'debezium', '--topic-prefix', fx.PREFIX];
    const first = await startWorker(env, args);
    procs.push(first);
    const other = `${h.duckdbFile}.other`;
    const second = spawnCli(['work', '--from-kafka', ...args], { ...env, ANALYTICS_URL: `duckdb:${other}` });
    procs.push(second);
    await waitFor('the second worker exits', () => second.child.exitCode !== null, 120_000);
    const code = second.child.exitCode;
    const out = second.output();
    assert.equal(code, 2, out.slice(-2000));
    assert.match(out, /engagement: EP_ERR_DUCKDB_SHARED_GROUP: .*group 'dbz-2'.*\(fix: /);
    // ... also past the leader's own check (SHARED_CHECK_MS, 20 s): the refusing joiner has left.
    await sleep(25_000);
    assert.equal(first.child.exitCode, null, 'the first worker keeps running');
    const rows = await duckdbQuery(other, 'SELECT count(*) AS n FROM engagement.events_enriched').catch(
      () => [{ n: '0' }],
    );
    assert.equal(String(rows[0].n), '0', 'the refusing worker wrote nothing');
    assert.equal(await stopCli(first), 0, first.output().slice(-2000));
  });

  it('a DuckDB worker alone in its group refuses when another member joins later', async () => {
    const args = ['--group', 'dbz-4', '--format', 'debezium', '--topic-prefix', fx.PREFIX];
    const first = await startWorker(env, args);
    procs.push(first);
    // Any other member of the group (here a bare consumer; in the audit, a ClickHouse worker)
    // takes partitions this worker's DuckDB file then misses.
    const other = new Kafka({ brokers: cluster.brokers.split(','), logLevel: logLevel.NOTHING }).consumer({
      groupId: 'dbz-4',
      sessionTimeout: 10_000,
      heartbeatInterval: 1_000,
    });
    await other.connect();
    try {
      await other.subscribe({ topic: fx.EVENTS_TOPIC, fromBeginning: true });
      await other.run({ autoCommit: false, eachMessage: async () => undefined });
      await waitFor('the DuckDB worker exits', () => first.child.exitCode !== null, 120_000);
      const out = first.output();
      assert.equal(first.child.exitCode, 2, out.slice(-2000));
      assert.match(
        out,
        /engagement: EP_ERR_DUCKDB_SHARED_GROUP: 1 other worker\(s\) joined group 'dbz-4'.*\(fix: /,
      );
    } finally {
      await other.disconnect();
    }
  });

  it('a DuckDB worker restarted right after kill -9 takes its group back: its dead member is not another worker', async () => {
    const args = ['--group', 'dbz-3', '--format', 'debezium', '--topic-prefix', fx.PREFIX];
    const crashed = await startWorker(env, args);
    procs.push(crashed);
    crashed.child.kill('SIGKILL');
    await crashed.exited;
    // The broker still counts the dead member until its session times out; the restarted
    // worker must wait for that, then lead the group alone (not refuse as if shared).
    const restarted = await startWorker(env, args);
    procs.push(restarted);
    assert.doesNotMatch(restarted.output(), /EP_ERR_DUCKDB_SHARED_GROUP/, restarted.output().slice(-2000));
    // The leader flag decides the refusal, synchronously, in the same group-join event.
    assert.match(restarted.output(), /"leader":true,"msg":"joined group dbz-3: partitions 0,1,2,3"/);
    assert.equal(restarted.child.exitCode, null, 'the restarted worker keeps running');
    assert.equal(await stopCli(restarted), 0, restarted.output().slice(-2000));
  });
});
