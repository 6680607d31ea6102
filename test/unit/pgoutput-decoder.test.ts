import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Pgoutput } from 'pg-logical-replication';
import { ErrorCodes, PipelineError } from '../../src/errors.js';
import type { Change } from '../../src/source/changes.js';
import {
  decodePgoutput,
  decodePgoutputChanges,
  HEARTBEAT_PREFIX,
} from '../../src/source/pgoutput-decoder.js';
import { JsonText } from '../../src/domain/json-text.js';
import { DEFAULT_SHAPE } from '../../src/domain/source-shape.js';
import { toSafeInteger } from '../../src/source/decode-rows.js';
import { intBetween, pick, prng, seeds } from '../helpers/prng.js';

// Messages shaped like pg-logical-replication's pgoutput output (tuples after the pg type
// parsers the pipeline installs: int8 as text, timestamptz as text, jsonb as a JsonText).

function relation(name: string, schema = 'public'): Pgoutput.MessageRelation {
  return {
    tag: 'relation',
    relationOid: name.length,
    schema,
    name,
    replicaIdentity: 'default',
    columns: [],
    keyColumns: ['id'],
  };
}
const EVENTS = relation('engagement_events');
const CONTENT = relation('content');
const OTHER = relation('audit_log');

const CONTENT_ID = '00000000-0000-4000-8000-000000000001';

function eventTuple(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: '42',
    content_id: CONTENT_ID,
    user_id: '00000000-0000-4000-8000-0000000000aa',
    event_type: 'play',
    event_ts: '2026-12-01 10:11:12.345678+00',
    duration_ms: 1500,
    device: 'ios',
    raw_payload: new JsonText('{"n":1}'),
    ...overrides,
  };
}

const insert = (rel: Pgoutput.MessageRelation, tuple: Record<string, unknown>): Pgoutput.MessageInsert => ({
  tag: 'insert',
  relation: rel,
  new: tuple,
});
const update = (rel: Pgoutput.MessageRelation, tuple: Record<string, unknown>): Pgoutput.MessageUpdate => ({
  tag: 'update',
  relation: rel,
  key: null,
  old: null,
  new: tuple,
});
const del = (
  rel: Pgoutput.MessageRelation,
  key: Record<string, unknown> | null,
  old: Record<string, unknown> | null = null,
): Pgoutput.MessageDelete => ({ tag: 'delete', relation: rel, key, old });
const truncate = (rels: Pgoutput.MessageRelation[], restartIdentity = false): Pgoutput.MessageTruncate => ({
  tag: 'truncate',
  cascade: false,
  restartIdentity,
  relations: rels,
});
const message = (overrides: Partial<Pgoutput.MessageMessage> = {}): Pgoutput.MessageMessage => ({
  tag: 'message',
  flags: 0,
  transactional: false,
  messageLsn: '0/5000',
  prefix: HEARTBEAT_PREFIX,
  content: new Uint8Array(),
  ...overrides,
});

describe('pgoutput decoder', () => {
  it('begin: the commit position and the commit time in microseconds', () => {
    const begin: Pgoutput.MessageBegin = {
      tag: 'begin',
      commitLsn: '16/B374D848',
      // µs since the Unix epoch, as the library converts it from the Postgres epoch
      commitTime: 1_796_120_472_123_456n,
      xid: 7,
    };
    assert.deepEqual(decodePgoutput(begin), {
      kind: 'begin',
      commitLsn: '16/B374D848',
      committedAt: '2026-12-01T10:21:12.123456Z',
    });
    assert.deepEqual(decodePgoutput({ ...begin, commitLsn: null, commitTime: 0n }), {
      kind: 'begin',
      commitLsn: '0/0',
      committedAt: '1970-01-01T00:00:00.000000Z',
    });
  });

  it('commit: the position to confirm is the end of the commit record, where the next one starts', () => {
    const commit: Pgoutput.MessageCommit = {
      tag: 'commit',
      flags: 0,
      commitLsn: '0/1000',
      commitEndLsn: '0/1030',
      commitTime: 0n,
    };
    assert.deepEqual(decodePgoutput(commit), { kind: 'commit', ackLsn: '0/1030' });
    assert.deepEqual(decodePgoutput({ ...commit, commitEndLsn: null }), { kind: 'commit', ackLsn: '0/1000' });
  });

  it('an inserted event becomes a domain row (id as a number, timestamp in canonical ISO)', () => {
    assert.deepEqual(decodePgoutput(insert(EVENTS, eventTuple())), {
      kind: 'event',
      row: {
        id: 42,
        content_id: CONTENT_ID,
        user_id: '00000000-0000-4000-8000-0000000000aa',
        event_type: 'play',
        event_ts: '2026-12-01T10:11:12.345678Z',
        duration_ms: 1500,
        device: 'ios',
        raw_payload: new JsonText('{"n":1}'),
      },
    });
    const sparse = decodePgoutput(
      insert(
        EVENTS,
        eventTuple({
          content_id: null,
          user_id: null,
          event_type: null,
          device: null,
          duration_ms: null,
          raw_payload: null,
          event_ts: '2026-12-01 12:11:12+02',
        }),
      ),
    );
    assert.deepEqual(sparse, {
      kind: 'event',
      row: {
        id: 42,
        content_id: null,
        user_id: null,
        event_type: null,
        event_ts: '2026-12-01T10:11:12.000000Z',
        duration_ms: null,
        device: null,
        raw_payload: null,
      },
    });
  });

  it('events are immutable facts: UPDATE, DELETE and TRUNCATE of them are ignored (and counted downstream)', () => {
    assert.deepEqual(decodePgoutput(update(EVENTS, eventTuple())), { kind: 'ignored', what: 'event-update' });
    // The deleted id travels with it (see the assembler: a partition move is a delete and an insert).
    assert.deepEqual(decodePgoutput(del(EVENTS, { id: '42' })), {
      kind: 'ignored',
      what: 'event-delete',
      eventId: '42',
    });
    assert.deepEqual(decodePgoutput(del(EVENTS, null, null)), { kind: 'ignored', what: 'event-delete' });
    assert.deepEqual(decodePgoutput(truncate([EVENTS])), { kind: 'ignored', what: 'truncate' });
  });

  it('TRUNCATE … RESTART IDENTITY of the events halts the stream with a fatal error', () => {
    for (const rels of [[EVENTS], [CONTENT, EVENTS], [OTHER, EVENTS]]) {
      const change = decodePgoutput(truncate(rels, true));
      assert.equal(change?.kind, 'halt');
      const { error } = change as Extract<Change, { kind: 'halt' }>;
      assert.ok(error instanceof PipelineError);
      assert.equal(error.code, ErrorCodes.TRUNCATE_RESTART_IDENTITY);
      assert.equal(error.kind, 'fatal');
    }
    // RESTART IDENTITY of content alone reuses no event_id.
    assert.deepEqual(decodePgoutput(truncate([CONTENT], true)), { kind: 'content-truncate' });
  });

  it('content: inserts and updates are upserts of the columns present, deletes by key or old row, TRUNCATE empties it', () => {
    const full = { id: CONTENT_ID, slug: 'v', title: 'V', content_type: 'video', length_seconds: 300 };
    assert.deepEqual(decodePgoutput(insert(CONTENT, full)), { kind: 'content-upsert', content: full });
    // An unchanged TOASTed column arrives undefined: it is absent, so the dimension keeps its value.
    assert.deepEqual(
      decodePgoutput(update(CONTENT, { id: CONTENT_ID, slug: 'v2', title: undefined, length_seconds: null })),
      { kind: 'content-upsert', content: { id: CONTENT_ID, slug: 'v2', length_seconds: null } },
    );
    assert.deepEqual(decodePgoutput(del(CONTENT, { id: CONTENT_ID })), {
      kind: 'content-delete',
      id: CONTENT_ID,
    });
    assert.deepEqual(decodePgoutput(del(CONTENT, null, { ...full })), {
      kind: 'content-delete',
      id: CONTENT_ID,
    });
    assert.equal(decodePgoutput(del(CONTENT, null, null)), null, 'no identity: nothing to delete');
    assert.deepEqual(decodePgoutput(truncate([CONTENT])), { kind: 'content-truncate' });
    assert.deepEqual(decodePgoutput(truncate([CONTENT, EVENTS])), { kind: 'content-truncate' });
  });

  it('tables the pipeline does not read, and messages it does not need, decode to nothing', () => {
    assert.equal(decodePgoutput(insert(OTHER, { id: '1' })), null);
    assert.equal(decodePgoutput(update(OTHER, { id: '1' })), null);
    assert.equal(decodePgoutput(del(OTHER, { id: '1' })), null);
    assert.equal(decodePgoutput(truncate([OTHER])), null);
    assert.equal(decodePgoutput(truncate([OTHER], true)), null);
    assert.equal(decodePgoutput(EVENTS), null, 'a relation message');
    assert.equal(decodePgoutput({ tag: 'type', typeOid: 1, typeSchema: 'public', typeName: 't' }), null);
    assert.equal(decodePgoutput({ tag: 'origin', originLsn: '0/1', originName: 'o' }), null);
  });

  it('a non-transactional heartbeat is an empty commit at its own position; other messages are nothing', () => {
    assert.deepEqual(decodePgoutput(message()), { kind: 'commit', ackLsn: '0/5000' });
    assert.equal(decodePgoutput(message({ transactional: true })), null);
    assert.equal(decodePgoutput(message({ prefix: 'someone.else' })), null);
    assert.equal(decodePgoutput(message({ messageLsn: null })), null);
  });

  it('rows the pipeline cannot use become bad rows (with the table, the reason and the raw tuple), never a crash', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [eventTuple({ id: null }), /^id null is not a positive safe integer/],
      [eventTuple({ id: '0' }), /^id "0"/],
      [eventTuple({ id: '-5' }), /^id "-5"/],
      [eventTuple({ id: '9007199254740993' }), /^id "9007199254740993"/],
      [eventTuple({ event_ts: null }), /^event_ts is NULL/],
      [eventTuple({ event_ts: 'infinity' }), /^event_ts: timestamp infinity is not supported/],
      [eventTuple({ event_ts: 'yesterday' }), /^event_ts: unparseable timestamp/],
      [eventTuple({ duration_ms: 1.5 }), /^duration_ms is not an integer/],
    ];
    for (const [tuple, reason] of cases) {
      const change = decodePgoutput(insert(EVENTS, tuple));
      assert.equal(change?.kind, 'bad-row', JSON.stringify(tuple));
      const bad = change as Extract<Change, { kind: 'bad-row' }>;
      assert.equal(bad.table, 'engagement_events');
      assert.match(bad.reason, reason);
      assert.equal(bad.raw, tuple);
    }
    for (const [tuple, reason] of [
      [{ slug: 'no-id' }, /content\.id is missing/],
      [{ id: CONTENT_ID, length_seconds: 2.5 }, /length_seconds is not an integer/],
    ] as const) {
      const change = decodePgoutput(update(CONTENT, tuple));
      assert.equal(change?.kind, 'bad-row');
      assert.equal((change as Extract<Change, { kind: 'bad-row' }>).table, 'content');
      assert.match((change as Extract<Change, { kind: 'bad-row' }>).reason, reason);
    }
  });

  // Property: the decoder is total over what the library can hand it. Any tag, any of the
  // tables, any column values (wrong types included) give a Change or null, never a throw; an
  // inserted event is an event or a bad row (never dropped silently); and a well-formed event
  // row decodes back to the same values.
  for (const seed of seeds(10)) {
    it(`random messages (seed ${seed}): never throws, never drops an inserted event, round-trips good rows`, () => {
      const random = prng(seed);
      const junk = (): unknown =>
        pick(random, [
          null,
          undefined,
          '',
          'x',
          '-1',
          '1e3',
          String(intBetween(random, 1, 2 ** 40)),
          intBetween(random, -5, 5),
          random() * 100,
          Number.NaN,
          true,
          {},
          [1],
          '2026-02-30 00:00:00+00',
          '0001-01-01 00:00:00+00 BC',
          '294277-01-01 00:00:00+00',
          '2026-12-01T00:00:00.1234567Z',
        ]);
      const tuple = (): Record<string, unknown> => {
        const t: Record<string, unknown> = {};
        for (const col of [
          'id',
          'content_id',
          'user_id',
          'event_type',
          'event_ts',
          'duration_ms',
          'device',
          'raw_payload',
          'slug',
          'title',
          'content_type',
          'length_seconds',
        ])
          if (random() < 0.8) t[col] = random() < 0.5 ? junk() : eventTuple({ id: CONTENT_ID })[col];
        return t;
      };
      for (let n = 0; n < 500; n++) {
        const rel = pick(random, [EVENTS, CONTENT, OTHER]);
        const msg: Pgoutput.Message = pick(random, [
          () => insert(rel, tuple()),
          () => update(rel, tuple()),
          () => del(rel, random() < 0.5 ? tuple() : null, random() < 0.5 ? tuple() : null),
          () => truncate([rel, pick(random, [EVENTS, CONTENT, OTHER])], random() < 0.5),
          () => message({ transactional: random() < 0.5, messageLsn: pick(random, [null, '0/1']) }),
        ])();
        let change: Change | null;
        try {
          change = decodePgoutput(msg);
        } catch (err) {
          assert.fail(`threw ${String(err)} on ${JSON.stringify(msg)}`);
        }
        if (msg.tag === 'insert' && rel === EVENTS)
          assert.ok(change?.kind === 'event' || change?.kind === 'bad-row');
      }
      for (let n = 0; n < 200; n++) {
        const micros = BigInt(intBetween(random, 0, 999_999));
        const seconds = intBetween(random, 0, 4_102_444_799); // 1970 .. 2099
        const iso = new Date(seconds * 1000).toISOString().slice(0, 19);
        const row = {
          id: intBetween(random, 1, Number.MAX_SAFE_INTEGER),
          content_id: random() < 0.2 ? null : CONTENT_ID,
          user_id: random() < 0.2 ? null : 'u',
          event_type: pick(random, ['play', 'pause', null]),
          event_ts: `${iso}.${String(micros).padStart(6, '0')}Z`,
          duration_ms: random() < 0.2 ? null : intBetween(random, -1000, 2 ** 31 - 1),
          device: pick(random, ['tv', null]),
          raw_payload: random() < 0.5 ? null : new JsonText(`{"k":${n}}`),
        };
        // As the stream spells it: int8 as text, timestamptz in Postgres's text form.
        const tupleText = {
          ...row,
          id: String(row.id),
          event_ts: `${iso.replace('T', ' ')}.${String(micros).padStart(6, '0')}+00`,
        };
        assert.deepEqual(decodePgoutput(insert(EVENTS, tupleText)), { kind: 'event', row });
      }
    });
  }
});

describe('a content update that changes the join key', () => {
  const SHAPE = { ...DEFAULT_SHAPE, contentKey: 'ext_id' };
  const row = { id: 7, ext_id: '500', content_type: 'podcast', length_seconds: 1000 };
  const withOld = (key: Record<string, unknown> | null, old: Record<string, unknown> | null) => ({
    ...update(CONTENT, { ...row, ext_id: '501' }),
    key,
    old,
  });

  it("is the old key's delete, then the new row (REPLICA IDENTITY FULL: the old row)", () => {
    assert.deepEqual(decodePgoutputChanges(withOld(null, row), SHAPE), [
      { kind: 'content-delete', id: '500' },
      { kind: 'content-upsert', content: { id: '501', content_type: 'podcast', length_seconds: 1000 } },
    ]);
  });

  it('likewise when the key is the primary key (the old key tuple)', () => {
    assert.deepEqual(
      decodePgoutputChanges(withOld({ ext_id: '500' }, null), SHAPE).map((c) => c.kind),
      ['content-delete', 'content-upsert'],
    );
  });

  it('an update that keeps the key, or carries no old tuple, is the one upsert as before', () => {
    assert.deepEqual(
      decodePgoutputChanges(withOld(null, { ...row, ext_id: '501' }), SHAPE).map((c) => c.kind),
      ['content-upsert'],
    );
    assert.deepEqual(
      decodePgoutputChanges(withOld(null, null), SHAPE).map((c) => c.kind),
      ['content-upsert'],
    );
    assert.deepEqual(decodePgoutputChanges(EVENTS), []);
  });
});

// Property: integer columns are read without a RegExp; the result is the RegExp reading's.
describe('toSafeInteger', () => {
  const byRegExp = (value: unknown): number | null => {
    const n =
      typeof value === 'number'
        ? value
        : typeof value === 'string' && /^-?\d+$/.test(value)
          ? Number(value)
          : NaN;
    return Number.isSafeInteger(n) ? n : null;
  };
  for (const seed of seeds(5)) {
    it(`agrees with /^-?\\d+$/ then Number (seed ${seed})`, () => {
      const random = prng(seed);
      const chars = ['0', '1', '9', '-', '+', ' ', '\n', 'e', '.', 'x', '٣', '\u0000'];
      for (let n = 0; n < 5000; n++) {
        const value: unknown =
          random() < 0.1
            ? pick(random, [null, undefined, 1.5, -0, 2 ** 53, 7, {}, true])
            : Array.from({ length: intBetween(random, 0, 20) }, () =>
                random() < 0.7 ? String(intBetween(random, 0, 9)) : pick(random, chars),
              ).join('');
        assert.equal(toSafeInteger(value), byRegExp(value), JSON.stringify(value));
      }
    });
  }
});
