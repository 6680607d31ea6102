import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { intBetween, pick, prng, seeds } from '../helpers/prng.js';
import { BIGINT, INTEGER, UUID, VARCHAR } from '@duckdb/node-api';
import type { KeyType, KeyTypes } from '../../src/domain/source-shape.js';
import type { EnrichedEvent } from '../../src/domain/types.js';
import { isoToMicros } from '../../src/domain/timestamps.js';
import { ErrorCodes, PipelineError } from '../../src/errors.js';
import {
  bigQueryFields,
  bigQueryRowProblem,
  BIGQUERY_FIELDS,
  toInsertAllRow,
} from '../../src/sinks/analytics/bigquery-schema.js';
import {
  CLICKHOUSE_COLUMNS,
  clickHouseDdl,
  clickHouseRowProblem,
  clickHouseRowSerializer,
  toClickHouseRow,
} from '../../src/sinks/analytics/clickhouse-schema.js';
import {
  isUuidText,
  UUID_TEXT,
  destinationShapeError,
  EVENT_COLUMN_NAMES,
  keyColumnDifferences,
  keysProblem,
  keyValueProblem,
} from '../../src/sinks/analytics/columns.js';
import { RowConversionError } from '../../src/sinks/analytics/duckdb/errors.js';
import { buildChunks, chunkLayout, COLUMNS } from '../../src/sinks/analytics/duckdb/rows.js';
import { createEventsTableSql } from '../../src/sinks/analytics/duckdb/schema.js';
import { duckDbRowProblem } from '../../src/sinks/analytics/representable.js';
import { eventJson, eventsJsonArray, keyJsonValue } from '../../src/sinks/event-json.js';
import { JsonText } from '../../src/domain/json-text.js';

/**
 * The column description -> each destination family's DDL and row serializer, for every key
 * type. Pure: nothing here opens a database.
 */

const UUIDS: KeyTypes = { content_id: 'uuid', user_id: 'uuid' };
const BIGINTS: KeyTypes = { content_id: 'bigint', user_id: 'bigint' };
const INTEGERS: KeyTypes = { content_id: 'integer', user_id: 'integer' };
const TEXTS: KeyTypes = { content_id: 'text', user_id: 'text' };

/** Seed 003's example: content 1 (350 s), user 777, a 7,000 ms play on the web. */
function seedEvent(overrides: Partial<EnrichedEvent> = {}): EnrichedEvent {
  return {
    event_id: 1,
    content_id: '1',
    user_id: '777',
    event_type: 'play',
    event_ts: '2026-12-01T08:00:00.123456Z',
    duration_ms: 7000,
    device: 'web',
    raw_payload: null,
    content_type: 'article',
    length_seconds: 350,
    engagement_seconds: 7,
    engagement_pct: 0.02,
    committed_at: '2026-12-01T08:00:00.200000Z',
    processed_at: '2026-12-01T08:00:00.300000Z',
    ...overrides,
  };
}

const UUID_EVENT = seedEvent({
  content_id: '00000000-0000-4000-8000-00000000000a',
  user_id: '11111111-1111-4111-8111-111111111111',
});

/** The DDL as it was before the column description: existing databases keep working. */
const DUCKDB_UUID_DDL = `
CREATE SCHEMA IF NOT EXISTS engagement;
CREATE TABLE IF NOT EXISTS engagement.events_enriched (
  event_id           BIGINT PRIMARY KEY,
  content_id         UUID,
  user_id            UUID,
  event_type         VARCHAR,
  event_ts           TIMESTAMPTZ NOT NULL,
  duration_ms        INTEGER,
  device             VARCHAR,
  raw_payload        JSON,
  content_type       VARCHAR,
  length_seconds     INTEGER,
  engagement_seconds DECIMAL(12,3),
  engagement_pct     DECIMAL(12,2),
  committed_at       TIMESTAMPTZ NOT NULL,
  processed_at       TIMESTAMPTZ NOT NULL
);`;

const CLICKHOUSE_UUID_TABLE = `CREATE TABLE IF NOT EXISTS \`engagement\`.events_enriched (
  event_id           UInt64,
  content_id         Nullable(UUID),
  user_id            Nullable(UUID),
  event_type         LowCardinality(Nullable(String)),
  event_ts           DateTime64(6, 'UTC'),
  duration_ms        Nullable(Int32),
  device             LowCardinality(Nullable(String)),
  raw_payload        Nullable(String),
  content_type       LowCardinality(Nullable(String)),
  length_seconds     Nullable(Int32),
  engagement_seconds Nullable(Decimal(12, 3)),
  engagement_pct     Nullable(Decimal(12, 2)),
  committed_at       DateTime64(6, 'UTC'),
  processed_at       DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_ts)
ORDER BY (toDate(event_ts), event_id)
SETTINGS non_replicated_deduplication_window = 10000`;

/** `name TYPE` of the key lines of a DDL statement. */
function keyLines(ddl: string): string[] {
  return ddl
    .split('\n')
    .filter((l) => /^\s+(content_id|user_id)\s/.test(l))
    .map((l) => l.trim().replace(/\s+/g, ' ').replace(/,$/, ''));
}

describe('one column description', () => {
  it('names every field of the enriched event, in table order, once', () => {
    const fields = Object.keys(seedEvent());
    assert.deepEqual([...EVENT_COLUMN_NAMES], fields);
    assert.deepEqual([...COLUMNS], fields, 'DuckDB appends in this order');
    assert.deepEqual([...CLICKHOUSE_COLUMNS], fields, 'ClickHouse inserts in this order');
    assert.deepEqual(
      BIGQUERY_FIELDS.map((f) => f.name),
      fields,
    );
  });
});

describe('DuckDB DDL and chunks per key type', () => {
  it('keeps the UUID table byte for byte (the default)', () => {
    assert.equal(createEventsTableSql('engagement', 'engagement.events_enriched'), DUCKDB_UUID_DDL);
    assert.equal(createEventsTableSql('engagement', 'engagement.events_enriched', UUIDS), DUCKDB_UUID_DDL);
  });

  const expected: [KeyTypes, string[]][] = [
    [UUIDS, ['content_id UUID', 'user_id UUID']],
    [BIGINTS, ['content_id BIGINT', 'user_id BIGINT']],
    [INTEGERS, ['content_id INTEGER', 'user_id INTEGER']],
    [TEXTS, ['content_id VARCHAR', 'user_id VARCHAR']],
    [{ content_id: 'bigint', user_id: 'text' }, ['content_id BIGINT', 'user_id VARCHAR']],
  ];
  for (const [keyTypes, lines] of expected) {
    it(`types the keys ${keyTypes.content_id}/${keyTypes.user_id} as ${lines.join(', ')}`, () => {
      const ddl = createEventsTableSql('s', 's.t', keyTypes);
      assert.deepEqual(keyLines(ddl), lines);
      // Everything but the key lines is the same for every shape.
      const rest = (sql: string) => sql.split('\n').filter((l) => !/^\s+(content_id|user_id)\s/.test(l));
      assert.deepEqual(rest(ddl), rest(createEventsTableSql('s', 's.t')));
    });
  }

  it('builds chunk vectors of the key types (integer keys in their storage form)', () => {
    const typeOf = (keyTypes: KeyTypes) => chunkLayout(keyTypes).types[1];
    assert.equal(typeOf(UUIDS).typeId, UUID.typeId, 'UUIDs in their storage form, parsed in JS');
    assert.equal(typeOf(TEXTS).typeId, VARCHAR.typeId);
    assert.equal(typeOf(BIGINTS).typeId, BIGINT.typeId);
    assert.equal(typeOf(INTEGERS).typeId, INTEGER.typeId);
    assert.equal(chunkLayout(BIGINTS).types.length, EVENT_COLUMN_NAMES.length);
  });

  it('converts integer keys, and refuses a key that is not of its type, naming it', () => {
    const chunks = buildChunks([seedEvent()], chunkLayout(BIGINTS));
    assert.equal(chunks.length, 1);
    assert.equal(chunks[0].rowCount, 1);
    const refuse = (keyTypes: KeyTypes, e: EnrichedEvent, pattern: RegExp) =>
      assert.throws(
        () => buildChunks([e], chunkLayout(keyTypes)),
        (err: unknown) => err instanceof RowConversionError && pattern.test(err.message),
      );
    refuse(UUIDS, seedEvent(), /event 1: content_id = "1" is not a UUID/);
    refuse(INTEGERS, seedEvent({ user_id: '3000000000' }), /user_id = "3000000000" is not a 32-bit integer/);
    refuse(BIGINTS, seedEvent({ content_id: 'abc' }), /content_id = "abc" is not an integer/);
    assert.equal(buildChunks([seedEvent({ content_id: 'any text' })], chunkLayout(TEXTS)).length, 1);
  });
});

describe('DuckDB chunks in storage form', () => {
  const TEXTS_SEEN = ['play', '', 'twelve_chars', 'thirteen_char', 'é', 'ü-long-non-ascii-text', '😀'];
  const hex = (random: () => number, n: number) =>
    Array.from({ length: n }, () => pick(random, [...'0123456789abcdefABCDEF'])).join('');
  const uuid = (random: () => number) =>
    `${hex(random, 8)}-${hex(random, 4)}-${hex(random, 4)}-${hex(random, 4)}-${hex(random, 12)}`;
  const timestamps = [
    '2026-12-01T08:00:00.123456Z',
    '2026-12-01T08:00:00Z',
    '1969-12-31T23:59:59.999999Z',
    '0001-01-01T00:00:00Z',
    '-0044-03-15T12:00:00.5Z',
    '+10000-01-01T00:00:00.000001Z',
    // Past 2^53 microseconds although the milliseconds are not: must not round by 1 µs.
    '2255-06-05T23:47:34.740993Z',
    '2255-06-05T23:47:34.999999Z',
  ];

  for (const seed of seeds(5)) {
    it(`reads back what each value means (seed ${seed}): keys, text inline or not, NULLs, decimals, timestamps`, () => {
      const random = prng(seed);
      const events = Array.from({ length: intBetween(random, 1, 700) }, (_, i) =>
        seedEvent({
          event_id: pick(random, [i + 1, 2 ** 32 + i, Number.MAX_SAFE_INTEGER - i]),
          content_id: random() < 0.1 ? null : uuid(random),
          user_id: random() < 0.1 ? null : uuid(random),
          event_type: random() < 0.1 ? null : pick(random, TEXTS_SEEN),
          event_ts: pick(random, timestamps),
          duration_ms: random() < 0.1 ? null : intBetween(random, -(2 ** 31), 2 ** 31 - 1),
          device: random() < 0.5 ? null : pick(random, TEXTS_SEEN),
          raw_payload: random() < 0.2 ? null : { a: i, s: pick(random, TEXTS_SEEN) },
          engagement_seconds: random() < 0.2 ? null : intBetween(random, -1e11, 1e11) / 1000,
          engagement_pct: random() < 0.2 ? null : intBetween(random, -1e11, 1e11) / 100,
          committed_at: pick(random, timestamps),
        }),
      );
      const chunks = buildChunks(events, chunkLayout(UUIDS));
      let row = 0;
      for (const chunk of chunks) {
        const columns = COLUMNS.map((_, c) => chunk.getColumnValues(c));
        for (let r = 0; r < chunk.rowCount; r++, row++) {
          const e = events[row];
          const got = Object.fromEntries(COLUMNS.map((name, c) => [name, columns[c][r]]));
          const text = (v: unknown) => (v === null ? null : String(v));
          assert.equal(got.event_id, BigInt(e.event_id));
          assert.equal(text(got.content_id), e.content_id?.toLowerCase() ?? null);
          assert.equal(text(got.user_id), e.user_id?.toLowerCase() ?? null);
          assert.equal(got.event_type, e.event_type);
          assert.equal(got.device, e.device);
          assert.equal(got.raw_payload, e.raw_payload === null ? null : JSON.stringify(e.raw_payload));
          assert.equal(got.duration_ms, e.duration_ms);
          for (const name of ['event_ts', 'committed_at', 'processed_at'] as const)
            assert.equal((got[name] as { micros: bigint }).micros, isoToMicros(e[name]), name);
          const scaledOf = (v: unknown) => (v === null ? null : (v as { value: bigint }).value);
          assert.equal(
            scaledOf(got.engagement_seconds),
            e.engagement_seconds === null ? null : BigInt(Math.round(e.engagement_seconds * 1000)),
          );
          assert.equal(
            scaledOf(got.engagement_pct),
            e.engagement_pct === null ? null : BigInt(Math.round(e.engagement_pct * 100)),
          );
        }
      }
      assert.equal(row, events.length);
    });
  }

  it('refuses a malformed UUID, naming the event and column', () => {
    const good = '6f1c2a5e-8b7d-4c3e-9a1f-2b3c4d5e6f70';
    for (const bad of [
      good.replace('-', 'x'),
      `${good.slice(0, 35)}g`,
      good.slice(1),
      ` ${good.slice(1)}`,
      `${good.slice(0, 18)}+${good.slice(19)}`,
    ])
      assert.throws(
        () => buildChunks([seedEvent({ event_id: 9, content_id: good, user_id: bad })], chunkLayout(UUIDS)),
        (err: unknown) =>
          err instanceof RowConversionError && /event 9: user_id = .* is not a UUID/.test(err.message),
        bad,
      );
  });

  it('refuses text columns holding something else, and NULL timestamps', () => {
    assert.throws(
      () => buildChunks([seedEvent({ device: 5 as unknown as string })], chunkLayout(TEXTS)),
      (err: unknown) => err instanceof RowConversionError && /device = 5 is not text/.test(err.message),
    );
    assert.throws(
      () => buildChunks([seedEvent({ committed_at: null as unknown as string })], chunkLayout(TEXTS)),
      (err: unknown) =>
        err instanceof RowConversionError && /committed_at = null is not an ISO-8601/.test(err.message),
    );
  });
});

describe('ClickHouse DDL and rows per key type', () => {
  it('keeps the UUID table byte for byte (the default)', () => {
    assert.equal(clickHouseDdl('engagement')[1], CLICKHOUSE_UUID_TABLE);
    assert.deepEqual(clickHouseDdl('engagement', UUIDS), clickHouseDdl('engagement'));
  });

  const expected: [KeyType, string][] = [
    ['uuid', 'Nullable(UUID)'],
    ['bigint', 'Nullable(Int64)'],
    ['integer', 'Nullable(Int32)'],
    ['text', 'Nullable(String)'],
  ];
  for (const [type, column] of expected) {
    it(`types ${type} keys as ${column}`, () => {
      assert.deepEqual(keyLines(clickHouseDdl('db', { content_id: type, user_id: type })[1]), [
        `content_id ${column}`,
        `user_id ${column}`,
      ]);
    });
  }

  it('serializes keys for their column: Int32 as a number, Int64 as exact text, UUID/String as text', () => {
    assert.deepEqual(toClickHouseRow(UUID_EVENT), clickHouseRowSerializer(UUIDS)(UUID_EVENT));
    const int = clickHouseRowSerializer(INTEGERS)(seedEvent());
    assert.equal(int.content_id, 1);
    assert.equal(int.user_id, 777);
    const big = clickHouseRowSerializer(BIGINTS)(seedEvent({ user_id: '9007199254740993' }));
    assert.equal(big.content_id, '1');
    assert.equal(big.user_id, '9007199254740993', 'beyond 2^53 stays exact');
    // The rest of the row does not depend on the key types.
    assert.equal(int.engagement_seconds, '7');
    assert.equal(int.engagement_pct, '0.02');
    assert.equal(int.length_seconds, 350);
    assert.deepEqual(Object.keys(int), [...CLICKHOUSE_COLUMNS]);
  });
});

describe('BigQuery schema and rows per key type', () => {
  const keyFields = (keyTypes: KeyTypes) =>
    bigQueryFields(keyTypes)
      .filter((f) => f.name === 'content_id' || f.name === 'user_id')
      .map((f) => `${f.name} ${f.type} ${f.mode}`);

  it('keeps the UUID schema (the default)', () => {
    assert.deepEqual(bigQueryFields(UUIDS), BIGQUERY_FIELDS);
    assert.deepEqual(
      BIGQUERY_FIELDS.map((f) => [f.name, f.type, f.mode, f.precision ?? null, f.scale ?? null]),
      [
        ['event_id', 'INT64', 'REQUIRED', null, null],
        ['content_id', 'STRING', 'NULLABLE', null, null],
        ['user_id', 'STRING', 'NULLABLE', null, null],
        ['event_type', 'STRING', 'NULLABLE', null, null],
        ['event_ts', 'TIMESTAMP', 'REQUIRED', null, null],
        ['duration_ms', 'INT64', 'NULLABLE', null, null],
        ['device', 'STRING', 'NULLABLE', null, null],
        ['raw_payload', 'JSON', 'NULLABLE', null, null],
        ['content_type', 'STRING', 'NULLABLE', null, null],
        ['length_seconds', 'INT64', 'NULLABLE', null, null],
        ['engagement_seconds', 'NUMERIC', 'NULLABLE', '12', '3'],
        ['engagement_pct', 'NUMERIC', 'NULLABLE', '12', '2'],
        ['committed_at', 'TIMESTAMP', 'REQUIRED', null, null],
        ['processed_at', 'TIMESTAMP', 'REQUIRED', null, null],
      ],
    );
    assert.deepEqual(keyFields(UUIDS), ['content_id STRING NULLABLE', 'user_id STRING NULLABLE']);
    assert.deepEqual(keyFields(TEXTS), ['content_id STRING NULLABLE', 'user_id STRING NULLABLE']);
  });

  it('types integer keys INT64, sent as exact text like event_id', () => {
    assert.deepEqual(keyFields(BIGINTS), ['content_id INT64 NULLABLE', 'user_id INT64 NULLABLE']);
    assert.deepEqual(keyFields(INTEGERS), ['content_id INT64 NULLABLE', 'user_id INT64 NULLABLE']);
    const row = toInsertAllRow(seedEvent());
    assert.equal(row.insertId, '1');
    assert.equal(row.json.content_id, '1');
    assert.equal(row.json.user_id, '777');
    assert.equal(row.json.engagement_seconds, '7');
    assert.equal(row.json.engagement_pct, '0.02');
  });
});

describe('key values against their type', () => {
  const cases: [KeyType, unknown, string | null][] = [
    ['uuid', '00000000-0000-4000-8000-00000000000a', null],
    ['uuid', '777', 'not a UUID'],
    ['bigint', '777', null],
    ['bigint', '-9223372036854775808', null],
    ['bigint', '9223372036854775808', 'not a 64-bit integer'],
    ['bigint', '01', 'not an integer'],
    ['bigint', '1.5', 'not an integer'],
    ['integer', '2147483647', null],
    ['integer', '2147483648', 'not a 32-bit integer'],
    ['integer', '-2147483648', null],
    ['text', 'anything at all', null],
    ['bigint', null, null],
    ['bigint', 7, 'not text (number)'],
  ];
  for (const [type, value, problem] of cases) {
    it(`${type} ${JSON.stringify(value)}: ${problem ?? 'fits'}`, () => {
      assert.equal(keyValueProblem(type, value), problem);
    });
  }

  it('every family dead-letters a row whose key does not fit, before the destination sees it', () => {
    const bad = seedEvent({ content_id: '1' });
    for (const problem of [duckDbRowProblem, clickHouseRowProblem, bigQueryRowProblem]) {
      assert.match(
        problem(bad, UUIDS) ?? '',
        /content_id = "1" is not a UUID \(the source's content_id is uuid\)/,
      );
      assert.equal(problem(bad, BIGINTS), null);
      assert.equal(problem(UUID_EVENT), null);
    }
    assert.equal(keysProblem(seedEvent({ user_id: null }), INTEGERS), null);
  });
});

describe('a destination table of other key types', () => {
  it('is found by comparing the key columns only', () => {
    const expected = new Map([
      ['event_id', 'BIGINT'],
      ['content_id', 'BIGINT'],
      ['user_id', 'BIGINT'],
    ]);
    const existing = new Map([
      ['event_id', 'BIGINT'],
      ['content_id', 'UUID'],
      ['user_id', 'BIGINT'],
      ['extra', 'VARCHAR'],
    ]);
    assert.deepEqual(keyColumnDifferences(existing, expected), [
      { column: 'content_id', existing: 'UUID', expected: 'BIGINT' },
    ]);
    assert.deepEqual(keyColumnDifferences(new Map([['event_id', 'BIGINT']]), expected), [
      { column: 'content_id', existing: '(missing)', expected: 'BIGINT' },
      { column: 'user_id', existing: '(missing)', expected: 'BIGINT' },
    ]);
    const legacy = new Map([
      ['content_id', 'INTEGER'],
      ['user_id', 'INT64'],
    ]);
    const int64 = new Map([
      ['content_id', 'INT64'],
      ['user_id', 'INT64'],
    ]);
    assert.deepEqual(
      keyColumnDifferences(legacy, int64, (t) => (t === 'INTEGER' ? 'INT64' : t)),
      [],
    );
  });

  it('is one line: what differs and how to move on', () => {
    const err = destinationShapeError(
      'DuckDB',
      'x.events_enriched',
      [{ column: 'content_id', existing: 'UUID', expected: 'BIGINT' }],
      BIGINTS,
      'point ANALYTICS_URL at another file',
    );
    assert.ok(err instanceof PipelineError);
    assert.equal(err.code, ErrorCodes.DESTINATION_SHAPE);
    assert.equal(err.kind, 'config');
    assert.equal(
      err.oneLine(),
      'EP_ERR_DESTINATION_SHAPE: DuckDB table x.events_enriched was created for other key types than the ' +
        "source's (content_id bigint, user_id bigint): content_id is UUID, expected BIGINT; nothing was written " +
        '(fix: point ANALYTICS_URL at another file)',
    );
    assert.ok(!err.oneLine().includes('\n'));
  });
});

describe('the JSON document (external payload, Kafka value, Redis content:last)', () => {
  it('leaves UUID-keyed events exactly as they are', () => {
    assert.equal(eventJson(UUID_EVENT, UUIDS), JSON.stringify(UUID_EVENT));
    assert.equal(eventJson(seedEvent(), TEXTS), JSON.stringify(seedEvent()));
    const withPayload = seedEvent({ raw_payload: { a: [1, 'x'], b: null } });
    assert.equal(eventJson(withPayload, TEXTS), JSON.stringify(withPayload));
  });

  it("writes a JsonText payload as its exact text, in the payload's place", () => {
    const text = '{"big":12345678901234567890,"f":1.10,"s":"\\"raw_payload\\":null","e":1e400}';
    const e = seedEvent({ raw_payload: new JsonText(text) });
    const json = eventJson(e, TEXTS);
    assert.equal(
      json,
      JSON.stringify({ ...e, raw_payload: null }).replace('"raw_payload":null', `"raw_payload":${text}`),
    );
    assert.ok(json.includes('12345678901234567890') && json.includes('1.10'));
    assert.deepEqual(Object.keys(JSON.parse(json)), Object.keys(e), 'same fields, same order');
    assert.equal(
      eventsJsonArray([e, seedEvent({ raw_payload: null })], TEXTS),
      `[${json},${eventJson(seedEvent({ raw_payload: null }), TEXTS)}]`,
    );
  });

  it('carries integer keys as JSON numbers when safe, else as exact strings', () => {
    const doc = JSON.parse(eventJson(seedEvent(), BIGINTS)) as Record<string, unknown>;
    assert.equal(doc.content_id, 1);
    assert.equal(doc.user_id, 777);
    assert.equal(doc.engagement_seconds, 7);
    assert.equal(doc.engagement_pct, 0.02);
    assert.deepEqual(Object.keys(doc), Object.keys(seedEvent()), 'same fields, same order');
    assert.equal(keyJsonValue('9007199254740991', 'bigint'), 9007199254740991);
    assert.equal(keyJsonValue('9007199254740993', 'bigint'), '9007199254740993');
    assert.equal(keyJsonValue('-42', 'integer'), -42);
    assert.equal(keyJsonValue(null, 'integer'), null);
    assert.equal(
      keyJsonValue('777', 'text'),
      '777',
      'a text key stays text even when it looks like a number',
    );
    const mixed = JSON.parse(
      eventJson(seedEvent({ user_id: 'u-1' }), { content_id: 'integer', user_id: 'text' }),
    );
    assert.deepEqual([mixed.content_id, mixed.user_id], [1, 'u-1']);
  });

  /** The document written whole by JSON.stringify, the payload's text spliced in: the reference. */
  function referenceJson(e: EnrichedEvent, keyTypes: KeyTypes): string {
    const doc = {
      ...e,
      content_id: keyJsonValue(e.content_id, keyTypes.content_id),
      user_id: keyJsonValue(e.user_id, keyTypes.user_id),
      raw_payload: null,
    };
    const p = e.raw_payload;
    const payload = p === null || p === undefined ? null : p instanceof JsonText ? p.text : JSON.stringify(p);
    const json = JSON.stringify(doc);
    if (payload === null) return json;
    const at = json.indexOf('"raw_payload":null') + '"raw_payload":'.length;
    return `${json.slice(0, at)}${payload}${json.slice(at + 4)}`;
  }

  for (const seed of seeds(10)) {
    it(`random events, values at every edge, other key orders and extra keys: the reference's text (seed ${seed})`, () => {
      const random = prng(seed);
      const strings = [
        '',
        'play',
        'é ü 漢字 🎧',
        '"quoted" \\ back',
        'C:\\dir',
        'tab\tnew\nline\u0000\u001f',
        '\ud800 lone',
        '</script>',
      ];
      const numbers = [0, -0, 1, -1, 0.1, 1e21, 1e-7, 2 ** 53 + 2, NaN, Infinity, -Infinity, 123.456];
      const keyTypes = [
        UUIDS,
        BIGINTS,
        INTEGERS,
        TEXTS,
        { content_id: 'bigint', user_id: 'text' } as KeyTypes,
      ];
      const made: EnrichedEvent[] = [];
      for (let n = 0; n < 500; n++) {
        const maybe = <T>(v: T): T | null => (random() < 0.2 ? null : v);
        const e: EnrichedEvent = seedEvent({
          event_id: pick(random, [1, 2 ** 53 - 1, 42, ...numbers]),
          content_id: maybe(pick(random, ['1', '-42', '9007199254740993', 'c-1', '01', ...strings])),
          user_id: maybe(pick(random, ['777', UUID_EVENT.user_id!, ...strings])),
          event_type: maybe(pick(random, strings)),
          event_ts: pick(random, [
            '2026-12-01T08:00:00.123456Z',
            '+10000-01-01T00:00:00.000000Z',
            ...strings,
          ]),
          duration_ms: maybe(pick(random, numbers)),
          device: maybe(pick(random, strings)),
          raw_payload: pick(random, [
            null,
            new JsonText('{"big":12345678901234567890,"s":"\\"raw_payload\\":null"}'),
            new JsonText('[]'),
            { a: [1, 'x'], b: null },
            'text payload',
            7,
          ]),
          content_type: maybe(pick(random, strings)),
          length_seconds: maybe(pick(random, numbers)),
          engagement_seconds: maybe(pick(random, numbers)),
          engagement_pct: maybe(pick(random, numbers)),
          committed_at: pick(random, strings),
          processed_at: pick(random, strings),
        });
        // Now and then not an event the pipeline makes: another key order, a key more or less,
        // a value of another type. The same text as the reference all the same.
        const r = random();
        let odd: Record<string, unknown> = e as unknown as Record<string, unknown>;
        if (r < 0.05) odd = Object.fromEntries(Object.entries(e).reverse());
        else if (r < 0.1) odd = { ...e, extra: pick(random, [1, 'x', null]) };
        else if (r < 0.15) {
          const { device: _, ...rest } = e;
          odd = rest;
        } else if (r < 0.2)
          odd = {
            ...e,
            [pick(random, ['device', 'duration_ms', 'event_type'])]: pick(random, [true, { x: 1 }, [1], '5']),
          };
        const types = pick(random, keyTypes);
        const event = odd as unknown as EnrichedEvent;
        assert.equal(eventJson(event, types), referenceJson(event, types), JSON.stringify(odd));
        made.push(event);
      }
      // As one array: the odd events (written another way) among the others.
      for (const types of keyTypes)
        assert.equal(eventsJsonArray(made, types), `[${made.map((e) => referenceJson(e, types)).join(',')}]`);
      const batch = [seedEvent(), UUID_EVENT, seedEvent({ raw_payload: new JsonText('{"x":1}') })];
      assert.equal(eventsJsonArray(batch, TEXTS), `[${batch.map((e) => referenceJson(e, TEXTS)).join(',')}]`);
      assert.equal(eventsJsonArray([], TEXTS), '[]');
    });
  }
});

describe('isUuidText', () => {
  // Property: the char loop accepts exactly what the 8-4-4-4-12 hex pattern accepts.
  for (const seed of seeds(5)) {
    it(`agrees with the pattern on random near-UUID text (seed ${seed})`, () => {
      const random = prng(seed);
      const alphabet = '0123456789abcdefABCDEFgG-xZ {}';
      const base = '123e4567-e89b-42d3-a456-426614174000';
      for (let n = 0; n < 5_000; n++) {
        const chars = base.split('');
        for (let k = intBetween(random, 0, 3); k > 0; k--) {
          const at = intBetween(random, 0, chars.length - 1);
          const r = random();
          if (r < 0.6) chars[at] = pick(random, alphabet.split(''));
          else if (r < 0.8) chars.splice(at, 1);
          else chars.splice(at, 0, pick(random, alphabet.split('')));
        }
        const text = chars.join('');
        assert.equal(isUuidText(text), UUID_TEXT.test(text), JSON.stringify(text));
      }
      assert.equal(isUuidText(base), true);
      assert.equal(isUuidText(base.toUpperCase()), true);
    });
  }
});
