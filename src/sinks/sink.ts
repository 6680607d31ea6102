import type { Batch } from '../domain/types.js';

/**
 * What a write recorded in the dead-letter table instead of delivering (the external sink under
 * `best-effort`): the positions of those events, so the pipeline counts them as dead-lettered,
 * not delivered. A write that returns nothing delivered every event.
 */
export interface WriteResult {
  deadLettered: ReadonlySet<string>;
}

/**
 * A destination. The pipeline's contract with every sink:
 *
 * - Delivery is at-least-once: after a crash the same events (by `event_id`) may be written
 *   again, possibly split into different batches. `write` MUST be idempotent by `event_id`
 *   so that a replay changes nothing (the effect is exactly-once).
 * - `write` resolves only once the batch is durable in the destination (or, for the
 *   external sink under `best-effort`, recorded in the dead-letter table). The pipeline
 *   confirms a source position only after every sink resolved every batch up to it.
 * - `write` calls for one sink are never concurrent and arrive in stream order; one call may
 *   carry several of the pipeline's batches (same stream, in order).
 * - `write` rejects on failure; the pipeline retries the same batch with backoff.
 *   `signal` aborts when the pipeline is shutting down.
 * - `stop` drains nothing itself (the pipeline waits for in-flight writes first); it
 *   releases connections and flushes whatever the destination needs to be durable.
 */
export interface Sink {
  readonly name: string;
  /**
   * Least time (ms) from one write's start to the next. Batches arriving meanwhile are handed
   * over together as one batch of the same stream (never more than a few BATCH_MAX_ROWS: the
   * pipeline's in-flight bound holds them). For destinations that pay per commit (analytics
   * stores); unset: the next write starts as soon as the last one ended, still with every batch
   * that queued behind it.
   */
  writeIntervalMs?: number;
  /**
   * For a sink that rides failures out inside `write` (retrying on its own, so the pipeline
   * sees a slow write rather than a failed one): the failure it is riding out, or null while it
   * is healthy. The pipeline reports the sink `down` meanwhile (/readyz, /api/stats, status).
   */
  failure?(): string | null;
  /**
   * For a sink that can set events aside durably and deliver them later by itself (the
   * external sink under `best-effort`: its dead-letter table and automatic re-drive): how long
   * it may be the only destination holding a full in-flight window (answering, but slower than
   * events arrive) before the pipeline calls `spill(true)`. Then its writes record what they
   * have not sent yet there instead of sending it, until `spill(false)`, which the pipeline
   * calls once everything queued for the sink at the time was written. Without this, one slow
   * receiver holds every other destination to its pace (see fanout.ts).
   */
  spillAfterMs?: number;
  spill?(on: boolean): void;
  /**
   * Age in seconds of the oldest event the sink holds elsewhere to deliver later by itself (the
   * external sink's dead letters waiting for the automatic re-drive), 0 when none: counted in
   * the sink's lag, so a backlog of set-aside events reads `behind`, not `up` with lag 0.
   */
  backlogSeconds?(): number;
  start(): Promise<void>;
  write(batch: Batch, signal: AbortSignal): Promise<void | WriteResult>;
  stop(): Promise<void>;
}
