import { z } from 'zod';
import { isJsonText, jsonTextOf, payloadJson, toJsonText, type JsonText } from '../../domain/json-text.js';
import { eventPosition } from '../../domain/position.js';
import { pgTimestampToIso } from '../../domain/timestamps.js';
import type { ContentInfo, EngagementEventRow } from '../../domain/types.js';
import type { WorkerRecord } from './records.js';

/**
 * The native wire format between `capture --to-kafka` and `work --from-kafka`.
 *
 * engagement.events: key = content_id (so one content's events stay ordered in one
 * partition), value = {"v":1,"lsn","idx","committed_at","row":{...engagement_events row}}.
 * `row.raw_payload_json` carries the payload's exact JSON text in a string (or null), which
 * workers read in preference to `row.raw_payload`, the parsed value, whose numbers pass through
 * doubles (domain/json-text.ts). Both are written so that workers and capture can be upgraded
 * in either order: a worker that predates the text field ignores it, and messages without it
 * (from an earlier capture) are read from `raw_payload`.
 * `lsn` + `idx` (commit LSN, index in the transaction) give the event's source position,
 * which workers use as the Redis replay watermark per partition: a capture restart
 * re-publishes from the last confirmed LSN, and those copies carry the same positions.
 * `src` names the cluster those LSNs belong to (`postgres:<system identifier>`), stored with
 * the watermark: a Postgres dump/restored into a new cluster restarts its LSNs lower, and its
 * events must not be taken for replays of the old one's. Messages without it (an earlier
 * capture) compare as before.
 *
 * engagement.content (compacted): key = content id, value = the full content row, or a
 * tombstone (null value) when the row was deleted.
 */
export const NATIVE_VERSION = 1;

const eventRowSchema = z.object({
  id: z.number().int().positive(),
  content_id: z.string().nullable(),
  user_id: z.string().nullable(),
  event_type: z.string().nullable(),
  event_ts: z.string().min(1),
  duration_ms: z.number().int().nullable(),
  device: z.string().nullable(),
  raw_payload: z.unknown(),
  raw_payload_json: z.string().nullable().optional(),
});

const eventMessageSchema = z.object({
  v: z.literal(NATIVE_VERSION),
  lsn: z.string().regex(/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/),
  idx: z.number().int().min(0),
  committed_at: z.string().min(1),
  /** The captured cluster (`postgres:<system identifier>`); absent from an earlier capture's messages. */
  src: z.string().min(1).optional(),
  row: eventRowSchema,
});

const contentSchema = z.object({
  id: z.string().min(1),
  slug: z.string().nullable(),
  title: z.string().nullable(),
  content_type: z.string().nullable(),
  length_seconds: z.number().int().nullable(),
});

export function encodeEvent(
  row: EngagementEventRow,
  lsn: string,
  idx: number,
  committedAt: string,
  src?: string,
): string {
  // raw_payload as a JsonText writes its parsed value (JsonText.toJSON), for earlier workers.
  const wire = { ...row, raw_payload_json: payloadJson(row.raw_payload) };
  return JSON.stringify({ v: NATIVE_VERSION, lsn, idx, committed_at: committedAt, src, row: wire });
}

export function encodeContent(content: ContentInfo): string {
  return JSON.stringify(content);
}

/** One engagement.events message -> a worker record (never throws: bad input becomes 'bad'). */
export function decodeNativeEvent(value: Buffer | null): WorkerRecord {
  if (value === null) return { kind: 'skip', why: 'tombstone' };
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch {
    return { kind: 'bad', reason: 'value is not JSON' };
  }
  const parsed = eventMessageSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { kind: 'bad', reason: `not a native event: ${issue?.path.join('.')} ${issue?.message}` };
  }
  const { raw_payload_json: text, ...row } = parsed.data.row;
  let payload: JsonText | null;
  if (text === undefined) payload = toJsonText(row.raw_payload);
  else if (text === null) payload = null;
  else if (isJsonText(text)) payload = jsonTextOf(text);
  else return { kind: 'bad', reason: 'not a native event: row.raw_payload_json is not JSON text' };
  const m = parsed.data;
  // Timestamps read as the stream reads Postgres's: a date that does not exist (2026-02-30) is a
  // bad message, never rolled over into March by a sink's parser.
  let eventTs: string;
  let committedAt: string;
  try {
    eventTs = pgTimestampToIso(row.event_ts);
    committedAt = pgTimestampToIso(m.committed_at);
  } catch (err) {
    return { kind: 'bad', reason: `not a native event: ${(err as Error).message}` };
  }
  return {
    kind: 'event',
    row: { ...row, event_ts: eventTs, raw_payload: payload },
    committedAt,
    position: eventPosition(m.lsn, m.idx),
    ...(m.src === undefined ? {} : { source: m.src }),
  };
}

/** One engagement.content message -> dimension change. */
export function decodeNativeContent(key: Buffer | null, value: Buffer | null): WorkerRecord {
  if (value === null) {
    return key ? { kind: 'content-delete', id: key.toString('utf8') } : { kind: 'skip', why: 'tombstone' };
  }
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch {
    return { kind: 'bad', reason: 'value is not JSON' };
  }
  const parsed = contentSchema.safeParse(json);
  if (!parsed.success) return { kind: 'bad', reason: 'not a native content row' };
  return { kind: 'content-upsert', content: parsed.data };
}
