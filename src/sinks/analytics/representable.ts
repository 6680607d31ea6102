import { civilToMicros, timestampRangeProblem, type TimestampRange } from '../../domain/timestamps.js';
import type { KeyType, KeyTypes } from '../../domain/source-shape.js';
import type { EnrichedEvent } from '../../domain/types.js';
import { payloadJson } from '../../domain/json-text.js';
import {
  DEFAULT_KEY_TYPES,
  INT32_MAX,
  INT32_MIN,
  KEY_COLUMNS,
  keysProblem,
  keyValueProblem,
} from './columns.js';

/**
 * What an analytics destination can hold, checked before the destination sees a row: a value
 * outside a column's range would otherwise fail the whole batch forever (DuckDB's cast) or be
 * stored wrong without a word (ClickHouse clamps DateTime64). Pure.
 */

/** Why one of the event's timestamps (the columns every analytics table has) does not fit `range` (null when all do). */
export function timestampsProblem(e: EnrichedEvent, range: TimestampRange): string | null {
  return (
    timestampRangeProblem('event_ts', e.event_ts, range) ||
    timestampRangeProblem('committed_at', e.committed_at, range) ||
    timestampRangeProblem('processed_at', e.processed_at, range) ||
    null
  );
}

/**
 * DuckDB TIMESTAMPTZ: int64 microseconds with the two extremes reserved for ±infinity, i.e.
 * 290309-12-22 BC .. 294247-01-10 04:00:54.775806 UTC (probed: one microsecond more is
 * "timestamp field value out of range"). Postgres's range ends later, at 294276-12-31.
 */
export const DUCKDB_TIMESTAMPTZ_RANGE: TimestampRange = {
  label: 'DuckDB TIMESTAMPTZ',
  min: civilToMicros(-290308, 12, 22),
  max: 2n ** 63n - 2n,
};

/** Why DuckDB cannot hold the row (null when it can). */
export function duckDbRowProblem(e: EnrichedEvent, keyTypes: KeyTypes = DEFAULT_KEY_TYPES): string | null {
  return (
    timestampsProblem(e, DUCKDB_TIMESTAMPTZ_RANGE) ??
    int32Problem(e, 'DuckDB INTEGER') ??
    rememberedKeysProblem(e, keyTypes) ??
    duckDbTextProblem(e)
  );
}

const INT32_COLUMNS = ['duration_ms', 'length_seconds'] as const;

/**
 * Why duration_ms or length_seconds does not fit the 32-bit integer column every analytics
 * table but BigQuery's (INT64) has (null when both do). The default tables' columns are INTEGER,
 * but a user's may be BIGINT: 5,000,000,000,000 ms would fail every write of its batch, forever.
 */
export function int32Problem(e: EnrichedEvent, label: string): string | null {
  for (const column of INT32_COLUMNS) {
    const value = e[column];
    if (value === null || value === undefined) continue;
    if (!Number.isInteger(value) || value > INT32_MAX || value < INT32_MIN)
      return `${column} ${value} does not fit ${label} (32 bits: ${INT32_MIN} .. ${INT32_MAX})`;
  }
  return null;
}

/**
 * The longest text value (UTF-8 bytes) the DuckDB store takes. DuckDB (1.5) keeps a string
 * longer than one storage block (256 KiB) whole in memory, outside what it can spill, whenever it
 * rewrites the row group holding it; enough of them in one row group (122,880 rows) exceed
 * DUCKDB_MEMORY_LIMIT and every later commit fails ("failed to pin block"), for good. Probed
 * with DuckDB 1.5.6 and a 64 MB limit: values of 262,100 bytes, one per commit, 1,000 fine; of
 * 262,500 bytes the 233rd failed, of 1 MiB the 59th (a CHECKPOINT every 8 did not help).
 */
export const DUCKDB_MAX_TEXT_BYTES = 262_000;

const TEXT_COLUMNS = ['raw_payload', 'device', 'event_type', 'content_type'] as const;

/** Why one of the event's text values is too long for DuckDB (null when none is). */
export function duckDbTextProblem(e: EnrichedEvent): string | null {
  for (const column of TEXT_COLUMNS) {
    const value = e[column];
    if (value === null || value === undefined) continue;
    // A string's UTF-8 takes at most 3 bytes per UTF-16 unit: most values are decided by length.
    const text = typeof value === 'string' ? value : payloadJson(value);
    if (text === null || text.length * 3 <= DUCKDB_MAX_TEXT_BYTES) continue;
    const bytes = Buffer.byteLength(text);
    if (bytes > DUCKDB_MAX_TEXT_BYTES) {
      return `${column} is ${bytes.toLocaleString('en')} bytes, more than the ${DUCKDB_MAX_TEXT_BYTES.toLocaleString('en')} a DuckDB text value may have here (DuckDB holds longer ones whole in memory; ClickHouse and BigQuery take them)`;
    }
  }
  return null;
}

/**
 * keysProblem(e, keyTypes), remembering the content ids found to fit their type: the same few
 * (the content catalogue) come back event after event, and a set lookup costs a fraction of the
 * check (a UUID's is a loop over its 36 characters). User ids are too many to be worth
 * remembering; they are checked each time. Any key that does not fit is decided, and the reason
 * worded, by keysProblem itself.
 */
export function rememberedKeysProblem(e: EnrichedEvent, keyTypes: KeyTypes): string | null {
  for (const key of KEY_COLUMNS) {
    const fits =
      key === 'content_id' ? keyFits(keyTypes[key], e[key]) : keyValueProblem(keyTypes[key], e[key]) === null;
    if (!fits) return keysProblem(e, keyTypes);
  }
  return null;
}

/** Content ids known to fit each key type; emptied when full (a bound on memory, not a correctness matter). */
const FITTING: Record<KeyType, Set<string>> = {
  uuid: new Set(),
  bigint: new Set(),
  integer: new Set(),
  text: new Set(),
};
const FITTING_MAX = 20_000;

function keyFits(type: KeyType, value: unknown): boolean {
  if (value === null) return true;
  if (typeof value !== 'string') return false;
  const known = FITTING[type] as Set<string> | undefined;
  if (known === undefined) return keyValueProblem(type, value) === null;
  if (known.has(value)) return true;
  if (keyValueProblem(type, value) !== null) return false;
  if (known.size >= FITTING_MAX) known.clear();
  known.add(value);
  return true;
}

/**
 * The canonical timestamp as text DuckDB's TIMESTAMPTZ cast reads: DuckDB takes negative
 * expanded years (`-000043-03-15T12:00:00Z`) and unsigned ones (`10000-01-01T…`), but not the
 * `+` of ISO-8601's expanded form.
 */
export function duckDbTimestampText(iso: string): string {
  return iso.startsWith('+') ? iso.slice(1) : iso;
}
