import { civilToMicros, timestampRangeProblem, type TimestampRange } from '../../domain/timestamps.js';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { EnrichedEvent } from '../../domain/types.js';
import { DEFAULT_KEY_TYPES, keysProblem } from './columns.js';

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
  return timestampsProblem(e, DUCKDB_TIMESTAMPTZ_RANGE) ?? keysProblem(e, keyTypes);
}

/**
 * The canonical timestamp as text DuckDB's TIMESTAMPTZ cast reads: DuckDB takes negative
 * expanded years (`-000043-03-15T12:00:00Z`) and unsigned ones (`10000-01-01T…`), but not the
 * `+` of ISO-8601's expanded form.
 */
export function duckDbTimestampText(iso: string): string {
  return iso.startsWith('+') ? iso.slice(1) : iso;
}
