import { positionInTransaction, transactionPositionPrefix } from '../domain/position.js';
import { dateToIso } from '../domain/timestamps.js';
import type { Batch, EngagementEventRow, EnrichedEvent } from '../domain/types.js';
import type { Change } from '../source/changes.js';
import type { ContentDimension } from '../enrichment/content-dimension.js';
import { enrichCounted } from '../enrichment/enrich-counted.js';
import { rowWeight } from './row-weight.js';
import { TransactionAssembler, type TransactionAssemblerOptions } from './transaction-assembler.js';

export interface BatchAssemblerOptions extends TransactionAssemblerOptions<Batch> {
  /** Watermark scope for sinks (the slot name in direct mode). */
  stream: string;
  dimension: ContentDimension;
}

/**
 * Direct mode's assembler: turns the ordered change stream into batches of enriched events,
 * keeping the content dimension current and enriching each inserted event (transactions,
 * confirm positions and backpressure: see TransactionAssembler).
 */
export class BatchAssembler extends TransactionAssembler<Batch> {
  private events: EnrichedEvent[] = [];
  private positions: string[] = [];
  /** batchWeight(events), kept as they are added: what BATCH_MAX_ROWS bounds (row-weight.ts). */
  private weight = 0;
  /** Highest position handed on; a reconnect replays from the last confirmed commit. */
  private lastPosition = '';
  /** transactionPositionPrefix(prefixOf): the open transaction's, once its first event came. */
  private prefixOf = '';
  private prefix = '';

  constructor(private readonly options: BatchAssemblerOptions) {
    super(options);
  }

  get rows(): number {
    return this.weight;
  }

  /** Commit time of the oldest event not yet handed on (null when none). */
  get oldestCommittedAt(): string | null {
    return this.events[0]?.committed_at ?? null;
  }

  protected takeOpen(seq: number, ackLsn: string | null): Batch {
    const batch: Batch = {
      seq,
      stream: this.options.stream,
      events: this.events,
      positions: this.positions,
      ackLsn,
    };
    this.events = [];
    this.positions = [];
    this.weight = 0;
    return batch;
  }

  protected onContent(
    change: Extract<Change, { kind: 'content-upsert' | 'content-delete' | 'content-truncate' }>,
  ): void | Promise<void> {
    // Kept with its commit position, so a restart rebuilds the dimension as of the
    // confirmed position (written by the commit below at the latest).
    return this.options.dimension.apply(change, this.tx.commitLsn);
  }

  protected override onCommit(change: Extract<Change, { kind: 'commit' }>): void | Promise<void> {
    // The transaction's content changes reach the history before its commit can be confirmed.
    if (this.options.dimension.recording) return this.afterRecorded(change);
    return super.onCommit(change);
  }

  protected onEvent(row: EngagementEventRow, index: number): void | Promise<void> {
    // The commit LSN's part of the position is the transaction's: spelled once per transaction.
    if (this.prefixOf !== this.tx.commitLsn) {
      this.prefixOf = this.tx.commitLsn;
      this.prefix = transactionPositionPrefix(this.prefixOf);
    }
    const position = positionInTransaction(this.prefix, index);
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
    this.weight += rowWeight(event);
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
