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
import type { EnrichedEvent } from '../../../domain/types.js';
import { RowConversionError } from './errors.js';

/**
 * Enriched events -> DuckDB DataChunks, built column by column in JS and handed to the
 * Appender whole. Every value is converted (and refused, naming the event, column and
 * value) before anything reaches DuckDB, so a bad value can never leave half a row in an
 * Appender. UUID and JSON columns travel as text and are cast by DuckDB (the text was
 * validated here); integers, timestamps and decimals are written in their storage form.
 */

/** Column order of engagement.events_enriched. */
export const COLUMNS = [
  'event_id',
  'content_id',
  'user_id',
  'event_type',
  'event_ts',
  'duration_ms',
  'device',
  'raw_payload',
  'content_type',
  'length_seconds',
  'engagement_seconds',
  'engagement_pct',
  'committed_at',
  'processed_at',
] as const;

const SECONDS = DECIMAL(12, 3);
const PCT = DECIMAL(12, 2);
const CHUNK_TYPES: DuckDBType[] = [
  BIGINT,
  VARCHAR, // UUID, cast by DuckDB
  VARCHAR, // UUID, cast by DuckDB
  VARCHAR,
  TIMESTAMPTZ,
  INTEGER,
  VARCHAR,
  VARCHAR, // JSON, cast by DuckDB
  VARCHAR,
  INTEGER,
  SECONDS,
  PCT,
  TIMESTAMPTZ,
  TIMESTAMPTZ,
];

/** DuckDB's vector size: the most rows one DataChunk holds. */
export const CHUNK_ROWS = 2048;

const UUID_TEXT = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const ISO_UTC = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/;
const INT32_MAX = 2 ** 31 - 1;
/** |micros| below this fits a double exactly (about 285 years either side of 1970). */
const SAFE_MICROS_MS = Math.floor(Number.MAX_SAFE_INTEGER / 1000);

/** The events as DataChunks of at most CHUNK_ROWS rows; the caller owns (and drops) them. */
export function buildChunks(events: readonly EnrichedEvent[]): DuckDBDataChunk[] {
  const chunks: DuckDBDataChunk[] = [];
  for (let from = 0; from < events.length; from += CHUNK_ROWS) {
    chunks.push(buildChunk(events.slice(from, from + CHUNK_ROWS)));
  }
  return chunks;
}

function buildChunk(events: readonly EnrichedEvent[]): DuckDBDataChunk {
  const n = events.length;
  const cols: DuckDBValue[][] = CHUNK_TYPES.map(() => new Array<DuckDBValue>(n));
  // committed_at repeats per transaction and processed_at per batch: convert each once.
  const cache = { text: '', value: null as DuckDBTimestampTZValue | null };
  for (let i = 0; i < n; i++) {
    const e = events[i];
    cols[0][i] = eventId(e);
    cols[1][i] = uuid(e, 'content_id', e.content_id);
    cols[2][i] = uuid(e, 'user_id', e.user_id);
    cols[3][i] = e.event_type;
    cols[4][i] = micros(e, 'event_ts', e.event_ts, null);
    cols[5][i] = int32(e, 'duration_ms', e.duration_ms);
    cols[6][i] = e.device;
    cols[7][i] = json(e);
    cols[8][i] = e.content_type;
    cols[9][i] = int32(e, 'length_seconds', e.length_seconds);
    const seconds = scaled(e, 'engagement_seconds', e.engagement_seconds, 1000);
    cols[10][i] = seconds === null ? null : new DuckDBDecimalValue(seconds, SECONDS.width, SECONDS.scale);
    const pct = scaled(e, 'engagement_pct', e.engagement_pct, 100);
    cols[11][i] = pct === null ? null : new DuckDBDecimalValue(pct, PCT.width, PCT.scale);
    cols[12][i] = micros(e, 'committed_at', e.committed_at, cache);
    cols[13][i] = micros(e, 'processed_at', e.processed_at, cache);
  }
  const chunk = DuckDBDataChunk.create(CHUNK_TYPES, n);
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

function uuid(e: EnrichedEvent, column: string, value: string | null): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || !UUID_TEXT.test(value))
    throw new RowConversionError(e.event_id, column, value, 'not a UUID');
  return value;
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
