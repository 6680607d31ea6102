import { toJsonText } from '../domain/json-text.js';
import { pgTimestampToIso } from '../domain/timestamps.js';
import type { ContentInfo, EngagementEventRow } from '../domain/types.js';

/**
 * Validates decoded column values (pg text parsers applied) into domain rows. The stream,
 * the backfill and the Debezium format all decode through these two functions.
 * Pure; returns a reason string instead of throwing so one bad row never stops the stream.
 * Keys (content_id, user_id, the content key) may arrive as numbers (integer keys) or text:
 * in memory a key is always its text form.
 */
export function decodeEventRow(raw: Record<string, unknown>, idColumn = 'id'): EngagementEventRow | string {
  return decodeEventValues(
    raw[idColumn],
    raw.event_ts,
    raw.duration_ms,
    raw.content_id,
    raw.user_id,
    raw.event_type,
    raw.device,
    raw.raw_payload,
    idColumn,
  );
}

/** decodeEventRow on the column values themselves (the stream's fast path has no tuple object). */
export function decodeEventValues(
  rawId: unknown,
  rawEventTs: unknown,
  rawDuration: unknown,
  contentId: unknown,
  userId: unknown,
  eventType: unknown,
  device: unknown,
  rawPayload: unknown,
  idColumn = 'id',
): EngagementEventRow | string {
  const id = toSafeInteger(rawId);
  if (id === null || id <= 0) return `${idColumn} ${JSON.stringify(rawId)} is not a positive safe integer`;
  if (typeof rawEventTs !== 'string') return 'event_ts is NULL or not a timestamp';
  let eventTs: string;
  try {
    eventTs = pgTimestampToIso(rawEventTs);
  } catch (err) {
    return `event_ts: ${(err as Error).message}`;
  }
  const duration = rawDuration === null || rawDuration === undefined ? null : toSafeInteger(rawDuration);
  if (duration === null && rawDuration !== null && rawDuration !== undefined)
    return `duration_ms is not an integer within ±2^53 (9007199254740991): ${String(rawDuration)}`;
  return {
    id,
    content_id: textOrNull(contentId),
    user_id: textOrNull(userId),
    event_type: textOrNull(eventType),
    event_ts: eventTs,
    duration_ms: duration,
    device: textOrNull(device),
    raw_payload: toJsonText(rawPayload),
  };
}

/**
 * Content columns present in the change (an unchanged TOASTed column arrives undefined).
 * `keyColumn` is the content table's key (CONTENT_KEY); it becomes `id`.
 */
export function decodeContentRow(
  raw: Record<string, unknown>,
  keyColumn = 'id',
): (Partial<ContentInfo> & { id: string }) | string {
  const key = raw[keyColumn];
  if (typeof key !== 'string' && typeof key !== 'number') return `content.${keyColumn} is missing`;
  const out: Partial<ContentInfo> & { id: string } = { id: String(key) };
  if (raw.slug !== undefined) out.slug = textOrNull(raw.slug);
  if (raw.title !== undefined) out.title = textOrNull(raw.title);
  if (raw.content_type !== undefined) out.content_type = textOrNull(raw.content_type);
  if (raw.length_seconds !== undefined) {
    const length = raw.length_seconds === null ? null : toSafeInteger(raw.length_seconds);
    if (length === null && raw.length_seconds !== null) return 'content.length_seconds is not an integer';
    out.length_seconds = length;
  }
  return out;
}

/** A column value as text (keys, enums, text), NULL kept. */
export function textOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}

/** An integer column's value: a JS number, or int8's decimal text (pg keeps int8 as text). */
export function toSafeInteger(value: unknown): number | null {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && isIntegerText(value)
        ? Number(value)
        : NaN;
  return Number.isSafeInteger(n) ? n : null;
}

/** `/^-?\d+$/` without a RegExp (once or twice per event): an optional minus, then ASCII digits. */
function isIntegerText(text: string): boolean {
  const start = text.charCodeAt(0) === 45 ? 1 : 0; // '-'
  if (text.length === start) return false;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}
