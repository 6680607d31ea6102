import { eventPosition } from '../domain/position.js';
import { dateToIso } from '../domain/timestamps.js';
import type { Batch, EngagementEventRow, EnrichedEvent } from '../domain/types.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../server/metrics.js';
import type { Change } from '../source/changes.js';
import type { ContentDimension } from '../source/content-dimension.js';
import { enrichCounted } from './enrich-counted.js';

export interface BatchAssemblerOptions {
  /** Watermark scope for sinks (the slot name in direct mode). */
  stream: string;
  maxRows: number;
  maxWaitMs: number;
  dimension: ContentDimension;
  metrics: Metrics;
  logger: Logger;
  /** Hands a closed batch on; resolves once it was accepted for writing (may wait for room). */
  dispatch: (batch: Batch) => Promise<void>;
  /**
   * True when nothing is being written: then a batch closes at the next commit instead of
   * waiting for `maxWaitMs` (low latency when idle; batches grow by themselves under load,
   * while earlier ones are in flight).
   */
  sinksIdle?: () => boolean;
  /** A source row that cannot be decoded: recorded (dead letter), never a crash. */
  onBadRow: (change: Extract<Change, { kind: 'bad-row' }>) => Promise<void>;
}

/**
 * Turns the ordered change stream into batches: keeps the content dimension current,
 * enriches each inserted event, closes a batch at `maxRows` events, `maxWaitMs` after it
 * opened, or at a commit when the sinks are idle, and marks the latest complete transaction
 * in it as the position to confirm.
 * Returning a promise from `handle` pauses the source: that is how backpressure from slow
 * sinks reaches the replication stream.
 */
export class BatchAssembler {
  private events: EnrichedEvent[] = [];
  private positions: string[] = [];
  private ackLsn: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private seq = 0;
  private dispatchChain: Promise<void> = Promise.resolve();
  private tx = { commitLsn: '0/0', committedAt: '', index: 0 };
  /** Highest position handed on; a reconnect replays from the last confirmed commit. */
  private lastPosition = '';
  private closed = false;

  constructor(private readonly options: BatchAssemblerOptions) {}

  handle = (change: Change): void | Promise<void> => {
    if (this.closed) return;
    switch (change.kind) {
      case 'begin':
        this.tx = { commitLsn: change.commitLsn, committedAt: change.committedAt, index: 0 };
        return;
      case 'event':
        return this.onEvent(change.row);
      case 'content-upsert':
      case 'content-delete':
        // Kept with its commit position, so a restart rebuilds the dimension as of the
        // confirmed position (written by the commit below at the latest).
        return this.options.dimension.apply(change, this.tx.commitLsn);
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
        if (this.events.length > 0 && this.options.sinksIdle?.()) return this.flush();
        this.armTimer();
        return;
    }
  };

  /** Closes the open batch (if any) and hands it on; resolves when dispatched. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.events.length === 0 && this.ackLsn === null) return this.dispatchChain;
    const batch: Batch = {
      seq: ++this.seq,
      stream: this.options.stream,
      events: this.events,
      positions: this.positions,
      ackLsn: this.ackLsn,
    };
    this.events = [];
    this.positions = [];
    this.ackLsn = null;
    this.dispatchChain = this.dispatchChain.then(() => this.options.dispatch(batch));
    return this.dispatchChain;
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
    const { dimension, metrics, logger } = this.options;
    const event = enrichCounted(row, dimension, this.tx.committedAt, dateToIso(new Date()), metrics, logger);
    this.events.push(event);
    this.positions.push(position);
    this.lastPosition = position;
    if (this.events.length >= this.options.maxRows) return this.flush();
    this.armTimer();
  }

  private armTimer(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, this.options.maxWaitMs);
  }
}
