/** The `content` dimension as the pipeline keeps it in memory. */
export interface ContentInfo {
  id: string;
  slug: string | null;
  title: string | null;
  content_type: string | null;
  length_seconds: number | null;
}

/** One `engagement_events` row as it arrives from the source (stream, backfill or Kafka). */
export interface EngagementEventRow {
  id: number;
  content_id: string | null;
  user_id: string | null;
  event_type: string | null;
  /** ISO-8601 UTC with the source's full precision (microseconds). */
  event_ts: string;
  duration_ms: number | null;
  device: string | null;
  /** A JsonText from every source (exact: domain/json-text.ts); any JSON value is accepted too. */
  raw_payload: unknown;
}

/** What every destination receives: the enriched event (docs/architecture.md, "Enrichment"). */
export interface EnrichedEvent {
  event_id: number;
  content_id: string | null;
  user_id: string | null;
  event_type: string | null;
  event_ts: string;
  duration_ms: number | null;
  device: string | null;
  /** As the row's; destinations write it with payloadJson (domain/json-text.ts). */
  raw_payload: unknown;
  content_type: string | null;
  length_seconds: number | null;
  /** duration_ms / 1000, exact (at most 3 decimals). */
  engagement_seconds: number | null;
  /** engagement_seconds / length_seconds rounded half away from zero to 2 decimals. */
  engagement_pct: number | null;
  /** Commit time of the source transaction, ISO-8601 UTC (microseconds). */
  committed_at: string;
  /** When the pipeline enriched the event, ISO-8601 UTC. */
  processed_at: string;
}

/** Why an event's derived fields were left NULL; recorded as a log line and a metric. */
export type EnrichmentIssue = 'negative_duration' | 'unknown_content' | 'null_content_id';

/**
 * A unit of work handed to every sink. Events are in stream order.
 * `positions[i]` is the stream position of `events[i]`: a string that sorts in stream order
 * (see domain/position.ts), used by sinks that keep a replay watermark.
 */
export interface Batch {
  /** Monotonic per pipeline run; used for ordering acknowledgements. */
  seq: number;
  /** Watermark scope: replication slot name, or `kafka:<topic>:<partition>`. */
  stream: string;
  events: EnrichedEvent[];
  positions: string[];
  /**
   * The source position that may be confirmed once this batch and every earlier batch
   * are durable in all sinks; null when the batch ends inside a source transaction.
   */
  ackLsn: string | null;
  /**
   * The identity of the source its positions come from (`postgres:<system identifier>`), when
   * the batch carries it (Kafka native messages name the cluster their capture read); sinks
   * otherwise learn it per stream (sinks/source-identity.ts), or the stream has none.
   */
  sourceId?: string;
}
