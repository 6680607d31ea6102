import {
  BIGINT,
  DECIMAL,
  DuckDBDataChunk,
  DuckDBDecimalValue,
  DuckDBTimestampTZValue,
  INTEGER,
  TIMESTAMPTZ,
  VARCHAR,
  type DuckDBType,
  type DuckDBValue,
} from '@duckdb/node-api';
import { isoToMicros } from '../../../domain/timestamps.js';
import type { KeyType, KeyTypes } from '../../../domain/source-shape.js';
import type { EnrichedEvent } from '../../../domain/types.js';
import {
  DEFAULT_KEY_TYPES,
  EVENT_COLUMN_NAMES,
  EVENT_COLUMNS,
  keyValueProblem,
  type Column,
  type ColumnName,
} from '../columns.js';
import { RowConversionError } from './errors.js';

/**
 * Enriched events -> DuckDB DataChunks, built column by column in JS from the column
 * description (../columns.ts) and handed to the Appender whole. Every value is converted (and
 * refused, naming the event, column and value) before anything reaches DuckDB, so a bad value
 * can never leave half a row in an Appender. UUID and JSON columns travel as text and are cast
 * by DuckDB (the text was validated here); integers (integer keys too), timestamps and
 * decimals are written in their storage form.
 */

/** Column order of engagement.events_enriched. */
export const COLUMNS = EVENT_COLUMN_NAMES;

/** DuckDB's vector size: the most rows one DataChunk holds. */
export const CHUNK_ROWS = 2048;

const ISO_UTC = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/;
const INT32_MAX = 2 ** 31 - 1;
/** |micros| below this fits a double exactly (about 285 years either side of 1970). */
const SAFE_MICROS_MS = Math.floor(Number.MAX_SAFE_INTEGER / 1000);

type Convert = (e: EnrichedEvent, value: never) => DuckDBValue;
interface ChunkColumn {
  name: ColumnName;
  type: DuckDBType;
  /** A fresh converter per chunk (timestamp converters cache their last value). */
  converter: () => Convert;
}

/** How one column goes into a DataChunk: its vector type and its value converter. */
function chunkColumn(column: Column, keyTypes: KeyTypes): ChunkColumn {
  const name = column.name;
  const t = column.type;
  const fixed = (type: DuckDBType, convert: Convert): ChunkColumn => ({
    name,
    type,
    converter: () => convert,
  });
  switch (t.kind) {
    case 'event_id':
      return fixed(BIGINT, eventId);
    case 'key':
      return fixed(...keyColumn(name, keyTypes[t.key]));
    case 'category':
      return fixed(VARCHAR, (_e, v: string | null) => v);
    case 'int32':
      return fixed(INTEGER, (e, v: number | null) => int32(e, name, v));
    case 'json':
      return fixed(VARCHAR, json); // cast to JSON by DuckDB
    case 'decimal': {
      const type = DECIMAL(t.precision, t.scale);
      const factor = 10 ** t.scale;
      return fixed(type, (e, v: number | null) => {
        const n = scaled(e, name, v, factor);
        return n === null ? null : new DuckDBDecimalValue(n, type.width, type.scale);
      });
    }
    case 'timestamp':
      // committed_at repeats per transaction and processed_at per batch: each converted once.
      return {
        name,
        type: TIMESTAMPTZ,
        converter: () => {
          const cache = { text: '', value: null as DuckDBTimestampTZValue | null };
          return (e, v: string) => micros(e, name, v, cache);
        },
      };
  }
}

function keyColumn(name: string, keyType: KeyType): [DuckDBType, Convert] {
  const check = (e: EnrichedEvent, v: string | null): void => {
    const problem = keyValueProblem(keyType, v);
    if (problem) throw new RowConversionError(e.event_id, name, v, problem);
  };
  switch (keyType) {
    case 'uuid': // cast by DuckDB
    case 'text':
      return [VARCHAR, (e, v: string | null) => (check(e, v), v)];
    case 'bigint':
      return [BIGINT, (e, v: string | null) => (check(e, v), v === null ? null : BigInt(v))];
    case 'integer':
      return [INTEGER, (e, v: string | null) => (check(e, v), v === null ? null : Number(v))];
  }
}

/** The chunk layout for the source's key types (one per sink; the columns never change). */
export interface ChunkLayout {
  columns: ChunkColumn[];
  types: DuckDBType[];
}

export function chunkLayout(keyTypes: KeyTypes = DEFAULT_KEY_TYPES): ChunkLayout {
  const columns = EVENT_COLUMNS.map((c) => chunkColumn(c, keyTypes));
  return { columns, types: columns.map((c) => c.type) };
}

const DEFAULT_LAYOUT = chunkLayout();

/** The events as DataChunks of at most CHUNK_ROWS rows; the caller owns (and drops) them. */
export function buildChunks(
  events: readonly EnrichedEvent[],
  layout: ChunkLayout = DEFAULT_LAYOUT,
): DuckDBDataChunk[] {
  return [...chunksOf(events, layout, CHUNK_ROWS)];
}

/**
 * The events as DataChunks of at most `rows` (≤ CHUNK_ROWS) rows, each built only when asked
 * for (so a caller can yield to the event loop between them).
 */
export function* chunksOf(
  events: readonly EnrichedEvent[],
  layout: ChunkLayout,
  rows: number,
): Generator<DuckDBDataChunk> {
  for (let from = 0; from < events.length; from += rows) {
    yield buildChunk(events.slice(from, from + rows), layout);
  }
}

function buildChunk(events: readonly EnrichedEvent[], layout: ChunkLayout): DuckDBDataChunk {
  const n = events.length;
  const cols = layout.columns.map((column) => {
    const convert = column.converter() as (e: EnrichedEvent, v: unknown) => DuckDBValue;
    const name = column.name;
    const values = new Array<DuckDBValue>(n);
    for (let i = 0; i < n; i++) values[i] = convert(events[i], events[i][name]);
    return values;
  });
  const chunk = DuckDBDataChunk.create(layout.types, n);
  for (let c = 0; c < cols.length; c++) chunk.setColumnValues(c, cols[c]);
  return chunk;
}

function json(e: EnrichedEvent): string | null {
  if (e.raw_payload === null || e.raw_payload === undefined) return null;
  try {
    return JSON.stringify(e.raw_payload);
  } catch (err) {
    throw new RowConversionError(e.event_id, 'raw_payload', String(e.raw_payload), (err as Error).message);
  }
}

function eventId(e: EnrichedEvent): bigint {
  const id = e.event_id;
  if (!Number.isSafeInteger(id)) throw new RowConversionError(e.event_id, 'event_id', id, 'not an integer');
  return BigInt(id);
}

function int32(e: EnrichedEvent, column: string, value: number | null): number | null {
  if (value === null) return null;
  if (!Number.isInteger(value) || value > INT32_MAX || value < -INT32_MAX - 1)
    throw new RowConversionError(e.event_id, column, value, 'not a 32-bit integer');
  return value;
}

/** A number with at most log10(factor) decimals as DECIMAL(12, s)'s scaled integer. */
function scaled(e: EnrichedEvent, column: string, value: number | null, factor: number): bigint | null {
  if (value === null) return null;
  const n = typeof value === 'number' ? Math.round(value * factor) : NaN;
  if (!Number.isSafeInteger(n) || Math.abs(n) >= 1e12)
    throw new RowConversionError(
      e.event_id,
      column,
      value,
      'does not fit DECIMAL(12,' + Math.log10(factor) + ')',
    );
  return BigInt(n);
}

let lastSecondText = '';
let lastSecondMs = Number.NaN;

/** Date.parse of `YYYY-MM-DDTHH:MM:SS` (UTC); consecutive events mostly share the second. */
function secondsToMs(text: string): number {
  if (text !== lastSecondText) {
    lastSecondMs = Date.parse(`${text}Z`);
    lastSecondText = text;
  }
  return lastSecondMs;
}

function micros(
  e: EnrichedEvent,
  column: string,
  text: string,
  cache: { text: string; value: DuckDBTimestampTZValue | null } | null,
): DuckDBTimestampTZValue {
  if (cache !== null && cache.text === text && cache.value !== null) return cache.value;
  const m = typeof text === 'string' ? ISO_UTC.exec(text) : null;
  const ms = m ? secondsToMs(m[1]) : NaN;
  let value: DuckDBTimestampTZValue;
  if (m !== null && !Number.isNaN(ms)) {
    const fraction = Number((m[2] ?? '').padEnd(6, '0'));
    value = new DuckDBTimestampTZValue(
      Math.abs(ms) < SAFE_MICROS_MS ? BigInt(ms * 1000 + fraction) : BigInt(ms) * 1000n + BigInt(fraction),
    );
  } else {
    // Expanded years (BC, or past 9999): exact integer arithmetic; the range was checked before.
    try {
      value = new DuckDBTimestampTZValue(isoToMicros(text));
    } catch {
      throw new RowConversionError(
        e.event_id,
        column,
        text,
        'not an ISO-8601 UTC timestamp DuckDB can store',
      );
    }
  }
  if (cache !== null) {
    cache.text = text;
    cache.value = value;
  }
  return value;
}
