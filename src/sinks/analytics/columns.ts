import { DEFAULT_SHAPE, type KeyType, type KeyTypes } from '../../domain/source-shape.js';
import type { EnrichedEvent } from '../../domain/types.js';
import { ErrorCodes, PipelineError } from '../../errors.js';

/**
 * The one description of `engagement.events_enriched`: every column, in table order, with its
 * logical type and nullability. Each destination family (duckdb/, clickhouse-schema.ts,
 * bigquery-schema.ts) maps the logical types to its own: its DDL and its row serializer are
 * both derived from this list, so a column added here reaches every destination, and the key
 * columns follow the source's key types (`KeyTypes`) everywhere. Pure, no I/O.
 */

/** How a column's values are typed, independent of any destination. */
export type LogicalType =
  /** The row key: engagement_events.id, a positive 64-bit integer held as a JS number. */
  | { kind: 'event_id' }
  /** A key carried from the source (content_id, user_id): its type is the source's, see KeyTypes. */
  | { kind: 'key'; key: keyof KeyTypes }
  /** Short text with few distinct values (event_type, device, content_type). */
  | { kind: 'category' }
  | { kind: 'int32' }
  /** Microseconds, UTC, carried as ISO-8601 text. */
  | { kind: 'timestamp' }
  /** Exact decimal, carried as a JS number with at most `scale` decimals. */
  | { kind: 'decimal'; precision: 12; scale: 2 | 3 }
  /** A JSON document (raw_payload), any JS value. */
  | { kind: 'json' };

export type ColumnName = keyof EnrichedEvent;

export interface Column {
  name: ColumnName;
  type: LogicalType;
  nullable: boolean;
}

const col = (name: ColumnName, type: LogicalType, nullable: boolean): Column => ({ name, type, nullable });

/** The columns of engagement.events_enriched, in table order (also the insert order). */
export const EVENT_COLUMNS: readonly Column[] = [
  col('event_id', { kind: 'event_id' }, false),
  col('content_id', { kind: 'key', key: 'content_id' }, true),
  col('user_id', { kind: 'key', key: 'user_id' }, true),
  col('event_type', { kind: 'category' }, true),
  col('event_ts', { kind: 'timestamp' }, false),
  col('duration_ms', { kind: 'int32' }, true),
  col('device', { kind: 'category' }, true),
  col('raw_payload', { kind: 'json' }, true),
  col('content_type', { kind: 'category' }, true),
  col('length_seconds', { kind: 'int32' }, true),
  col('engagement_seconds', { kind: 'decimal', precision: 12, scale: 3 }, true),
  col('engagement_pct', { kind: 'decimal', precision: 12, scale: 2 }, true),
  col('committed_at', { kind: 'timestamp' }, false),
  col('processed_at', { kind: 'timestamp' }, false),
];

export const EVENT_COLUMN_NAMES: readonly ColumnName[] = EVENT_COLUMNS.map((c) => c.name);

/** The key columns: the only ones whose destination type depends on the source's shape. */
export const KEY_COLUMNS: readonly (keyof KeyTypes)[] = ['content_id', 'user_id'];

export const DEFAULT_KEY_TYPES: KeyTypes = DEFAULT_SHAPE.keyTypes;

/** A destination family's names for the logical types (its DDL spelling). */
export interface TypeNames {
  event_id: string;
  key: Record<KeyType, string>;
  category: string;
  int32: string;
  timestamp: string;
  decimal: (precision: number, scale: number) => string;
  json: string;
}

/** The column's type in a family's spelling, keys typed from the source's key types. */
export function typeName(column: Column, keyTypes: KeyTypes, names: TypeNames): string {
  const t = column.type;
  if (t.kind === 'key') return names.key[keyTypes[t.key]];
  if (t.kind === 'decimal') return names.decimal(t.precision, t.scale);
  return names[t.kind];
}

/**
 * 8-4-4-4-12 hex digits (either case), as UUID_TEXT matches: checked twice per event on the hot
 * path (the row check, then the DuckDB chunk), where a char loop costs a fraction of the RegExp.
 */
export function isUuidText(value: string): boolean {
  if (value.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const c = value.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 45) return false; // '-'
    } else if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70))) return false;
  }
  return true;
}

/** What isUuidText accepts, as a pattern (kept for the tests that compare the two). */
export const UUID_TEXT = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const INTEGER_TEXT = /^-?(0|[1-9]\d*)$/;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** The range of the 32-bit integer columns (keys typed `integer`, duration_ms, length_seconds). */
export const INT32_MIN = -(2 ** 31);
export const INT32_MAX = 2 ** 31 - 1;

/**
 * Why `value` (a key in its text form, as the pipeline holds every key) is not a `type`, or
 * null when it is. A destination typed from the source's keys can then refuse one row with a
 * reason instead of failing (or, worse, casting) a whole batch.
 */
export function keyValueProblem(type: KeyType, value: unknown): string | null {
  if (value === null) return null;
  if (typeof value !== 'string') return `not text (${typeof value})`;
  switch (type) {
    case 'uuid':
      return isUuidText(value) ? null : 'not a UUID';
    case 'text':
      return null;
    case 'bigint': {
      if (!INTEGER_TEXT.test(value)) return 'not an integer';
      const n = BigInt(value);
      return n < INT64_MIN || n > INT64_MAX ? 'not a 64-bit integer' : null;
    }
    case 'integer': {
      if (!INTEGER_TEXT.test(value)) return 'not an integer';
      const n = Number(value);
      return n < INT32_MIN || n > INT32_MAX ? 'not a 32-bit integer' : null;
    }
  }
}

/** The first key of `e` that does not fit its column, as `content_id = "x" is not a UUID`; or null. */
export function keysProblem(e: EnrichedEvent, keyTypes: KeyTypes = DEFAULT_KEY_TYPES): string | null {
  for (const key of KEY_COLUMNS) {
    const problem = keyValueProblem(keyTypes[key], e[key]);
    if (problem)
      return `${key} = ${JSON.stringify(e[key])} is ${problem} (the source's ${key} is ${keyTypes[key]})`;
  }
  return null;
}

/** A key column whose existing destination type is not the one the source's keys need. */
export interface ColumnTypeDifference {
  column: string;
  existing: string;
  expected: string;
}

/**
 * The key columns of an existing table whose type differs from `expected` (column -> type in
 * the destination's own spelling). Only key columns are compared: the other columns are the
 * same for every source, while the keys' types follow the source's shape, so a table created
 * for another shape differs exactly there. A column missing from `existing` is reported too.
 */
export function keyColumnDifferences(
  existing: ReadonlyMap<string, string>,
  expected: ReadonlyMap<string, string>,
  normalize: (type: string) => string = (t) => t,
): ColumnTypeDifference[] {
  const out: ColumnTypeDifference[] = [];
  for (const column of KEY_COLUMNS) {
    const want = expected.get(column);
    const have = existing.get(column);
    if (want === undefined) continue;
    if (have === undefined || normalize(have) !== normalize(want))
      out.push({ column, existing: have ?? '(missing)', expected: want });
  }
  return out;
}

/**
 * The one line for a destination table created earlier for other key types: what differs and
 * how to move on. The pipeline never casts keys to make such a table fit (a UUID column cannot
 * hold 777; a VARCHAR one would hold it but sort and join as text). When a difference is not a
 * key column's (a column the pipeline writes is missing, or one it does not write is required),
 * the line says the table does not have the pipeline's columns instead.
 */
export function destinationShapeError(
  destination: string,
  table: string,
  differences: readonly ColumnTypeDifference[],
  keyTypes: KeyTypes,
  howToMove: string,
): PipelineError {
  const what = differences.map((d) => `${d.column} is ${d.existing}, expected ${d.expected}`).join('; ');
  const keysOnly = differences.every((d) => (KEY_COLUMNS as readonly string[]).includes(d.column));
  return new PipelineError(
    ErrorCodes.DESTINATION_SHAPE,
    (keysOnly
      ? `${destination} table ${table} was created for other key types than the source's ` +
        `(content_id ${keyTypes.content_id}, user_id ${keyTypes.user_id}): `
      : `${destination} table ${table} does not have the columns the pipeline writes: `) +
      `${what}; nothing was written`,
    'config',
    howToMove,
  );
}
