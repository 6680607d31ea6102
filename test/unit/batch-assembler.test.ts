import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type pg from 'pg';
import { bigIntToLsn, compareLsn, eventPosition } from '../../src/domain/position.js';
import type { Batch, ContentInfo, EngagementEventRow } from '../../src/domain/types.js';
import { ContentDimension } from '../../src/enrichment/content-dimension.js';
import { silentLogger } from '../../src/logger.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';
import { BatchAssembler } from '../../src/pipeline/batch-assembler.js';
import type { Dispatcher, OpenBatch } from '../../src/pipeline/dispatcher.js';
import type { Change } from '../../src/source/changes.js';
import { intBetween, pick, prng, seeds } from '../helpers/prng.js';

// The assembler alone, with no I/O: a fake dispatcher that records offers and lets the test
// close batches itself, and a content dimension over a fake pool (lookups answer from a map).

class FakeDispatcher {
  open: OpenBatch<Batch> | null = null;
  offers: boolean[] = [];
  kicks = 0;
  private seq = 0;
  bind(open: OpenBatch<Batch>): void {
    this.open = open;
  }
  offer(atCommit: boolean): void {
    this.offers.push(atCommit);
  }
  kick(): void {
    this.kicks += 1;
  }
  isDrained(): boolean {
    return !this.open!.pending;
  }
  /** Closes the open batch like the real dispatcher does when a write slot is free. */
  take(): Batch {
    return this.open!.take(++this.seq);
  }
}

/** Answers content lookups from `rows`; `history` (when given) receives the INSERTs of content-history.ts. */
function fakePool(rows: ContentInfo[], history?: (params: unknown[]) => Promise<void>) {
  const lookups: string[][] = [];
  const pool = {
    query: async (text: string, params: unknown[] = []) => {
      if (/INSERT INTO/.test(text) && history) {
        await history(params);
        return { rows: [], rowCount: 0 };
      }
      const ids = params[0] as string[];
      lookups.push(ids);
      return { rows: rows.filter((r) => ids.includes(r.id)), rowCount: 0 };
    },
  };
  return { pool: pool as unknown as pg.Pool, lookups };
}

const VIDEO: ContentInfo = {
  id: '00000000-0000-4000-8000-000000000001',
  slug: 'video',
  title: 'Video',
  content_type: 'video',
  length_seconds: 100,
};
const PODCAST: ContentInfo = {
  ...VIDEO,
  id: '00000000-0000-4000-8000-000000000002',
  content_type: 'podcast',
};

function row(
  id: number,
  contentId: string | null = null,
  durationMs: number | null = 10_000,
): EngagementEventRow {
  return {
    id,
    content_id: contentId,
    user_id: null,
    event_type: 'play',
    event_ts: '2026-12-01T00:00:00.000000Z',
    duration_ms: durationMs,
    device: 'tv',
    raw_payload: null,
  };
}

interface Setup {
  assembler: BatchAssembler;
  dispatcher: FakeDispatcher;
  dimension: ContentDimension;
  metrics: Metrics;
  badRows: Extract<Change, { kind: 'bad-row' }>[];
  lookups: string[][];
}

function setup(
  options: {
    content?: ContentInfo[];
    slotName?: string;
    history?: (params: unknown[]) => Promise<void>;
    onBadRow?: () => Promise<void>;
  } = {},
): Setup {
  const { pool, lookups } = fakePool(options.content ?? [], options.history);
  const dimension = new ContentDimension(pool, { slotName: options.slotName });
  const dispatcher = new FakeDispatcher();
  const metrics = createMetrics();
  const badRows: Setup['badRows'] = [];
  const assembler = new BatchAssembler({
    stream: 'slot',
    dimension,
    metrics,
    logger: silentLogger(),
    dispatcher: dispatcher as unknown as Dispatcher<Batch>,
    onBadRow: async (change) => {
      badRows.push(change);
      await options.onBadRow?.();
    },
  });
  return { assembler, dispatcher, dimension, metrics, badRows, lookups };
}

async function feed(assembler: BatchAssembler, changes: Change[]): Promise<void> {
  for (const change of changes) await assembler.handle(change);
}

const begin = (commitLsn: string, committedAt = '2026-12-01T00:00:01.000000Z'): Change => ({
  kind: 'begin',
  commitLsn,
  committedAt,
});
const event = (r: EngagementEventRow): Change => ({ kind: 'event', row: r });
const commit = (ackLsn: string): Change => ({ kind: 'commit', ackLsn });

async function counter(metric: { get(): Promise<{ values: { value: number; labels: object }[] }> }) {
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
}

describe('BatchAssembler', () => {
  it('positions are (commit LSN, index in the transaction); the batch confirms its latest commit', async () => {
    const s = setup();
    await feed(s.assembler, [
      begin('0/100', '2026-12-01T00:00:01.000000Z'),
      event(row(1)),
      event(row(2)),
      commit('0/180'),
      begin('1/0', '2026-12-01T00:00:02.000000Z'),
      event(row(3)),
      commit('1/40'),
    ]);
    assert.deepEqual(
      s.dispatcher.offers,
      [false, false, true, false, true],
      'an offer per event and per commit',
    );
    const batch = s.dispatcher.take();
    assert.equal(batch.stream, 'slot');
    assert.deepEqual(
      batch.events.map((e) => e.event_id),
      [1, 2, 3],
    );
    assert.deepEqual(batch.positions, [
      eventPosition('0/100', 0),
      eventPosition('0/100', 1),
      eventPosition('1/0', 0),
    ]);
    assert.deepEqual(
      batch.events.map((e) => e.committed_at),
      ['2026-12-01T00:00:01.000000Z', '2026-12-01T00:00:01.000000Z', '2026-12-01T00:00:02.000000Z'],
    );
    assert.equal(batch.ackLsn, '1/40');
    assert.equal(s.assembler.pending, false, 'a taken batch leaves an empty one');
    assert.equal(s.assembler.isDrained(), true);
  });

  it('a batch taken inside a transaction confirms nothing; the transaction ends in the next batch', async () => {
    const s = setup();
    await feed(s.assembler, [begin('0/100'), event(row(1)), event(row(2))]);
    assert.equal(s.assembler.isDrained(), false, 'a transaction is open');
    const first = s.dispatcher.take();
    assert.equal(first.ackLsn, null);
    assert.equal(first.events.length, 2);
    assert.equal(s.assembler.isDrained(), false, 'still inside the transaction with nothing buffered');
    await feed(s.assembler, [event(row(3)), commit('0/180')]);
    const second = s.dispatcher.take();
    assert.deepEqual(second.positions, [eventPosition('0/100', 2)], 'the index continues across batches');
    assert.equal(second.ackLsn, '0/180');
    assert.equal(s.assembler.isDrained(), true);
  });

  it('an empty transaction (or a heartbeat) is a position to confirm with no rows; nothing at all is not pending', async () => {
    const s = setup();
    assert.equal(s.assembler.pending, false);
    assert.equal(s.assembler.oldestCommittedAt, null);
    const empty = s.dispatcher.take();
    assert.deepEqual([empty.events, empty.positions, empty.ackLsn], [[], [], null]);
    await feed(s.assembler, [begin('0/100'), commit('0/180'), commit('0/200')]);
    assert.equal(s.assembler.pending, true);
    assert.equal(s.assembler.rows, 0);
    const batch = s.dispatcher.take();
    assert.deepEqual([batch.events, batch.ackLsn], [[], '0/200']);
  });

  it('oldestCommittedAt is the commit time of the oldest buffered event', async () => {
    const s = setup();
    await feed(s.assembler, [begin('0/100', '2026-12-01T00:00:05.000000Z'), commit('0/110')]);
    assert.equal(s.assembler.oldestCommittedAt, null, 'a position alone is not an event');
    await feed(s.assembler, [begin('0/200', '2026-12-01T00:00:06.000000Z'), event(row(1)), commit('0/210')]);
    await feed(s.assembler, [begin('0/300', '2026-12-01T00:00:07.000000Z'), event(row(2)), commit('0/310')]);
    assert.equal(s.assembler.oldestCommittedAt, '2026-12-01T00:00:06.000000Z');
  });

  it('after a reconnect the replay from the last confirmed commit skips what was already handed on', async () => {
    const s = setup();
    const tx1 = [begin('0/100'), event(row(1)), event(row(2)), commit('0/180')];
    const tx2 = [begin('0/200'), event(row(3)), event(row(4)), event(row(5)), commit('0/280')];
    await feed(s.assembler, [...tx1, ...tx2.slice(0, 3)]);
    const first = s.dispatcher.take();
    assert.deepEqual(
      first.events.map((e) => e.event_id),
      [1, 2, 3, 4],
    );
    // The connection drops in the middle of tx2; the source replays from tx1's start.
    s.assembler.resetTransaction();
    assert.equal(s.assembler.isDrained(), true, 'no transaction is open any more');
    await feed(s.assembler, [...tx1, ...tx2]);
    const second = s.dispatcher.take();
    assert.deepEqual(
      second.events.map((e) => e.event_id),
      [5],
    );
    assert.deepEqual(second.positions, [eventPosition('0/200', 2)]);
    assert.equal(second.ackLsn, '0/280');
  });

  it('events see the content as of their place in the stream: upserts, deletes and TRUNCATE of content', async () => {
    const s = setup();
    await feed(s.assembler, [
      begin('0/100'),
      { kind: 'content-upsert', content: VIDEO },
      event(row(1, VIDEO.id)),
      // An update carrying only some columns (unchanged TOAST values are absent) keeps the rest.
      { kind: 'content-upsert', content: { id: VIDEO.id, length_seconds: 50 } },
      event(row(2, VIDEO.id)),
      { kind: 'content-upsert', content: PODCAST },
      { kind: 'content-delete', id: PODCAST.id },
      event(row(3, PODCAST.id)),
      commit('0/180'),
      begin('0/200'),
      { kind: 'content-truncate' },
      event(row(4, VIDEO.id)),
      commit('0/280'),
    ]);
    const events = s.dispatcher.take().events;
    assert.deepEqual(
      events.map((e) => [e.content_type, e.length_seconds, e.engagement_pct]),
      [
        ['video', 100, 0.1],
        ['video', 50, 0.2],
        [null, null, null],
        [null, null, null],
      ],
    );
    assert.deepEqual(s.lookups, [], 'content the stream carried needs no lookup, deleted content neither');
  });

  it('unknown content is looked up once while the stream waits; a miss is remembered as absent', async () => {
    const s = setup({ content: [VIDEO] });
    await s.assembler.handle(begin('0/100'));
    const waiting = s.assembler.handle(event(row(1, VIDEO.id)));
    assert.ok(waiting instanceof Promise, 'the source waits for the lookup');
    await waiting;
    await feed(s.assembler, [
      event(row(2, VIDEO.id)),
      event(row(3, PODCAST.id)),
      event(row(4, PODCAST.id)),
      event(row(5, null)),
      commit('0/180'),
    ]);
    assert.deepEqual(s.lookups, [[VIDEO.id], [PODCAST.id]]);
    const events = s.dispatcher.take().events;
    assert.deepEqual(
      events.map((e) => e.content_type),
      ['video', 'video', null, null, null],
    );
    const issues = (await s.metrics.enrichmentIssues.get()).values.map((v) => [v.labels.reason, v.value]);
    assert.deepEqual(issues.sort(), [
      ['null_content_id', 1],
      ['unknown_content', 2],
    ]);
  });

  it('an UPDATE that moves an event to another partition (its delete, then its insert) is an update, not a new event', async () => {
    const s = setup();
    await feed(s.assembler, [
      begin('0/100'),
      event(row(1)),
      commit('0/180'),
      // Postgres decodes the move through the partitioned root as a delete and an insert of the same id.
      begin('0/200'),
      { kind: 'ignored', what: 'event-delete', eventId: '1' },
      event(row(1)),
      event(row(2)),
      commit('0/280'),
      // Another transaction's insert of an id deleted earlier is an event again (a deleted row re-inserted later).
      begin('0/300'),
      event(row(1)),
      commit('0/380'),
    ]);
    const ignored = (await s.metrics.ignoredChanges.get()).values.map((v) => [v.labels.kind, v.value]);
    assert.deepEqual(ignored.sort(), [['event-update', 1]], 'the move is one update, not a delete too');
    const batch = s.dispatcher.take();
    assert.deepEqual(
      batch.events.map((e) => e.event_id),
      [1, 2, 1],
    );
    // The ignored insert keeps its index: event 2 is where earlier versions put it (replays across an upgrade).
    assert.equal(batch.positions[1], eventPosition('0/200', 1));
  });

  it('UPDATE/DELETE/TRUNCATE of events are counted and dropped; a halt is left to the source', async () => {
    const s = setup();
    await feed(s.assembler, [
      begin('0/100'),
      { kind: 'ignored', what: 'event-update' },
      { kind: 'ignored', what: 'event-delete' },
      { kind: 'ignored', what: 'event-delete', eventId: '7' },
      { kind: 'ignored', what: 'truncate' },
      commit('0/180'),
    ]);
    const ignored = (await s.metrics.ignoredChanges.get()).values.map((v) => [v.labels.kind, v.value]);
    assert.deepEqual(ignored.sort(), [
      ['event-delete', 2],
      ['event-update', 1],
      ['truncate', 1],
    ]);
    assert.equal(await counter(s.metrics.eventsReceived), 0);
    const batch = s.dispatcher.take();
    assert.deepEqual([batch.events.length, batch.ackLsn], [0, '0/180']);
  });

  it('a bad row is dead-lettered (the stream waits for it) and the transaction goes on', async () => {
    let release!: () => void;
    const recorded = new Promise<void>((r) => (release = r));
    const s = setup({ onBadRow: () => recorded });
    await feed(s.assembler, [begin('0/100'), event(row(1))]);
    const bad: Change = {
      kind: 'bad-row',
      table: 'engagement_events',
      reason: 'id "x" is not ...',
      raw: { id: 'x' },
    };
    let settled = false;
    const waiting = Promise.resolve(s.assembler.handle(bad)).then(() => (settled = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'the source waits until the bad row is recorded');
    release();
    await waiting;
    await feed(s.assembler, [event(row(2)), commit('0/180')]);
    assert.deepEqual(s.badRows, [bad]);
    assert.equal(await counter(s.metrics.badRows), 1);
    const batch = s.dispatcher.take();
    assert.deepEqual(
      batch.events.map((e) => e.event_id),
      [1, 2],
    );
    // The bad row keeps no index: the positions of the good rows are consecutive.
    assert.deepEqual(batch.positions, [eventPosition('0/100', 0), eventPosition('0/100', 1)]);
    assert.equal(batch.ackLsn, '0/180');
  });

  it('after close() nothing more is taken, not even an event whose lookup was in flight', async () => {
    let answer!: () => void;
    const gate = new Promise<void>((r) => (answer = r));
    const { pool } = fakePool([VIDEO]);
    const slowPool = {
      query: async (text: string, params: unknown[]): Promise<unknown> => {
        await gate;
        return pool.query(text, params);
      },
    };
    const dispatcher = new FakeDispatcher();
    const assembler = new BatchAssembler({
      stream: 'slot',
      dimension: new ContentDimension(slowPool as unknown as pg.Pool),
      metrics: createMetrics(),
      logger: silentLogger(),
      dispatcher: dispatcher as unknown as Dispatcher<Batch>,
      onBadRow: async () => undefined,
    });
    await assembler.handle(begin('0/100'));
    const waiting = assembler.handle(event(row(1, VIDEO.id)));
    assembler.close();
    answer();
    await waiting;
    await feed(assembler, [event(row(2)), commit('0/180')]);
    assert.equal(
      assembler.pending,
      false,
      'the event in flight and everything after close are replayed next start',
    );
  });

  it('a commit after content changes waits for the content history; its position is not confirmable before', async () => {
    let write!: () => void;
    const written: unknown[][] = [];
    const s = setup({
      slotName: 'slot',
      history: (params) => {
        written.push(params);
        return new Promise<void>((r) => (write = r));
      },
    });
    await feed(s.assembler, [
      begin('0/100'),
      { kind: 'content-upsert', content: VIDEO },
      event(row(1, VIDEO.id)),
    ]);
    const committing = s.assembler.handle(commit('0/180'));
    assert.ok(committing instanceof Promise, 'the source waits for the history');
    await new Promise((r) => setImmediate(r));
    assert.equal(written.length, 1, 'the content change is being written');
    assert.equal(s.dispatcher.take().ackLsn, null, 'the commit is not confirmable yet');
    write();
    await committing;
    assert.equal(s.dispatcher.take().ackLsn, '0/180');
    assert.deepEqual(s.dispatcher.offers.at(-1), true);
  });

  // Property: whatever the transaction sizes, the points where batches close and the
  // reconnects (the source replays from any earlier transaction boundary), every event is
  // handed on exactly once, in stream order, and a batch never carries a position to confirm
  // unless every event of every transaction up to that position was handed on with it or before.
  for (const seed of seeds(30)) {
    it(`random streams, batch cuts and reconnects (seed ${seed}): each event once, in order, confirmable only when complete`, async () => {
      const random = prng(seed);
      const s = setup({ content: [VIDEO] });
      type Tx = { commitLsn: string; ackLsn: string; changes: Change[]; ids: number[] };
      const txs: Tx[] = [];
      let lsn = BigInt(intBetween(random, 1, 0xffff)) << 24n;
      let nextId = 1;
      for (let t = intBetween(random, 1, 40); t > 0; t--) {
        lsn += BigInt(intBetween(random, 1, 0x10_0000)) * (random() < 0.1 ? 0x1000n : 1n);
        const commitLsn = bigIntToLsn(lsn);
        const changes: Change[] = [begin(commitLsn)];
        const ids: number[] = [];
        for (let n = random() < 0.2 ? 0 : intBetween(random, 1, 8); n > 0; n--) {
          const r = random();
          if (r < 0.7) {
            ids.push(nextId);
            changes.push(event(row(nextId++, pick(random, [VIDEO.id, PODCAST.id, null]))));
          } else if (r < 0.8) changes.push({ kind: 'content-upsert', content: PODCAST });
          else if (r < 0.85) changes.push({ kind: 'content-delete', id: PODCAST.id });
          else if (r < 0.9) changes.push({ kind: 'content-truncate' });
          else changes.push({ kind: 'ignored', what: 'event-update' });
        }
        lsn += BigInt(intBetween(random, 1, 0x1000));
        const ackLsn = bigIntToLsn(lsn);
        changes.push(commit(ackLsn));
        txs.push({ commitLsn, ackLsn, changes, ids });
      }
      const taken: Batch[] = [];
      let t = 0;
      let reconnects = 0;
      while (t < txs.length) {
        const changes = txs[t].changes;
        let i = 0;
        let dropped = false;
        for (; i < changes.length; i++) {
          await s.assembler.handle(changes[i]);
          if (random() < 0.1) taken.push(s.dispatcher.take());
          if (reconnects < 5 && random() < 0.03) {
            dropped = true;
            break;
          }
        }
        if (dropped) {
          // The connection drops; the source resumes at some earlier transaction's begin.
          reconnects += 1;
          s.assembler.resetTransaction();
          t = intBetween(random, 0, t);
        } else t += 1;
      }
      taken.push(s.dispatcher.take());
      assert.equal(s.assembler.isDrained(), true);

      const handed = taken.flatMap((b) => b.events.map((e) => e.event_id));
      assert.deepEqual(
        handed,
        txs.flatMap((tx) => tx.ids),
        'each event once, in stream order',
      );
      const positions = taken.flatMap((b) => b.positions);
      for (let i = 1; i < positions.length; i++)
        assert.ok(positions[i - 1] < positions[i], 'positions increase');
      let handedSoFar = 0;
      for (const batch of taken) {
        handedSoFar += batch.events.length;
        if (batch.ackLsn === null) continue;
        const complete = txs
          .filter((tx) => compareLsn(tx.ackLsn, batch.ackLsn!) <= 0)
          .reduce((n, tx) => n + tx.ids.length, 0);
        assert.ok(
          complete <= handedSoFar,
          `${batch.ackLsn} confirmable with ${handedSoFar} of ${complete} events handed on`,
        );
      }
      assert.equal(taken.filter((b) => b.ackLsn !== null).at(-1)?.ackLsn, txs.at(-1)!.ackLsn);
    });
  }
});
