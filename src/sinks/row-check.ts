import type { Batch, EnrichedEvent } from '../domain/types.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { DeadLetterEntry, DeadLetterStore } from '../state/dead-letter.js';
import type { Sink, WriteResult } from './sink.js';

/** Why a destination cannot hold an event (e.g. a timestamp outside its column's range), or null. */
export type RowProblem = (event: EnrichedEvent) => string | null;

export interface RowCheckedSinkDeps {
  deadLetters: Pick<DeadLetterStore, 'record'>;
  logger: Logger;
  metrics?: Pick<Metrics, 'deadLetters'>;
  /** Names the destination in the dead letter's reason, e.g. `DuckDB`. */
  destination: string;
}

/**
 * A sink behind a row check: events the destination cannot represent never reach it. They go
 * to the dead-letter table under this sink's name, with the reason, and the rest of the batch
 * is written as usual; the other sinks still get every event. Without this, one such value
 * fails the destination's whole batch on every retry and holds the stream forever, or (where
 * the destination clamps instead of refusing) is stored wrong without a word.
 *
 * The check is a pure function of the event, so a replay after a crash splits the batch the
 * same way, and the dead-letter table keeps one pending row per (sink, event_id).
 */
export class RowCheckedSink implements Sink {
  readonly name: string;

  constructor(
    readonly inner: Sink,
    private readonly problem: RowProblem,
    private readonly deps: RowCheckedSinkDeps,
  ) {
    this.name = inner.name;
  }

  start(): Promise<void> {
    return this.inner.start();
  }

  stop(): Promise<void> {
    return this.inner.stop();
  }

  failure(): string | null {
    return this.inner.failure?.() ?? null;
  }

  async write(batch: Batch, signal: AbortSignal): Promise<void | WriteResult> {
    const { accepted, rejected } = splitBatch(batch, this.problem);
    if (rejected.length === 0) return this.inner.write(batch, signal);
    if (accepted.events.length > 0) await this.inner.write(accepted, signal);
    const entries: DeadLetterEntry[] = rejected.map(({ event, position, reason }) => ({
      sink: this.name,
      eventId: event.event_id,
      idempotencyKey: String(event.event_id),
      event,
      source: `${batch.stream}@${position}`,
      lastError: `${this.deps.destination} cannot hold this row: ${reason}`,
      attempts: 1,
    }));
    // Recorded before write resolves: the position is confirmed only once they are safe.
    const added = await this.deps.deadLetters.record(entries);
    this.deps.metrics?.deadLetters.inc({ sink: this.name }, added);
    this.deps.logger.warn(
      // (The logger names the sink already.)
      { rows: entries.length, eventIds: entries.slice(0, 10).map((e) => e.eventId) },
      `${this.name}: ${entries.length} event(s) ${this.deps.destination} cannot hold were dead-lettered (the other sinks got them): ${entries[0].lastError}`,
    );
    return { deadLettered: new Set(rejected.map((r) => r.position)) };
  }
}

/** The batch without the events `problem` refuses (positions kept aligned), and those events. */
export function splitBatch(
  batch: Batch,
  problem: RowProblem,
): { accepted: Batch; rejected: { event: EnrichedEvent; position: string; reason: string }[] } {
  const rejected: { event: EnrichedEvent; position: string; reason: string }[] = [];
  // Copies of the accepted events and positions start at the first refused event: a batch
  // the destination takes whole (the usual case) is handed on as it is, uncopied.
  let events: EnrichedEvent[] | null = null;
  let positions: string[] = [];
  const all = batch.events;
  for (let i = 0; i < all.length; i++) {
    const event = all[i];
    const reason = problem(event);
    if (reason === null) {
      if (events !== null) {
        events.push(event);
        positions.push(batch.positions[i]);
      }
      continue;
    }
    if (events === null) {
      events = all.slice(0, i);
      positions = batch.positions.slice(0, i);
    }
    rejected.push({ event, position: batch.positions[i], reason });
  }
  if (events === null) return { accepted: batch, rejected };
  return { accepted: { ...batch, events, positions }, rejected };
}
