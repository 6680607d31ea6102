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
  const id = toSafeInteger(raw[idColumn]);
  if (id === null || id <= 0)
    return `${idColumn} ${JSON.stringify(raw[idColumn])} is not a positive safe integer`;
  if (typeof raw.event_ts !== 'string') return 'event_ts is NULL or not a timestamp';
  let eventTs: string;
  try {
    eventTs = pgTimestampToIso(raw.event_ts);
  } catch (err) {
    return `event_ts: ${(err as Error).message}`;
  }
  const duration =
    raw.duration_ms === null || raw.duration_ms === undefined ? null : toSafeInteger(raw.duration_ms);
  if (duration === null && raw.duration_ms !== null && raw.duration_ms !== undefined)
    return 'duration_ms is not an integer';
  return {
    id,
    content_id: textOrNull(raw.content_id),
    user_id: textOrNull(raw.user_id),
    event_type: textOrNull(raw.event_type),
    event_ts: eventTs,
    duration_ms: duration,
    device: textOrNull(raw.device),
    raw_payload: raw.raw_payload ?? null,
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
function toSafeInteger(value: unknown): number | null {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^-?\d+$/.test(value)
        ? Number(value)
        : NaN;
  return Number.isSafeInteger(n) ? n : null;
}
