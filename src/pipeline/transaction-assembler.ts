import type { Logger } from '../logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Change } from '../source/changes.js';
import type { Dispatcher, DispatchUnit, OpenBatch } from './dispatcher.js';

export interface TransactionAssemblerOptions<B extends DispatchUnit> {
  metrics: Metrics;
  logger: Logger;
  /** Closes the batches this assembler fills (bounded window, see Dispatcher). */
  dispatcher: Dispatcher<B>;
  /** A source row that cannot be decoded: recorded (dead letter), never a crash. */
  onBadRow: (change: Extract<Change, { kind: 'bad-row' }>) => Promise<void>;
}

/**
 * Event deletes remembered per transaction (about 10 MB): a transaction that moves more rows than
 * this across partitions has its later rows delivered as events (every sink keeps the first
 * copy of an event_id; the external system receives the moved row).
 */
const MAX_TRACKED_DELETES = 100_000;

/** The source transaction being read: its commit position, commit time and the next event's index in it. */
export interface OpenTransaction {
  commitLsn: string;
  committedAt: string;
  index: number;
}

/**
 * The part of every slot-fed mode (direct mode's BatchAssembler, capture's Kafka messages)
 * between the replication source and the Dispatcher: follows the transactions of the ordered
 * change stream and marks the latest complete one in the open batch as the position to
 * confirm (`ackLsn`). What an event or a content change becomes is the subclass's; when a
 * batch closes is the Dispatcher's decision, and returning its promise from `handle` pauses
 * the source: that is how backpressure from slow destinations reaches the replication stream.
 */
export abstract class TransactionAssembler<B extends DispatchUnit> implements OpenBatch<B> {
  protected tx: OpenTransaction = { commitLsn: '0/0', committedAt: '', index: 0 };
  protected ackLsn: string | null = null;
  /** Set by close() (shutdown): what arrives later is replayed on the next start. */
  protected closed = false;
  /** Between a begin and its commit. */
  private inTransaction = false;
  /**
   * Event ids deleted so far in the open transaction, not yet counted (null: none). Postgres
   * decodes an UPDATE that moves a row of a partitioned events table to another partition as a
   * delete and an insert of the same id: that pair is one update, ignored and counted as one,
   * not a delete and a new event. Deletes left at the commit are counted there.
   */
  private deletedIds: Set<string> | null = null;

  constructor(protected readonly base: TransactionAssemblerOptions<B>) {
    base.dispatcher.bind(this);
  }

  /** Rows in the open batch: what the Dispatcher's `maxRows` bounds. */
  abstract get rows(): number;

  get pending(): boolean {
    return this.rows > 0 || this.ackLsn !== null;
  }

  /** Closes the open batch as number `seq` and starts a new, empty one (ackLsn is reset here). */
  take(seq: number): B {
    const batch = this.takeOpen(seq, this.ackLsn);
    this.ackLsn = null;
    return batch;
  }

  /**
   * True exactly when no transaction is open here, nothing is buffered, no batch waits for
   * room, and nothing is in flight or unconfirmed.
   */
  isDrained(): boolean {
    return !this.inTransaction && this.base.dispatcher.isDrained();
  }

  handle = (change: Change): void | Promise<void> => {
    if (this.closed) return;
    switch (change.kind) {
      case 'begin':
        this.tx = { commitLsn: change.commitLsn, committedAt: change.committedAt, index: 0 };
        this.inTransaction = true;
        this.deletedIds = null;
        return;
      case 'event':
        if (this.deletedIds?.delete(String(change.row.id))) {
          // Its index stays taken: the transaction's later events keep the positions an
          // earlier version gave them (a replay across an upgrade is recognised by position).
          this.tx.index++;
          return this.ignore('event-update');
        }
        return this.onEvent(change.row, this.tx.index++);
      case 'content-upsert':
      case 'content-delete':
      case 'content-truncate':
        return this.onContent(change);
      case 'halt':
        // Handled by the source, which stops taking changes there.
        return;
      case 'ignored':
        if (change.eventId === undefined) return this.ignore(change.what);
        this.deletedIds ??= new Set();
        if (this.deletedIds.size < MAX_TRACKED_DELETES) this.deletedIds.add(change.eventId);
        else this.ignore(change.what); // (a mass delete: memory stays bounded; see MAX_TRACKED_DELETES)
        return;
      case 'bad-row':
        this.base.metrics.badRows.inc();
        this.base.logger.error({ table: change.table }, `bad source row dead-lettered: ${change.reason}`);
        return this.base.onBadRow(change);
      case 'commit':
        if (this.deletedIds !== null) this.ignore('event-delete', this.deletedIds.size);
        this.deletedIds = null;
        return this.onCommit(change);
    }
  };

  private ignore(kind: Extract<Change, { kind: 'ignored' }>['what'], count = 1): void {
    if (count === 0) return;
    this.base.metrics.ignoredChanges.inc({ kind }, count);
    this.base.logger.debug({ kind, count }, 'engagement_events change ignored (events are immutable facts)');
  }

  /** Hands the open batch on when a write slot is free (the source disconnected); never waits. */
  kick(): void {
    this.base.dispatcher.kick();
  }

  /** The source reconnects and replays from the last confirmed commit: a half-read transaction is gone. */
  resetTransaction(): void {
    this.inTransaction = false;
    this.deletedIds = null;
  }

  /** Stops taking changes (shutdown); what arrives later is replayed on the next start. */
  close(): void {
    this.closed = true;
  }

  /** The open batch's rows, numbered `seq`, carrying `ackLsn`; the subclass starts a new one. */
  protected abstract takeOpen(seq: number, ackLsn: string | null): B;

  /** An inserted event, the `index`-th of the open transaction. */
  protected abstract onEvent(
    row: Extract<Change, { kind: 'event' }>['row'],
    index: number,
  ): void | Promise<void>;

  protected abstract onContent(
    change: Extract<Change, { kind: 'content-upsert' | 'content-delete' | 'content-truncate' }>,
  ): void | Promise<void>;

  /** The transaction is complete: its position may be confirmed once the batch holding it is accepted. */
  protected onCommit(change: Extract<Change, { kind: 'commit' }>): void | Promise<void> {
    this.ackLsn = change.ackLsn;
    this.inTransaction = false;
    return this.base.dispatcher.offer(true);
  }
}
