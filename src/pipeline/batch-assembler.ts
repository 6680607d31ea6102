import { eventPosition } from '../domain/position.js';
import { dateToIso } from '../domain/timestamps.js';
import type { Batch, EngagementEventRow, EnrichedEvent } from '../domain/types.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../server/metrics.js';
import type { Change } from '../source/changes.js';
import type { ContentDimension } from '../source/content-dimension.js';
import type { Dispatcher, OpenBatch } from './dispatcher.js';
import { enrichCounted } from './enrich-counted.js';

export interface BatchAssemblerOptions {
  /** Watermark scope for sinks (the slot name in direct mode). */
  stream: string;
  dimension: ContentDimension;
  metrics: Metrics;
  logger: Logger;
  /** Closes the batches this assembler fills (bounded window, see Dispatcher). */
  dispatcher: Dispatcher<Batch>;
  /** A source row that cannot be decoded: recorded (dead letter), never a crash. */
  onBadRow: (change: Extract<Change, { kind: 'bad-row' }>) => Promise<void>;
}

/**
 * Turns the ordered change stream into batches: keeps the content dimension current,
 * enriches each inserted event, and marks the latest complete transaction in the open batch
 * as the position to confirm (`ackLsn`). When a batch closes is the Dispatcher's decision
 * (a free write slot, or `maxRows`); returning its promise from `handle` pauses the source:
 * that is how backpressure from slow sinks reaches the replication stream.
 */
export class BatchAssembler implements OpenBatch<Batch> {
  private events: EnrichedEvent[] = [];
  private positions: string[] = [];
  private ackLsn: string | null = null;
  private tx = { commitLsn: '0/0', committedAt: '', index: 0 };
  /** Between a begin and its commit. */
  private inTransaction = false;
  /** Highest position handed on; a reconnect replays from the last confirmed commit. */
  private lastPosition = '';
  private closed = false;

  constructor(private readonly options: BatchAssemblerOptions) {
    options.dispatcher.bind(this);
  }

  get rows(): number {
    return this.events.length;
  }

  get pending(): boolean {
    return this.events.length > 0 || this.ackLsn !== null;
  }

  /** Commit time of the oldest event not yet handed on (null when none). */
  get oldestCommittedAt(): string | null {
    return this.events[0]?.committed_at ?? null;
  }

  take(seq: number): Batch {
    const batch: Batch = {
      seq,
      stream: this.options.stream,
      events: this.events,
      positions: this.positions,
      ackLsn: this.ackLsn,
    };
    this.events = [];
    this.positions = [];
    this.ackLsn = null;
    return batch;
  }

  /**
   * True exactly when no transaction is open here, nothing is buffered, no batch waits for
   * room, and nothing is in flight or unconfirmed.
   */
  isDrained(): boolean {
    return !this.inTransaction && this.options.dispatcher.isDrained();
  }

  handle = (change: Change): void | Promise<void> => {
    if (this.closed) return;
    switch (change.kind) {
      case 'begin':
        this.tx = { commitLsn: change.commitLsn, committedAt: change.committedAt, index: 0 };
        this.inTransaction = true;
        return;
      case 'event':
        return this.onEvent(change.row);
      case 'content-upsert':
      case 'content-delete':
      case 'content-truncate':
        // Kept with its commit position, so a restart rebuilds the dimension as of the
        // confirmed position (written by the commit below at the latest).
        return this.options.dimension.apply(change, this.tx.commitLsn);
      case 'halt':
        // Handled by the source, which stops taking changes there.
        return;
      case 'ignored':
        this.options.metrics.ignoredChanges.inc({ kind: change.what });
        this.options.logger.debug(
          { kind: change.what },
          'engagement_events change ignored (events are immutable facts)',
        );
        return;
      case 'bad-row':
        this.options.metrics.badRows.inc();
        this.options.logger.error({ table: change.table }, `bad source row dead-lettered: ${change.reason}`);
        return this.options.onBadRow(change);
      case 'commit':
        // The transaction's content changes reach the history before its commit can be confirmed.
        if (this.options.dimension.recording) return this.afterRecorded(change);
        this.ackLsn = change.ackLsn;
        this.inTransaction = false;
        return this.options.dispatcher.offer(true);
    }
  };

  /** Hands the open batch on when a write slot is free (the source disconnected); never waits. */
  kick(): void {
    this.options.dispatcher.kick();
  }

  /** The source reconnects and replays from the last confirmed commit: a half-read transaction is gone. */
  resetTransaction(): void {
    this.inTransaction = false;
  }

  /** Stops taking changes (shutdown); what arrives later is replayed on the next start. */
  close(): void {
    this.closed = true;
  }

  private onEvent(row: EngagementEventRow): void | Promise<void> {
    const position = eventPosition(this.tx.commitLsn, this.tx.index++);
    // After a reconnect the source replays from the last confirmed commit: skip what was already handed on.
    if (position <= this.lastPosition) return;
    this.options.metrics.eventsReceived.inc();
    const contentId = row.content_id;
    if (contentId !== null && this.options.dimension.peek(contentId) === undefined) {
      // The lookup retries while the stream waits; it gives up only when closed for shutdown,
      // and then the event is replayed on the next start.
      return this.options.dimension
        .lookup([contentId])
        .then(() => (this.closed ? undefined : this.add(row, position)), this.ignoreAfterClose);
    }
    return this.add(row, position);
  }

  private afterRecorded(change: Change): Promise<void> {
    return Promise.resolve(this.options.dimension.recorded()).then(
      () => this.handle(change),
      this.ignoreAfterClose,
    );
  }

  /** A dimension call interrupted by shutdown: what it held is replayed on the next start. */
  private ignoreAfterClose = (err: unknown): void => {
    if (!this.closed) throw err;
  };

  private add(row: EngagementEventRow, position: string): void | Promise<void> {
    if (this.closed) return;
    const { dimension, metrics, logger } = this.options;
    const event = enrichCounted(row, dimension, this.tx.committedAt, processedAtNow(), metrics, logger);
    this.events.push(event);
    this.positions.push(position);
    this.lastPosition = position;
    return this.options.dispatcher.offer(false);
  }
}

let lastMs = Number.NaN;
let lastIso = '';

/**
 * processed_at for an event handled now. The clock has millisecond resolution, so events
 * handled within the same millisecond get the same text: formatted once per millisecond
 * instead of once per event (a visible share of the per-event CPU in catch-up).
 */
function processedAtNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastIso = dateToIso(new Date(ms));
    lastMs = ms;
  }
  return lastIso;
}
