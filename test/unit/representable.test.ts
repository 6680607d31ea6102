import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { enrich } from '../../src/domain/enrich.js';
import { JsonText } from '../../src/domain/json-text.js';
import { pgTimestampToIso } from '../../src/domain/timestamps.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { silentLogger } from '../../src/logger.js';
import { BIGQUERY_MAX_ROW_BYTES, bigQueryRowProblem } from '../../src/sinks/analytics/bigquery-schema.js';
import { clickHouseRowProblem } from '../../src/sinks/analytics/clickhouse-schema.js';
import { keysProblem } from '../../src/sinks/analytics/columns.js';
import {
  DUCKDB_MAX_TEXT_BYTES,
  duckDbRowProblem,
  duckDbTimestampText,
  rememberedKeysProblem,
} from '../../src/sinks/analytics/representable.js';
import type { KeyType, KeyTypes } from '../../src/domain/source-shape.js';
import type { DeadLetterEntry } from '../../src/state/dead-letter.js';
import { redisKeys } from '../../src/sinks/redis/keys.js';
import { leaderboardOps } from '../../src/sinks/redis/leaderboard-ops.js';
import { RowCheckedSink, splitBatch } from '../../src/sinks/row-check.js';
import type { Sink } from '../../src/sinks/sink.js';
import { intBetween, pick, prng, seeds } from '../helpers/prng.js';

const NOW = '2026-12-01T08:00:00.000000Z';

function event(id: number, pgTs: string, overrides: Partial<EnrichedEvent> = {}): EnrichedEvent {
  const row = {
    id,
    content_id: '00000000-0000-4000-8000-000000000001',
    user_id: null,
    event_type: 'play',
    event_ts: pgTimestampToIso(pgTs),
    duration_ms: 1000,
    device: 'tv',
    raw_payload: { k: id },
  };
  return { ...enrich(row, undefined, NOW, NOW).event, ...overrides };
}

// Postgres text -> which analytics destinations can hold it.
const EDGES: [string, { duckdb: boolean; clickhouse: boolean; bigquery: boolean }][] = [
  ['4714-11-24 00:00:00+00 BC', { duckdb: true, clickhouse: false, bigquery: false }],
  ['0044-03-15 12:00:00+00 BC', { duckdb: true, clickhouse: false, bigquery: false }],
  ['0001-12-31 23:59:59.999999+00 BC', { duckdb: true, clickhouse: false, bigquery: false }],
  ['0001-01-01 00:00:00+00', { duckdb: true, clickhouse: false, bigquery: true }],
  ['0099-06-01 00:00:00+00', { duckdb: true, clickhouse: false, bigquery: true }],
  ['1899-12-31 23:59:59.999999+00', { duckdb: true, clickhouse: false, bigquery: true }],
  ['1900-01-01 00:00:00+00', { duckdb: true, clickhouse: true, bigquery: true }],
  ['2026-12-01 08:00:00.123456+00', { duckdb: true, clickhouse: true, bigquery: true }],
  ['2299-12-31 23:59:59.999999+00', { duckdb: true, clickhouse: true, bigquery: true }],
  ['2300-01-01 00:00:00+00', { duckdb: true, clickhouse: false, bigquery: true }],
  ['9999-12-31 23:59:59.999999+00', { duckdb: true, clickhouse: false, bigquery: true }],
  ['10000-01-01 00:00:00+00', { duckdb: true, clickhouse: false, bigquery: false }],
  ['294247-01-10 04:00:54.775806+00', { duckdb: true, clickhouse: false, bigquery: false }],
  ['294247-01-10 04:00:54.775807+00', { duckdb: false, clickhouse: false, bigquery: false }],
  ['294276-12-31 23:59:59.999999+00', { duckdb: false, clickhouse: false, bigquery: false }],
];

describe('what each analytics destination can hold', () => {
  for (const [ts, can] of EDGES) {
    it(ts, () => {
      const e = event(1, ts);
      assert.equal(duckDbRowProblem(e) === null, can.duckdb, `duckdb: ${duckDbRowProblem(e)}`);
      assert.equal(
        clickHouseRowProblem(e) === null,
        can.clickhouse,
        `clickhouse: ${clickHouseRowProblem(e)}`,
      );
      assert.equal(bigQueryRowProblem(e) === null, can.bigquery, `bigquery: ${bigQueryRowProblem(e)}`);
    });
  }
  it('DuckDB: a text value longer than its limit in UTF-8 bytes is refused, naming the column; exactly at the limit it fits', () => {
    const at = (column: 'raw_payload' | 'device', bytes: number, unit = 'x') => {
      const filler = unit.repeat(
        Math.floor((bytes - (column === 'raw_payload' ? 8 : 0)) / Buffer.byteLength(unit)),
      );
      const value = column === 'raw_payload' ? new JsonText(`{"b":"${filler}"}`) : filler;
      return event(1, '2026-12-01 08:00:00+00', { [column]: value } as Partial<EnrichedEvent>);
    };
    assert.equal(duckDbRowProblem(at('raw_payload', DUCKDB_MAX_TEXT_BYTES)), null);
    assert.match(
      String(duckDbRowProblem(at('raw_payload', DUCKDB_MAX_TEXT_BYTES + 3))),
      /^raw_payload is 262,00\d bytes, more than the 262,000 a DuckDB text value may have/,
    );
    // Counted in UTF-8: 3-byte characters reach the limit at a third of the length.
    assert.equal(duckDbRowProblem(at('device', DUCKDB_MAX_TEXT_BYTES, '中')), null);
    assert.match(
      String(duckDbRowProblem(at('device', DUCKDB_MAX_TEXT_BYTES + 3, '中'))),
      /^device is 262,00\d bytes/,
    );
    // A parsed payload (an older Kafka message) is measured as its JSON.
    assert.match(
      String(
        duckDbRowProblem(event(1, '2026-12-01 08:00:00+00', { raw_payload: { b: 'x'.repeat(300_000) } })),
      ),
      /^raw_payload is 300,008 bytes/,
    );
    // ClickHouse and BigQuery (up to its row limit) take them.
    assert.equal(clickHouseRowProblem(at('raw_payload', 1_048_576)), null);
  });

  it('says which column and which range', () => {
    assert.equal(
      duckDbRowProblem(event(1, '294276-12-31 23:59:59.999999+00')),
      "event_ts +294276-12-31T23:59:59.999999Z is outside DuckDB TIMESTAMPTZ's range (-290308-12-22T00:00:00.000000Z .. +294247-01-10T04:00:54.775806Z)",
    );
    assert.match(
      String(clickHouseRowProblem(event(1, '1899-12-31 23:59:59+00'))),
      /^event_ts .* ClickHouse DateTime64/,
    );
  });
  it('keeps 32-bit columns to 32 bits: a BIGINT source duration or length is refused by DuckDB and ClickHouse', () => {
    const long = event(1, '2026-12-01 08:00:00+00', { duration_ms: 5_000_000_000_000 });
    assert.equal(
      duckDbRowProblem(long),
      'duration_ms 5000000000000 does not fit DuckDB INTEGER (32 bits: -2147483648 .. 2147483647)',
    );
    assert.match(
      String(clickHouseRowProblem(long)),
      /^duration_ms 5000000000000 does not fit ClickHouse Int32/,
    );
    assert.equal(bigQueryRowProblem(long), null, 'BigQuery INT64 takes it');
    const length = event(2, '2026-12-01 08:00:00+00', { length_seconds: 2_147_483_648 });
    assert.match(String(duckDbRowProblem(length)), /^length_seconds 2147483648 does not fit/);
    assert.equal(
      duckDbRowProblem(event(3, '2026-12-01 08:00:00+00', { length_seconds: 2_147_483_647 })),
      null,
    );
  });
  it('gives DuckDB text its cast reads (no + on expanded years)', () => {
    assert.equal(duckDbTimestampText('+010000-01-01T00:00:00.000000Z'), '010000-01-01T00:00:00.000000Z');
    assert.equal(duckDbTimestampText('-000043-03-15T12:00:00.000000Z'), '-000043-03-15T12:00:00.000000Z');
    assert.equal(duckDbTimestampText(NOW), NOW);
  });
  it('keeps rows over the insertAll size budget away from BigQuery', () => {
    const big = event(1, '2026-12-01 08:00:00+00', {
      raw_payload: { x: 'x'.repeat(BIGQUERY_MAX_ROW_BYTES) },
    });
    assert.match(String(bigQueryRowProblem(big)), /bytes as JSON, over insertAll/);
    const fine = event(2, '2026-12-01 08:00:00+00', { raw_payload: { x: 'x'.repeat(1024 * 1024) } });
    assert.equal(bigQueryRowProblem(fine), null);
  });
  it('takes value edges other than timestamps as they are', () => {
    const edges = [
      event(1, '2026-12-01 08:00:00+00', { duration_ms: 2_147_483_647 }),
      event(2, '2026-12-01 08:00:00+00', { duration_ms: -2_147_483_648 }),
      event(3, '2026-12-01 08:00:00+00', {
        content_id: null,
        user_id: null,
        event_type: null,
        device: null,
        raw_payload: null,
      }),
      event(4, '2026-12-01 08:00:00+00', { raw_payload: { u: 'ünï \u0007 \u2028 \ufeff 🎧 "q" \\' } }),
    ];
    for (const e of edges) {
      assert.equal(duckDbRowProblem(e), null);
      assert.equal(clickHouseRowProblem(e), null);
      assert.equal(bigQueryRowProblem(e), null);
    }
  });
});

describe('a sink behind its row check', () => {
  const batchOf = (events: EnrichedEvent[]): Batch => ({
    seq: 1,
    stream: 'slot',
    events,
    positions: events.map((e) => `p${e.event_id}`),
    ackLsn: '0/10',
  });
  const recording = () => {
    const written: Batch[] = [];
    const dead: DeadLetterEntry[] = [];
    const inner: Sink = {
      name: 'analytics',
      start: async () => undefined,
      stop: async () => undefined,
      write: async (batch) => void written.push(batch),
    };
    const sink = new RowCheckedSink(inner, duckDbRowProblem, {
      deadLetters: { record: async (entries) => (dead.push(...entries), entries.length) },
      logger: silentLogger(),
      destination: 'DuckDB',
    });
    return { sink, written, dead };
  };

  it('passes a clean batch through untouched', async () => {
    const { sink, written, dead } = recording();
    const batch = batchOf([event(1, '2026-12-01 08:00:00+00'), event(2, '10000-01-01 00:00:00+00')]);
    await sink.write(batch, new AbortController().signal);
    assert.equal(written[0], batch);
    assert.equal(dead.length, 0);
  });
  it('writes the rest and dead-letters what the destination cannot hold, with the reason', async () => {
    const { sink, written, dead } = recording();
    const batch = batchOf([
      event(1, '2026-12-01 08:00:00+00'),
      event(2, '294276-12-31 23:59:59.999999+00'),
      event(3, '0044-03-15 12:00:00+00 BC'),
    ]);
    await sink.write(batch, new AbortController().signal);
    assert.deepEqual(
      written.map((b) => [b.events.map((e) => e.event_id), b.positions, b.ackLsn]),
      [[[1, 3], ['p1', 'p3'], '0/10']],
    );
    assert.equal(dead.length, 1);
    assert.deepEqual(
      { ...dead[0], event: undefined, lastError: undefined },
      {
        sink: 'analytics',
        eventId: 2,
        idempotencyKey: '2',
        event: undefined,
        source: 'slot@p2',
        lastError: undefined,
        attempts: 1,
      },
    );
    assert.match(
      dead[0].lastError,
      /^DuckDB cannot hold this row: event_ts \+294276-12-31T23:59:59\.999999Z is outside/,
    );
  });
  it('writes nothing when no row fits, and still records them', async () => {
    const { sink, written, dead } = recording();
    await sink.write(batchOf([event(9, '294276-12-31 23:59:59.999999+00')]), new AbortController().signal);
    assert.equal(written.length, 0);
    assert.deepEqual(
      dead.map((d) => d.eventId),
      [9],
    );
  });
  it('splits a batch the same way every time (a replay makes the same dead letters)', () => {
    const batch = batchOf([event(1, '294276-12-31 23:59:59.999999+00'), event(2, '2026-12-01 08:00:00+00')]);
    assert.deepEqual(splitBatch(batch, duckDbRowProblem), splitBatch(batch, duckDbRowProblem));
  });
});

describe('Redis minute buckets of far timestamps', () => {
  it('count them in their own minute, never in a recent one', () => {
    const keys = redisKeys('t:');
    const ops = leaderboardOps(
      [event(1, '10000-01-01 00:00:00+00'), event(2, '0044-03-15 12:00:00+00 BC')],
      keys,
    );
    const bucketKeys = ops.keys.filter((k) => k.includes('bucket'));
    assert.ok(bucketKeys.includes(keys.contentBucket('+010000010100' + '00')));
    assert.ok(bucketKeys.includes(keys.contentBucket('-000043031512' + '00')));
  });
});

// Property: the split copies only from the first refused event on; what it returns is the
// first version's (every event checked, the accepted ones copied).
describe('splitBatch', () => {
  const batchOf = (events: EnrichedEvent[]): Batch => ({
    seq: 1,
    stream: 's',
    events,
    positions: events.map((e) => `p${e.event_id}`),
    ackLsn: null,
  });
  const reference = (batch: Batch, problem: (e: EnrichedEvent) => string | null) => {
    const rejected: { event: EnrichedEvent; position: string; reason: string }[] = [];
    const events: EnrichedEvent[] = [];
    const positions: string[] = [];
    batch.events.forEach((e, i) => {
      const reason = problem(e);
      if (reason === null) {
        events.push(e);
        positions.push(batch.positions[i]);
      } else rejected.push({ event: e, position: batch.positions[i], reason });
    });
    return rejected.length === 0
      ? { accepted: batch, rejected }
      : { accepted: { ...batch, events, positions }, rejected };
  };
  for (const seed of seeds(10)) {
    it(`keeps positions aligned and the batch itself when nothing is refused (seed ${seed})`, () => {
      const random = prng(seed);
      for (let n = 0; n < 50; n++) {
        const size = intBetween(random, 0, 40);
        const batch = batchOf(Array.from({ length: size }, (_, i) => event(i + 1, '2026-12-01 08:00:00+00')));
        const share = pick(random, [0, 0.05, 0.5, 1]);
        const refused = new Set(batch.events.filter(() => random() < share).map((e) => e.event_id));
        const problem = (e: EnrichedEvent) => (refused.has(e.event_id) ? `no ${e.event_id}` : null);
        const split = splitBatch(batch, problem);
        assert.deepEqual(split, reference(batch, problem));
        if (refused.size === 0) assert.equal(split.accepted, batch);
      }
    });
  }
});

// Property: remembering the key texts that fit changes no answer, whatever the mix of types,
// valid and invalid keys, repeats, and more distinct keys than are remembered.
describe('rememberedKeysProblem', () => {
  for (const seed of seeds(5)) {
    it(`gives keysProblem's answer every time (seed ${seed})`, () => {
      const random = prng(seed);
      const hex = () => intBetween(random, 0, 15).toString(16);
      const uuid = () =>
        [8, 4, 4, 4, 12]
          .map((n) =>
            Array.from({ length: n }, () => (random() < 0.3 ? hex().toUpperCase() : hex())).join(''),
          )
          .join('-');
      const pool: unknown[] = Array.from({ length: 300 }, () =>
        pick(random, [
          uuid,
          uuid,
          () => uuid().slice(1),
          () => `${uuid().slice(0, 35)}g`,
          () => String(intBetween(random, -(2 ** 40), 2 ** 40)),
          () => '9223372036854775808',
          () => '2147483648',
          () => '-0',
          () => 'text',
          () => null,
          () => undefined,
          () => 7,
        ])(),
      );
      const types: KeyType[] = ['uuid', 'bigint', 'integer', 'text'];
      for (let n = 0; n < 30_000; n++) {
        const keyTypes: KeyTypes = { content_id: pick(random, types), user_id: pick(random, types) };
        const e = {
          ...event(n + 1, '2026-12-01 08:00:00+00'),
          content_id: random() < 0.05 ? uuid() : pick(random, pool),
          user_id: random() < 0.5 ? uuid() : pick(random, pool),
        } as EnrichedEvent;
        assert.equal(rememberedKeysProblem(e, keyTypes), keysProblem(e, keyTypes));
      }
    });
  }
});
