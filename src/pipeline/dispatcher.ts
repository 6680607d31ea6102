import { BatchPacer } from './batch-pacer.js';
import { Checkpoint } from './checkpoint.js';

/**
 * The pacer's interval at most (BatchPacer): 50 batches/s closed at commits, each costing every
 * sink one write; with the burst of 4, commits at up to 50/s go at once.
 */
const MAX_PACE_MS = 20;

/** What the dispatcher needs of a batch: its order and the source position it may confirm. */
export interface DispatchUnit {
  seq: number;
  /** Confirmed once this batch and every earlier one were accepted; null: nothing to confirm. */
  ackLsn: string | null;
}

/** The batch being filled, owned by the component that assembles it (assembler, capture). */
export interface OpenBatch<B extends DispatchUnit> {
  /** Rows in it: what `maxRows` bounds. */
  readonly rows: number;
  /** True when it holds anything to hand on (rows, or a position to confirm). */
  readonly pending: boolean;
  /** Closes it and returns it numbered `seq`; the owner starts a new, empty one. */
  take(seq: number): B;
}

export interface DispatcherOptions<B extends DispatchUnit> {
  maxRows: number;
  /**
   * How long an open batch may wait to fill while there is room to write it; batches close at
   * commits at most once per maxWaitMs (20 ms at most) on average, after a burst (BatchPacer).
   */
  maxWaitMs: number;
  /** The pacer's interval (default: maxWaitMs, 20 ms at most). */
  paceMs?: number;
  /**
   * How many full batches (maxRows each) may be written at once: the in-flight bound is
   * maxInFlight x maxRows rows, so many small batches (low rates, each written as soon as its
   * transaction commits) can be in flight behind a slow sink without holding up a fast one.
   */
  maxInFlight: number;
  /**
   * Writes a batch to every destination; resolves once all accepted it, rejects only when
   * cancelled. `rows` is what it counts in the window (rowsOf, or the open batch's own count).
   */
  write: (batch: B, rows: number) => Promise<void>;
  /** Told the source position that may be confirmed (in order, never moving backwards). */
  confirm: (lsn: string) => void;
  rowsOf: (batch: B) => number;
  /** Told each batch all destinations accepted (counters of delivered events). */
  onAccepted?: (batch: B) => void;
}

export interface DispatcherStopReport {
  /** True when everything handed on was accepted before the deadline. */
  drained: boolean;
  /** Batches and rows not accepted by every destination (they replay on the next start). */
  batches: number;
  rows: number;
}

class Stopped extends Error {
  constructor() {
    super('dispatcher stopped');
  }
}

/**
 * The one bounded, ordered hand-off between a source and its destinations (direct mode,
 * `capture` and `work`). At most `maxInFlight` x `maxRows` rows are written at once (any
 * number of small batches, or `maxInFlight` full ones); a batch closes when there is room (at
 * its transaction's commit, paced by a BatchPacer when commits come faster than one per
 * `maxWaitMs`, else after `maxWaitMs`) or when it reaches `maxRows`. A closed
 * batch is never queued: while the window is full the open batch keeps growing, and once it holds `maxRows` the caller gets a promise that settles
 * when a slot frees (the source pauses meanwhile). So memory holds at most
 * (maxInFlight + 1) x maxRows rows, whatever the transaction sizes, and batches grow by
 * themselves when the destinations are slow. Positions are confirmed through the Checkpoint:
 * in order, and only once every earlier batch was accepted too.
 */
export class Dispatcher<B extends DispatchUnit> {
  private readonly checkpoint: Checkpoint;
  private readonly inFlight = new Map<number, B>();
  private rowsInFlight = 0;
  private readonly waiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private readonly idleWaiters = new Set<() => void>();
  private open: OpenBatch<B> | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** When the armed timer fires (performance.now() ms); Infinity when none is armed. */
  private timerDueAt = Infinity;
  /** armAfterRead's check is queued. */
  private armPending = false;
  /** The open batch's wait ran out while the window was full: it closes when a slot frees. */
  private due = false;
  private readonly pacer: BatchPacer;
  /** Slots handed to a waiter that has not used them yet. */
  private reserved = 0;
  private seq = 0;
  private closed = false;
  /** Largest number of rows held at once (in flight + open), for tests and the bound. */
  peakRows = 0;

  constructor(private readonly options: DispatcherOptions<B>) {
    this.checkpoint = new Checkpoint(options.confirm);
    // Capped: a long BATCH_MAX_WAIT_MS (minutes, to fill batches) must not hold sparse commits.
    this.pacer = new BatchPacer(options.paceMs ?? Math.min(options.maxWaitMs, MAX_PACE_MS));
  }

  /** The batch this dispatcher closes (set once by its owner). */
  bind(open: OpenBatch<B>): void {
    this.open = open;
  }

  /** Room for one more batch of up to maxRows rows (a reserved slot counts as a full batch). */
  get hasRoom(): boolean {
    const { maxRows, maxInFlight } = this.options;
    return this.rowsInFlight + this.reserved * maxRows <= (maxInFlight - 1) * maxRows;
  }

  get inFlightBatches(): number {
    return this.inFlight.size;
  }

  /** Rows handed to destinations and not yet accepted by all of them. */
  get inFlightRows(): number {
    return this.rowsInFlight;
  }

  /** The in-flight batches, oldest first. */
  get inFlightList(): B[] {
    return [...this.inFlight.values()];
  }

  /** Nothing open, waiting, in flight or unconfirmed. */
  isDrained(): boolean {
    return (
      !(this.open?.pending ?? false) &&
      this.waiters.length === 0 &&
      this.inFlight.size === 0 &&
      this.checkpoint.inFlight === 0
    );
  }

  /**
   * Called by the owner after the open batch changed; `atCommit` when a source transaction
   * just ended in it. Returns a promise only when the open batch is full and the window is
   * too: the caller (the source) waits for it.
   */
  offer(atCommit: boolean): void | Promise<void> {
    const open = this.open;
    if (this.closed || !open) return;
    this.track();
    if (open.rows >= this.options.maxRows) {
      if (this.hasRoom && this.waiters.length === 0) return this.sendOpen(false);
      this.clearTimer();
      return this.waitForRoom().then(
        () => {
          this.reserved -= 1;
          if (!this.closed) this.sendOpen(false);
        },
        () => undefined, // stopped: what is open replays on the next start
      );
    }
    if (!open.pending) return;
    // Room to write: hand it on at the transaction's end (lowest latency; a sink that is busy or
    // commits on an interval takes the batches that queued for it together). Batches grow when full.
    // Commits coming faster than one per maxWaitMs share batches (BatchPacer).
    if (atCommit && open.rows > 0 && this.hasRoom) {
      const wait = this.pacer.waitMs(performance.now());
      if (wait <= 0) return this.sendOpen();
      return this.armTimer(wait);
    }
    this.armAfterRead();
  }

  /** Hands the open batch on now when a slot is free (e.g. the source disconnected); never waits. */
  kick(): void {
    if (!this.closed && this.hasRoom && this.waiters.length === 0) this.sendOpen();
  }

  /**
   * Writes a batch built by the caller (the Kafka worker's chunks): waits for a slot first.
   * Resolves (once it is being written) with the promise of its acceptance by every destination.
   */
  async submit(make: (seq: number) => B): Promise<{ accepted: Promise<void> }> {
    if (this.closed) throw new Stopped();
    if (!this.hasRoom || this.waiters.length > 0) {
      await this.waitForRoom();
      this.reserved -= 1;
      if (this.closed) throw new Stopped();
    }
    return { accepted: this.send(make(++this.seq)) };
  }

  /**
   * Stops closing batches; hands on what is open when a slot frees, then waits for the
   * destinations until `deadline` (epoch ms). Whatever is left is reported, not waited for.
   */
  async stop(deadline: number): Promise<DispatcherStopReport> {
    this.closed = true;
    this.clearTimer();
    for (const waiter of this.waiters.splice(0)) waiter.reject(new Stopped());
    this.reserved = 0;
    while (this.open?.pending && !this.hasRoom && Date.now() < deadline) {
      await this.settledOrDeadline(deadline);
    }
    if (this.open?.pending && this.hasRoom) this.sendOpen();
    while (this.inFlight.size > 0 && Date.now() < deadline) {
      await this.settledOrDeadline(deadline);
    }
    const openRows = this.open?.rows ?? 0;
    return {
      drained: this.inFlight.size === 0 && this.checkpoint.inFlight === 0 && !this.open?.pending,
      batches: this.inFlight.size + (this.open?.pending ? 1 : 0),
      rows: this.inFlightRows + openRows,
    };
  }

  private send(batch: B, rows = this.options.rowsOf(batch)): Promise<void> {
    this.checkpoint.register(batch.seq, batch.ackLsn);
    this.inFlight.set(batch.seq, batch);
    this.rowsInFlight += rows;
    this.track();
    const done = this.options.write(batch, rows).then(() => {
      this.inFlight.delete(batch.seq);
      this.rowsInFlight -= rows;
      this.checkpoint.complete(batch.seq);
      this.options.onAccepted?.(batch);
      this.slotFreed();
    });
    // Rejected only when cancelled at shutdown: the batch stays unconfirmed and replays.
    done.catch(() => undefined);
    return done;
  }

  /** `paced`: false for a full batch, which closes whatever the pace (and does not spend from it). */
  private sendOpen(paced = true): void {
    this.clearTimer();
    this.due = false;
    const open = this.open;
    if (!open?.pending) return;
    if (paced) this.pacer.spend(performance.now());
    // The open batch kept its count as it filled (rowsOf would count it again).
    const rows = open.rows;
    void this.send(open.take(++this.seq), rows);
  }

  private slotFreed(): void {
    for (const resolve of this.idleWaiters) resolve();
    this.idleWaiters.clear();
    if (this.waiters.length > 0) {
      // A waiter's batch is full: it goes once there is room for all of it.
      if (this.hasRoom) {
        this.reserved += 1;
        this.waiters.shift()!.resolve();
      }
      return;
    }
    if (this.closed || !this.open?.pending || !this.hasRoom) return;
    // A batch that waited for room: close it now. Everything written: close it now too, when
    // the pacer allows (else its timer closes it, as in offer()).
    if (this.due) return this.sendOpen();
    if (this.inFlight.size > 0) return;
    const wait = this.pacer.waitMs(performance.now());
    if (wait <= 0) this.sendOpen();
    else this.armTimer(wait);
  }

  private waitForRoom(): Promise<void> {
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private settledOrDeadline(deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.idleWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
      this.idleWaiters.add(done);
    });
  }

  /**
   * Arms the maxWaitMs timer for a transaction still open once everything read with its first
   * event was handled (the check phase of the event loop comes after the socket's callbacks and
   * their microtasks). A small transaction arrives whole in one read and commits before that,
   * so it arms nothing: a timer armed and cleared at once still woke the thread maxWaitMs later
   * (Node keeps the loop's timer until it is due), 35 times a second at 40 transactions a second.
   */
  private armAfterRead(): void {
    if (this.timer || this.armPending) return;
    this.armPending = true;
    setImmediate(() => {
      this.armPending = false;
      if (!this.closed && this.open?.pending && !this.timer) this.armTimer(this.options.maxWaitMs);
    });
  }

  /** Closes the open batch in `delayMs` (or when a slot frees after that); an earlier timer stays. */
  private armTimer(delayMs: number): void {
    const dueAt = performance.now() + delayMs;
    if (this.timer) {
      if (dueAt >= this.timerDueAt) return;
      clearTimeout(this.timer);
    }
    this.timerDueAt = dueAt;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerDueAt = Infinity;
      if (this.closed) return;
      if (this.hasRoom && this.waiters.length === 0) this.sendOpen();
      else this.due = true;
    }, delayMs);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerDueAt = Infinity;
  }

  private track(): void {
    const rows = this.inFlightRows + (this.open?.rows ?? 0);
    if (rows > this.peakRows) this.peakRows = rows;
  }
}
