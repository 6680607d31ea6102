import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { clientConfig } from '../../src/db/postgres.js';
import { CONTENT_TOPIC, EVENTS_TOPIC } from '../../src/kafka/client.js';
import { runCli, type CliProcess } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { kcatAvailable } from '../helpers/kafka-mock.js';
import { kafkaCasesSetup, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { cliEnv, CONTENT_IDS, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = kcatAvailable()
  ? false
  : 'kcat (librdkafka mock cluster) is not installed: apt-get install kcat';

/** A content row in Postgres that no message of engagement.content carries: the worker must look it up. */
const LOOKED_UP = '30000000-0000-4000-8000-000000000001';
/** On engagement.content, so the topic exists and the feed has something to catch up on. */
const ON_TOPIC = '30000000-0000-4000-8000-000000000002';

async function seedLookedUp(h: Harness): Promise<void> {
  await h.sql(
    `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
     VALUES ($1, 'looked-up', 'Looked up', 'video', 300, now())`,
    [LOOKED_UP],
  );
}

/**
 * Publishes what `capture --to-kafka` would (native format, keyed by content_id): one content
 * row for ON_TOPIC, then one event per `[eventId, contentId]` at increasing source positions.
 */
async function publishNative(brokers: string, events: [id: number, contentId: string][]): Promise<void> {
  const client = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const producer = client.producer();
  await producer.connect();
  try {
    await producer.send({
      topic: CONTENT_TOPIC,
      messages: [
        {
          key: ON_TOPIC,
          value: JSON.stringify({
            id: ON_TOPIC,
            slug: 'on-topic',
            title: 'On topic',
            content_type: 'podcast',
            length_seconds: 600,
          }),
        },
      ],
    });
    const committedAt = new Date().toISOString();
    await producer.send({
      topic: EVENTS_TOPIC,
      messages: events.map(([id, contentId]) => ({
        key: contentId,
        value: JSON.stringify({
          v: 1,
          lsn: `0/${(0x1_000_000 + id * 0x100).toString(16).toUpperCase()}`,
          idx: 0,
          committed_at: committedAt,
          row: {
            id,
            content_id: contentId,
            user_id: '40000000-0000-4000-8000-000000000001',
            event_type: 'play',
            event_ts: committedAt,
            duration_ms: 6000,
            device: 'ios',
            raw_payload: { n: id },
            raw_payload_json: `{"n": ${id}}`,
          },
        }),
      })),
    });
  } finally {
    await producer.disconnect();
  }
}

/** A session holding ACCESS EXCLUSIVE on `content` (every lookup waits on it) until `release()`. */
async function lockContent(h: Harness): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client(clientConfig(h.databaseUrl, 'test-lock-holder'));
  client.on('error', () => undefined);
  await client.connect();
  await client.query('BEGIN');
  await client.query('LOCK TABLE content IN ACCESS EXCLUSIVE MODE');
  return {
    release: async () => {
      await client.query('ROLLBACK');
      await client.end();
    },
  };
}

/** True while a session of the worker waits for a lock on `content` (a lookup in progress). */
async function lookupWaiting(h: Harness): Promise<boolean> {
  const rows = await h.sql(
    `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE NOT l.granted AND l.relation = 'content'::regclass AND a.application_name = 'engagement-worker'`,
  );
  return rows.length > 0;
}

async function redisCount(h: Harness, contentId: string): Promise<string | null> {
  return h.redis.client.get(`${h.redis.prefix}content:count:${contentId}`);
}

async function analyticsRows(h: Harness): Promise<Record<string, unknown>[]> {
  return duckdbQuery(
    h.duckdbFile,
    `SELECT event_id, content_id, content_type, length_seconds, engagement_seconds::VARCHAR AS secs,
            engagement_pct::VARCHAR AS pct
       FROM engagement.events_enriched ORDER BY event_id`,
  );
}

const tail = (p: CliProcess) => p.output().slice(-4000);

describe(
  'work --from-kafka: content lookups, the default group, status, shutdown (librdkafka mock cluster)',
  { skip },
  () => {
    // A cluster and a database per case: the cases' topics and groups must not mix.
    const cases = kafkaCasesSetup();

    it('a failing content lookup holds the partition well past the old 6 s budget; the event then arrives with its content, once', async () => {
      const kafka = await cases.cluster();
      const h = await cases.harness();
      await seedLookedUp(h);
      // Every lookup attempt fails on the locked table rather than waits for it (the lookup bounds
      // its lock wait to 1 s itself; this lock_timeout on the worker's sessions, as a DBA may set
      // one, does the same for a worker that predates that): the retry is what holds the partition.
      const url = new URL(h.databaseUrl);
      url.searchParams.set('options', '-c lock_timeout=500');
      const env = cliEnv(h, {
        DATABASE_URL: url.toString(),
        KAFKA_BROKERS: kafka.brokers,
        LOG_LEVEL: 'info',
        LAG_WARN_SECONDS: '3',
        // Given a port, a worker serves /healthz, /readyz and /metrics.
        PORT: '0',
      });
      const worker = cases.track(await startWorker(env, ['--group', 'lookup']));
      await waitFor(
        'the worker serving',
        () => /worker health and metrics at \S+/.test(worker.output()),
        30_000,
      );
      const base = /worker health and metrics at (\S+)/.exec(worker.output())![1];

      const lock = await lockContent(h);
      let locked = true;
      try {
        await publishNative(kafka.brokers, [[1, LOOKED_UP]]);
        await waitFor('the worker looking the content up', () => lookupWaiting(h), 60_000, 20);
        // Previously: six attempts over ~6 s (at most ~15 s with these lock waits), then the event
        // was enriched with NULL content and its offset committed.
        const heldUntil = Date.now() + 16_000;
        while (Date.now() < heldUntil) {
          assert.equal(await redisCount(h, LOOKED_UP), null, 'nothing delivered while the lookup fails');
          assert.equal(worker.child.exitCode, null, tail(worker));
          await new Promise((r) => setTimeout(r, 500));
        }
        assert.match(worker.output(), /content lookup failed, retrying while the stream waits/);
        // Held before its sinks, the event is pending for them: status shows them behind, with
        // its age as their lag (it showed them up, lag 0, however long the worker was stuck).
        const { code, output } = await runCli(['status', '--json'], env);
        assert.equal(code, 0, output);
        const held = (
          JSON.parse(output.slice(output.indexOf('{'))) as {
            sinks: { sink: string; stream: string; state: string | null; lagSeconds: number | null }[];
          }
        ).sinks.filter((s) => s.stream === 'kafka:lookup');
        assert.deepEqual(held.map((s) => s.sink).sort(), ['analytics', 'redis'], output);
        for (const s of held) {
          assert.equal(s.state, 'behind', JSON.stringify(s));
          assert.ok((s.lagSeconds ?? 0) >= 10, JSON.stringify(s));
        }
        const ready = await fetch(new URL('readyz', base));
        assert.equal(ready.status, 503);
        assert.match(JSON.stringify(await ready.json()), /sink redis behind: lag \d/);
        const metrics = await (await fetch(new URL('metrics', base))).text();
        assert.match(metrics, /^engagement_sink_lag_seconds\{sink="redis"\} \d/m);
        assert.equal((await fetch(new URL('healthz', base))).status, 200);
        await lock.release();
        locked = false;
      } finally {
        if (locked) await lock.release();
      }

      await waitFor(
        'the event counted once the lock is gone',
        async () => (await redisCount(h, LOOKED_UP)) === '1',
        30_000,
      );
      assert.match(worker.output(), /content lookup succeeded after retries/);
      await waitFor('ready again', async () => (await fetch(new URL('readyz', base))).status === 200, 30_000);
      // The heartbeat ran during the lookup: the worker kept its membership (one join only).
      assert.equal([...worker.output().matchAll(/joined group lookup/g)].length, 1, tail(worker));
      // Its port taken, a second worker says so before it joins the group (no rebalance).
      const port = new URL(base).port;
      const second = await runCli(['work', '--from-kafka', '--group', 'lookup'], { ...env, PORT: port });
      assert.equal(second.code, 2, second.output);
      assert.match(second.output, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use`));
      assert.doesNotMatch(second.output, /joined group/);
      // Draining: not ready.
      worker.child.kill('SIGTERM');
      // Asked once the worker has taken the signal (it logs 'draining' just before stopping);
      // asked at once, the request could beat the signal and find it ready (seen in CI).
      await waitFor('draining', () => /"msg":"draining"/.test(worker.output()), 10_000, 5);
      const draining = await fetch(new URL('readyz', base)).catch(() => null);
      if (draining) assert.equal(draining.status, 503);
      assert.equal((await worker.exited).code, 0, tail(worker));

      assert.deepEqual(await analyticsRows(h), [
        {
          event_id: '1',
          content_id: LOOKED_UP,
          content_type: 'video',
          length_seconds: 300,
          secs: '6.000',
          pct: '0.02',
        },
      ]);
      assert.equal(await redisCount(h, LOOKED_UP), '1');
    });

    it("'work --from-kafka' without --group consumes as group 'engagement'; status lists its sinks under kafka:engagement", async () => {
      const kafka = await cases.cluster();
      const h = await cases.harness();
      await seedContent(h);
      const env = cliEnv(h, { KAFKA_BROKERS: kafka.brokers, LOG_LEVEL: 'info' });
      const worker = cases.track(await startWorker(env));
      assert.match(worker.output(), /joined group engagement/);
      // startWorker returns at the join, which kafkajs logs before `work` prints its line.
      await waitFor(
        'the running line',
        () => /engagement worker running: group engagement,/.test(worker.output()),
        20_000,
      );

      await publishNative(kafka.brokers, [
        [1, CONTENT_IDS[0]],
        [2, ON_TOPIC],
      ]);
      await waitFor(
        'both events counted',
        async () => (await redisCount(h, CONTENT_IDS[0])) === '1' && (await redisCount(h, ON_TOPIC)) === '1',
        30_000,
      );

      // While the worker runs: its sinks, their state and lag, under the stream kafka:engagement.
      type StatusSink = {
        sink: string;
        stream: string;
        state: string | null;
        lagSeconds: number | null;
        eventsTotal: number;
      };
      let sinks: StatusSink[] = [];
      await waitFor(
        'status --json listing the worker group sinks with both events',
        async () => {
          const { code, output } = await runCli(['status', '--json'], env);
          assert.equal(code, 0, output);
          const report = JSON.parse(output.slice(output.indexOf('{'))) as { sinks: StatusSink[] };
          sinks = report.sinks.filter((s) => s.stream === 'kafka:engagement');
          return sinks.length === 2 && sinks.every((s) => s.eventsTotal === 2);
        },
        30_000,
        500,
      );
      assert.deepEqual(sinks.map((s) => s.sink).sort(), ['analytics', 'redis']);
      for (const s of sinks) {
        assert.equal(s.state, 'up', JSON.stringify(s));
        assert.ok(typeof s.lagSeconds === 'number' && s.lagSeconds >= 0, JSON.stringify(s));
      }
      const text = await runCli(['status'], env);
      assert.equal(text.code, 0, text.output);
      assert.match(text.output, /redis \[kafka:engagement\] up/);
      assert.match(text.output, /analytics \[kafka:engagement\] up/);

      assert.equal(await stopCli(worker), 0, tail(worker));
      const rows = await analyticsRows(h);
      assert.deepEqual(
        rows.map((r) => [r.event_id, r.content_type, r.length_seconds]),
        [
          ['1', 'video', 300], // looked up in Postgres
          ['2', 'podcast', 600], // from engagement.content
        ],
      );
    });

    it('SIGTERM while a lookup waits on locked content: exits within SHUTDOWN_TIMEOUT_MS, offset uncommitted, delivered after a restart', async () => {
      const kafka = await cases.cluster();
      const h = await cases.harness();
      await seedLookedUp(h);
      // The default session settings: no lock_timeout, no statement_timeout.
      const env = cliEnv(h, { KAFKA_BROKERS: kafka.brokers, LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: '6000' });
      const first = cases.track(await startWorker(env));

      const lock = await lockContent(h);
      let locked = true;
      try {
        await publishNative(kafka.brokers, [[1, LOOKED_UP]]);
        await waitFor('the worker looking the content up', () => lookupWaiting(h), 60_000, 20);
        // Past the first failed attempt, and signalled while an attempt waits on the lock.
        await waitFor(
          'a failed lookup',
          () => /content lookup failed, retrying/.test(first.output()),
          30_000,
          20,
        );
        await waitFor('the next attempt waiting on the lock', () => lookupWaiting(h), 30_000, 10);

        const signalled = Date.now();
        first.child.kill('SIGTERM');
        const hardStop = setTimeout(() => first.child.kill('SIGKILL'), 30_000);
        const { code, signal } = await first.exited;
        clearTimeout(hardStop);
        const tookMs = Date.now() - signalled;
        assert.equal(signal, null, `killed: ${tail(first)}`);
        assert.equal(code, 0, tail(first));
        assert.ok(tookMs < 6_000, `stopped after ${tookMs} ms (SHUTDOWN_TIMEOUT_MS 6000):\n${tail(first)}`);
        assert.equal(await redisCount(h, LOOKED_UP), null, 'nothing delivered before the stop');
        assert.match(
          first.output(),
          /shutdown: 1 messages of engagement\.events\/\d were waiting for a content lookup/,
        );
        assert.doesNotMatch(first.output(), /Error when calling eachBatch/);
        await lock.release();
        locked = false;
      } finally {
        if (locked) await lock.release();
      }

      // The offset was not committed: the next worker of the group re-reads the event.
      const second = cases.track(await startWorker(env));
      await waitFor(
        'the event delivered after the restart',
        async () => (await redisCount(h, LOOKED_UP)) === '1',
        60_000,
      );
      assert.equal(await stopCli(second), 0, tail(second));
      const rows = await analyticsRows(h);
      assert.deepEqual(
        rows.map((r) => [r.event_id, r.content_type, r.length_seconds]),
        [['1', 'video', 300]],
      );
    });
  },
);
