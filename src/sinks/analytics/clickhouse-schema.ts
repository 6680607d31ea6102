import { createHash } from 'node:crypto';
import { payloadJson } from '../../domain/json-text.js';
import { civilToMicros, type TimestampRange } from '../../domain/timestamps.js';
import type { Batch, EnrichedEvent } from '../../domain/types.js';
import type { KeyTypes } from '../../domain/source-shape.js';
import {
  DEFAULT_KEY_TYPES,
  EVENT_COLUMN_NAMES,
  EVENT_COLUMNS,
  keysProblem,
  typeName,
  type Column,
  type ColumnName,
  type TypeNames,
} from './columns.js';
import { int32Problem, timestampsProblem } from './representable.js';

/**
 * The ClickHouse table and the rows we send to it. Pure: no I/O, so the DDL the sink runs is
 * the DDL the tests run on the real engine (chdb), and the row shape is unit-checkable.
 */

/** `db` as a ClickHouse identifier (back-quoted, so any database name from the URL is safe). */
export function quoteClickHouseIdent(name: string): string {
  return `\`${name.replaceAll('\\', '\\\\').replaceAll('`', '\\`')}\``;
}

export function clickHouseTable(database: string): string {
  return `${quoteClickHouseIdent(database)}.events_enriched`;
}

/**
 * How many recent insert blocks' dedup hashes a non-replicated MergeTree remembers. 0 (the
 * default) turns insert deduplication off for non-replicated tables; replicated/shared tables
 * (ClickHouse Cloud) use replicated_deduplication_window instead. 10k batches of up to
 * BATCH_MAX_ROWS each comfortably covers the un-acknowledged tail a crash can replay.
 */
export const DEDUP_WINDOW = 10_000;

/**
 * Why this shape:
 * - ReplacingMergeTree collapses rows with equal sorting keys, so the key must be a function of
 *   event_id alone. event_ts comes from the immutable source row, so (toDate(event_ts), event_id)
 *   qualifies; content_type does NOT (it is enriched from `content`, which can change between a
 *   crash and its replay), so it stays out of the key.
 * - It only dedups within a partition: partitioning by toYYYYMM(event_ts) keeps every copy of an
 *   event_id in the same partition. Month partitions keep the part count low at our row sizes.
 * - Leading the key with the day serves the typical queries (per hour/day over a time range).
 * - Key columns take the source's key types (UUID, Int64, Int32 or String; see columns.ts).
 * - DateTime64(6): the source is TIMESTAMPTZ (microseconds) and DateTime64(3) and (6) are both
 *   Int64 on disk, so nothing is gained by truncating. Decimals match Postgres' exact values.
 * - raw_payload is kept as JSON text: String is stable across server versions and
 *   JSONExtract*() reads it; the JSON column type would make inserts fail on older servers.
 */
export function clickHouseDdl(database: string, keyTypes: KeyTypes = DEFAULT_KEY_TYPES): string[] {
  const columns = EVENT_COLUMNS.map((c) => `  ${c.name.padEnd(18)} ${clickHouseColumnType(c, keyTypes)}`);
  return [
    `CREATE DATABASE IF NOT EXISTS ${quoteClickHouseIdent(database)}`,
    `CREATE TABLE IF NOT EXISTS ${clickHouseTable(database)} (
${columns.join(',\n')}
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_ts)
ORDER BY (toDate(event_ts), event_id)
SETTINGS non_replicated_deduplication_window = ${DEDUP_WINDOW}`,
  ];
}

/** ClickHouse's names for the logical types, before Nullable/LowCardinality wrapping. */
export const CLICKHOUSE_TYPES: TypeNames = {
  event_id: 'UInt64',
  key: { uuid: 'UUID', bigint: 'Int64', integer: 'Int32', text: 'String' },
  category: 'String',
  int32: 'Int32',
  timestamp: "DateTime64(6, 'UTC')",
  decimal: (precision, scale) => `Decimal(${precision}, ${scale})`,
  json: 'String',
};

/** A column's ClickHouse type, as `system.columns.type` spells it. */
export function clickHouseColumnType(column: Column, keyTypes: KeyTypes = DEFAULT_KEY_TYPES): string {
  const base = typeName(column, keyTypes, CLICKHOUSE_TYPES);
  const type = column.nullable ? `Nullable(${base})` : base;
  return column.type.kind === 'category' ? `LowCardinality(${type})` : type;
}

export const CLICKHOUSE_COLUMNS: [ColumnName, ...ColumnName[]] = [
  EVENT_COLUMN_NAMES[0],
  ...EVENT_COLUMN_NAMES.slice(1),
];

export type ClickHouseRow = Record<ColumnName, string | number | null>;

type Encode = (value: never) => string | number | null;

/** How one column's value goes into a JSONEachRow object. */
function clickHouseEncoder(column: Column, keyTypes: KeyTypes): Encode {
  const t = column.type;
  switch (t.kind) {
    case 'event_id':
    case 'int32':
      return (v: number | null) => v;
    case 'key':
      // Int64 travels as text (exact beyond 2^53; ClickHouse parses quoted integers); Int32 as a number.
      // Text that is not an integer stays text, so the server refuses it loudly (NaN would be NULL).
      return keyTypes[t.key] === 'integer'
        ? (v: string | null) => (v !== null && /^-?\d{1,10}$/.test(v) ? Number(v) : v)
        : (v: string | null) => v;
    case 'category':
    case 'timestamp':
      return (v: string | null) => v;
    case 'decimal':
      return (v: number | null) => (v === null ? null : String(v));
    case 'json':
      return payloadJson;
  }
}

/**
 * The row serializer for the source's key types: one JSONEachRow object per event. Decimals go
 * as strings so the server parses their exact text (never a binary float); timestamps stay
 * ISO-8601 and the insert sets date_time_input_format=best_effort to read them with their zone
 * and microseconds.
 */
export function clickHouseRowSerializer(
  keyTypes: KeyTypes = DEFAULT_KEY_TYPES,
): (e: EnrichedEvent) => ClickHouseRow {
  const encoders = EVENT_COLUMNS.map(
    (c) => [c.name, clickHouseEncoder(c, keyTypes) as (v: unknown) => string | number | null] as const,
  );
  return (e) => {
    const row = {} as ClickHouseRow;
    for (const [name, encode] of encoders) row[name] = encode(e[name]);
    return row;
  };
}

/** One row with UUID keys (the default shape). */
export const toClickHouseRow = clickHouseRowSerializer();

/**
 * The insert_deduplication_token of a batch: a function of its event_ids only. A replay after a
 * crash re-enriches the same events (processed_at differs), so a hash of the row data would
 * not match; the ids do. An identical replayed batch is then dropped by the server at insert,
 * and a replay split at other boundaries is collapsed by ReplacingMergeTree on event_id.
 */
export function deduplicationToken(batch: Batch): string {
  const ids = batch.events.map((e) => e.event_id);
  const hash = createHash('sha256').update(ids.join(',')).digest('hex').slice(0, 32);
  return `ep:${ids[0]}-${ids[ids.length - 1]}:${ids.length}:${hash}`;
}

/**
 * DateTime64(6, 'UTC') is documented for 1900-01-01 00:00:00 .. 2299-12-31 23:59:59.999999.
 * ClickHouse does not refuse a parsable value outside it, but its date functions then wrap
 * (on 26.7, toDate of 1899-12-31 23:59:59 is 2079-06-06), and it cannot parse expanded years
 * (`+010000-…`, `-000043-…`: the whole insert fails). So rows outside are kept away from it
 * (dead-lettered for this sink) rather than stored wrong or retried forever.
 */
export const CLICKHOUSE_DATETIME64_RANGE: TimestampRange = {
  label: "ClickHouse DateTime64(6, 'UTC')",
  min: civilToMicros(1900, 1, 1),
  max: civilToMicros(2299, 12, 31, 23, 59, 59, 999_999),
};

/** Why ClickHouse cannot hold the row (null when it can). */
export function clickHouseRowProblem(
  e: EnrichedEvent,
  keyTypes: KeyTypes = DEFAULT_KEY_TYPES,
): string | null {
  return (
    timestampsProblem(e, CLICKHOUSE_DATETIME64_RANGE) ??
    int32Problem(e, 'ClickHouse Int32') ??
    keysProblem(e, keyTypes)
  );
}
