import { isAscii } from 'node:buffer';
import { createRequire } from 'node:module';
import { PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { compactJsonInto, jsonTextOf, payloadOfCompact, type JsonText } from '../domain/json-text.js';
import { DEFAULT_SHAPE, type SourceShape } from '../domain/source-shape.js';
import type { Change } from './changes.js';
import { decodeEventValues } from './decode-rows.js';

/**
 * pgoutput with a fast path for the one message that comes once per event: an INSERT into the
 * events table. It is read straight from the wire bytes into the event's Change, without the
 * library's intermediate objects (a reader, a Buffer view and a TextDecoder call per column, a
 * null-prototype tuple with every column, the message); columns the pipeline does not read are
 * skipped, not decoded. Every other message, and every insert the fast path does not handle
 * exactly like the library would (a row that is not a valid event, a binary or unchanged-TOAST
 * value, a truncated message), is parsed by the library as before and decoded by decodePgoutput:
 * the result is the same Change either way (pinned by the unit tests, which compare both paths
 * on the same bytes).
 */
export class EventInsertPlugin extends PgoutputPlugin {
  static {
    keepByteOrderMarks();
  }

  readonly #shape: SourceShape;
  readonly #relations: Map<number, Pgoutput.MessageRelation>;
  /** The decoding plan of the events relation as last seen (rebuilt when a new relation message replaces it). */
  #plan: EventsPlan | null = null;

  constructor(options: Pgoutput.Options, shape: SourceShape = DEFAULT_SHAPE) {
    super(options);
    this.#shape = shape;
    // The library's relation cache (filled by the relation messages it parses; a private field
    // of pg-logical-replication 2.5, whose exact version package.json pins).
    this.#relations = (
      this as unknown as { parser: { _relationCache: Map<number, Pgoutput.MessageRelation> } }
    ).parser._relationCache;
  }

  /**
   * A Change for an events INSERT on the fast path (see isDecodedChange), the library's message
   * otherwise. Typed as the library's message because the replication service hands either on
   * untouched.
   */
  override parse(buffer: Buffer): Pgoutput.Message {
    if (buffer[0] === INSERT) {
      const change = this.#fastInsert(buffer);
      if (change !== null) return change as unknown as Pgoutput.Message;
    }
    const message = super.parse(buffer);
    if (message.tag === 'relation') keepJsonAsText(message);
    return message;
  }

  #fastInsert(buffer: Buffer): Change | null {
    if (buffer.length < 8 || buffer[5] !== NEW_TUPLE) return null;
    const relation = this.#relations.get(buffer.readInt32BE(1));
    if (relation === undefined) return null;
    let plan = this.#plan;
    if (plan === null || plan.relation !== relation) {
      const { events } = this.#shape;
      if (relation.name !== events.name || relation.schema !== events.schema) return null;
      const built = eventsPlan(relation, this.#shape.eventIdColumn);
      if (built === null) return null;
      plan = this.#plan = built;
    }
    const nfields = buffer.readInt16BE(6);
    const { columns, slots, values } = plan;
    if (nfields > columns.length) return null;
    values.fill(undefined);
    let p = 8;
    const end = buffer.length;
    // Usually every byte is ASCII: then one string of the whole message, cut into the values,
    // costs less than a decoding call per value. Not for a large row (wide unread columns): a
    // string of all of it would cost more than it saves, and V8 refuses strings past ~512 MB.
    const whole = end <= WHOLE_MESSAGE_MAX && isAscii(buffer) ? slicing(buffer).latin1Slice(0, end) : null;
    for (let i = 0; i < nfields; i++) {
      if (p >= end) return null;
      const kind = buffer[p++];
      if (kind === NULL_VALUE) {
        if (slots[i] >= 0) values[slots[i]] = null;
        continue;
      }
      if (kind !== TEXT_VALUE || p + 4 > end) return null; // binary, unchanged TOAST, or unknown: the library's
      const size = buffer.readInt32BE(p);
      p += 4;
      if (size < 0 || p + size > end) return null;
      const slot = slots[i];
      if (slot >= 0) {
        let value: unknown;
        if (columns[i].parser === jsonTextOf) {
          value = jsonTextOfBytes(buffer, p, p + size, whole !== null);
        } else if (whole !== null) {
          const text = whole.slice(p, p + size);
          value = columns[i].parser(text);
          // A cut of 13 characters or more is a view that would keep the whole message alive
          // (and is slower to read): a value kept as the text itself (keys, text columns, a
          // text-typed raw_payload) gets a copy of its own.
          if (value === text && size >= 13) value = slicing(buffer).latin1Slice(p, p + size);
        } else {
          value = columns[i].parser(slicing(buffer).utf8Slice(p, p + size));
        }
        values[slot] = value;
      }
      p += size;
    }
    const row = decodeEventValues(
      values[0],
      values[1],
      values[2],
      values[4],
      values[5],
      values[6],
      values[7],
      values[3],
      plan.idColumn,
    );
    return typeof row === 'string' ? null : { kind: 'event', row };
  }
}

/** True for what EventInsertPlugin.parse returned from its fast path. */
export function isDecodedChange(message: Pgoutput.Message | Change): message is Change {
  return (message as Partial<Change>).kind !== undefined;
}

const INSERT = 0x49; // 'I'
const NEW_TUPLE = 0x4e; // 'N'
const TEXT_VALUE = 0x74; // 't'
const NULL_VALUE = 0x6e; // 'n'

interface EventsPlan {
  relation: Pgoutput.MessageRelation;
  idColumn: string;
  columns: Pgoutput.RelationColumn[];
  /** Per column of the relation: its index in `values` (decodeEventValues' argument order), or -1 (not read). */
  slots: Int8Array;
  /** Scratch for one row's values (parse is synchronous, so one array serves every message). */
  values: unknown[];
}

/** The columns after the id, in the order of the slots (see #fastInsert's call of decodeEventValues). */
const EVENT_COLUMNS = [
  'event_ts',
  'duration_ms',
  'raw_payload',
  'content_id',
  'user_id',
  'event_type',
  'device',
];
/** Messages longer than this are cut value by value (see #fastInsert). */
const WHOLE_MESSAGE_MAX = 64 * 1024;

/** Null when the id column is also one of the other columns read (then the library's path decodes it). */
function eventsPlan(relation: Pgoutput.MessageRelation, idColumn: string): EventsPlan | null {
  if (EVENT_COLUMNS.includes(idColumn)) return null;
  const order = [idColumn, ...EVENT_COLUMNS];
  const slots = new Int8Array(relation.columns.length);
  relation.columns.forEach((column, i) => (slots[i] = order.indexOf(column.name)));
  return { relation, idColumn, columns: relation.columns, slots, values: new Array<unknown>(order.length) };
}

/**
 * A json/jsonb value straight from the message's bytes: compacted into a scratch buffer and
 * read from there as one flat string of its own (no view of the message, no pieces).
 */
function jsonTextOfBytes(buffer: Buffer, start: number, end: number, ascii: boolean): JsonText | null {
  const size = end - start;
  if (jsonScratch.length < size) {
    if (size > JSON_SCRATCH_MAX) return jsonTextOf(slicing(buffer).utf8Slice(start, end));
    jsonScratch = Buffer.allocUnsafe(Math.min(JSON_SCRATCH_MAX, Math.max(size, 2 * jsonScratch.length)));
  }
  const n = compactJsonInto(buffer, start, end, jsonScratch);
  const out = slicing(jsonScratch);
  return payloadOfCompact(ascii ? out.latin1Slice(0, n) : out.utf8Slice(0, n));
}

let jsonScratch = Buffer.allocUnsafe(4096);
/** Larger payloads are compacted on their own (a scratch this size is kept for the process's life). */
const JSON_SCRATCH_MAX = 1024 * 1024;

const JSON_OID = 114;
const JSONB_OID = 3802;

/**
 * The relation's json/jsonb columns keep their text (a JsonText, never parsed: see
 * domain/json-text.ts). Both decoding paths (the fast one and the library's) call the parser
 * the relation message carries, and the library caches that same object for the relation's
 * later rows.
 */
export function keepJsonAsText(relation: Pgoutput.MessageRelation): void {
  for (const column of relation.columns) {
    if (column.typeOid === JSON_OID || column.typeOid === JSONB_OID) column.parser = jsonTextOf;
  }
}

/**
 * Buffer's own decoders (what toString calls after checking its arguments). utf8Slice decodes as
 * the library's TextDecoder does once keepByteOrderMarks ran (invalid bytes become U+FFFD alike;
 * the unit tests compare the two on random bytes).
 */
interface Slicing {
  utf8Slice(start: number, end: number): string;
  latin1Slice(start: number, end: number): string;
}

function slicing(buffer: Buffer): Slicing {
  return buffer as unknown as Slicing;
}

/**
 * The library decodes every text (values, relation and column names) with a default TextDecoder,
 * which drops a leading U+FEFF: an event's device (or any text) that starts with one would be
 * stored without it. Its reader's decodeText is replaced, once, by one that keeps it (the reader is a private
 * module of pg-logical-replication 2.5, whose exact version package.json pins; a build without
 * that method is left alone and the unit tests fail on the missing mark).
 */
function keepByteOrderMarks(): void {
  const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  let reader: { BinaryReader?: { prototype: { decodeText?: (bytes: Uint8Array) => string } } };
  try {
    reader = createRequire(import.meta.url)(
      'pg-logical-replication/dist/output-plugins/pgoutput/binary-reader.js',
    );
  } catch {
    return; // another layout: left alone (see above)
  }
  const { BinaryReader } = reader;
  if (typeof BinaryReader?.prototype.decodeText !== 'function') return;
  BinaryReader.prototype.decodeText = (bytes) => decoder.decode(bytes);
}
