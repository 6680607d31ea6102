import { pgTimestampToIso } from '../domain/timestamps.js';
import type { ContentInfo, EngagementEventRow } from '../domain/types.js';

/**
 * Validates decoded column values (pg text parsers applied) into domain rows.
 * Pure; returns a reason string instead of throwing so one bad row never stops the stream.
 */
export function decodeEventRow(raw: Record<string, unknown>): EngagementEventRow | string {
  const id = toSafeInteger(raw.id);
  if (id === null) return `id ${JSON.stringify(raw.id)} is not a positive safe integer`;
  if (typeof raw.event_ts !== 'string') return 'event_ts is NULL or not a timestamp';
  let eventTs: string;
  try {
    eventTs = pgTimestampToIso(raw.event_ts);
  } catch (err) {
    return `event_ts: ${(err as Error).message}`;
  }
  const duration = raw.duration_ms;
  if (duration !== null && duration !== undefined && !Number.isInteger(duration))
    return 'duration_ms is not an integer';
  return {
    id,
    content_id: textOrNull(raw.content_id),
    user_id: textOrNull(raw.user_id),
    event_type: textOrNull(raw.event_type),
    event_ts: eventTs,
    duration_ms: (duration as number | null | undefined) ?? null,
    device: textOrNull(raw.device),
    raw_payload: raw.raw_payload ?? null,
  };
}

/** Content columns present in the change (an unchanged TOASTed column arrives undefined). */
export function decodeContentRow(
  raw: Record<string, unknown>,
): (Partial<ContentInfo> & { id: string }) | string {
  if (typeof raw.id !== 'string') return 'content.id is missing';
  const out: Partial<ContentInfo> & { id: string } = { id: raw.id };
  if (raw.slug !== undefined) out.slug = textOrNull(raw.slug);
  if (raw.title !== undefined) out.title = textOrNull(raw.title);
  if (raw.content_type !== undefined) out.content_type = textOrNull(raw.content_type);
  if (raw.length_seconds !== undefined) {
    const length = raw.length_seconds;
    if (length !== null && !Number.isInteger(length)) return 'content.length_seconds is not an integer';
    out.length_seconds = length as number | null;
  }
  return out;
}

function textOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}

function toSafeInteger(value: unknown): number | null {
  const n = typeof value === 'string' ? Number(value) : typeof value === 'number' ? value : NaN;
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}
