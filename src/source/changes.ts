import type { ContentInfo, EngagementEventRow } from '../domain/types.js';
import type { PipelineError } from '../errors.js';

/**
 * What a source hands the pipeline, in commit order. Sources (Postgres replication now,
 * Kafka later) decode their wire format into these; nothing downstream knows pgoutput.
 */
export type Change =
  | { kind: 'begin'; commitLsn: string; committedAt: string }
  | { kind: 'event'; row: EngagementEventRow }
  | { kind: 'content-upsert'; content: Partial<ContentInfo> & { id: string } }
  | { kind: 'content-delete'; id: string }
  /** The content table was truncated: every content row is gone from this point of the stream. */
  | { kind: 'content-truncate' }
  /**
   * `eventId` (of a delete, when its key arrives): a partitioned events table decodes an UPDATE
   * that moves a row to another partition as a delete and an insert of the same id.
   */
  | { kind: 'ignored'; what: 'event-update' | 'event-delete' | 'truncate'; eventId?: string }
  | { kind: 'bad-row'; table: string; reason: string; raw: unknown }
  | { kind: 'commit'; ackLsn: string }
  /**
   * The stream must not go past this point (e.g. TRUNCATE … RESTART IDENTITY of the events
   * table: new events would reuse delivered event_ids and every idempotent sink would drop
   * them). The source stops taking changes; nothing at or after it is confirmed.
   */
  | { kind: 'halt'; error: PipelineError };

/** Receives changes in order; returning a promise pauses the source until it settles (backpressure). */
export type ChangeHandler = (change: Change) => void | Promise<void>;
