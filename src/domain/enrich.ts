import { divideRoundHalfAwayFromZero, fromScaled } from './decimal.js';
import type { ContentInfo, EngagementEventRow, EnrichedEvent, EnrichmentIssue } from './types.js';

export interface EnrichmentResult {
  event: EnrichedEvent;
  issues: EnrichmentIssue[];
}

/** engagement_seconds: duration_ms / 1000, exact; NULL when duration is NULL or negative. */
export function engagementSeconds(durationMs: number | null): number | null {
  if (durationMs === null || durationMs < 0) return null;
  return fromScaled(durationMs, 3);
}

/**
 * engagement_pct: (duration_ms / 1000) / length_seconds rounded to 2 decimals half away
 * from zero. Computed as round(duration_ms / (10 * length_seconds)) hundredths, which is
 * the same rational number, so no intermediate rounding can differ from Postgres.
 */
export function engagementPct(durationMs: number | null, lengthSeconds: number | null): number | null {
  if (durationMs === null || durationMs < 0) return null;
  if (lengthSeconds === null || lengthSeconds === 0) return null;
  return fromScaled(divideRoundHalfAwayFromZero(durationMs, lengthSeconds * 10), 2);
}

/**
 * The one enrichment rule (docs/architecture.md, "Enrichment"), shared by the stream, the backfill and the
 * Kafka workers. Pure: the caller supplies the content row (or undefined when it is
 * unknown), the commit time and the processing time.
 */
export function enrich(
  row: EngagementEventRow,
  content: ContentInfo | undefined,
  committedAt: string,
  processedAt: string,
): EnrichmentResult {
  return {
    issues: enrichmentIssues(row, content),
    event: enrichedEvent(row, content, committedAt, processedAt),
  };
}

/** enrich()'s event alone (the stream's per-event path: no result object, no issues array). */
export function enrichedEvent(
  row: EngagementEventRow,
  content: ContentInfo | undefined,
  committedAt: string,
  processedAt: string,
): EnrichedEvent {
  const lengthSeconds = content?.length_seconds ?? null;
  return {
    event_id: row.id,
    content_id: row.content_id,
    user_id: row.user_id,
    event_type: row.event_type,
    event_ts: row.event_ts,
    duration_ms: row.duration_ms,
    device: row.device,
    raw_payload: row.raw_payload,
    content_type: content?.content_type ?? null,
    length_seconds: lengthSeconds,
    engagement_seconds: engagementSeconds(row.duration_ms),
    engagement_pct: engagementPct(row.duration_ms, lengthSeconds),
    committed_at: committedAt,
    processed_at: processedAt,
  };
}

/** enrich()'s issues alone. */
export function enrichmentIssues(
  row: EngagementEventRow,
  content: ContentInfo | undefined,
): EnrichmentIssue[] {
  const issues: EnrichmentIssue[] = [];
  if (row.duration_ms !== null && row.duration_ms < 0) issues.push('negative_duration');
  if (row.content_id === null) issues.push('null_content_id');
  else if (content === undefined) issues.push('unknown_content');
  return issues;
}

/** True when enrichmentIssues(row, content) is empty (checked without building the list). */
export function enrichesCleanly(row: EngagementEventRow, content: ContentInfo | undefined): boolean {
  return (
    (row.duration_ms === null || row.duration_ms >= 0) && row.content_id !== null && content !== undefined
  );
}
