import { DEFAULT_SHAPE, type SourceShape } from '../../domain/source-shape.js';
import { microsToIso } from '../../domain/timestamps.js';
import type { EngagementEventRow } from '../../domain/types.js';
import { decodeContentRow, decodeEventRow, textOrNull } from '../decode-rows.js';
import {
  decodeInteger,
  decodeJson,
  decodeTimestamp,
  ValueError,
  type FieldSchema,
} from './debezium-values.js';
import type { WireFormat, WorkerRecord } from './records.js';

/**
 * A Debezium PostgreSQL connector's topics (`<prefix>.<schema>.<table>` of the shape's events
 * and content tables, e.g. `<prefix>.public.engagement_events`) with the JsonConverter, in any
 * of its three shapes:
 *  1. schema envelope: {"schema": {...}, "payload": {"before","after","source","op","ts_ms"}}
 *  2. schemaless envelope (schemas.enable=false): {"before","after","source","op","ts_ms"}
 *  3. ExtractNewRecordState ("unwrap"): the row itself, optionally with `__op`, `__deleted`,
 *     `__source_ts_ms`/`__source_ts_us` added by add.fields / delete.handling.mode=rewrite;
 *     with or without the schema envelope.
 * op c (insert) and r (snapshot read) of events drive the sinks; u/d of events are
 * counted; every op of content updates the dimension. Tombstones (null values) of the
 * events topic are skipped; on the content topic a tombstone with a key is a delete
 * (that is all a flattened delete leaves behind with the default delete.handling.mode).
 */
export function debeziumFormat(prefix: string, shape: SourceShape = DEFAULT_SHAPE): WireFormat {
  return {
    name: 'debezium',
    eventsTopic: `${prefix}.${shape.events.schema}.${shape.events.name}`,
    contentTopic: `${prefix}.${shape.content.schema}.${shape.content.name}`,
    decodeEvent: (_key, value, timestampMs, offset) =>
      guard(() => decodeEventValue(value, timestampMs, shape, offset)),
    decodeContent: (key, value) => guard(() => decodeContentValue(key, value, shape)),
  };
}

interface Change {
  op: string;
  row: Record<string, unknown> | null;
  before: Record<string, unknown> | null;
  fields: Map<string, FieldSchema>;
  /** Commit time in µs when the message carries it. */
  commitMicros: bigint | null;
  /** The source's place in the WAL, when the message carries it (see sourcePosition). */
  source: { lsn: unknown; sequence: unknown; snapshot: unknown } | null;
}

function guard(decode: () => WorkerRecord): WorkerRecord {
  try {
    return decode();
  } catch (err) {
    if (err instanceof ValueError) return { kind: 'bad', reason: err.message };
    throw err;
  }
}

function parseJson(value: Buffer): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch {
    throw new ValueError('value is not JSON');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json))
    throw new ValueError('value is not a JSON object');
  return json as Record<string, unknown>;
}

/** Unwraps the schema envelope and the Debezium envelope into one shape. */
function readChange(value: Buffer): Change {
  const json = parseJson(value);
  let payload = json;
  let schema: { fields?: FieldSchema[] } | undefined;
  if ('payload' in json && 'schema' in json) {
    if (json.payload === null)
      return {
        op: 'tombstone',
        row: null,
        before: null,
        fields: new Map(),
        commitMicros: null,
        source: null,
      };
    if (typeof json.payload !== 'object') throw new ValueError('payload is not an object');
    payload = json.payload as Record<string, unknown>;
    schema = json.schema as { fields?: FieldSchema[] };
  }
  if (typeof payload.op === 'string' && ('after' in payload || 'before' in payload)) {
    // Debezium envelope: the row schema is the `after` (or `before`) struct's fields.
    const rowSchema = schema?.fields?.find((f) => f.field === 'after' || f.field === 'before') as
      { fields?: FieldSchema[] } | undefined;
    const source = (payload.source ?? {}) as Record<string, unknown>;
    return {
      op: payload.op,
      row: asRow(payload.after),
      before: asRow(payload.before),
      fields: fieldMap(rowSchema?.fields),
      commitMicros: micros(source.ts_us, source.ts_ms),
      source: { lsn: source.lsn, sequence: source.sequence, snapshot: source.snapshot },
    };
  }
  // Flattened by ExtractNewRecordState: the row, with optional __-prefixed metadata.
  const deleted = payload.__deleted === true || payload.__deleted === 'true';
  const op = typeof payload.__op === 'string' ? payload.__op : deleted ? 'd' : 'c';
  return {
    op,
    row: payload,
    before: deleted ? payload : null,
    fields: fieldMap(schema?.fields),
    commitMicros: micros(payload.__source_ts_us, payload.__source_ts_ms),
    // add.fields=sequence,snapshot adds them as __sequence / __snapshot.
    source:
      '__sequence' in payload
        ? { lsn: payload.__lsn, sequence: payload.__sequence, snapshot: payload.__snapshot }
        : null,
  };
}

function asRow(value: unknown): Record<string, unknown> | null {
  return value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : null;
}

function fieldMap(fields: FieldSchema[] | undefined): Map<string, FieldSchema> {
  return new Map((fields ?? []).filter((f) => f.field).map((f) => [f.field!, f]));
}

function micros(us: unknown, ms: unknown): bigint | null {
  if (typeof us === 'number' && Number.isFinite(us)) return BigInt(Math.trunc(us));
  if (typeof ms === 'number' && Number.isFinite(ms)) return BigInt(Math.trunc(ms)) * 1000n;
  return null;
}

function decodeEventValue(
  value: Buffer | null,
  timestampMs: string,
  shape: SourceShape,
  offset?: string,
): WorkerRecord {
  if (value === null) return { kind: 'skip', why: 'tombstone' };
  const change = readChange(value);
  switch (change.op) {
    case 'tombstone':
      return { kind: 'skip', why: 'tombstone' };
    case 'u':
      return { kind: 'ignored', what: 'event-update' };
    case 'd':
      return { kind: 'ignored', what: 'event-delete' };
    case 't':
      return { kind: 'ignored', what: 'truncate' };
    case 'm':
      return { kind: 'skip', why: 'logical decoding message' };
    case 'c':
    case 'r':
      break;
    default:
      throw new ValueError(`unknown op '${change.op}'`);
  }
  if (!change.row) throw new ValueError(`op ${change.op} without an after row`);
  if (!(shape.eventIdColumn in change.row))
    // Most likely not Debezium's at all: say so rather than name the first missing column.
    throw new ValueError(
      `no ${shape.eventIdColumn} field: neither a Debezium change event of ${shape.events.name} (op with an after row holding it) nor a flattened row of it`,
    );
  const row = decodeDebeziumEvent(change.row, change.fields, shape.eventIdColumn);
  // source.ts_ms is the commit time for the Postgres connector; without it (a flattened
  // message without add.fields) the Kafka record timestamp is the best approximation.
  const committedAt = microsToIso(change.commitMicros ?? BigInt(timestampMs) * 1000n);
  const position = sourcePosition(change, offset);
  return position ? { kind: 'event', row, committedAt, position } : { kind: 'event', row, committedAt };
}

/**
 * The event's place in the source's commit order, so that a connector's re-sends (after a
 * restart it replays from its last committed offset, at new Kafka offsets) sort at or below
 * what the partition already delivered and are no-ops. source.sequence is
 * ["<last commit LSN>", "<record LSN>"] (decimal strings): the commit LSN goes first because
 * record LSNs of concurrent transactions interleave while changes arrive in commit order.
 * Snapshot reads share one LSN (the snapshot's, or an incremental snapshot's window): the
 * Kafka offset orders them, so a re-sent snapshot is not a no-op here (the sinks' per-event
 * dedupe absorbs it). 'L' sorts after every offset-only position (20 digits), which is what a
 * message without source.sequence gets.
 */
function sourcePosition(change: Change, offset: string | undefined): string | undefined {
  const source = change.source;
  if (!source || typeof source.sequence !== 'string') return undefined;
  let sequence: unknown;
  try {
    sequence = JSON.parse(source.sequence);
  } catch {
    return undefined;
  }
  const lsn = Array.isArray(sequence) ? sequence[1] : undefined;
  const commit = Array.isArray(sequence) ? (sequence[0] ?? '0') : undefined;
  if (typeof lsn !== 'string' || typeof commit !== 'string' || !/^\d+$/.test(lsn) || !/^\d+$/.test(commit))
    return undefined;
  const hex = (n: string) => BigInt(n).toString(16).padStart(16, '0');
  const snapshot =
    change.op === 'r' ||
    (source.snapshot !== undefined &&
      source.snapshot !== 'false' &&
      source.snapshot !== false &&
      source.snapshot !== null);
  if (snapshot && offset === undefined) return undefined;
  return `L${hex(commit)}${hex(lsn)}:${snapshot ? offset!.padStart(20, '0') : ''}`;
}

/**
 * Debezium's encodings (numbers with a schema, ZonedTimestamp text, JSON as text) back to the
 * column values the stream sees, then the stream's own decoding.
 */
function decodeDebeziumEvent(
  raw: Record<string, unknown>,
  fields: Map<string, FieldSchema>,
  idColumn: string,
): EngagementEventRow {
  if (raw.event_ts === null || raw.event_ts === undefined) throw new ValueError('event_ts is NULL');
  const row = decodeEventRow(
    {
      ...raw,
      [idColumn]: decodeInteger(raw[idColumn], fields.get(idColumn)),
      event_ts: decodeTimestamp(raw.event_ts, fields.get('event_ts')),
      duration_ms: decodeInteger(raw.duration_ms, fields.get('duration_ms')),
      raw_payload: decodeJson(raw.raw_payload, fields.get('raw_payload')),
    },
    idColumn,
  );
  if (typeof row === 'string') throw new ValueError(row);
  return row;
}

function decodeContentValue(key: Buffer | null, value: Buffer | null, shape: SourceShape): WorkerRecord {
  const keyColumn = shape.contentKey;
  if (value === null) {
    const id = key ? keyId(key, keyColumn) : null;
    return id ? { kind: 'content-delete', id } : { kind: 'skip', why: 'tombstone' };
  }
  const change = readChange(value);
  if (change.op === 'tombstone') {
    const id = key ? keyId(key, keyColumn) : null;
    return id ? { kind: 'content-delete', id } : { kind: 'skip', why: 'tombstone' };
  }
  if (change.op === 'd') {
    const id = textOrNull((change.before ?? change.row)?.[keyColumn]) ?? (key ? keyId(key, keyColumn) : null);
    if (!id) throw new ValueError(`content delete without ${keyColumn} (REPLICA IDENTITY?)`);
    return { kind: 'content-delete', id };
  }
  if (change.op === 't')
    return { kind: 'skip', why: 'content truncate (dimension kept; lookups refresh it)' };
  if (!['c', 'r', 'u'].includes(change.op)) throw new ValueError(`unknown op '${change.op}'`);
  if (!change.row) throw new ValueError(`op ${change.op} without an after row`);
  const raw = change.row;
  // A column absent from the message (e.g. an unchanged TOASTed value) keeps its old value.
  const content = decodeContentRow(
    'length_seconds' in raw
      ? { ...raw, length_seconds: decodeInteger(raw.length_seconds, change.fields.get('length_seconds')) }
      : raw,
    keyColumn,
  );
  if (typeof content === 'string') throw new ValueError(content);
  return { kind: 'content-upsert', content };
}

/** The content id from a Debezium key: {"<key>":…} with or without the schema envelope, or a bare value. */
function keyId(key: Buffer, keyColumn: string): string | null {
  const text = key.toString('utf8');
  try {
    const json = JSON.parse(text) as unknown;
    if (typeof json === 'string' || typeof json === 'number') return String(json);
    const obj = json as { payload?: Record<string, unknown> | null } & Record<string, unknown>;
    const id = obj?.payload?.[keyColumn] ?? obj?.[keyColumn];
    return typeof id === 'string' || typeof id === 'number' ? String(id) : null;
  } catch {
    return text || null;
  }
}
