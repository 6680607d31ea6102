import type { ContentInfo, EngagementEventRow } from '../domain/types.js';

/**
 * What a source hands the pipeline, in commit order. Sources (Postgres replication now,
 * Kafka later) decode their wire format into these; nothing downstream knows pgoutput.
 */
export type Change =
  | { kind: 'begin'; commitLsn: string; committedAt: string }
  | { kind: 'event'; row: EngagementEventRow }
  | { kind: 'content-upsert'; content: Partial<ContentInfo> & { id: string } }
  | { kind: 'content-delete'; id: string }
  | { kind: 'ignored'; what: 'event-update' | 'event-delete' | 'truncate' }
  | { kind: 'bad-row'; table: string; reason: string; raw: unknown }
  | { kind: 'commit'; ackLsn: string };

/** Receives changes in order; returning a promise pauses the source until it settles (backpressure). */
export type ChangeHandler = (change: Change) => void | Promise<void>;
