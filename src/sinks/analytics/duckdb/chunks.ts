// The binding node-api itself is built on (declared at the version node-api pins): its vector
// calls write a whole column at once, which node-api's own API does not offer.
import duckdb from '@duckdb/node-bindings';
import { DuckDBDataChunk } from '@duckdb/node-api';
import type { ChunkLayout } from './rows.js';

/**
 * Up to CHUNK_ROWS rows in DuckDB's storage form as plain bytes (./rows.ts encodes them): what
 * crosses to the writer's thread, whose buffers are transferred, not copied. Turning them into
 * a DataChunk (toDataChunk) is a few copies into DuckDB's vectors and no JS value per row.
 */
export interface EncodedChunk {
  rows: number;
  /** Column c's slots from dataOffsets(layout, rows)[c]: rows x the column's width bytes. */
  data: ArrayBuffer;
  /** Column c's validity mask at c x maskBytes(rows); read only where nulls[c] is 1. */
  validity: ArrayBuffer;
  nulls: Uint8Array;
  /**
   * Text that is not inline in its slot, by column then row: entry k is row longRow[k] of
   * column longColumn[k], UTF-8 bytes longStart[k]..longEnd[k] of `heap`.
   */
  longColumn: Uint8Array;
  longRow: Uint16Array;
  longStart: Uint32Array;
  longEnd: Uint32Array;
  heap: ArrayBuffer;
}

/** Where each column's slots start in `data` (8-byte aligned); the last entry is the total. */
export function dataOffsets(layout: ChunkLayout, rows: number): number[] {
  const offsets = [0];
  for (const column of layout.columns) {
    offsets.push(offsets[offsets.length - 1] + Math.ceil((rows * column.width) / 8) * 8);
  }
  return offsets;
}

/** Bytes of one column's validity mask (whole 64-bit words, as DuckDB keeps it). */
export function maskBytes(rows: number): number {
  return Math.ceil(rows / 64) * 8;
}

/** The buffers to transfer (not copy) with a chunk. */
export function transferablesOf(chunk: EncodedChunk): ArrayBuffer[] {
  return [chunk.data, chunk.validity, chunk.heap];
}

export function toDataChunk(encoded: EncodedChunk, layout: ChunkLayout): DuckDBDataChunk {
  const n = encoded.rows;
  const chunk = DuckDBDataChunk.create(layout.types, n);
  const offsets = dataOffsets(layout, n);
  const mask = maskBytes(n);
  const heap = new Uint8Array(encoded.heap);
  let k = 0;
  for (let c = 0; c < layout.columns.length; c++) {
    const vector = duckdb.data_chunk_get_vector(chunk.chunk, c);
    duckdb.copy_data_to_vector(vector, 0, encoded.data, offsets[c], n * layout.columns[c].width);
    for (; k < encoded.longColumn.length && encoded.longColumn[k] === c; k++) {
      duckdb.vector_assign_string_element_len(
        vector,
        encoded.longRow[k],
        heap.subarray(encoded.longStart[k], encoded.longEnd[k]),
      );
    }
    if (encoded.nulls[c] === 1) {
      duckdb.vector_ensure_validity_writable(vector);
      duckdb.copy_data_to_vector_validity(vector, 0, encoded.validity, c * mask, mask);
    }
  }
  return chunk;
}

/**
 * The chunk with only rows `keep` (ascending indices into it): for a write that skips rows
 * already stored (a replay), which is rare, so this is plain rather than fast.
 */
export function selectRows(
  encoded: EncodedChunk,
  keep: readonly number[],
  layout: ChunkLayout,
): EncodedChunk {
  const n = keep.length;
  const fromOffsets = dataOffsets(layout, encoded.rows);
  const toOffsets = dataOffsets(layout, n);
  const fromMask = maskBytes(encoded.rows);
  const toMask = maskBytes(n);
  const source = new Uint8Array(encoded.data);
  const data = new Uint8Array(toOffsets[layout.columns.length]);
  const fromValidity = new Uint8Array(encoded.validity);
  const validity = new Uint8Array(toMask * layout.columns.length);
  const newRow = new Int32Array(encoded.rows).fill(-1);
  keep.forEach((row, j) => (newRow[row] = j));
  for (let c = 0; c < layout.columns.length; c++) {
    const w = layout.columns[c].width;
    for (let j = 0; j < n; j++) {
      const from = fromOffsets[c] + keep[j] * w;
      data.set(source.subarray(from, from + w), toOffsets[c] + j * w);
      const bit = (fromValidity[c * fromMask + (keep[j] >>> 3)] >>> (keep[j] & 7)) & 1;
      validity[c * toMask + (j >>> 3)] |= bit << (j & 7);
    }
  }
  const kept = [...encoded.longRow.keys()].filter((k) => newRow[encoded.longRow[k]] >= 0);
  return {
    rows: n,
    data: data.buffer,
    validity: validity.buffer,
    nulls: encoded.nulls,
    longColumn: Uint8Array.from(kept, (k) => encoded.longColumn[k]),
    longRow: Uint16Array.from(kept, (k) => newRow[encoded.longRow[k]]),
    longStart: Uint32Array.from(kept, (k) => encoded.longStart[k]),
    longEnd: Uint32Array.from(kept, (k) => encoded.longEnd[k]),
    heap: encoded.heap,
  };
}

/** A batch as the writer takes it: the events' ids and positions (to plan) and their rows. */
export interface EncodedBatch {
  stream: string;
  ids: Float64Array;
  positions: string[];
  /** The rows in order, in chunks of at most CHUNK_ROWS. */
  chunks: EncodedChunk[];
}

/** The batch's chunks holding only `rows` (ascending indices into the whole batch). */
export function* chunksWith(
  chunks: readonly EncodedChunk[],
  rows: readonly number[],
  layout: ChunkLayout,
): Generator<EncodedChunk> {
  const total = chunks.reduce((n, c) => n + c.rows, 0);
  if (rows.length === total) {
    yield* chunks;
    return;
  }
  let r = 0;
  for (let c = 0, first = 0; c < chunks.length; first += chunks[c].rows, c++) {
    const keep: number[] = [];
    for (; r < rows.length && rows[r] < first + chunks[c].rows; r++) keep.push(rows[r] - first);
    if (keep.length === chunks[c].rows) yield chunks[c];
    else if (keep.length > 0) yield selectRows(chunks[c], keep, layout);
  }
}
