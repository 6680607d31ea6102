import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import * as fx from '../fixtures/debezium.js';
import type { CliProcess } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { kcatAvailable, startKafkaMock, type KafkaMock } from '../helpers/kafka-mock.js';
import { killAll, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { cliEnv, createHarness, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = kcatAvailable()
  ? false
  : 'kcat (librdkafka mock cluster) is not installed: apt-get install kcat';

const WORKER_ARGS = ['--group', 'dbz-1', '--format', 'debezium', '--topic-prefix', fx.PREFIX];

// One worker per group here: a group of two (the DuckDB refusal) rebalances on a real broker,
// in kafka-group.kafka.test.ts. The mock holds every rebalance for session.timeout - 1 s.
describe('work --format debezium: a Debezium Postgres connector fixture set', { skip }, () => {
  let kafka: KafkaMock;
  let h: Harness;
  let env: Record<string, string>;
  const procs: CliProcess[] = [];

  before(async () => {
    kafka = await startKafkaMock(3);
    h = await createHarness();
    await fx.publishFixtures(kafka.brokers);
    env = cliEnv(h, { KAFKA_BROKERS: kafka.brokers, LOG_LEVEL: 'info' });
  });
  // A test that fails half way must not leave a worker holding the DuckDB file for the next one.
  afterEach(() => killAll(procs));
  after(async () => {
    await killAll(procs);
    await h?.cleanup();
    await kafka?.stop();
  });

  it('enriches c/r events of every shape, counts u/d, skips tombstones, dead-letters malformed messages', async () => {
    const worker = await startWorker(env, WORKER_ARGS);
    procs.push(worker);
    await waitFor(
      'the event after the malformed ones in Redis',
      async () => (await h.redis.client.get(`${h.redis.prefix}content:count:${fx.UNKNOWN}`)) === '1',
      30_000,
      100,
    );
    const dead = await h.sql<{ source: string; last_error: string; sink: string; base64: string | null }>(
      `SELECT sink, source, last_error, event->>'valueBase64' AS base64
         FROM engagement_pipeline.dead_letters ORDER BY id`,
    );
    assert.equal(dead.length, 4, JSON.stringify(dead));
    assert.ok(
      dead.every((d) => d.sink === 'source' && /^dbz\.public\.engagement_events\/0@\d+$/.test(d.source)),
    );
    assert.match(dead[0].last_error, /not JSON/);
    assert.match(dead[1].last_error, /timestamp 'infinity'/);
    assert.match(dead[2].last_error, /not JSON/);
    assert.equal(
      Buffer.from(String(dead[2].base64), 'base64').toString('utf8'),
      'x\u0000\u0001',
      'kept exactly',
    );
    assert.match(dead[3].last_error, /no id field: neither a Debezium change event of engagement_events/);

    // Redis: the updates and deletes of events did not count; 1 and 4 on C1.
    const counts = await Promise.all(
      [fx.C1, fx.C2, fx.C3, fx.C4].map((id) => h.redis.client.get(`${h.redis.prefix}content:count:${id}`)),
    );
    assert.deepEqual(counts, ['2', '1', '1', null]);
    assert.equal(await stopCli(worker), 0, worker.output().slice(-3000));

    const rows = await duckdbQuery(
      h.duckdbFile,
      `SELECT event_id, content_type, length_seconds, engagement_seconds::VARCHAR AS secs,
              engagement_pct::VARCHAR AS pct, strftime(event_ts, '%Y-%m-%dT%H:%M:%S.%f') AS ts,
              strftime(committed_at, '%Y-%m-%dT%H:%M:%S.%f') AS committed, raw_payload::VARCHAR AS raw
       FROM engagement.events_enriched ORDER BY event_id`,
    );
    const pick = (r: Record<string, unknown>) => [
      r.event_id,
      r.content_type,
      r.length_seconds,
      r.secs,
      r.pct,
    ];
    assert.deepEqual(rows.map(pick), [
      ['1', 'video', 300, '7.000', '0.02'], // 7,000 ms of 300 s
      ['2', 'podcast', 600, '90.000', '0.15'], // length from the u event
      ['3', 'newsletter', 300, '1.500', '0.01'], // decimal-encoded length; 0.005 rounds half away from zero
      ['4', 'video', 300, null, null], // negative duration: derived fields NULL
      ['7', null, null, '1.000', null], // content unknown to Kafka and Postgres
    ]);
    assert.equal(rows[0].ts, '2026-11-02T10:15:30.123456', 'ZonedTimestamp keeps microseconds');
    assert.equal(rows[0].committed, new Date(1793000010123).toISOString().replace('Z', '').padEnd(26, '0'));
    assert.equal(rows[3].committed, new Date(1793000013000).toISOString().replace('Z', '').padEnd(26, '0'));
    assert.deepEqual(JSON.parse(String(rows[0].raw)), { n: 1 }, 'io.debezium.data.Json decoded');
  });

  it("a connector's re-sends (same source.lsn, new Kafka offsets) change nothing; the next insert counts once", async () => {
    // After a connector restart Debezium re-sends from its last committed offset: the same
    // records (the malformed ones aside), at new offsets, then what is new.
    const resent = fx.eventMessages.filter((m) => !['{"id":5}', '{"id":6}'].includes(String(m.key)));
    await fx.publish(kafka.brokers, [[fx.EVENTS_TOPIC, [...resent, fx.nextInsert(8, fx.C3)]]]);
    const worker = await startWorker(env, WORKER_ARGS);
    procs.push(worker);
    await waitFor(
      'event 8 in Redis',
      async () => (await h.redis.client.get(`${h.redis.prefix}content:count:${fx.C3}`)) === '2',
      30_000,
      100,
    );
    assert.equal(await stopCli(worker), 0, worker.output().slice(-3000));
    const counts = await Promise.all(
      [fx.C1, fx.C2, fx.C3, fx.C4, fx.UNKNOWN].map((id) =>
        h.redis.client.get(`${h.redis.prefix}content:count:${id}`),
      ),
    );
    assert.deepEqual(counts, ['2', '1', '2', null, '1']);
    const watermark = await h.redis.client.get(
      `${h.redis.prefix}pipeline:watermark:kafka:${fx.PREFIX}.public.engagement_events:0`,
    );
    assert.match(String(watermark), /^L[0-9a-f]{32}:$/, "the partition's position is the source LSN");
    const rows = await duckdbQuery(
      h.duckdbFile,
      'SELECT count(*)::VARCHAR AS n, count(DISTINCT event_id)::VARCHAR AS d FROM engagement.events_enriched',
    );
    assert.deepEqual(rows[0], { n: '6', d: '6' });
    const dead = await h.sql<{ n: string }>(
      'SELECT count(*)::text AS n FROM engagement_pipeline.dead_letters',
    );
    assert.equal(dead[0].n, '4', 'the four malformed messages of the first run, none added');
  });
});
