import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type pg from 'pg';
import { compareLsn } from '../../src/domain/position.js';
import type { Batch, EngagementEventRow } from '../../src/domain/types.js';
import { silentLogger } from '../../src/logger.js';
import { BatchAssembler } from '../../src/pipeline/batch-assembler.js';
import { Dispatcher } from '../../src/pipeline/dispatcher.js';
import { Fanout } from '../../src/pipeline/fanout.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { Sink } from '../../src/sinks/sink.js';
import type { Change } from '../../src/source/changes.js';
import { ContentDimension } from '../../src/enrichment/content-dimension.js';
import { JsonText } from '../../src/domain/json-text.js';
import { batchWeight, ROW_WEIGHT_BYTES } from '../../src/pipeline/row-weight.js';

/** mulberry32: a small seeded PRNG, so a failing seed can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An idempotent fake destination: applies each event_id once, records the order of
 * accepted writes, fails (before applying anything) with a transient error at `failRate`,
 * and takes a random time per write. `stuck` holds every write until released.
 */
class FakeSink implements Sink {
  readonly applied = new Map<number, number>();
  readonly acceptedPositions: string[] = [];
  accepted = 0;
  writeIntervalMs?: number;
  writes = 0;
  stuck: Promise<void> | null = null;
  constructor(
    readonly name: string,
    private readonly random: () => number,
    private readonly maxLatencyMs: number,
    public failRate: number,
  ) {}
  async start() {}
  async stop() {}
  async write(batch: Batch, signal: AbortSignal): Promise<void> {
    this.writes += 1;
    if (this.stuck) await this.stuck;
    await sleep(Math.floor(this.random() * this.maxLatencyMs));
    if (signal.aborted) throw new Error('aborted');
    if (this.random() < this.failRate)
      throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
    for (const e of batch.events) this.applied.set(e.event_id, (this.applied.get(e.event_id) ?? 0) + 1);
    this.acceptedPositions.push(...batch.positions);
    this.accepted += batch.events.length;
  }
}

function row(id: number): EngagementEventRow {
  return {
    id,
    content_id: null,
    user_id: null,
    event_type: 'play',
    event_ts: '2026-12-01T00:00:00.000000Z',
    duration_ms: 1000,
    device: 'tv',
    raw_payload: null,
  };
}

interface Harness {
  assembler: BatchAssembler;
  dispatcher: Dispatcher<Batch>;
  fanout: Fanout;
  confirmed: string[];
}

function build(
  sinks: FakeSink[],
  options: {
    maxRows: number;
    maxInFlight: number;
    maxWaitMs?: number;
    paceMs?: number;
    batches?: number[][];
  },
  onConfirm: (lsn: string) => void = () => undefined,
  rowsOf: (events: Batch['events']) => number = (events) => events.length,
): Harness {
  const metrics = createMetrics();
  const logger = silentLogger();
  const confirmed: string[] = [];
  const fanout = new Fanout({
    sinks,
    metrics,
    logger,
    retryBaseMs: 1,
    retryMaxMs: 5,
    fullRows: options.maxRows,
  });
  const dispatcher = new Dispatcher<Batch>({
    maxRows: options.maxRows,
    maxWaitMs: options.maxWaitMs ?? 2,
    paceMs: options.paceMs,
    maxInFlight: options.maxInFlight,
    rowsOf: (b) => rowsOf(b.events),
    write: (b) => {
      options.batches?.push(b.events.map((e) => e.event_id));
      return fanout.write(b);
    },
    confirm: (lsn) => {
      confirmed.push(lsn);
      onConfirm(lsn);
    },
  });
  const assembler = new BatchAssembler({
    stream: 'test',
    dimension: new ContentDimension({} as pg.Pool),
    metrics,
    logger,
    dispatcher,
    onBadRow: async () => undefined,
  });
  return { assembler, dispatcher, fanout, confirmed };
}

/** Feeds changes like the replication library with flow control: one at a time, awaiting promises. */
async function feed(handle: (c: Change) => void | Promise<void>, changes: Change[]): Promise<void> {
  for (const change of changes) await handle(change);
}

const lsn = (n: number) => `0/${n.toString(16).toUpperCase()}`;

function transaction(index: number, firstId: number, size: number): Change[] {
  const base = (index + 1) * 0x1000;
  return [
    { kind: 'begin', commitLsn: lsn(base), committedAt: new Date(Date.now() - 1000).toISOString() },
    ...Array.from({ length: size }, (_, i): Change => ({ kind: 'event', row: row(firstId + i) })),
    { kind: 'commit', ackLsn: lsn(base + 0x800) },
  ];
}

async function waitUntil(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

describe('Dispatcher + BatchAssembler', () => {
  it('events with large payloads count by their size: one huge transaction stays within the window in bytes', async () => {
    const sink = new FakeSink('slow', () => 0.5, 4, 0);
    // Build with the pipeline's weighting (direct.ts).
    const h = build([sink], { maxRows: 64, maxInFlight: 2 }, undefined, batchWeight);
    const payload = new JsonText(`{"b":"${'x'.repeat(8 * ROW_WEIGHT_BYTES)}"}`); // weighs 9
    const big = (id: number): EngagementEventRow => ({ ...row(id), raw_payload: payload });
    const sizes: number[] = [];
    const write = sink.write.bind(sink);
    sink.write = (b, signal) => (sizes.push(b.events.length), write(b, signal));
    const changes = transaction(0, 1, 300).map((c) =>
      c.kind === 'event' ? { ...c, row: big(c.row.id) } : c,
    );
    await feed((c) => h.assembler.handle(c), changes);
    await waitUntil('all 300 delivered', () => sink.accepted === 300);
    // 64 / 9: at most 8 such events per batch (7 fill it to 63, the 8th closes it), and at most
    // (maxInFlight + 1) x maxRows in weight held at once: 17 events, not the whole transaction.
    assert.ok(Math.max(...sizes) <= 8, `batches of ${Math.max(...sizes)} events`);
    assert.ok(h.dispatcher.peakRows <= 3 * 64 + 9, `peak weight ${h.dispatcher.peakRows}`);
    assert.equal(sink.applied.size, 300);
  });

  it('while the window is full, small transactions grow the open batch instead of queueing batches', async () => {
    const sink = new FakeSink('slow', () => 0, 0, 0);
    let release!: () => void;
    sink.stuck = new Promise((r) => (release = r));
    const h = build([sink], { maxRows: 50, maxInFlight: 2 });
    // 300 transactions of 5 events during the outage.
    const changes: Change[] = [];
    for (let t = 0; t < 300; t++) changes.push(...transaction(t, t * 5 + 1, 5));
    const fed = feed(h.assembler.handle, changes);
    await waitUntil(
      'window full and the source paused',
      () => !h.dispatcher.hasRoom && h.assembler.rows >= 50,
    );
    await sleep(20);
    assert.ok(
      h.dispatcher.inFlightRows <= 2 * 50,
      `${h.dispatcher.inFlightRows} rows in flight: never more than the window`,
    );
    assert.equal(h.assembler.rows, 50, 'the open batch stopped at maxRows: the source is paused');
    assert.ok(h.dispatcher.peakRows <= 3 * 50, `held ${h.dispatcher.peakRows} events`);
    release();
    sink.stuck = null;
    await fed;
    await waitUntil('drained', () => h.assembler.isDrained());
    assert.equal(sink.accepted, 1500);
    // Batches grew under load: far fewer than one per transaction.
    assert.ok(sink.writes < 100, `${sink.writes} writes for 300 transactions`);
    assert.equal(h.confirmed.at(-1), lsn(300 * 0x1000 + 0x800));
  });

  it('behind a slow sink, small batches keep reaching a fast one until the rows bound, not a batch count', async () => {
    const slow = new FakeSink('analytics', () => 0, 0, 0);
    const fast = new FakeSink('redis', () => 0, 0, 0);
    let release!: () => void;
    slow.stuck = new Promise((r) => (release = r));
    const h = build([slow, fast], { maxRows: 50, maxInFlight: 4 });
    // 100 transactions of 2 events, each closing its own batch (maxWaitMs 2 ms between them).
    const changes: Change[] = [];
    for (let t = 0; t < 100; t++) changes.push(...transaction(t, t * 2 + 1, 2));
    const fed = (async () => {
      for (let t = 0; t < 100; t++) {
        await feed(h.assembler.handle, changes.slice(t * 4, t * 4 + 4));
        await sleep(3);
      }
    })();
    await waitUntil('the fast sink received 150 events', () => fast.accepted >= 150);
    assert.ok(h.dispatcher.inFlightBatches > 4, `${h.dispatcher.inFlightBatches} small batches in flight`);
    assert.ok(h.dispatcher.inFlightRows <= 4 * 50, `${h.dispatcher.inFlightRows} rows in flight`);
    release();
    slow.stuck = null;
    await fed;
    await waitUntil('drained', () => h.assembler.isDrained());
    assert.equal(slow.accepted, 200);
    assert.ok(h.dispatcher.peakRows <= 5 * 50, `held ${h.dispatcher.peakRows}`);
    assert.ok(slow.writes < fast.writes, `merged writes: slow ${slow.writes}, fast ${fast.writes}`);
    assert.equal(h.confirmed.at(-1), lsn(100 * 0x1000 + 0x800));
  });

  it('a transaction larger than maxRows is split; its position is confirmed only with its last batch', async () => {
    const sink = new FakeSink('s', () => 0, 0, 0);
    const h = build([sink], { maxRows: 10, maxInFlight: 1 });
    await feed(h.assembler.handle, transaction(0, 1, 35));
    await waitUntil('drained', () => h.assembler.isDrained());
    assert.deepEqual(h.confirmed, [lsn(0x1000 + 0x800)]);
    assert.equal(sink.accepted, 35);
  });

  it('isDrained is false inside a transaction, while buffered, and while in flight', async () => {
    const sink = new FakeSink('s', () => 0, 0, 0);
    let release!: () => void;
    sink.stuck = new Promise((r) => (release = r));
    const h = build([sink], { maxRows: 100, maxInFlight: 1, maxWaitMs: 10_000 });
    assert.equal(h.assembler.isDrained(), true);
    const [begin, e1, commit] = transaction(0, 1, 1);
    await h.assembler.handle(begin);
    assert.equal(h.assembler.isDrained(), false, 'transaction open');
    await h.assembler.handle(e1);
    await h.assembler.handle(commit);
    assert.equal(h.dispatcher.inFlightBatches, 1, 'idle sinks: written at the commit');
    assert.equal(h.assembler.isDrained(), false, 'in flight');
    release();
    sink.stuck = null;
    await waitUntil('drained', () => h.assembler.isDrained());
  });

  it('commits faster than one per maxWaitMs share batches; a few close ones still go at once', async () => {
    // One event per transaction, as applications often commit: a batch per commit would cost
    // every sink its per-write price per event (BatchPacer).
    const maxWaitMs = 100;
    const sink = new FakeSink('s', () => 0, 0, 0);
    const batches: number[][] = [];
    const h = build([sink], { maxRows: 100, maxInFlight: 4, maxWaitMs, paceMs: maxWaitMs, batches });
    const commitOne = (t: number) => feed(h.assembler.handle, transaction(t, t + 1, 1));
    const burstAt = performance.now(); // the bucket refills from the first spend on
    for (let t = 0; t < 4; t++) await commitOne(t);
    assert.deepEqual(batches, [[1], [2], [3], [4]], 'a burst of commits after a pause: each at once');
    for (let t = 4; t < 8; t++) await commitOne(t);
    assert.equal(batches.length, 4, 'then commits wait for the pace');
    await waitUntil('the fifth batch', () => batches.length === 5);
    assert.ok(performance.now() - burstAt >= maxWaitMs - 2, 'not before maxWaitMs');
    assert.deepEqual(batches[4], [5, 6, 7, 8], 'all of them in one batch');
    await sleep(4 * maxWaitMs + 50);
    await commitOne(8);
    assert.deepEqual(batches.at(-1), [9], 'after a pause: at once again');
    await waitUntil('drained', () => h.assembler.isDrained());
    assert.equal(h.confirmed.at(-1), lsn(9 * 0x1000 + 0x800));
    assert.equal(sink.accepted, 9);
  });

  it('a transaction read whole arms no maxWaitMs timer; one left open closes after maxWaitMs', async () => {
    // A timer armed and cleared within one read still woke the thread maxWaitMs later.
    const maxWaitMs = 77;
    const armed: number[] = [];
    const real = globalThis.setTimeout;
    const spy = ((fn: () => void, ms?: number) => {
      if (ms === maxWaitMs) armed.push(ms);
      return real(fn, ms);
    }) as typeof setTimeout;
    globalThis.setTimeout = spy;
    try {
      const sink = new FakeSink('s', () => 0, 0, 0);
      // Held, so that no accepted write closes the open batch early (slotFreed) in place of the timer.
      let release!: () => void;
      sink.stuck = new Promise((r) => (release = r));
      const batches: number[][] = [];
      const h = build([sink], { maxRows: 100, maxInFlight: 4, maxWaitMs, batches });
      await feed(h.assembler.handle, transaction(0, 1, 3));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(batches, [[1, 2, 3]], 'written at its commit');
      assert.equal(armed.length, 0, 'no timer armed for it');

      const [begin, ...rest] = transaction(1, 4, 2);
      await feed(h.assembler.handle, [begin, ...rest.slice(0, 2)]); // no commit: still open
      const openedAt = performance.now();
      await new Promise((r) => setImmediate(r));
      assert.equal(armed.length, 1, 'armed once the read was handled');
      await waitUntil('the open batch', () => batches.length === 2);
      assert.ok(performance.now() - openedAt >= maxWaitMs - 2, 'not before maxWaitMs');
      assert.deepEqual(batches[1], [4, 5]);
      release();
      sink.stuck = null;
      await feed(h.assembler.handle, rest.slice(2));
      await waitUntil('drained', () => h.assembler.isDrained());
      assert.equal(h.confirmed.at(-1), lsn(2 * 0x1000 + 0x800));
    } finally {
      globalThis.setTimeout = real;
    }
  });

  it('a long maxWaitMs does not hold sparse commits (the pace is 20 ms at most)', async () => {
    const sink = new FakeSink('s', () => 0, 0, 0);
    const batches: number[][] = [];
    const h = build([sink], { maxRows: 100, maxInFlight: 4, maxWaitMs: 2 ** 31 - 1, batches });
    for (let t = 0; t < 8; t++) {
      await feed(h.assembler.handle, transaction(t, t + 1, 1));
      assert.equal(batches.length, t + 1, `commit ${t + 1} went at once`);
      await sleep(30);
    }
    await waitUntil('drained', () => h.assembler.isDrained());
    assert.equal(h.confirmed.at(-1), lsn(8 * 0x1000 + 0x800));
  });

  it('full batches are not paced and do not spend the pace: a large transaction leaves it for the next commits', async () => {
    const sink = new FakeSink('s', () => 0, 0, 0);
    const batches: number[][] = [];
    const h = build([sink], { maxRows: 10, maxInFlight: 8, maxWaitMs: 60_000, paceMs: 60_000, batches });
    await feed(h.assembler.handle, transaction(0, 1, 55));
    assert.deepEqual(
      batches.map((b) => b.length),
      [10, 10, 10, 10, 10, 5],
      'five full batches, then the rest at the commit',
    );
    for (let t = 1; t < 4; t++) await feed(h.assembler.handle, transaction(t, 55 + t, 1));
    assert.equal(batches.length, 9, 'the burst is still there for the next commits');
    await waitUntil('drained', () => h.assembler.isDrained());
  });

  it('stop() returns by its deadline with the window full and a sink stuck, and reports what is left', async () => {
    const sink = new FakeSink('stuck', () => 0, 0, 0);
    sink.stuck = new Promise(() => undefined); // never answers
    const h = build([sink], { maxRows: 10, maxInFlight: 2 });
    const changes: Change[] = [];
    for (let t = 0; t < 20; t++) changes.push(...transaction(t, t * 3 + 1, 3));
    const fed = feed(h.assembler.handle, changes);
    await waitUntil('paused', () => !h.dispatcher.hasRoom && h.assembler.rows >= 10);
    const inFlight = h.dispatcher.inFlightBatches;
    h.assembler.close();
    const started = Date.now();
    const report = await h.dispatcher.stop(Date.now() + 300);
    h.fanout.cancel();
    assert.ok(
      Date.now() - started < 5_000,
      'bounded (the deadline is 300 ms; the rest is room for a busy machine)',
    );
    assert.equal(report.drained, false);
    assert.equal(report.batches, inFlight + 1, 'the batches in flight and the open one');
    assert.ok(report.rows >= 20, `${report.rows} rows left`);
    await fed; // the paused source was released
    assert.deepEqual(h.confirmed, []);
  });

  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`randomized (seed ${seed}): bounded memory, in-order confirmation after every sink, each event applied once`, async () => {
      const random = prng(seed);
      const maxRows = 1 + Math.floor(random() * 40);
      const maxInFlight = 1 + Math.floor(random() * 4);
      const sinks = [0, 1, 2].map(
        (i) => new FakeSink(`sink${i}`, prng(seed * 100 + i), Math.floor(random() * 6), random() * 0.3),
      );
      // Some sinks commit at most every few ms (as analytics stores do): they take merged batches.
      for (const sink of sinks) if (random() < 0.5) sink.writeIntervalMs = Math.floor(random() * 12);
      const bound = (maxInFlight + 1) * maxRows;
      // Transactions of 0..(3 x maxRows) events, so some span several batches.
      const txEnds: { ackLsn: string; lastId: number }[] = [];
      const changes: Change[] = [];
      let nextId = 1;
      const count = 60 + Math.floor(random() * 60);
      for (let t = 0; t < count; t++) {
        const size = random() < 0.2 ? 0 : Math.floor(random() * random() * 3 * maxRows) + 1;
        changes.push(...transaction(t, nextId, size));
        nextId += size;
        txEnds.push({ ackLsn: (changes.at(-1) as { ackLsn: string }).ackLsn, lastId: nextId - 1 });
      }
      let received = 0;
      let peakHeld = 0;
      const violations: string[] = [];
      const minAccepted = () => Math.min(...sinks.map((s) => s.accepted));
      const h = build(sinks, { maxRows, maxInFlight }, (confirmedLsn) => {
        // Every event of every transaction up to the confirmed one is in every sink.
        const upTo = txEnds.filter((t) => compareLsn(t.ackLsn, confirmedLsn) <= 0).at(-1);
        if (!upTo) return;
        for (const s of sinks) {
          for (let id = 1; id <= upTo.lastId; id++) {
            if (!s.applied.has(id)) {
              violations.push(`${confirmedLsn} confirmed before ${s.name} had event ${id}`);
              return;
            }
          }
        }
      });
      for (const change of changes) {
        if (change.kind === 'event') received += 1;
        const pending = h.assembler.handle(change);
        peakHeld = Math.max(peakHeld, received - minAccepted());
        await pending;
        peakHeld = Math.max(peakHeld, received - minAccepted());
        if (random() < 0.05) await sleep(Math.floor(random() * 4));
      }
      await waitUntil('drained', () => h.assembler.isDrained(), 60_000);
      assert.deepEqual(violations, []);
      assert.ok(
        peakHeld <= bound,
        `held ${peakHeld} events, bound (${maxInFlight}+1) x ${maxRows} = ${bound}`,
      );
      assert.ok(h.dispatcher.peakRows <= bound, `dispatcher peak ${h.dispatcher.peakRows} > ${bound}`);
      for (let i = 1; i < h.confirmed.length; i++) {
        assert.ok(compareLsn(h.confirmed[i - 1], h.confirmed[i]) < 0, 'confirmed positions increase');
      }
      assert.equal(h.confirmed.at(-1), txEnds.at(-1)!.ackLsn, 'the last transaction is confirmed');
      for (const s of sinks) {
        assert.equal(s.applied.size, nextId - 1, `${s.name} has every event`);
        assert.ok(
          [...s.applied.values()].every((n) => n === 1),
          `${s.name} applied each event once`,
        );
        const sorted = [...s.acceptedPositions].sort();
        assert.deepEqual(s.acceptedPositions, sorted, `${s.name} received writes in stream order`);
      }
    });
  }
});
