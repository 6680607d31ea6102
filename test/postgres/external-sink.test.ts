import { JsonText } from '../../src/domain/json-text.js';
import assert from 'node:assert/strict';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, beforeEach, describe, it } from 'node:test';
import type pg from 'pg';
import { pino, type Logger } from 'pino';
import { createPool } from '../../src/db/postgres.js';
import { STATE_SCHEMA_SQL } from '../../src/db/schema.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { loadConfig } from '../../src/config.js';
import { PipelineError } from '../../src/errors.js';
import { Fanout } from '../../src/pipeline/fanout.js';
import { policyFor } from '../../src/retry/error-policy.js';
import {
  startMockExternal,
  type MockStats,
  type RunningMockExternal,
} from '../../src/mock-external/server.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';
import { DeadLetterStore } from '../../src/state/dead-letter.js';
import { ExternalSink, SET_ASIDE, type ExternalSinkOptions } from '../../src/sinks/external/external-sink.js';
import { externalSinkFromConfig } from '../../src/sinks/factory.js';
import { closeServer, listen, readBody } from '../helpers/http-server.js';
import { freshDatabase, query } from '../helpers/postgres.js';
import { waitFor } from '../helpers/wait.js';
import { externalDeadLetters } from '../helpers/dead-letters.js';

const SECRET = 'test-secret-value';

let db: Awaited<ReturnType<typeof freshDatabase>>;
let pool: pg.Pool;
let store: DeadLetterStore;
let mock: RunningMockExternal;
const sinks: ExternalSink[] = [];

function event(id: number): EnrichedEvent {
  return {
    event_id: id,
    content_id: '00000000-0000-0000-0000-000000000001',
    user_id: null,
    event_type: 'play',
    event_ts: '2026-11-23T10:00:00.123456Z',
    duration_ms: 7000,
    device: 'ios',
    raw_payload: { note: 'ünïcode' },
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: 7,
    engagement_pct: 0.02,
    committed_at: '2026-11-23T10:00:00.200000Z',
    processed_at: '2026-11-23T10:00:00.300000Z',
  };
}

function batch(from: number, count: number): Batch {
  const ids = Array.from({ length: count }, (_, i) => from + i);
  return {
    seq: from,
    stream: 'test_slot',
    events: ids.map(event),
    positions: ids.map((id) => `0000000000000001:${id.toString(16).padStart(8, '0')}`),
    ackLsn: null,
  };
}

function captureLogger(): { logger: Logger; lines: { msg: string; level: number }[] } {
  const lines: { msg: string; level: number }[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

async function makeSink(
  over: Partial<ExternalSinkOptions> = {},
): Promise<{ sink: ExternalSink; metrics: Metrics }> {
  const metrics = over.metrics ?? createMetrics();
  const sink = new ExternalSink({
    url: mock.url,
    secret: SECRET,
    policy: 'best-effort',
    batchSize: 1,
    concurrency: 4,
    maxAttempts: 5,
    timeoutMs: 2000,
    deadLetters: store,
    metrics,
    logger: pino({ level: 'silent' }),
    backoffBaseMs: 2,
    backoffMaxMs: 20,
    breakerThreshold: 1000,
    breakerOpenMs: 50,
    ...over,
  });
  await sink.start();
  sinks.push(sink);
  return { sink, metrics };
}

async function stats(): Promise<MockStats> {
  return (await fetch(`${mock.url}_stats`)).json() as Promise<MockStats>;
}

async function control(body: object): Promise<void> {
  const res = await fetch(`${mock.url}_control`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(res.status, 200);
}

async function mockRequests(): Promise<
  { idempotencyKey: string; contentType: string; eventIds: number[]; status: number; signature: string }[]
> {
  return ((await (await fetch(`${mock.url}_requests?limit=1000`)).json()) as { requests: [] }).requests;
}

async function deadLetterRows() {
  return query<{
    sink: string;
    event_id: string;
    idempotency_key: string;
    event: EnrichedEvent;
    source: string;
    last_error: string;
    attempts: number;
  }>(
    db.url,
    `SELECT sink, event_id::text, idempotency_key, event, source, last_error, attempts
       FROM engagement_pipeline.dead_letters WHERE replayed_at IS NULL ORDER BY event_id::bigint`,
  );
}

/**
 * A receiver on a port of its own: `answer` gets the request's Idempotency-Key and event ids
 * and returns the status (and headers) to answer with, or a promise of them.
 */
async function receiver(
  answer: (
    key: string,
    ids: number[],
  ) =>
    | { status: number; headers?: Record<string, string> }
    | Promise<{ status: number; headers?: Record<string, string> }>,
): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    void readBody(req).then(async (body) => {
      const parsed = JSON.parse(body.toString()) as EnrichedEvent | EnrichedEvent[];
      const ids = (Array.isArray(parsed) ? parsed : [parsed]).map((e) => e.event_id as number);
      const { status, headers } = await answer(String(req.headers['idempotency-key']), ids);
      res.writeHead(status, headers).end(status === 200 ? '' : `{"error":"status ${status}"}`);
    });
  });
  const port = await listen(server, 0);
  return { url: `http://127.0.0.1:${port}/`, close: () => closeServer(server) };
}

/**
 * A receiver answering `state.status` (counting refusals) until a test sets it to 200, then
 * taking every request's events (in `taken`).
 */
async function switchableReceiver(status: number) {
  const state = { status, refused: 0 };
  const taken: number[] = [];
  const r = await receiver((_key, ids) => {
    if (state.status !== 200) {
      state.refused += 1;
      return { status: state.status };
    }
    taken.push(...ids);
    return { status: 200 };
  });
  return { r, state, taken };
}

/**
 * A receiver implementing the IETF Idempotency-Key draft: the first request with a key is
 * processed for `processingMs` (its events are taken then); a request with the same key
 * meanwhile is answered 409 Conflict, one after it gets the stored 200.
 */
async function idempotencyKeyReceiver(processingMs: number) {
  const state = new Map<string, 'processing' | 'done'>();
  const taken: number[] = [];
  const statuses: number[] = [];
  const server = await receiver(async (key, ids) => {
    const seen = state.get(key);
    const status = seen === 'processing' ? 409 : 200;
    statuses.push(status);
    if (seen !== undefined) return { status };
    state.set(key, 'processing');
    await sleep(processingMs);
    taken.push(...ids);
    state.set(key, 'done');
    return { status: 200 };
  });
  return { ...server, state, taken, statuses };
}

const ascending = (ids: number[]) => [...ids].sort((a, b) => a - b);
const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

async function counter(metrics: Metrics, name: 'deadLetters'): Promise<number> {
  return (await metrics[name].get()).values.find((v) => v.labels.sink === 'external')?.value ?? 0;
}

before(async () => {
  db = await freshDatabase('ext');
  await query(db.url, STATE_SCHEMA_SQL);
  pool = createPool(db.url);
  store = new DeadLetterStore(pool);
  mock = await startMockExternal({ port: 0, secret: SECRET });
});

after(async () => {
  await Promise.all(sinks.map((s) => s.stop()));
  await mock.close();
  await pool.end();
  await db.drop();
});

beforeEach(async () => {
  await fetch(`${mock.url}_reset`, { method: 'POST' });
  await pool.query('TRUNCATE engagement_pipeline.dead_letters');
});

describe('ExternalSink against the mock external system', () => {
  it('delivers N events exactly once, with Idempotency-Key, content type and a valid signature', async () => {
    const { sink, metrics } = await makeSink({ concurrency: 8 });
    await sink.write(batch(1, 50), new AbortController().signal);
    const s = await stats();
    assert.equal(s.requests, 50);
    assert.equal(s.uniqueEventIds, 50);
    assert.equal(s.duplicates, 0);
    assert.equal(s.signatureFailures, 0);
    for (const r of await mockRequests()) {
      assert.equal(r.status, 200);
      assert.equal(r.signature, 'ok');
      assert.equal(r.contentType, 'application/json');
      assert.deepEqual(r.eventIds, [Number(r.idempotencyKey)]);
    }
    const requests = await metrics.externalRequests.get();
    assert.equal(requests.values.find((v) => v.labels.outcome === 'accepted')?.value, 50);
    assert.equal((await deadLetterRows()).length, 0);
  });

  it('sends arrays of batchSize events keyed <first>-<last>', async () => {
    const { sink } = await makeSink({ batchSize: 4 });
    await sink.write(batch(101, 10), new AbortController().signal);
    const s = await stats();
    assert.equal(s.requests, 3);
    assert.equal(s.uniqueEventIds, 10);
    const keys = (await mockRequests()).map((r) => `${r.idempotencyKey}:${r.eventIds.join(',')}`).sort();
    assert.deepEqual(keys, ['101-104:101,102,103,104', '105-108:105,106,107,108', '109-110:109,110']);
  });

  it('a wrong secret is rejected (401) and dead-lettered, not retried', async () => {
    const { sink } = await makeSink({ secret: 'not-the-secret' });
    await sink.write(batch(1, 2), new AbortController().signal);
    const s = await stats();
    assert.equal(s.signatureFailures, 2);
    assert.equal(s.requests, 2);
    const rows = await deadLetterRows();
    assert.equal(rows.length, 2);
    assert.match(rows[0].last_error, /^401 Unauthorized/);
  });

  it('a short run of failures (under a second) is ridden out without a log line', async () => {
    await control({ mode: 'fail500', count: 15 });
    const { logger, lines } = captureLogger();
    const { sink } = await makeSink({ maxAttempts: 20, logger });
    await sink.write(batch(1, 30), new AbortController().signal);
    assert.equal((await stats()).uniqueEventIds, 30);
    assert.deepEqual(
      lines.filter((l) => /external system (failing|recovered)/.test(l.msg)).map((l) => l.msg),
      [],
    );
  });

  it('rides out a run of 500s without loss, logging one line per failure streak', async () => {
    // 100 ms per answer, 4 in flight: 60 failures last at least 1.5 s, an outage, not a blip.
    await control({ latencyMs: 100 });
    await control({ mode: 'fail500', count: 60 });
    const { logger, lines } = captureLogger();
    const { sink } = await makeSink({ maxAttempts: 20, logger });
    await sink.write(batch(1, 30), new AbortController().signal);
    await control({ latencyMs: 0 });
    const s = await stats();
    assert.equal(s.injected.fail500, 60);
    assert.equal(s.requests, 90);
    assert.equal(s.uniqueEventIds, 30);
    assert.equal((await deadLetterRows()).length, 0);
    const streak = lines.filter((l) => /external system (failing|recovered)/.test(l.msg)).map((l) => l.msg);
    assert.equal(streak.length, 2, streak.join(' | '));
    assert.match(streak[0], /^external system failing: 500 Internal Server Error/);
    assert.match(streak[1], /^external system recovered after \d+\.\d s$/);
  });

  it('reports the failure it rides out (Sink.failure) once it has lasted a second, and clears on success', async () => {
    await control({ mode: 'fail503' });
    const { sink } = await makeSink({
      policy: 'block',
      concurrency: 1,
      backoffBaseMs: 50,
      backoffMaxMs: 100,
    });
    assert.equal(sink.failure(), null);
    const ac = new AbortController();
    const write = sink.write(batch(1, 1), ac.signal);
    await sleep(300);
    assert.equal(sink.failure(), null, 'a failure of a few hundred ms is not an outage yet');
    await waitFor('the failure to be reported', () => sink.failure() !== null, 5_000);
    assert.match(sink.failure()!, /503/);
    await control({ mode: 'ok' });
    await write;
    assert.equal(sink.failure(), null);
  });

  it('honours Retry-After on 429', async () => {
    await control({ mode: 'rate429', count: 1, retryAfterSeconds: 1 });
    const { sink } = await makeSink();
    const started = Date.now();
    await sink.write(batch(1, 1), new AbortController().signal);
    const elapsed = Date.now() - started;
    // backoff alone would be < 20 ms here; only Retry-After explains the wait (the upper bound
    // only catches a wait far past it, with room for a busy machine)
    assert.ok(elapsed >= 950 && elapsed < 10_000, `elapsed ${elapsed} ms`);
    const s = await stats();
    assert.equal(s.requests, 2);
    assert.equal(s.injected.rate429, 1);
    assert.equal(s.uniqueEventIds, 1);
  });

  it('best-effort: after maxAttempts, events are dead-lettered with error and attempts', async () => {
    await control({ mode: 'fail500' });
    const { sink, metrics } = await makeSink({ maxAttempts: 3, concurrency: 2 });
    await sink.write(batch(7, 4), new AbortController().signal);
    assert.equal((await stats()).requests, 12);
    const rows = await deadLetterRows();
    assert.deepEqual(
      rows.map((r) => [r.sink, r.event_id, r.idempotency_key, r.event.event_id, r.attempts, r.source]),
      [7, 8, 9, 10].map((id) => [
        'external',
        String(id),
        String(id),
        id,
        3,
        `test_slot@0000000000000001:${id.toString(16).padStart(8, '0')}`,
      ]),
    );
    for (const r of rows) assert.match(r.last_error, /^500 Internal Server Error/);
    assert.deepEqual(rows[0].event, event(7));
    assert.equal(await counter(metrics, 'deadLetters'), 4);
    // Failing again for the same events updates the pending rows instead of duplicating them.
    await sink.write(batch(7, 4), new AbortController().signal);
    const again = await deadLetterRows();
    assert.equal(again.length, 4);
    assert.deepEqual(
      again.map((r) => r.attempts),
      [6, 6, 6, 6],
    );
  });

  it('best-effort: an open circuit fails fast (dead-letters unsent), a probe closes it', async () => {
    await control({ mode: 'fail500' });
    const metrics = createMetrics();
    const { sink } = await makeSink({
      metrics,
      breakerThreshold: 3,
      breakerOpenMs: 150,
      maxAttempts: 5,
      concurrency: 1,
    });
    await sink.write(batch(1, 20), new AbortController().signal);
    assert.equal((await stats()).requests, 3, 'only the attempts before the circuit opened reach the server');
    assert.equal(sink.circuitState, 'open');
    assert.equal((await metrics.circuitOpen.get()).values[0].value, 1);
    const rows = await deadLetterRows();
    assert.equal(rows.length, 20);
    assert.match(rows[1].last_error, /^circuit open \(last failure: 500 Internal Server Error/);
    assert.equal(rows[0].attempts, 3);
    assert.equal(rows[1].attempts, 0);

    await control({ mode: 'ok' });
    await new Promise((r) => setTimeout(r, 200));
    await sink.write(batch(101, 5), new AbortController().signal);
    assert.equal(sink.circuitState, 'closed');
    assert.equal((await metrics.circuitOpen.get()).values[0].value, 0);
    assert.equal((await stats()).uniqueEventIds, 5);
  });

  it('block: holds the write (no dead letters) until the external system recovers', async () => {
    await control({ mode: 'fail500' });
    const { sink } = await makeSink({
      policy: 'block',
      maxAttempts: 2,
      breakerThreshold: 5,
      breakerOpenMs: 50,
    });
    let settled = false;
    const write = sink.write(batch(1, 10), new AbortController().signal).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(settled, false, 'write must not resolve while the system fails');
    assert.equal((await deadLetterRows()).length, 0);
    assert.ok((await stats()).injected.fail500 >= 5);
    await control({ mode: 'ok' });
    await write;
    assert.equal((await stats()).uniqueEventIds, 10);
    assert.equal((await deadLetterRows()).length, 0);
  });

  it('block: an abort rejects the write and records nothing', async () => {
    await control({ mode: 'fail500' });
    const { sink } = await makeSink({ policy: 'block', maxAttempts: 1 });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 150);
    await assert.rejects(
      sink.write(batch(1, 3), ac.signal),
      (err: unknown) => err instanceof PipelineError && /aborted/.test(err.message),
    );
    assert.equal((await deadLetterRows()).length, 0);
  });

  it('a permanent 400 is dead-lettered at once, even under block, and the rest is delivered', async () => {
    await control({ mode: 'reject400', count: 1 });
    const { sink } = await makeSink({ policy: 'block', concurrency: 1 });
    await sink.write(batch(1, 3), new AbortController().signal);
    const s = await stats();
    assert.equal(s.requests, 3, 'no retry of the 400');
    const received = (await (await fetch(`${mock.url}_events`)).json()) as { ids: number[] };
    assert.deepEqual(received.ids, [2, 3]);
    const rows = await deadLetterRows();
    assert.deepEqual(
      rows.map((r) => [r.event_id, r.attempts]),
      [['1', 1]],
    );
    assert.match(rows[0].last_error, /^400 Bad Request: .*injected rejection/);
  });

  it('an array refused for some of its events (400) is split until they stand alone; the rest is delivered', async () => {
    // A receiver that refuses any body holding event 6 or 13, and records what it took.
    const refused = new Set([6, 13]);
    const taken: number[] = [];
    const keys: string[] = [];
    const server = http.createServer((req, res) => {
      void readBody(req).then((body) => {
        const ids = (JSON.parse(body.toString()) as EnrichedEvent[]).map((e) => e.event_id as number);
        keys.push(String(req.headers['idempotency-key']));
        if (ids.some((id) => refused.has(id))) {
          res.writeHead(400).end('{"error":"bad event"}');
          return;
        }
        taken.push(...ids);
        res.writeHead(200).end();
      });
    });
    const port = await listen(server, 0);
    try {
      const { sink } = await makeSink({ url: `http://127.0.0.1:${port}/`, batchSize: 8, concurrency: 2 });
      await sink.write(batch(1, 20), new AbortController().signal);
      assert.deepEqual(
        [...taken].sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => i + 1).filter((id) => !refused.has(id)),
      );
      const rows = await deadLetterRows();
      assert.deepEqual(
        rows.map((r) => r.event_id),
        ['6', '13'],
      );
      assert.match(rows[0].last_error, /^400 Bad Request/);
      // Each part is keyed by its own first and last event.
      assert.ok(keys.includes('1-8') && keys.includes('6-6') && keys.includes('13-13'), keys.join(' '));
    } finally {
      await closeServer(server);
    }
  });

  it('a receiver refusing every array (400) costs a bounded number of requests, not one per event', async () => {
    let requests = 0;
    const server = http.createServer((req, res) => {
      void readBody(req).then(() => {
        requests += 1;
        res.writeHead(400).end('{"error":"arrays not accepted"}');
      });
    });
    const port = await listen(server, 0);
    try {
      const { sink } = await makeSink({ url: `http://127.0.0.1:${port}/`, batchSize: 64, concurrency: 2 });
      await sink.write(batch(1, 64), new AbortController().signal);
      // The array, then at most 4 x log2(64) = 24 parts; every event dead-lettered once.
      assert.ok(requests <= 25, `${requests} requests`);
      assert.equal((await deadLetterRows()).length, 64);
    } finally {
      await closeServer(server);
    }
  });

  it('an array refused for the request itself (401) is not split', async () => {
    const { sink } = await makeSink({ secret: 'not-the-secret', batchSize: 8, concurrency: 1 });
    await sink.write(batch(1, 16), new AbortController().signal);
    assert.equal((await stats()).requests, 2, 'one request per array, no splitting');
    assert.equal((await deadLetterRows()).length, 16);
  });

  it('a timeout is retried like a network error', async () => {
    await control({ latencyMs: 400 });
    const { sink } = await makeSink({ timeoutMs: 100, maxAttempts: 2 });
    await sink.write(batch(1, 1), new AbortController().signal);
    const rows = await deadLetterRows();
    assert.equal(rows.length, 1);
    assert.equal(rows[0].last_error, 'timeout after 100 ms');
    assert.equal(rows[0].attempts, 2);
  });

  it('the mock does not count a request that was in flight across a reset', async () => {
    // What made the next test flaky (6 !== 5 unique keys): the timeout test's last request,
    // still sleeping in the mock, was counted after the next test's reset.
    await control({ latencyMs: 300 });
    const late = fetch(mock.url, {
      method: 'POST',
      headers: { 'idempotency-key': '1', 'content-type': 'application/json' },
      body: JSON.stringify(event(1)),
    });
    await waitFor('request in flight', async () => (await stats()).requests === 1);
    await fetch(`${mock.url}_reset`, { method: 'POST' });
    assert.equal((await late).status, 503);
    const s = await stats();
    assert.deepEqual([s.requests, s.uniqueKeys, s.uniqueEventIds], [0, 0, 0]);
  });

  it('a network error (nothing listening) is retried, then dead-lettered', async () => {
    const { sink } = await makeSink({ url: 'http://127.0.0.1:9/', maxAttempts: 2 });
    await sink.write(batch(1, 1), new AbortController().signal);
    const rows = await deadLetterRows();
    assert.equal(rows.length, 1);
    assert.match(rows[0].last_error, /^network error: .*ECONNREFUSED/);
  });

  it('re-writing the same batch repeats only the same Idempotency-Keys', async () => {
    const { sink } = await makeSink({ batchSize: 4 });
    await sink.write(batch(1, 20), new AbortController().signal);
    await sink.write(batch(1, 20), new AbortController().signal);
    const s = await stats();
    assert.equal(s.requests, 10);
    assert.equal(s.uniqueKeys, 5);
    assert.equal(s.duplicates, 5);
    assert.equal(s.uniqueEventIds, 20);
    assert.equal(s.duplicateEvents, 20);
  });
});

describe('ExternalSink: riding out an outage (retryForMs) and re-driving dead letters', () => {
  it('best-effort rides out a failure shorter than retryForMs: waits on the open circuit, dead-letters nothing', async () => {
    await control({ mode: 'fail503' });
    const { sink } = await makeSink({
      maxAttempts: 2,
      breakerThreshold: 3,
      breakerOpenMs: 100,
      retryForMs: 60_000,
    });
    let settled = false;
    const write = sink.write(batch(1, 10), new AbortController().signal).finally(() => (settled = true));
    await waitFor('the circuit opened', async () => sink.circuitState !== 'closed');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(settled, false, 'the write waits instead of dead-lettering');
    assert.equal((await deadLetterRows()).length, 0);
    await control({ mode: 'ok' });
    await write;
    assert.equal((await stats()).uniqueEventIds, 10);
    assert.equal((await deadLetterRows()).length, 0);
    assert.equal(sink.circuitState, 'closed');
  });

  it('best-effort dead-letters once the failure outlasts retryForMs, and not before', async () => {
    await control({ mode: 'fail503' });
    const { sink } = await makeSink({
      maxAttempts: 2,
      breakerThreshold: 3,
      breakerOpenMs: 100,
      // Long enough that "gives up at once" below is told apart from "retried again" even when
      // a busy machine stalls the second write for a second or two.
      retryForMs: 3_000,
    });
    const started = Date.now();
    await sink.write(batch(1, 10), new AbortController().signal);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 3_000, `gave up after ${elapsed} ms`);
    const rows = await deadLetterRows();
    assert.equal(rows.length, 10);
    // A write started during the same outage gives up at once: the outage already lasted retryForMs.
    const again = Date.now();
    await sink.write(batch(11, 5), new AbortController().signal);
    assert.ok(Date.now() - again < 3_000, `second write took ${Date.now() - again} ms`);
    assert.equal((await deadLetterRows()).length, 15);
  });

  it('re-drives retryable dead letters oldest first under their key, rate-limited; permanent ones stay', async () => {
    const errors: [number, string][] = [
      [1, '503 Service Unavailable'],
      [2, '400 Bad Request: injected rejection'],
      [3, 'circuit open (last failure: 500 Internal Server Error)'],
      [4, '429 Too Many Requests'],
      [5, '401 Unauthorized'],
      [6, '408 Request Timeout'],
      [7, 'network error: connect ECONNREFUSED'],
      [8, 'timeout after 5000 ms'],
      [9, '502 Bad Gateway'],
      [10, '413 Payload Too Large'],
    ];
    for (const [id, error] of errors) {
      await store.record([
        {
          sink: 'external',
          eventId: id,
          idempotencyKey: String(id),
          event: event(id),
          source: 's@1',
          lastError: error,
          attempts: 3,
        },
      ]);
    }
    // A dead letter of another sink is not the external sink's to re-send.
    await store.record([
      {
        sink: 'source',
        eventId: 99,
        idempotencyKey: 'x:99',
        event: {},
        source: 'x',
        lastError: 'bad row',
        attempts: 1,
      },
    ]);
    const metrics = createMetrics();
    const started = Date.now();
    const { sink } = await makeSink({ metrics, redrive: { store, ratePerSecond: 10, intervalMs: 50 } });
    await waitFor('re-drive done', async () => (await store.depth('external')) === 3, 20_000);
    const elapsed = Date.now() - started;
    await sink.stop(); // its re-drive would otherwise pick up the next tests' rows
    const sent = (await mockRequests()).map((r) => [r.idempotencyKey, r.status, r.signature]);
    assert.deepEqual(
      sent,
      ['1', '3', '4', '6', '7', '8', '9'].map((k) => [k, 200, 'ok']),
      'oldest first, one request each, under the dead letter key, signed',
    );
    // 10 a second: 7 events take at least 0.6 s.
    assert.ok(elapsed >= 600, `re-drove 7 in ${elapsed} ms`);
    assert.deepEqual(
      (await deadLetterRows()).filter((r) => r.sink === 'external').map((r) => r.event_id),
      ['2', '5', '10'],
    );
    assert.equal(await store.depth('source'), 1);
    const replayed = await store.list({ sink: 'external', limit: 100, includeReplayed: true });
    assert.equal(replayed.filter((r) => r.replayedAt !== null).length, 7);
    const redriven = (await metrics.deadLettersRedriven.get()).values.find(
      (v) => v.labels.sink === 'external',
    );
    assert.equal(redriven?.value, 7);
    const summary = await store.summary('external');
    assert.equal(summary.pending, 3);
    assert.equal(summary.replayed, 7);
    assert.ok(summary.oldestPendingSeconds !== null && summary.oldestPendingSeconds >= 0);
  });

  it('re-drive waits while the external system fails, and starts when it answers again', async () => {
    await store.record(
      [1, 2, 3].map((id) => ({
        sink: 'external',
        eventId: id,
        idempotencyKey: String(id),
        event: event(id),
        source: 's@1',
        lastError: '503 Service Unavailable',
        attempts: 1,
      })),
    );
    await control({ mode: 'fail503', count: 1 });
    const { sink } = await makeSink({ redrive: { store, ratePerSecond: 1000, intervalMs: 100 } });
    // The first re-sent row meets the failing system: the pass stops, the row stays pending with
    // the new error; the next pass (the system answers again) delivers all three.
    await waitFor('re-drive done', async () => (await store.depth('external')) === 0, 20_000);
    await sink.stop();
    const s = await stats();
    assert.equal(s.injected.fail503, 1);
    assert.equal(s.uniqueEventIds, 3);
    assert.equal(s.duplicateEvents, 0);
  });
});

describe('ExternalSink: spilling behind a receiver slower than the events (Sink.spill)', () => {
  it('sets aside what it has not sent (attempts 0, re-drivable), lets requests in flight finish, and the re-drive sends them once spilling ends', async () => {
    await control({ latencyMs: 400 });
    const { sink, metrics } = await makeSink({
      concurrency: 2,
      spillAfterMs: 2_000,
      redrive: { store, ratePerSecond: 1000, intervalMs: 50 },
    });
    assert.equal(sink.spillAfterMs, 2_000);
    const writing = sink.write(batch(1, 10), new AbortController().signal);
    await sleep(150); // two requests in flight
    sink.spill(true);
    const result = await writing;
    const rows = await deadLetterRows();
    assert.deepEqual(
      rows.map((r) => Number(r.event_id)),
      range(3, 8),
      'the two requests in flight were answered; the other eight were set aside unsent',
    );
    assert.ok(rows.every((r) => r.attempts === 0 && /^set aside unsent/.test(r.last_error)));
    assert.deepEqual(
      [...(result?.deadLettered ?? [])],
      batch(1, 10).positions.slice(2),
      'the write names what it set aside, so the pipeline does not count it delivered',
    );
    assert.equal(await counter(metrics, 'deadLetters'), 8);
    // While spilling, the re-drive holds back (it would compete with the live stream): several
    // of its 400 ms requests' time.
    await sleep(1_500);
    assert.equal(await store.depth('external'), 8);
    // They count in the sink's lag (its events are not all delivered): `behind`, not `up` at 0.
    assert.ok(sink.backlogSeconds() >= 1, `backlog ${sink.backlogSeconds()} s`);
    assert.equal((await stats()).uniqueEventIds, 2);
    await control({ latencyMs: 0 });
    sink.spill(false);
    await waitFor('re-driven', async () => (await store.depth('external')) === 0, 20_000);
    await waitFor('no backlog', () => sink.backlogSeconds() === 0, 5_000);
    await sink.stop();
    const s = await stats();
    assert.equal(s.uniqueEventIds, 10);
    assert.equal(s.duplicateEvents, 0);
  });

  it('a request waiting out a Retry-After when spilling starts is set aside at once, with its error', async () => {
    const r = await receiver((_key, ids) =>
      ids.includes(1) ? { status: 429, headers: { 'retry-after': '10' } } : { status: 200 },
    );
    try {
      const { sink } = await makeSink({
        url: r.url,
        spillAfterMs: 2_000,
        backoffMaxMs: 60_000,
        redrive: { store, ratePerSecond: 1, intervalMs: 60_000 },
      });
      const writing = sink.write(batch(1, 3), new AbortController().signal);
      await sleep(300);
      const started = Date.now();
      sink.spill(true);
      const result = await writing;
      assert.ok(Date.now() - started < 2_000, `resolved ${Date.now() - started} ms after spilling started`);
      assert.deepEqual([...(result?.deadLettered ?? [])], [batch(1, 3).positions[0]]);
      const rows = await deadLetterRows();
      assert.deepEqual(
        rows.map((row) => [row.event_id, row.attempts, row.last_error.slice(0, 3)]),
        [['1', 1, '429']],
      );
      sink.spill(false);
      await sink.stop();
    } finally {
      await r.close();
    }
  });

  it('a write retried after the dead-letter table failed does not send again what was accepted', async () => {
    let failRecord = true;
    const sent: number[] = [];
    const r = await receiver((_key, ids) => {
      sent.push(...ids);
      return { status: ids.includes(3) ? 400 : 200 };
    });
    try {
      const { sink, metrics } = await makeSink({
        url: r.url,
        deadLetters: {
          record: async (entries) => {
            if (failRecord) {
              failRecord = false;
              throw new Error('connection terminated');
            }
            return store.record(entries);
          },
        },
      });
      const b = batch(1, 4);
      await assert.rejects(sink.write(b, new AbortController().signal), /cannot record dead letters/);
      assert.deepEqual(ascending(sent), [1, 2, 3, 4]);
      const result = await sink.write(b, new AbortController().signal);
      assert.deepEqual(ascending(sent), [1, 2, 3, 3, 4], 'only the refused event again');
      assert.deepEqual([...(result?.deadLettered ?? [])], [b.positions[2]]);
      await sink.write(b, new AbortController().signal);
      assert.equal(sent.length, 9, 'after a write that resolved, the same batch is sent whole again');
      const counted = (await metrics.deadLetters.get()).values.reduce((s, v) => s + v.value, 0);
      assert.equal(counted, 1, 'event 3, refused twice while pending, is one dead letter in the metric');
    } finally {
      await r.close();
    }
  });

  it('no spilling without a re-drive (EXTERNAL_REDRIVE_RATE 0): set-aside events would wait for an operator', async () => {
    const { sink } = await makeSink({ spillAfterMs: 2_000 });
    assert.equal(sink.spillAfterMs, undefined);
    const deps = { deadLetters: store, metrics: createMetrics(), logger: pino({ level: 'silent' }) };
    const off = externalSinkFromConfig(
      loadConfig({}, { EXTERNAL_URL: mock.url, EXTERNAL_REDRIVE_RATE: '0' }),
      deps,
    );
    assert.equal(off?.spillAfterMs, undefined);
    const on = externalSinkFromConfig(loadConfig({}, { EXTERNAL_URL: mock.url }), deps);
    assert.equal(on?.spillAfterMs, 2_000, 'EXTERNAL_SPILL_AFTER defaults to 2s');
    const never = externalSinkFromConfig(
      loadConfig({}, { EXTERNAL_URL: mock.url, EXTERNAL_SPILL_AFTER: 'off' }),
      deps,
    );
    assert.equal(never?.spillAfterMs, undefined);
  });

  it('set-aside rows are re-sent at the receiver’s pace (free slots), not at EXTERNAL_REDRIVE_RATE', async () => {
    const entry = (id: number, lastError: string) => ({
      sink: 'external',
      eventId: id,
      idempotencyKey: String(id),
      event: event(id),
      source: 's@1',
      lastError,
      attempts: 0,
    });
    await store.record(range(1, 40).map((id) => entry(id, SET_ASIDE)));
    await store.record([entry(41, '503 Service Unavailable'), entry(42, '503 Service Unavailable')]);
    const started = Date.now();
    const { sink } = await makeSink({ concurrency: 8, redrive: { store, ratePerSecond: 1, intervalMs: 50 } });
    await waitFor('set-aside rows re-sent', async () => (await store.depth('external')) <= 2, 20_000);
    const fast = Date.now() - started;
    assert.ok(fast < 5_000, `40 set-aside rows in ${fast} ms (1 a second would take 40 s)`);
    await waitFor('the rest, paced', async () => (await store.depth('external')) === 0, 20_000);
    assert.ok(Date.now() - started >= 1_000, 'rows of a failure keep EXTERNAL_REDRIVE_RATE');
    await sink.stop();
    assert.equal((await stats()).uniqueEventIds, 42);
  });

  it('set-aside rows go back in arrays of EXTERNAL_BATCH_SIZE; an array refused for good is sent row by row', async () => {
    const requests: number[][] = [];
    const r = await receiver((_key, ids) => {
      requests.push(ids);
      return { status: ids.includes(17) ? 400 : 200 };
    });
    try {
      const entry = (id: number) => ({
        sink: 'external',
        eventId: id,
        idempotencyKey: String(id),
        event: event(id),
        source: 's@1',
        lastError: SET_ASIDE,
        attempts: 0,
      });
      await store.record(range(1, 40).map(entry));
      const { sink } = await makeSink({
        url: r.url,
        batchSize: 10,
        concurrency: 4,
        redrive: { store, ratePerSecond: 100, intervalMs: 50 },
      });
      await waitFor('all but the refused one', async () => (await store.depth('external')) === 1, 20_000);
      await sink.stop();
      const arrays = requests.filter((ids) => ids.length > 1);
      assert.equal(arrays.length, 4, JSON.stringify(requests));
      assert.deepEqual(
        requests.filter((ids) => ids.length === 1).map((ids) => ids[0]),
        range(11, 10),
        'the refused array, row by row (in later passes)',
      );
      assert.deepEqual(
        (await deadLetterRows()).map((row) => row.event_id),
        ['17'],
      );
    } finally {
      await r.close();
    }
  });

  it('block never spills: every event waits for the receiver', async () => {
    const { sink } = await makeSink({ policy: 'block', spillAfterMs: 0 });
    assert.equal(sink.spillAfterMs, undefined, 'the pipeline is not told it may');
    sink.spill(true);
    assert.equal(await sink.write(batch(1, 3), new AbortController().signal), undefined);
    assert.equal((await deadLetterRows()).length, 0);
    assert.equal((await stats()).uniqueEventIds, 3);
  });
});

describe('ExternalSink: 409 from an Idempotency-Key receiver (a retry meeting its own first attempt)', () => {
  it('a 409 after a timed-out attempt is retried until the stored answer comes, not dead-lettered', async () => {
    // Our first attempt times out (200 ms) while the receiver still processes it (500 ms); the
    // retries under the same key meet it in progress (409) until it is done (200).
    const r = await idempotencyKeyReceiver(500);
    try {
      const { sink, metrics } = await makeSink({
        url: r.url,
        timeoutMs: 200,
        backoffBaseMs: 50,
        backoffMaxMs: 200,
        retryForMs: 20_000,
      });
      await sink.write(batch(1, 3), new AbortController().signal);
      assert.equal((await deadLetterRows()).length, 0, 'nothing dead-lettered');
      assert.deepEqual(ascending(r.taken), [1, 2, 3], 'each event taken once');
      assert.ok(r.statuses.includes(409), `statuses ${r.statuses.join(',')}`);
      const conflicts = (await metrics.externalRequests.get()).values.find(
        (v) => v.labels.outcome === 'conflict',
      );
      assert.ok((conflicts?.value ?? 0) >= 1);
    } finally {
      await r.close();
    }
  });

  it('an array answered 409 is re-sent whole under its key, not split (no event taken twice)', async () => {
    const r = await idempotencyKeyReceiver(500);
    try {
      const { sink } = await makeSink({
        url: r.url,
        batchSize: 4,
        timeoutMs: 200,
        backoffBaseMs: 50,
        backoffMaxMs: 200,
        retryForMs: 20_000,
      });
      await sink.write(batch(1, 8), new AbortController().signal);
      assert.deepEqual(ascending(r.taken), range(1, 8), 'each event taken once');
      assert.deepEqual([...r.state.keys()].sort(), ['1-4', '5-8'], 'only the two arrays keys were sent');
      assert.equal((await deadLetterRows()).length, 0);
    } finally {
      await r.close();
    }
  });

  it('honours Retry-After on 409', async () => {
    let conflicts = 0;
    const r = await receiver(() =>
      conflicts++ === 0 ? { status: 409, headers: { 'retry-after': '1' } } : { status: 200 },
    );
    try {
      const { sink } = await makeSink({ url: r.url });
      const started = Date.now();
      await sink.write(batch(1, 1), new AbortController().signal);
      const elapsed = Date.now() - started;
      // backoff alone would be < 20 ms here; only Retry-After explains the wait
      assert.ok(elapsed >= 950 && elapsed < 10_000, `elapsed ${elapsed} ms`);
      assert.equal(conflicts, 2);
      assert.equal((await deadLetterRows()).length, 0);
    } finally {
      await r.close();
    }
  });
});

describe('ExternalSink: 401/403/404/407 per policy', () => {
  it('block: a receiver answering 401 for a while holds the batch (sink failed, nothing dead-lettered), then every event arrives exactly once', async () => {
    // One request at a time: a write stops at its first 401, so no request of it was accepted,
    // and nothing accepted is ever re-sent (with more, a write cut short as the receiver is
    // fixed may re-send some events under the same key, at-least-once by key).
    const { r, state, taken } = await switchableReceiver(401);
    const { logger, lines } = captureLogger();
    const metrics = createMetrics();
    const { sink } = await makeSink({ url: r.url, policy: 'block', concurrency: 1, metrics });
    const fanout = new Fanout({
      sinks: [sink],
      metrics,
      logger,
      deadLetters: store,
      failedRetryBaseMs: 20,
      failedRetryMaxMs: 50,
    });
    try {
      let settled = false;
      const write = fanout.write(batch(1, 10)).finally(() => (settled = true));
      await waitFor('the receiver refusing several times', () => state.refused >= 3, 10_000);
      assert.equal(settled, false, 'the write is held while the receiver refuses');
      const [health] = fanout.health();
      assert.equal(health.state, 'failed');
      assert.match(health.error ?? '', /refused the request: 401 Unauthorized/);
      assert.equal((await deadLetterRows()).length, 0, 'nothing dead-lettered');
      assert.equal(taken.length, 0);
      state.status = 200;
      await write;
      assert.deepEqual(taken, range(1, 10), 'every event once, in order');
      assert.equal((await deadLetterRows()).length, 0);
      assert.equal(fanout.health()[0].state, 'up');
      const errors = lines.filter((l) => l.level >= 50).map((l) => l.msg);
      assert.equal(errors.length, 1, errors.join(' | '));
      assert.match(
        errors[0],
        /^sink external failed and needs attention \(source position held, retrying slowly\): EP_ERR_SINK_WRITE: external system at http:\/\/127\.0\.0\.1:\d+\/ refused the request: 401 Unauthorized/,
      );
    } finally {
      fanout.cancel();
      await r.close();
    }
  });

  it('block: 401, 403, 404 and 407 fail the write with a sink-policy error, whole arrays, nothing dead-lettered', async () => {
    for (const status of [401, 403, 404, 407]) {
      const keys: string[] = [];
      const r = await receiver((key) => {
        keys.push(key);
        return { status };
      });
      try {
        const { sink } = await makeSink({ url: r.url, policy: 'block', batchSize: 4, concurrency: 1 });
        await assert.rejects(sink.write(batch(1, 8), new AbortController().signal), (err: unknown) => {
          assert.ok(err instanceof PipelineError);
          assert.equal(policyFor(err), 'sink', `${status}`);
          assert.match(err.message, new RegExp(`refused the request: ${status} `));
          return true;
        });
        assert.deepEqual(keys, ['1-4'], `${status}: one request, not split, not retried by the sink`);
        assert.equal((await deadLetterRows()).length, 0, `${status}`);
      } finally {
        await r.close();
      }
    }
  });

  it('best-effort: 401, 403, 404 and 407 are still dead-lettered at once', async () => {
    for (const status of [401, 403, 404, 407]) {
      await pool.query('TRUNCATE engagement_pipeline.dead_letters');
      let requests = 0;
      const r = await receiver(() => {
        requests += 1;
        return { status };
      });
      try {
        const { sink } = await makeSink({ url: r.url });
        await sink.write(batch(1, 3), new AbortController().signal);
        assert.equal(requests, 3, `${status}: one request per event, no retry`);
        const rows = await deadLetterRows();
        assert.deepEqual(
          rows.map((row) => row.event_id),
          ['1', '2', '3'],
        );
        assert.match(rows[0].last_error, new RegExp(`^${status} `));
      } finally {
        await r.close();
      }
    }
  });

  it('block: the re-drive leaves a dead letter as it was when the receiver answers 401, and sends it once fixed', async () => {
    await store.record(
      [1, 2].map((id) => ({
        sink: 'external',
        eventId: id,
        idempotencyKey: String(id),
        event: event(id),
        source: 's@1',
        lastError: '503 Service Unavailable',
        attempts: 1,
      })),
    );
    const { r, state, taken } = await switchableReceiver(401);
    const { sink } = await makeSink({
      url: r.url,
      policy: 'block',
      redrive: { store, ratePerSecond: 1000, intervalMs: 50 },
    });
    try {
      // Two passes' worth: the first pass is over (anything it would record, recorded).
      await waitFor('the re-drive meeting the 401', () => state.refused >= 4, 10_000);
      const rows = await deadLetterRows();
      assert.deepEqual(
        rows.map((row) => [row.event_id, row.last_error, row.attempts]),
        [
          ['1', '503 Service Unavailable', 1],
          ['2', '503 Service Unavailable', 1],
        ],
        'left as it was: still re-drivable',
      );
      state.status = 200;
      await waitFor('re-drive done', async () => (await store.depth('external')) === 0, 10_000);
      assert.deepEqual(ascending(taken), [1, 2]);
    } finally {
      await sink.stop(); // its re-drive would otherwise pick up the next tests' rows
      await r.close();
    }
  });
});

describe('externalSinkFromConfig', () => {
  it('maps the EXTERNAL_* settings, and is off without EXTERNAL_URL', async () => {
    const deps = { deadLetters: store, metrics: createMetrics(), logger: pino({ level: 'silent' }) };
    assert.equal(externalSinkFromConfig(loadConfig({}, {}), deps), null);
    const env = { EXTERNAL_URL: mock.url, EXTERNAL_SECRET: 'wrong', EXTERNAL_BATCH_SIZE: '2' };
    const sink = externalSinkFromConfig(loadConfig({}, env), deps);
    assert.ok(sink);
    await sink.start();
    sinks.push(sink);
    await sink.write(batch(1, 2), new AbortController().signal);
    const s = await stats();
    assert.equal(s.signatureFailures, 1, 'signed with EXTERNAL_SECRET, as one 2-event request');
    assert.equal((await deadLetterRows()).length, 2);
  });
});

describe('DeadLetterStore', () => {
  const entry = (id: number, error: string) => ({
    sink: 'external',
    eventId: id,
    idempotencyKey: String(id),
    event: event(id),
    source: 's@1',
    lastError: error,
    attempts: 2,
  });

  it('re-drivable: 409 (a retry meeting its first attempt) and other retryable errors; not 400, 401, 413, 422', async () => {
    await store.record([
      entry(1, '409 Conflict: request with this key is in progress'),
      entry(2, '400 Bad Request'),
      entry(3, '401 Unauthorized'),
      entry(4, '413 Payload Too Large'),
      entry(5, '422 Unprocessable Entity'),
      entry(6, '503 Service Unavailable'),
      entry(7, 'timeout after 5000 ms'),
    ]);
    assert.deepEqual(
      (await store.listRedrivable('external', 10)).map((r) => r.eventId),
      ['1', '6', '7'],
    );
  });

  it('records idempotently, lists with filters, counts depth, marks replayed', async () => {
    await store.record([
      entry(1, '503 Service Unavailable'),
      entry(2, 'timeout after 5000 ms'),
      entry(2, 'timeout after 5000 ms'),
    ]);
    await store.record([entry(1, '500 Internal Server Error')]);
    assert.equal(await store.depth(), 2);
    assert.equal(await store.depth('redis'), 0);
    const all = await store.list({ limit: 10 });
    assert.deepEqual(
      all.map((r) => [r.eventId, r.attempts, r.lastError]),
      [
        ['1', 4, '500 Internal Server Error'],
        ['2', 2, 'timeout after 5000 ms'],
      ],
    );
    assert.match(all[0].firstFailedAt, /^\d{4}-\d\d-\d\dT/);
    // Read back with the payload as the exact text jsonb kept.
    assert.deepEqual(all[0].event, { ...event(1), raw_payload: new JsonText('{"note":"ünïcode"}') });
    assert.deepEqual(
      (await store.list({ limit: 10, reason: 'TIMEOUT' })).map((r) => r.eventId),
      ['2'],
    );
    assert.equal((await store.list({ limit: 10, since: new Date(Date.now() + 60_000) })).length, 0);
    assert.equal((await store.list({ limit: 1 })).length, 1);

    assert.equal(await store.markReplayed([all[0].id]), 1);
    assert.equal(await store.markReplayed([all[0].id]), 0);
    assert.equal(await store.depth(), 1);
    // A new failure after a replay is a new pending row, the replayed one is kept.
    await store.record([entry(1, '502 Bad Gateway')]);
    assert.equal(await store.depth(), 2);
    assert.equal((await store.list({ limit: 10, includeReplayed: true })).length, 3);
  });
});

describe('DeadLetterStore', () => {
  it('lists oldest first by id as a number (ids past 9 after ids below 10)', async () => {
    await pool.query('TRUNCATE engagement_pipeline.dead_letters RESTART IDENTITY');
    // One statement: every row gets the same failure time, so the id alone orders them.
    await store.record(externalDeadLetters(range(1, 12)));
    const ids = (await store.list({ limit: 100 })).map((r) => Number(r.id));
    assert.deepEqual(ids, range(1, 12));
    const firstThree = (await store.listRedrivable('external', 3)).map((r) => Number(r.id));
    assert.deepEqual(firstThree, [1, 2, 3]);
  });
});
