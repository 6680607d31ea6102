import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import '../../src/db/postgres.js'; // the pipeline's pg type parsers (timestamps as text)
import { JsonText } from '../../src/domain/json-text.js';
import { DEFAULT_SHAPE, type SourceShape } from '../../src/domain/source-shape.js';
import type { Change } from '../../src/source/changes.js';
import { EventInsertPlugin, isDecodedChange, keepJsonAsText } from '../../src/source/event-insert-plugin.js';
import { decodePgoutput } from '../../src/source/pgoutput-decoder.js';
import { intBetween, pick, prng, seeds } from '../helpers/prng.js';

// pgoutput messages as the walsender sends them (protocol version 1, text values).

const OID = { int8: 20, int4: 23, text: 25, jsonb: 3802, uuid: 2950, timestamptz: 1184, bool: 16 };

interface Col {
  name: string;
  type: number;
}

function cstring(text: string): Buffer {
  return Buffer.concat([Buffer.from(text, 'utf8'), Buffer.from([0])]);
}
function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}
function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}

function relationMessage(oid: number, schema: string, name: string, columns: Col[]): Buffer {
  return Buffer.concat([
    Buffer.from('R'),
    int32(oid),
    cstring(schema),
    cstring(name),
    Buffer.from('d'),
    int16(columns.length),
    ...columns.map((c) =>
      Buffer.concat([Buffer.from([c.name === 'id' ? 1 : 0]), cstring(c.name), int32(c.type), int32(-1)]),
    ),
  ]);
}

/** A value on the wire: text bytes, null, or 'u' (unchanged TOAST) / 'b' (binary). */
type WireValue = Buffer | string | null | { kind: 'u' } | { kind: 'b'; bytes: Buffer };

function insertMessage(oid: number, values: WireValue[], nfields = values.length): Buffer {
  return Buffer.concat([
    Buffer.from('I'),
    int32(oid),
    Buffer.from('N'),
    int16(nfields),
    ...values.map((v) => {
      if (v === null) return Buffer.from('n');
      if (typeof v === 'string' || Buffer.isBuffer(v)) {
        const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
        return Buffer.concat([Buffer.from('t'), int32(bytes.length), bytes]);
      }
      if (v.kind === 'u') return Buffer.from('u');
      return Buffer.concat([Buffer.from('b'), int32(v.bytes.length), v.bytes]);
    }),
  ]);
}

/** Both paths on the same bytes: the library's parse + decodePgoutput, and the fast plugin. */
function bothWays(relation: Buffer, insert: Buffer, shape: SourceShape = DEFAULT_SHAPE) {
  const options = { protoVersion: 1 as const, publicationNames: ['p'] };
  const library = new PgoutputPlugin(options);
  const fast = new EventInsertPlugin(options, shape);
  // The library with the json/jsonb parsers the plugin installs (its own path for other rows).
  keepJsonAsText(library.parse(relation) as Pgoutput.MessageRelation);
  fast.parse(relation);
  const run = (f: () => Change | null): Change | null | { threw: string } => {
    try {
      return f();
    } catch (err) {
      return { threw: String(err) };
    }
  };
  const expected = run(() => decodePgoutput(library.parse(insert), shape));
  let fastPath = false;
  const actual = run(() => {
    const m = fast.parse(insert);
    fastPath = isDecodedChange(m);
    return isDecodedChange(m) ? m : decodePgoutput(m, shape);
  });
  return { expected, actual, fastPath };
}

const COLUMNS: Col[] = [
  { name: 'id', type: OID.int8 },
  { name: 'content_id', type: OID.uuid },
  { name: 'user_id', type: OID.uuid },
  { name: 'event_type', type: OID.text },
  { name: 'event_ts', type: OID.timestamptz },
  { name: 'duration_ms', type: OID.int4 },
  { name: 'device', type: OID.text },
  { name: 'raw_payload', type: OID.jsonb },
];
const GOOD: WireValue[] = [
  '42',
  '00000000-0000-4000-8000-000000000001',
  '00000000-0000-4000-8000-0000000000aa',
  'play',
  '2026-12-01 10:11:12.345678+00',
  '1500',
  'ios',
  '{"n": 1, "s": "é ✓"}',
];

describe('the fast events-insert path of the pgoutput plugin', () => {
  it('decodes an inserted event to the same Change as the library path, on its fast path', () => {
    const { expected, actual, fastPath } = bothWays(
      relationMessage(16400, 'public', 'engagement_events', COLUMNS),
      insertMessage(16400, GOOD),
    );
    assert.equal(fastPath, true);
    assert.deepEqual(actual, expected);
    assert.equal((actual as Extract<Change, { kind: 'event' }>).row.event_ts, '2026-12-01T10:11:12.345678Z');
  });

  it("keeps a json or jsonb payload's text exactly (numbers past a double, trailing zeros), on both paths", () => {
    for (const type of [OID.jsonb, 114]) {
      const cols = COLUMNS.map((c) => (c.name === 'raw_payload' ? { ...c, type } : c));
      const payload = '{"f": 1.10, "big": 12345678901234567890, "s": "a, b: \\"c\\""}';
      const values = [...GOOD.slice(0, 7), payload];
      for (const wide of [false, true]) {
        // `wide`: a multi-byte value elsewhere, so the fast path cuts values one by one.
        const row = wide ? values.map((v, i) => (i === 6 ? 'iOS ✓' : v)) : values;
        const { actual, fastPath } = bothWays(
          relationMessage(17, 'public', 'engagement_events', cols),
          insertMessage(17, row),
        );
        assert.equal(fastPath, true);
        const event = actual as Extract<Change, { kind: 'event' }>;
        assert.ok(event.row.raw_payload instanceof JsonText);
        assert.equal(event.row.raw_payload.text, '{"f":1.10,"big":12345678901234567890,"s":"a, b: \\"c\\""}');
      }
    }
  });

  it('other tables, other schemas and other messages go to the library', () => {
    const other = bothWays(relationMessage(7, 'public', 'audit_log', COLUMNS), insertMessage(7, GOOD));
    assert.equal(other.fastPath, false);
    assert.deepEqual(other.actual, other.expected);
    const schema = bothWays(relationMessage(8, 'app', 'engagement_events', COLUMNS), insertMessage(8, GOOD));
    assert.equal(schema.fastPath, false);
    assert.equal(schema.actual, null);
  });

  it('rows that are not valid events, binary and TOAST values and truncated bytes take the library path, same result', () => {
    const rel = relationMessage(9, 'public', 'engagement_events', COLUMNS);
    const cases: { values: WireValue[]; nfields?: number }[] = [
      { values: GOOD.map((v, i) => (i === 0 ? '-4' : v)) },
      { values: GOOD.map((v, i) => (i === 4 ? 'infinity' : v)) },
      { values: GOOD.map((v, i) => (i === 4 ? null : v)) },
      { values: GOOD.map((v, i) => (i === 3 ? { kind: 'u' as const } : v)) },
      { values: GOOD.map((v, i) => (i === 6 ? { kind: 'b' as const, bytes: Buffer.from('x') } : v)) },
      { values: GOOD, nfields: 9 },
    ];
    for (const { values, nfields } of cases) {
      const { expected, actual, fastPath } = bothWays(rel, insertMessage(9, values, nfields));
      assert.equal(fastPath, false, JSON.stringify(values));
      assert.deepEqual(actual, expected);
    }
    // Cut short: the library's error, either way.
    const whole = insertMessage(9, GOOD);
    const { expected, actual } = bothWays(rel, whole.subarray(0, whole.length - 3));
    assert.deepEqual(actual, expected);
    assert.ok('threw' in (expected as object));
  });

  it('a text value starting with a byte-order mark keeps it, on the fast path and the library path', () => {
    const values = GOOD.map((v, i) => (i === 6 ? '\ufeffios' : v));
    const events = bothWays(
      relationMessage(11, 'public', 'engagement_events', COLUMNS),
      insertMessage(11, values),
    );
    assert.equal(events.fastPath, true);
    assert.deepEqual(events.actual, events.expected);
    assert.equal((events.actual as { row: { device: string } }).row.device, '\ufeffios');
    // Any other table is the library's alone: its text keeps the mark too.
    // (the library's reader was patched when event-insert-plugin.ts was imported above)
    const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: ['p'] });
    plugin.parse(relationMessage(12, 'public', 'audit_log', COLUMNS));
    const insert = plugin.parse(insertMessage(12, values)) as { new: Record<string, unknown> };
    assert.equal(insert.new.device, '\ufeffios');
  });

  it('reads the columns by name, whatever their order, extra columns skipped, missing ones absent', () => {
    const cols: Col[] = [
      { name: 'note', type: OID.text },
      ...COLUMNS.slice(4),
      { name: 'flag', type: OID.bool },
      ...COLUMNS.slice(0, 3),
    ].filter((c) => c.name !== 'device');
    const byName = new Map(COLUMNS.map((c, i) => [c.name, GOOD[i]]));
    const values = cols.map((c) =>
      c.name === 'note' ? 'n' : c.name === 'flag' ? 't' : (byName.get(c.name) ?? null),
    );
    const { expected, actual, fastPath } = bothWays(
      relationMessage(10, 'public', 'engagement_events', cols),
      insertMessage(10, values),
    );
    assert.equal(fastPath, true);
    assert.deepEqual(actual, expected);
  });

  it('a wide row (an unread column past the whole-message limit) and a text-typed raw_payload: same Change', () => {
    const cols: Col[] = [
      ...COLUMNS.slice(0, 7),
      { name: 'raw_payload', type: OID.text },
      { name: 'notes', type: OID.text },
    ];
    for (const notes of ['short', 'x'.repeat(200_000)]) {
      const { expected, actual, fastPath } = bothWays(
        relationMessage(11, 'public', 'engagement_events', cols),
        insertMessage(11, [...GOOD.slice(0, 7), '{"a": "a text payload kept as its text"}', notes]),
      );
      assert.equal(fastPath, true);
      assert.deepEqual(actual, expected);
    }
  });

  it('a user shape: other table and id column names', () => {
    const shape: SourceShape = {
      ...DEFAULT_SHAPE,
      events: { schema: 'app', name: 'plays' },
      eventIdColumn: 'play_id',
    };
    const cols = COLUMNS.map((c) => (c.name === 'id' ? { ...c, name: 'play_id' } : c));
    const { expected, actual, fastPath } = bothWays(
      relationMessage(11, 'app', 'plays', cols),
      insertMessage(11, GOOD),
      shape,
    );
    assert.equal(fastPath, true);
    assert.deepEqual(actual, expected);
  });

  it('a relation message for the table again (ALTER TABLE) replaces the plan', () => {
    const options = { protoVersion: 1 as const, publicationNames: ['p'] };
    const fast = new EventInsertPlugin(options);
    fast.parse(relationMessage(12, 'public', 'engagement_events', COLUMNS));
    const first = fast.parse(insertMessage(12, GOOD)) as unknown as Extract<Change, { kind: 'event' }>;
    assert.equal(first.row.device, 'ios');
    const renamed = COLUMNS.map((c) => (c.name === 'device' ? { ...c, name: 'platform' } : c));
    fast.parse(relationMessage(12, 'public', 'engagement_events', renamed));
    const second = fast.parse(insertMessage(12, GOOD)) as unknown as Extract<Change, { kind: 'event' }>;
    assert.equal(second.row.device, null);
  });

  // Property: on random bytes for every column (valid UTF-8 or not, any text, NULLs), the fast
  // plugin's Change is the library path's, thrown errors included.
  for (const seed of seeds(10)) {
    it(`random rows (seed ${seed}): the same Change as the library path`, () => {
      const random = prng(seed);
      const rel = relationMessage(13, 'public', 'engagement_events', COLUMNS);
      const text = (): WireValue => {
        const chars = ['a', 'é', '✓', '😀', '"', '\\', '\n', '\u0000', '\ufeff', ' ', '-', '0', '9'];
        return Array.from({ length: intBetween(random, 0, 6) }, () => pick(random, chars)).join('');
      };
      const bytes = (): WireValue =>
        Buffer.from(Array.from({ length: intBetween(random, 0, 6) }, () => intBetween(random, 0, 255)));
      const candidates: (() => WireValue)[][] = [
        [
          () => String(intBetween(random, -3, 2 ** 40)),
          () => '9007199254740993',
          () => '0',
          () => '+5',
          () => '1e3',
          text,
        ],
        [() => GOOD[1], text, bytes, () => null],
        [() => GOOD[2], text, () => null],
        [() => 'play', text, bytes, () => null],
        [
          () =>
            `20${intBetween(random, 10, 99)}-0${intBetween(random, 1, 9)}-${intBetween(random, 10, 31)} 0${intBetween(random, 0, 9)}:1${intBetween(random, 0, 9)}:2${intBetween(random, 0, 9)}.${intBetween(random, 0, 999999)}+00`,
          () => '2026-12-01 10:11:12+05:30',
          () => '0044-03-15 12:00:00+00 BC',
          text,
          () => null,
        ],
        [() => String(intBetween(random, -2000, 2 ** 31 - 1)), () => '12.5', text, () => null],
        [() => 'tv', text, bytes, () => null],
        [() => '{"k": [1, 2.50, "x"]}', () => 'null', () => '"s"', () => null],
      ];
      for (let n = 0; n < 300; n++) {
        const values = candidates.map((options) => pick(random, options)());
        const { expected, actual } = bothWays(rel, insertMessage(13, values));
        assert.deepEqual(actual, expected, JSON.stringify(values));
      }
    });
  }
});
