// The binding node-api itself is built on (declared at the version node-api pins): its vector
// calls write a whole column at once, which node-api's own API does not offer.
import duckdb from '@duckdb/node-bindings';
import {
  BIGINT,
  DECIMAL,
  DuckDBDataChunk,
  DuckDBVarCharType,
  INTEGER,
  TIMESTAMPTZ,
  UUID,
  VARCHAR,
  type DuckDBType,
} from '@duckdb/node-api';
import { payloadJson } from '../../../domain/json-text.js';
import { isoToMicros } from '../../../domain/timestamps.js';
import type { KeyType, KeyTypes } from '../../../domain/source-shape.js';
import type { EnrichedEvent } from '../../../domain/types.js';
import {
  DEFAULT_KEY_TYPES,
  EVENT_COLUMN_NAMES,
  EVENT_COLUMNS,
  INT32_MAX,
  INT32_MIN,
  keyValueProblem,
  type Column,
  type ColumnName,
} from '../columns.js';
import { RowConversionError } from './errors.js';

/**
 * Enriched events -> DuckDB DataChunks, built column by column in JS from the column
 * description (../columns.ts) and handed to the Appender whole. Every value is converted (and
 * refused, naming the event, column and value) before anything reaches DuckDB, so a bad value
 * can never leave half a row in an Appender.
 *
 * Every column is written in DuckDB's storage form, so the Appender casts nothing: integers,
 * decimals (scaled 64-bit integers) and timestamps (64-bit microseconds) as two 32-bit words,
 * UUIDs as the 128-bit integer DuckDB stores (parsed from the text here), text of up to 12
 * bytes inline in its 16-byte string slot, longer text through DuckDB's string heap, and the
 * JSON payload as text typed JSON (its exact text from the source, or JSON.stringify's output:
 * JSON either way, and DuckDB's cast from text would only have checked that, keeping the text
 * as it is). A column's values go into a scratch buffer and are copied into the chunk's vector
 * in one call, with a validity mask when the column has NULLs. The node-api's per-value path (a wrapper object or BigInt per value,
 * a BigInt mask operation per row) cost several times more per row.
 */

/** Column order of engagement.events_enriched. */
export const COLUMNS = EVENT_COLUMN_NAMES;

/** DuckDB's vector size: the most rows one DataChunk holds. */
export const CHUNK_ROWS = 2048;

const ISO_UTC = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/;
/** |micros| below this fits a double exactly (about 285 years either side of 1970). */
const SAFE_MICROS_MS = Math.floor(Number.MAX_SAFE_INTEGER / 1000);
const TWO_32 = 4294967296;

// The scratch words are laid out as DuckDB's vectors are in memory on a little-endian host.
if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1)
  throw new Error('the DuckDB chunk writer assumes a little-endian host');

/** JSON is VARCHAR with an alias to DuckDB: a chunk column of this type needs no cast. */
const JSON_TEXT = DuckDBVarCharType.create('JSON');

/**
 * Where one chunk's column is written: a scratch buffer of CHUNK_ROWS 16-byte slots (viewed as
 * 32-bit words) and its validity mask, shared by all columns (each column is copied into its
 * vector before the next one is written).
 */
interface Scratch {
  buffer: ArrayBuffer;
  words: Uint32Array;
  bytes: Uint8Array;
  validity: Uint32Array;
  validityBuffer: ArrayBuffer;
  /** Rows of the current column whose text goes through DuckDB's string heap. */
  longRows: number[];
  longTexts: string[];
}

function newScratch(): Scratch {
  const buffer = new ArrayBuffer(CHUNK_ROWS * 16);
  const validityBuffer = new ArrayBuffer(CHUNK_ROWS / 8);
  return {
    buffer,
    words: new Uint32Array(buffer),
    bytes: new Uint8Array(buffer),
    validity: new Uint32Array(validityBuffer),
    validityBuffer,
    longRows: [],
    longTexts: [],
  };
}

/**
 * Writes `events`' values of one column into the scratch (slot i for events[i]); returns
 * whether any was NULL (their validity bits are cleared). Throws a RowConversionError for a
 * value the column cannot take.
 */
type Fill = (events: readonly EnrichedEvent[], s: Scratch) => boolean;

interface ChunkColumn {
  name: ColumnName;
  type: DuckDBType;
  /** Bytes per row in the vector (16 for text and UUIDs). */
  width: number;
  /** A fresh filler per chunk (timestamp fillers cache their last value). */
  filler: () => Fill;
}

/** How one column goes into a DataChunk: its vector type and its filler. */
function chunkColumn(column: Column, keyTypes: KeyTypes): ChunkColumn {
  const name = column.name;
  const t = column.type;
  const fixed = (type: DuckDBType, width: number, fill: Fill): ChunkColumn => ({
    name,
    type,
    width,
    filler: () => fill,
  });
  switch (t.kind) {
    case 'event_id':
      return fixed(BIGINT, 8, (events, s) =>
        fillNumbers(events, s, name, (e, v) => {
          if (!Number.isSafeInteger(v))
            throw new RowConversionError(e.event_id, 'event_id', v, 'not an integer');
          return v as number;
        }),
      );
    case 'key':
      return keyColumn(name, keyTypes[t.key]);
    case 'category':
      return fixed(VARCHAR, 16, (events, s) => fillTexts(events, s, name, (e, v) => textOf(e, v, name)));
    case 'int32':
      return fixed(INTEGER, 4, (events, s) => fillInt32(events, s, name));
    case 'json':
      return fixed(JSON_TEXT, 16, (events, s) => fillTexts(events, s, name, json));
    case 'decimal': {
      const factor = 10 ** t.scale;
      return fixed(DECIMAL(t.precision, t.scale), 8, (events, s) =>
        fillNumbers(events, s, name, (e, v) => scaled(e, name, v, factor)),
      );
    }
    case 'timestamp':
      // committed_at repeats per transaction and processed_at per batch: each converted once.
      return {
        name,
        type: TIMESTAMPTZ,
        width: 8,
        filler: () => {
          const cache: MicrosCache = { text: '', lo: 0, hi: 0 };
          return (events, s) => fillTimestamps(events, s, name, cache);
        },
      };
  }
}

function keyColumn(name: ColumnName, keyType: KeyType): ChunkColumn {
  const refuse = (e: EnrichedEvent, v: unknown): never => {
    throw new RowConversionError(e.event_id, name, v, keyValueProblem(keyType, v) ?? 'not a key');
  };
  const check = (e: EnrichedEvent, v: unknown): void => {
    const problem = keyValueProblem(keyType, v);
    if (problem) throw new RowConversionError(e.event_id, name, v, problem);
  };
  const fill = (type: DuckDBType, width: number, f: Fill): ChunkColumn => ({
    name,
    type,
    width,
    filler: () => f,
  });
  switch (keyType) {
    case 'uuid':
      return fill(UUID, 16, (events, s) => fillUuids(events, s, name, refuse));
    case 'text':
      return fill(VARCHAR, 16, (events, s) =>
        fillTexts(events, s, name, (e, v) => (check(e, v), v as string | null)),
      );
    case 'bigint':
      return fill(BIGINT, 8, (events, s) => fillBigintKeys(events, s, name, check));
    case 'integer':
      return fill(INTEGER, 4, (events, s) =>
        fillInt32(events, s, name, (e, v) => (check(e, v), v === null ? null : Number(v))),
      );
  }
}

/** The chunk layout for the source's key types (one per sink; the columns never change). */
export interface ChunkLayout {
  columns: ChunkColumn[];
  types: DuckDBType[];
  scratch: Scratch;
}

export function chunkLayout(keyTypes: KeyTypes = DEFAULT_KEY_TYPES): ChunkLayout {
  const columns = EVENT_COLUMNS.map((c) => chunkColumn(c, keyTypes));
  return { columns, types: columns.map((c) => c.type), scratch: newScratch() };
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
  if (n > CHUNK_ROWS) throw new RangeError(`a DataChunk holds at most ${CHUNK_ROWS} rows`);
  const s = layout.scratch;
  // A refused value throws before the chunk is returned: a partly written chunk is dropped,
  // never appended.
  const fills = layout.columns.map((column) => column.filler());
  const chunk = DuckDBDataChunk.create(layout.types, n);
  const validityBytes = Math.ceil(n / 64) * 8;
  for (let c = 0; c < layout.columns.length; c++) {
    s.validity.fill(0xffffffff, 0, validityBytes / 4);
    s.longRows.length = 0;
    s.longTexts.length = 0;
    const hasNulls = fills[c](events, s);
    const vector = duckdb.data_chunk_get_vector(chunk.chunk, c);
    duckdb.copy_data_to_vector(vector, 0, s.buffer, 0, n * layout.columns[c].width);
    for (let i = 0; i < s.longRows.length; i++) {
      duckdb.vector_assign_string_element(vector, s.longRows[i], s.longTexts[i]);
    }
    if (hasNulls) {
      duckdb.vector_ensure_validity_writable(vector);
      duckdb.copy_data_to_vector_validity(vector, 0, s.validityBuffer, 0, validityBytes);
    }
  }
  return chunk;
}

function setNull(s: Scratch, i: number): void {
  s.validity[i >>> 5] &= ~(1 << (i & 31));
}

/** 64-bit integers from safe JS integers (two's complement, little-endian words). */
function fillNumbers(
  events: readonly EnrichedEvent[],
  s: Scratch,
  name: ColumnName,
  convert: (e: EnrichedEvent, v: unknown) => number | null,
): boolean {
  const w = s.words;
  let nulls = false;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const v = convert(e, e[name]);
    if (v === null) {
      w[2 * i] = 0;
      w[2 * i + 1] = 0;
      setNull(s, i);
      nulls = true;
    } else {
      w[2 * i] = v >>> 0;
      w[2 * i + 1] = Math.floor(v / TWO_32);
    }
  }
  return nulls;
}

function fillInt32(
  events: readonly EnrichedEvent[],
  s: Scratch,
  name: ColumnName,
  convert: (e: EnrichedEvent, v: unknown) => number | null = (e, v) => int32(e, name, v),
): boolean {
  const w = s.words;
  let nulls = false;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const v = convert(e, e[name]);
    if (v === null) {
      w[i] = 0;
      setNull(s, i);
      nulls = true;
    } else w[i] = v;
  }
  return nulls;
}

function fillBigintKeys(
  events: readonly EnrichedEvent[],
  s: Scratch,
  name: ColumnName,
  check: (e: EnrichedEvent, v: unknown) => void,
): boolean {
  const w = s.words;
  let nulls = false;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const v = e[name] as string | null;
    check(e, v);
    if (v === null) {
      w[2 * i] = 0;
      w[2 * i + 1] = 0;
      setNull(s, i);
      nulls = true;
      continue;
    }
    const n = Number(v);
    if (Number.isSafeInteger(n)) {
      w[2 * i] = n >>> 0;
      w[2 * i + 1] = Math.floor(n / TWO_32);
    } else {
      const b = BigInt(v);
      w[2 * i] = Number(BigInt.asUintN(32, b));
      w[2 * i + 1] = Number(BigInt.asUintN(32, b >> 32n));
    }
  }
  return nulls;
}

/** Hex digit values by UTF-16 code unit (-1: not a hex digit). */
const HEX = new Int8Array(65536).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) HEX[65 + c] = HEX[97 + c] = 10 + c;

/** Where a UUID's 32 hex digits are in its 36 characters. */
const UUID_DIGITS = [
  0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32,
  33, 34, 35,
];

/** The 32-bit word of UUID digits `from`..`from + 7` (of 36-character `text`), or -1. */
function uuidWord(text: string, from: number): number {
  let acc = 0;
  let bad = 0;
  for (let k = from; k < from + 8; k++) {
    const h = HEX[text.charCodeAt(UUID_DIGITS[k])];
    bad |= h;
    acc = acc * 16 + h;
  }
  return bad < 0 ? -1 : acc;
}

/**
 * UUID text (8-4-4-4-12 hex digits, as isUuidText accepts) -> DuckDB's UUID storage: the 128-bit
 * integer of the 32 digits with its top bit flipped (so that UUIDs sort as their text), as
 * four little-endian 32-bit words, lowest first.
 */
function fillUuids(
  events: readonly EnrichedEvent[],
  s: Scratch,
  name: ColumnName,
  refuse: (e: EnrichedEvent, v: unknown) => never,
): boolean {
  const w = s.words;
  let nulls = false;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const v = e[name] as string | null;
    const o = 4 * i;
    if (v === null) {
      w[o] = w[o + 1] = w[o + 2] = w[o + 3] = 0;
      setNull(s, i);
      nulls = true;
      continue;
    }
    if (
      typeof v !== 'string' ||
      v.length !== 36 ||
      v.charCodeAt(8) !== 45 ||
      v.charCodeAt(13) !== 45 ||
      v.charCodeAt(18) !== 45 ||
      v.charCodeAt(23) !== 45
    )
      refuse(e, v);
    const d0 = uuidWord(v, 0);
    const d1 = uuidWord(v, 8);
    const d2 = uuidWord(v, 16);
    const d3 = uuidWord(v, 24);
    if (d0 < 0 || d1 < 0 || d2 < 0 || d3 < 0) refuse(e, v);
    w[o] = d3;
    w[o + 1] = d2;
    w[o + 2] = d1;
    w[o + 3] = d0 ^ 0x80000000;
  }
  return nulls;
}

/**
 * Text as DuckDB's 16-byte string slots: up to 12 ASCII characters inline (length, then the
 * bytes, zero padded: DuckDB compares inline strings slot-wide), anything else through
 * DuckDB's string heap after the column is copied (longRows).
 */
function fillTexts(
  events: readonly EnrichedEvent[],
  s: Scratch,
  name: ColumnName,
  convert: (e: EnrichedEvent, v: unknown) => string | null | undefined,
): boolean {
  const w = s.words;
  const b = s.bytes;
  let nulls = false;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const v = convert(e, e[name]);
    const o = 4 * i;
    w[o] = w[o + 1] = w[o + 2] = w[o + 3] = 0;
    if (v === null || v === undefined) {
      setNull(s, i);
      nulls = true;
      continue;
    }
    const n = v.length;
    let inline = n <= 12;
    if (inline) {
      const at = 16 * i + 4;
      for (let k = 0; k < n; k++) {
        const c = v.charCodeAt(k);
        if (c >= 128) {
          inline = false;
          break;
        }
        b[at + k] = c;
      }
    }
    if (inline) w[o] = n;
    else {
      w[o + 1] = w[o + 2] = w[o + 3] = 0;
      s.longRows.push(i);
      s.longTexts.push(v);
    }
  }
  return nulls;
}

function textOf(e: EnrichedEvent, v: unknown, column: string): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'string') throw new RowConversionError(e.event_id, column, v, `not text (${typeof v})`);
  return v;
}

function json(e: EnrichedEvent): string | null | undefined {
  try {
    return payloadJson(e.raw_payload);
  } catch (err) {
    throw new RowConversionError(e.event_id, 'raw_payload', String(e.raw_payload), (err as Error).message);
  }
}

function int32(e: EnrichedEvent, column: string, value: unknown): number | null {
  if (value === null) return null;
  if (!Number.isInteger(value) || (value as number) > INT32_MAX || (value as number) < INT32_MIN)
    throw new RowConversionError(e.event_id, column, value, 'not a 32-bit integer');
  return value as number;
}

/** A number with at most log10(factor) decimals as DECIMAL(12, s)'s scaled integer. */
function scaled(e: EnrichedEvent, column: string, value: unknown, factor: number): number | null {
  if (value === null) return null;
  const n = typeof value === 'number' ? Math.round(value * factor) : NaN;
  if (!Number.isSafeInteger(n) || Math.abs(n) >= 1e12)
    throw new RowConversionError(
      e.event_id,
      column,
      value,
      'does not fit DECIMAL(12,' + Math.log10(factor) + ')',
    );
  return n;
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

interface MicrosCache {
  text: string;
  lo: number;
  hi: number;
}

/** TIMESTAMPTZ: microseconds since the epoch, 64-bit. NOT NULL columns: a NULL is refused. */
function fillTimestamps(
  events: readonly EnrichedEvent[],
  s: Scratch,
  name: ColumnName,
  cache: MicrosCache,
): boolean {
  const w = s.words;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    const text = e[name] as string;
    if (cache.text !== text || text === '') micros(e, name, text, cache);
    w[2 * i] = cache.lo;
    w[2 * i + 1] = cache.hi;
  }
  return false;
}

/** Converts `text` into the cache's words (and remembers it), or throws a RowConversionError. */
function micros(e: EnrichedEvent, column: string, text: string, cache: MicrosCache): void {
  const m = typeof text === 'string' ? ISO_UTC.exec(text) : null;
  const ms = m ? secondsToMs(m[1]) : NaN;
  // The microseconds themselves must be a safe integer (ms alone under the bound is not enough:
  // late in 2255 ms * 1000 + the fraction passes 2^53 and would round by a microsecond).
  const fast =
    m !== null && Math.abs(ms) < SAFE_MICROS_MS ? ms * 1000 + Number((m[2] ?? '').padEnd(6, '0')) : NaN;
  if (Number.isSafeInteger(fast)) {
    cache.lo = fast >>> 0;
    cache.hi = Math.floor(fast / TWO_32);
  } else {
    // Expanded years (BC, or past 9999), and the far ends of 4-digit years: exact integer
    // arithmetic; the range was checked before.
    let v: bigint;
    try {
      v =
        m !== null && !Number.isNaN(ms)
          ? BigInt(ms) * 1000n + BigInt((m[2] ?? '').padEnd(6, '0'))
          : isoToMicros(text);
    } catch {
      throw new RowConversionError(
        e.event_id,
        column,
        text,
        'not an ISO-8601 UTC timestamp DuckDB can store',
      );
    }
    cache.lo = Number(BigInt.asUintN(32, v));
    cache.hi = Number(BigInt.asUintN(32, v >> 32n));
  }
  cache.text = text;
}
