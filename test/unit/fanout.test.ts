import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { pino } from 'pino';
import { Fanout, idleWriteMs } from '../../src/pipeline/fanout.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { sinkStatsFromMetrics } from '../../src/observability/stats.js';
import type { DeadLetterEntry } from '../../src/state/dead-letter.js';
import type { Sink, WriteResult } from '../../src/sinks/sink.js';
import { intBetween, prng, seeds } from '../helpers/prng.js';
import { JsonText } from '../../src/domain/json-text.js';
import { ROW_WEIGHT_BYTES } from '../../src/pipeline/row-weight.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function event(id: number, committedAt = new Date().toISOString()): EnrichedEvent {
  return {
    event_id: id,
    content_id: null,
    user_id: null,
    event_type: 'play',
    event_ts: committedAt,
    duration_ms: 1,
    device: null,
    raw_payload: null,
    content_type: null,
    length_seconds: null,
    engagement_seconds: null,
    engagement_pct: null,
    committed_at: committedAt,
    processed_at: committedAt,
  };
}

function batch(seq: number, ids: number[], committedAt?: string): Batch {
  return {
    seq,
    stream: 's',
    events: ids.map((id) => event(id, committedAt)),
    positions: ids.map((id) => String(id).padStart(8, '0')),
    ackLsn: null,
  };
}

/** Rejects any write containing a "bad" id with the given error; otherwise applies it. */
class PickySink implements Sink {
  readonly applied: number[] = [];
  writes = 0;
  constructor(
    readonly name: string,
    readonly bad: Set<number>,
    private readonly error: () => Error = () => new Error('Conversion Error: could not convert'),
  ) {}
  async start() {}
  async stop() {}
  async write(b: Batch): Promise<void> {
    this.writes += 1;
    if (b.events.some((e) => this.bad.has(e.event_id))) throw this.error();
    this.applied.push(...b.events.map((e) => e.event_id));
  }
}

function logCapture() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  return { logger, lines };
}

describe('Fanout', () => {
  it('a row the sink refuses is found by bisection and dead-lettered for that sink; the rest is delivered in order', async () => {
    const recorded: DeadLetterEntry[] = [];
    const picky = new PickySink('analytics', new Set([5, 11]));
    const fine = new PickySink('redis', new Set());
    const { logger, lines } = logCapture();
    const heard = new Map<string, number[]>();
    const fanout = new Fanout({
      sinks: [picky, fine],
      metrics: createMetrics(),
      logger,
      deadLetters: { record: async (entries) => (recorded.push(...entries), entries.length) },
      onSuccess: (sink, b) =>
        heard.set(
          sink,
          b.events.map((e) => e.event_id),
        ),
    });
    const ids = Array.from({ length: 16 }, (_, i) => i + 1);
    await fanout.write(batch(1, ids));
    assert.deepEqual(
      picky.applied,
      ids.filter((id) => id !== 5 && id !== 11),
    );
    assert.deepEqual(fine.applied, ids, 'the other sink got everything, once');
    assert.deepEqual(
      recorded.map((r) => [r.sink, r.eventId, r.source]),
      [
        ['analytics', 5, 's@00000005'],
        ['analytics', 11, 's@00000011'],
      ],
    );
    assert.match(recorded[0].lastError, /Conversion Error/);
    const health = fanout.health().find((h) => h.name === 'analytics')!;
    assert.equal(health.delivered, 14);
    assert.equal(health.deadLettered, 2);
    assert.equal(health.state, 'up');
    assert.equal(lines.filter((l) => /refused 2 of 16/.test(l.msg)).length, 1);
    // What each sink accepted (e.g. the live event stream follows the analytics store's).
    assert.deepEqual(heard.get('analytics'), picky.applied);
    assert.deepEqual(heard.get('redis'), ids);
    fanout.cancel();
  });

  it('a sink with a write interval writes early once a full batch waits, weighed as the dispatcher weighs it', async () => {
    const sink = new PickySink('analytics', new Set());
    Object.assign(sink, { writeIntervalMs: 60_000 });
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: logCapture().logger,
      fullRows: 64,
    });
    await fanout.write(batch(1, [1])); // the first write goes at once; the interval starts
    const heavy = batch(2, [2, 3, 4, 5, 6, 7, 8, 9]);
    for (const e of heavy.events) e.raw_payload = new JsonText(`"${'x'.repeat(8 * ROW_WEIGHT_BYTES)}"`); // 9 each
    const started = performance.now();
    await fanout.write(heavy); // 8 events weighing 72 >= 64: not held for the minute
    assert.ok(performance.now() - started < 5_000);
    assert.deepEqual(sink.applied, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    fanout.cancel();
  });

  it('a sink with a write interval writes with the first batch after its interval while more are coming; when none comes, within idleWriteMs', async () => {
    const interval = 60;
    const sink = new PickySink('external', new Set());
    const writesAt: number[] = [];
    const write = sink.write.bind(sink);
    sink.write = async (b: Batch) => {
      writesAt.push(performance.now());
      return write(b);
    };
    Object.assign(sink, { writeIntervalMs: interval });
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: logCapture().logger,
      moreBatchesComing: () => true,
    });
    const first = fanout.write(batch(1, [1])); // at once: no write before it
    await sleep(5);
    const second = fanout.write(batch(2, [2])); // inside the interval: waits
    await sleep(interval + 10);
    assert.deepEqual(sink.applied, [1], 'no timer wrote it when the interval ended');
    const third = fanout.write(batch(3, [3])); // the interval is over: goes now, with the second
    await Promise.all([first, second, third]);
    assert.deepEqual(sink.applied, [1, 2, 3]);
    assert.equal(writesAt.length, 2, 'the waiting batch went with the next one, in one write');

    // The stream stops right after a write began: the timer writes what waits.
    await fanout.write(batch(4, [4])); // the interval is over since the last write: at once
    const queuedAt = performance.now();
    await fanout.write(batch(5, [5]));
    const waited = performance.now() - queuedAt;
    assert.ok(waited >= interval - 2, `waited ${waited} ms, at least the interval`);
    assert.ok(waited < idleWriteMs(interval) + 500, `waited ${waited} ms`);
    assert.deepEqual(sink.applied, [1, 2, 3, 4, 5]);
    fanout.cancel();
  });

  it('a producer that waits for each write (the Kafka worker, a full window) gets it when the interval ends', async () => {
    const interval = 60;
    for (const moreBatchesComing of [undefined, () => false]) {
      const sink = new PickySink('external', new Set());
      Object.assign(sink, { writeIntervalMs: interval });
      const fanout = new Fanout({
        sinks: [sink],
        metrics: createMetrics(),
        logger: logCapture().logger,
        moreBatchesComing,
      });
      const started = performance.now();
      for (let i = 1; i <= 6; i++) await fanout.write(batch(i, [i]));
      const took = performance.now() - started;
      // Five intervals: the first write goes at once, each later one when its interval ends.
      assert.ok(took >= 5 * interval - 10, `${took} ms`);
      assert.ok(took < 5 * interval + 400, `${took} ms: the writes waited for idleWriteMs instead`);
      assert.deepEqual(sink.applied, [1, 2, 3, 4, 5, 6]);
      fanout.cancel();
    }
  });

  it('a sink riding a failure out inside its write is reported down, with the failure, until it clears', async () => {
    const sink = new PickySink('external', new Set());
    let failure: string | null = 'external system failing for 3 s: 503 Service Unavailable';
    Object.assign(sink, { failure: () => failure });
    const fanout = new Fanout({ sinks: [sink], metrics: createMetrics(), logger: logCapture().logger });
    assert.deepEqual(
      fanout.health().map((h) => [h.state, h.error]),
      [['down', failure]],
    );
    failure = null;
    assert.deepEqual(
      fanout.health().map((h) => [h.state, h.error]),
      [['up', null]],
    );
    fanout.cancel();
  });

  it('engagement_sink_up follows the state: 0 while a sink rides out a failure inside writes that succeed', async () => {
    // The external sink under best-effort: the outage's rows are dead-lettered, so write()
    // resolves, but the sink reports the failure it is riding out (down in /readyz, /api/stats).
    const sink = new PickySink('external', new Set());
    let failure: string | null = null;
    Object.assign(sink, { failure: () => failure });
    const metrics = createMetrics();
    const fanout = new Fanout({ sinks: [sink], metrics, logger: logCapture().logger });
    const up = async () =>
      (await metrics.sinkUp.get()).values.find((v) => v.labels.sink === 'external')?.value;
    const stats = async () => (await sinkStatsFromMetrics(metrics, ['external']))[0];
    assert.equal(await up(), 1);
    failure = 'external system failing for 6 s: 503 Service Unavailable';
    await fanout.write(batch(1, [1, 2]));
    assert.equal(fanout.health()[0].state, 'down');
    assert.equal(await up(), 0, 'sink_up is 0 while the state is down, although the write succeeded');
    assert.deepEqual([(await stats()).state, (await stats()).up], ['down', false]);
    // With no write at all, the health timer keeps the gauges in step with the state.
    fanout.startHealthTimer(10);
    failure = null;
    await sleep(50);
    assert.equal(await up(), 1);
    assert.deepEqual([(await stats()).state, (await stats()).up], ['up', true]);
    failure = 'external system failing for 1 s: 503 Service Unavailable';
    await sleep(50);
    assert.equal(await up(), 0);
    fanout.cancel();
  });

  it('the state gauges are set when the state changes, not again on every completed write', async () => {
    const sink = new PickySink('external', new Set());
    let failure: string | null = null;
    Object.assign(sink, { failure: () => failure });
    const metrics = createMetrics();
    let stateSets = 0;
    const set = metrics.sinkState.set.bind(metrics.sinkState);
    metrics.sinkState.set = ((...args: Parameters<typeof set>) => (stateSets++, set(...args))) as typeof set;
    const fanout = new Fanout({ sinks: [sink], metrics, logger: logCapture().logger });
    const states = async () =>
      (await metrics.sinkState.get()).values
        .filter((v) => v.value === 1)
        .map((v) => v.labels.state)
        .join();
    const setsAtStart = stateSets;
    for (let seq = 1; seq <= 20; seq++) await fanout.write(batch(seq, [seq]));
    assert.equal(stateSets, setsAtStart, 'twenty writes in the same state set no state gauge');
    assert.equal(await states(), 'up');
    failure = 'external system failing for 6 s: 503 Service Unavailable';
    await fanout.write(batch(21, [21]));
    assert.equal(await states(), 'down', 'a change is shown at the write that saw it');
    assert.equal(stateSets, setsAtStart + 4, 'one set per state label, once');
    failure = null;
    await fanout.write(batch(22, [22]));
    assert.equal(await states(), 'up');
    fanout.cancel();
  });

  it('a sink rejecting every row is failing, not its rows: nothing dead-lettered, position held', async () => {
    const recorded: DeadLetterEntry[] = [];
    const all = new PickySink('analytics', new Set([1, 2, 3, 4]));
    const fanout = new Fanout({
      sinks: [all],
      metrics: createMetrics(),
      logger: logCapture().logger,
      deadLetters: { record: async (entries) => (recorded.push(...entries), entries.length) },
      failedRetryBaseMs: 10,
      failedRetryMaxMs: 20,
    });
    let done = false;
    const write = fanout.write(batch(1, [1, 2, 3, 4])).then(() => (done = true));
    write.catch(() => undefined);
    await sleep(100);
    assert.equal(done, false);
    assert.deepEqual(recorded, []);
    assert.equal(fanout.health()[0].state, 'failed');
    fanout.cancel();
    await assert.rejects(write);
  });

  it('an authentication error marks the sink failed with one log line, retries slowly, and recovers', async () => {
    let broken = true;
    const sink = new PickySink('clickhouse', new Set(), () =>
      Object.assign(new Error('Authentication failed'), { code: '516', type: 'AUTHENTICATION_FAILED' }),
    );
    const original = sink.write.bind(sink);
    sink.write = async (b) => {
      if (broken) {
        sink.writes += 1;
        throw Object.assign(new Error('Authentication failed'), {
          code: '516',
          type: 'AUTHENTICATION_FAILED',
        });
      }
      return original(b);
    };
    const { logger, lines } = logCapture();
    const metrics = createMetrics();
    const fanout = new Fanout({
      sinks: [sink],
      metrics,
      logger,
      failedRetryBaseMs: 20,
      failedRetryMaxMs: 40,
    });
    const write = fanout.write(batch(1, [1, 2]));
    await sleep(300);
    const h = fanout.health()[0];
    assert.equal(h.state, 'failed');
    assert.match(h.error ?? '', /Authentication failed/);
    assert.ok(h.lagSeconds > 0, 'lag grows while it fails');
    assert.ok(sink.writes >= 2 && sink.writes < 40, `${sink.writes} attempts in 300 ms`);
    assert.equal(lines.filter((l) => /needs attention/.test(l.msg)).length, 1, 'one clear line');
    broken = false;
    await write;
    assert.equal(fanout.health()[0].state, 'up');
    assert.equal(fanout.health()[0].lagSeconds, 0, 'nothing pending: lag 0');
    assert.equal(lines.filter((l) => /recovered/.test(l.msg)).length, 1);
    fanout.cancel();
  });

  it('lag is the age of the oldest event not yet accepted, and it grows while a sink is stuck', async () => {
    let release!: () => void;
    const stuck = new Promise<void>((r) => (release = r));
    const sink: Sink = {
      name: 'external',
      start: async () => undefined,
      stop: async () => undefined,
      write: () => stuck,
    };
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: logCapture().logger,
      lagWarnSeconds: 30,
    });
    const old = new Date(Date.now() - 45_000).toISOString();
    const write = fanout.write(batch(1, [1], old));
    void fanout.write(batch(2, [2]));
    const h = fanout.health()[0];
    assert.ok(h.lagSeconds >= 45, `lag ${h.lagSeconds}`);
    assert.equal(h.state, 'behind');
    assert.equal(h.received, 2);
    assert.equal(h.delivered, 0);
    release();
    await write;
    fanout.cancel();
  });

  it('a batch with only a position to confirm writes to no sink', async () => {
    const sink = new PickySink('analytics', new Set());
    const fanout = new Fanout({ sinks: [sink], metrics: createMetrics(), logger: logCapture().logger });
    await fanout.write({ seq: 1, stream: 's', events: [], positions: [], ackLsn: '0/10' });
    assert.equal(sink.writes, 0);
    assert.deepEqual(fanout.health()[0], {
      name: 'analytics',
      state: 'up',
      lagSeconds: 0,
      received: 0,
      delivered: 0,
      deadLettered: 0,
      error: null,
    });
    fanout.cancel();
  });

  it('a sink down with transient errors holds only itself: the others deliver meanwhile, it catches up in order', async () => {
    let down = true;
    const order: number[] = [];
    const flaky: Sink = {
      name: 'external',
      start: async () => undefined,
      stop: async () => undefined,
      write: async (b) => {
        if (down)
          throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
        order.push(...b.events.map((e) => e.event_id));
      },
    };
    const fine = new PickySink('redis', new Set());
    const accepted: [string, number][] = [];
    const { logger, lines } = logCapture();
    const metrics = createMetrics();
    const fanout = new Fanout({
      sinks: [flaky, fine],
      metrics,
      logger,
      retryBaseMs: 2,
      retryMaxMs: 10,
      onSuccess: (sink, b) => void accepted.push([sink, b.seq]),
    });
    const writes = [
      fanout.write(batch(1, [1, 2])),
      fanout.write(batch(2, [3])),
      fanout.write(batch(3, [4, 5])),
    ];
    let settled = 0;
    for (const w of writes) void w.then(() => (settled += 1));
    const until = Date.now() + 10_000;
    while (fine.applied.length < 5 && Date.now() < until) await sleep(5);
    assert.deepEqual(fine.applied, [1, 2, 3, 4, 5], 'the healthy sink got everything');
    await sleep(50);
    assert.equal(settled, 0, 'no batch is accepted while one sink lacks it');
    const [health, healthy] = fanout.health();
    assert.equal(health.state, 'down');
    assert.match(health.error ?? '', /ECONNREFUSED/);
    assert.equal(health.delivered, 0);
    assert.equal(healthy.state, 'up');
    assert.equal(healthy.delivered, 5);
    assert.equal(
      lines.filter((l) => /external write failed, retrying/.test(l.msg)).length,
      1,
      'one line per outage',
    );
    down = false;
    await Promise.all(writes);
    assert.deepEqual(order, [1, 2, 3, 4, 5], 'the recovered sink got every batch, in order');
    // Batches that queued while the sink was down are written together (one write may carry several).
    const externalSeqs = accepted.filter(([sink]) => sink === 'external').map(([, seq]) => seq);
    assert.equal(externalSeqs.at(-1), 3);
    assert.deepEqual(
      externalSeqs,
      [...externalSeqs].sort((a, b) => a - b),
    );
    assert.equal(fanout.health()[0].state, 'up');
    assert.equal(lines.filter((l) => /external recovered/.test(l.msg)).length, 1);
    const errors = (await metrics.sinkErrors.get()).values.find((v) => v.labels.sink === 'external');
    assert.ok((errors?.value ?? 0) >= 1);
    fanout.cancel();
  });

  it('without a dead-letter store a refused row holds the position (retried), it is never dropped', async () => {
    const refused = new Set([2]);
    const sink = new PickySink('analytics', refused);
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: logCapture().logger,
      retryBaseMs: 2,
      retryMaxMs: 10,
    });
    let done = false;
    const write = fanout.write(batch(1, [1, 2, 3])).then(() => (done = true));
    await sleep(100);
    assert.equal(done, false, 'held');
    assert.ok(sink.writes >= 2, 'retried');
    assert.equal(fanout.health()[0].state, 'down');
    assert.equal(fanout.health()[0].deadLettered, 0);
    // The operator fixes the destination (e.g. widens the column): the held batch goes through whole.
    refused.clear();
    await write;
    assert.deepEqual(sink.applied, [1, 2, 3]);
    assert.equal(fanout.health()[0].delivered, 3);
    fanout.cancel();
  });

  it('a transient error while bisecting retries the whole batch; an idempotent sink ends with each row once', async () => {
    const recorded: DeadLetterEntry[] = [];
    const applied = new Map<number, number>();
    let calls = 0;
    const sink: Sink = {
      name: 'analytics',
      start: async () => undefined,
      stop: async () => undefined,
      write: async (b) => {
        calls += 1;
        // The 3rd call (inside the first bisection) times out; then the sink behaves.
        if (calls === 3) throw Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' });
        if (b.events.some((e) => e.event_id === 6)) throw new Error('Conversion Error: bad value');
        for (const e of b.events) applied.set(e.event_id, 1);
      },
    };
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: logCapture().logger,
      deadLetters: { record: async (entries) => (recorded.push(...entries), entries.length) },
      retryBaseMs: 1,
      retryMaxMs: 2,
    });
    await fanout.write(batch(1, [1, 2, 3, 4, 5, 6, 7, 8]));
    assert.deepEqual(
      [...applied.keys()].sort((a, b) => a - b),
      [1, 2, 3, 4, 5, 7, 8],
    );
    assert.deepEqual(
      recorded.map((r) => r.eventId),
      [6],
      'dead-lettered once, by the retry that completed',
    );
    assert.equal(fanout.health()[0].deadLettered, 1);
    assert.equal(fanout.health()[0].delivered, 7);
    fanout.cancel();
  });

  it('cancel() rejects the writes waiting on a failing sink, and any write after it', async () => {
    const sink = new PickySink('external', new Set(), () => Object.assign(new Error('503'), { status: 503 }));
    sink.write = async () => {
      sink.writes += 1;
      throw Object.assign(new Error('Service Unavailable'), { status: 503 });
    };
    const fanout = new Fanout({ sinks: [sink], metrics: createMetrics(), logger: logCapture().logger });
    const first = fanout.write(batch(1, [1]));
    const second = fanout.write(batch(2, [2]));
    await sleep(20);
    fanout.cancel();
    await assert.rejects(first);
    await assert.rejects(second);
    await assert.rejects(fanout.write(batch(3, [3])), /aborted/);
  });

  it('with nothing pending, lag is the age of the oldest event not yet handed to the sinks', () => {
    const sink = new PickySink('redis', new Set());
    let undispatched: number | null = Date.now() - 40_000;
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: logCapture().logger,
      lagWarnSeconds: 30,
      oldestUndispatched: () => undispatched,
    });
    const h = fanout.health()[0];
    assert.ok(h.lagSeconds >= 40, `lag ${h.lagSeconds}`);
    assert.equal(h.state, 'behind');
    undispatched = null;
    assert.equal(fanout.health()[0].lagSeconds, 0);
    assert.equal(fanout.health()[0].state, 'up');
    fanout.cancel();
  });

  // Property: several sinks, each failing at random (transient errors, a permanent sink error
  // that later clears, rows it refuses), batches of 0..n rows written with several in flight.
  // In the end every sink has every event applied exactly once or dead-lettered for it (never
  // both, never for another sink), first applications come in stream order, and its health
  // adds up: delivered + dead-lettered = received.
  for (const seed of seeds(10)) {
    it(`random failures per sink (seed ${seed}): each event applied once or dead-lettered for that sink`, async () => {
      const random = prng(seed);
      const batches: Batch[] = [];
      let nextId = 1;
      for (let seq = 1, n = intBetween(random, 1, 25); seq <= n; seq++) {
        const ids = Array.from({ length: random() < 0.15 ? 0 : intBetween(random, 1, 12) }, () => nextId++);
        batches.push(batch(seq, ids));
      }
      const total = nextId - 1;
      const recorded: DeadLetterEntry[] = [];
      const sinks = [0, 1, 2].map((i) => {
        // Rows this sink refuses; never every row of a batch of 2 or more (that is the sink failing).
        const bad = new Set<number>();
        const badRate = random() * 0.3;
        for (const b of batches) {
          const ids = b.events.map((e) => e.event_id);
          const marked = ids.filter(() => random() < badRate);
          if (marked.length < ids.length || ids.length === 1) for (const id of marked) bad.add(id);
        }
        const transientRate = random() * 0.15;
        let permanentFailures = random() < 0.3 ? intBetween(random, 1, 3) : 0;
        const own = prng(seed * 31 + i);
        const applied = new Map<number, number>();
        const firstApplied: number[] = [];
        const sink: Sink & { bad: Set<number>; applied: Map<number, number>; firstApplied: number[] } = {
          name: `sink${i}`,
          bad,
          applied,
          firstApplied,
          start: async () => undefined,
          stop: async () => undefined,
          write: async (b) => {
            // Yield (sometimes for a timer tick), so the sinks' writes interleave.
            await (own() < 0.2 ? sleep(1) : new Promise((r) => setImmediate(r)));
            if (permanentFailures > 0 && own() < 0.5) {
              permanentFailures -= 1;
              throw Object.assign(new Error('Unauthorized'), { status: 401 });
            }
            if (own() < transientRate)
              throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
            const refused = b.events.find((e) => bad.has(e.event_id));
            if (refused) throw Object.assign(new Error(`bad value in ${refused.event_id}`), { status: 400 });
            for (const e of b.events) {
              if (!applied.has(e.event_id)) firstApplied.push(e.event_id);
              applied.set(e.event_id, 1); // idempotent: a replayed row is a no-op
            }
          },
        };
        return sink;
      });
      const fanout = new Fanout({
        sinks,
        metrics: createMetrics(),
        logger: logCapture().logger,
        deadLetters: { record: async (entries) => (recorded.push(...entries), entries.length) },
        retryBaseMs: 1,
        retryMaxMs: 4,
        failedRetryBaseMs: 2,
        failedRetryMaxMs: 8,
      });
      // Up to 4 batches in flight, like the dispatcher's window.
      const inFlight: Promise<void>[] = [];
      for (const b of batches) {
        inFlight.push(fanout.write(b));
        if (inFlight.length >= 4) await inFlight.shift();
      }
      await Promise.all(inFlight);
      fanout.cancel();
      const health = fanout.health();
      for (const [i, sink] of sinks.entries()) {
        const dead = recorded.filter((r) => r.sink === sink.name).map((r) => Number(r.eventId));
        const expectedDead = [...sink.bad].sort((a, b) => a - b);
        assert.deepEqual(
          [...dead].sort((a, b) => a - b),
          expectedDead,
          `${sink.name}: dead letters are exactly its refused rows`,
        );
        assert.equal(new Set(dead).size, dead.length, `${sink.name}: each dead letter once`);
        for (const id of dead)
          assert.equal(sink.applied.has(id), false, `${sink.name}: ${id} both applied and dead`);
        assert.equal(sink.applied.size + dead.length, total, `${sink.name}: every event accounted for`);
        assert.deepEqual(
          sink.firstApplied,
          [...sink.firstApplied].sort((a, b) => a - b),
          `${sink.name}: stream order`,
        );
        assert.deepEqual(
          [health[i].state, health[i].received, health[i].delivered, health[i].deadLettered],
          ['up', total, total - dead.length, dead.length],
        );
      }
    });
  }

  it('batches that arrive while a sink is busy are written to it together; a fast sink keeps its own pace', async () => {
    const slowWrites: number[][] = [];
    let release: () => void = () => undefined;
    const slow: Sink = {
      name: 'analytics',
      start: async () => undefined,
      stop: async () => undefined,
      write: async (b) => {
        slowWrites.push(b.events.map((e) => e.event_id));
        if (slowWrites.length === 1) await new Promise<void>((r) => (release = r));
      },
    };
    const fast = new PickySink('redis', new Set());
    const fanout = new Fanout({ sinks: [slow, fast], metrics: createMetrics(), logger: logCapture().logger });
    const writes = [1, 2, 3, 4].map((seq) => fanout.write(batch(seq, [seq * 10, seq * 10 + 1])));
    const until = Date.now() + 5_000;
    while (fast.applied.length < 8 && Date.now() < until) await sleep(2);
    assert.deepEqual(
      fast.applied,
      [10, 11, 20, 21, 30, 31, 40, 41],
      'the fast sink is not held by the slow one',
    );
    release();
    await Promise.all(writes);
    assert.deepEqual(
      slowWrites,
      [
        [10, 11],
        [20, 21, 30, 31, 40, 41],
      ],
      'the three that queued went as one write',
    );
    fanout.cancel();
  });

  it(
    'single bad rows that arrive back to back and are merged are still dead-lettered one by one',
    { timeout: 20_000 },
    async () => {
      const recorded: DeadLetterEntry[] = [];
      let release: () => void = () => undefined;
      const refused = new Set([2, 3]);
      let first = true;
      const sink: Sink = {
        name: 'external',
        start: async () => undefined,
        stop: async () => undefined,
        write: async (b) => {
          if (first) {
            first = false;
            await new Promise<void>((r) => (release = r));
          }
          if (b.events.some((e) => refused.has(e.event_id)))
            throw Object.assign(new Error('422 Unprocessable'), { status: 422 });
        },
      };
      const fanout = new Fanout({
        sinks: [sink],
        metrics: createMetrics(),
        logger: logCapture().logger,
        deadLetters: { record: async (entries) => (recorded.push(...entries), entries.length) },
      });
      const writes = [fanout.write(batch(1, [1])), fanout.write(batch(2, [2])), fanout.write(batch(3, [3]))];
      await sleep(10);
      release(); // batches 2 and 3 queued meanwhile: one write of two rows, both refused
      await Promise.all(writes);
      assert.deepEqual(
        recorded.map((r) => r.eventId),
        [2, 3],
      );
      assert.equal(fanout.health()[0].state, 'up');
      fanout.cancel();
    },
  );

  it('batches of different streams are never written as one', async () => {
    const writes: [string, number[]][] = [];
    let release: () => void = () => undefined;
    const sink: Sink = {
      name: 'analytics',
      start: async () => undefined,
      stop: async () => undefined,
      write: async (b) => {
        writes.push([b.stream, b.events.map((e) => e.event_id)]);
        if (writes.length === 1) await new Promise<void>((r) => (release = r));
      },
    };
    const fanout = new Fanout({ sinks: [sink], metrics: createMetrics(), logger: logCapture().logger });
    const on = (stream: string, seq: number, ids: number[]) => fanout.write({ ...batch(seq, ids), stream });
    const all = [on('a', 1, [1]), on('a', 2, [2]), on('b', 3, [3]), on('b', 4, [4]), on('a', 5, [5])];
    await sleep(10);
    release();
    await Promise.all(all);
    assert.deepEqual(writes, [
      ['a', [1]],
      ['a', [2]],
      ['b', [3, 4]],
      ['a', [5]],
    ]);
    fanout.cancel();
  });

  it('merges only batches of one source: positions of two clusters never share a write', async () => {
    const writes: [string | undefined, number[]][] = [];
    let release!: () => void;
    const sink: Sink = {
      name: 'redis',
      start: async () => undefined,
      stop: async () => undefined,
      write: async (b) => {
        writes.push([b.sourceId, b.events.map((e) => e.event_id)]);
        if (writes.length === 1) await new Promise<void>((r) => (release = r));
      },
    };
    const fanout = new Fanout({ sinks: [sink], metrics: createMetrics(), logger: logCapture().logger });
    const on = (sourceId: string | undefined, seq: number, ids: number[]) =>
      fanout.write({ ...batch(seq, ids), stream: 'kafka:t:0', ...(sourceId ? { sourceId } : {}) });
    const all = [
      on('pg:1', 1, [1]),
      on('pg:1', 2, [2]),
      on('pg:1', 3, [3]),
      on('pg:2', 4, [4]),
      on('pg:2', 5, [5]),
    ];
    await sleep(10);
    release();
    await Promise.all(all);
    assert.deepEqual(writes, [
      ['pg:1', [1]],
      ['pg:1', [2, 3]],
      ['pg:2', [4, 5]],
    ]);
    fanout.cancel();
  });

  it("a sink's write interval merges what arrives meanwhile; a full batch's worth or flush() writes at once", async () => {
    const writes: number[][] = [];
    const sink: Sink = {
      name: 'analytics',
      writeIntervalMs: 60_000,
      start: async () => undefined,
      stop: async () => undefined,
      write: async (b) => void writes.push(b.events.map((e) => e.event_id)),
    };
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: logCapture().logger,
      fullRows: 4,
    });
    await fanout.write(batch(1, [1])); // the first write goes at once
    const small = [fanout.write(batch(2, [2])), fanout.write(batch(3, [3]))];
    await sleep(30);
    assert.deepEqual(writes, [[1]], 'held for the interval');
    const full = fanout.write(batch(4, [4, 5]));
    await Promise.all([...small, full]);
    assert.deepEqual(
      writes,
      [[1], [2, 3, 4, 5]],
      'four rows waiting: written without waiting out the interval',
    );
    const last = fanout.write(batch(5, [6]));
    await sleep(20);
    assert.equal(writes.length, 2);
    fanout.flush();
    await last;
    assert.deepEqual(writes.at(-1), [6], 'flush() (shutdown) writes what waits');
    fanout.cancel();
  });

  it('cancel() rejects the batches waiting out a write interval', async () => {
    const sink: Sink = {
      name: 'analytics',
      writeIntervalMs: 60_000,
      start: async () => undefined,
      stop: async () => undefined,
      write: async () => undefined,
    };
    const fanout = new Fanout({ sinks: [sink], metrics: createMetrics(), logger: logCapture().logger });
    await fanout.write(batch(1, [1]));
    const waiting = fanout.write(batch(2, [2]));
    fanout.cancel();
    await assert.rejects(waiting, /aborted/);
    await assert.rejects(fanout.write(batch(3, [3])), /aborted/);
  });

  describe('spilling (a slow sink that alone holds a full window)', () => {
    /**
     * Holds each write until released; once spilling, sets aside what it has not "sent": the
     * write in progress keeps its first event (in flight), the rest of it and every later
     * write while spilling come back as dead-lettered positions.
     */
    class SlowSink implements Sink {
      readonly name = 'external';
      readonly spillAfterMs = 1_000;
      spilling = false;
      readonly spills: boolean[] = [];
      readonly sent: number[] = [];
      readonly setAside: number[] = [];
      failing: string | null = null;
      #wake: (() => void) | null = null;
      async start() {}
      async stop() {}
      failure() {
        return this.failing;
      }
      spill(on: boolean) {
        this.spills.push(on);
        this.spilling = on;
        if (on) this.#wake?.();
      }
      release() {
        this.#wake?.();
      }
      async write(b: Batch): Promise<WriteResult | undefined> {
        if (!this.spilling) await new Promise<void>((r) => (this.#wake = r));
        const inFlight = this.spilling && this.#wake === null ? 0 : 1;
        this.#wake = null;
        const keep = this.spilling ? inFlight : b.events.length;
        this.sent.push(...b.events.slice(0, keep).map((e) => e.event_id));
        if (keep === b.events.length) return undefined;
        this.setAside.push(...b.events.slice(keep).map((e) => e.event_id));
        return { deadLettered: new Set(b.positions.slice(keep)) };
      }
    }

    function setup(windowFull: { full: boolean }) {
      const slow = new SlowSink();
      const fast = new PickySink('redis', new Set());
      const { logger, lines } = logCapture();
      const metrics = createMetrics();
      const fanout = new Fanout({
        sinks: [fast, slow],
        metrics,
        logger,
        windowFull: () => windowFull.full,
      });
      return { slow, fast, fanout, lines, metrics };
    }

    it('after spillAfterMs alone with the window full: the unsent events and what queued behind are set aside, later batches go out as usual', async () => {
      const window = { full: true };
      const { slow, fast, fanout, lines, metrics } = setup(window);
      const writes = [
        fanout.write(batch(1, [1, 2, 3])),
        fanout.write(batch(2, [4, 5])),
        fanout.write(batch(3, [6])),
      ];
      await sleep(10);
      assert.deepEqual(fast.applied, [1, 2, 3, 4, 5, 6], 'the fast sink took everything it was handed');
      const t0 = Date.now();
      fanout.checkSpill(t0);
      fanout.checkSpill(t0 + 999);
      assert.deepEqual(slow.spills, [], 'not before spillAfterMs');
      fanout.checkSpill(t0 + 1_000);
      assert.deepEqual(slow.spills, [true]);
      await Promise.all(writes);
      assert.deepEqual(
        slow.spills,
        [true, false],
        'spilling ends once the batches queued at the time are written',
      );
      assert.deepEqual(slow.sent, [1], 'the request in flight finished');
      assert.deepEqual(slow.setAside, [2, 3, 4, 5, 6]);
      const h = fanout.health().find((x) => x.name === 'external')!;
      assert.equal(h.delivered, 1);
      assert.equal(h.deadLettered, 5, 'set-aside events count as dead-lettered, not delivered');
      assert.equal(lines.filter((l) => /alone held the other sinks/.test(l.msg)).length, 1, 'one line');
      assert.match(await metrics.registry.metrics(), /engagement_sink_spills_total\{sink="external"\} 1/);
      // Later batches are sent again.
      const later = fanout.write(batch(4, [7]));
      await sleep(10);
      slow.release();
      await later;
      assert.deepEqual(slow.sent, [1, 7]);
      fanout.cancel();
    });

    it('never while the slow sink completes writes (a catch-up at its pace), only once it stops', async () => {
      const window = { full: true };
      const { slow, fanout } = setup(window);
      const writes = [fanout.write(batch(1, [1])), fanout.write(batch(2, [2])), fanout.write(batch(3, [3]))];
      await sleep(10);
      const t0 = Date.now();
      fanout.checkSpill(t0);
      fanout.checkSpill(t0 + 900);
      slow.release(); // batch 1 written: progress
      await writes[0];
      await sleep(10);
      fanout.checkSpill(t0 + 1_100);
      fanout.checkSpill(t0 + 1_900);
      assert.deepEqual(slow.spills, [], 'it completed a write 1.1 s ago');
      fanout.checkSpill(t0 + 2_100);
      assert.deepEqual(slow.spills, [true], 'no write completed for spillAfterMs');
      await Promise.all(writes);
      fanout.cancel();
    });

    it('never while the window has room, another sink holds batches too, or a failure is being ridden out', async () => {
      const window = { full: false };
      const { slow, fast, fanout } = setup(window);
      const first = fanout.write(batch(1, [1]));
      await sleep(10);
      const t0 = Date.now();
      fanout.checkSpill(t0);
      fanout.checkSpill(t0 + 5_000);
      assert.deepEqual(slow.spills, [], 'the window has room: the slow sink holds nobody back');
      window.full = true;
      slow.failing = 'external system failing for 3 s: HTTP 503';
      fanout.checkSpill(t0 + 6_000);
      fanout.checkSpill(t0 + 9_000);
      assert.deepEqual(slow.spills, [], 'an outage is ridden out for EXTERNAL_RETRY_FOR instead');
      slow.failing = null;
      fanout.checkSpill(t0 + 10_000);
      fanout.checkSpill(t0 + 10_500);
      assert.deepEqual(slow.spills, [], 'the clock starts again once the failure clears');
      fast.bad.add(99);
      const second = fanout.write(batch(2, [99]));
      fanout.checkSpill(t0 + 11_000);
      assert.deepEqual(slow.spills, [], 'another sink holds a batch too (retrying it)');
      slow.release();
      fanout.cancel();
      await Promise.allSettled([first, second]);
    });
  });
});
