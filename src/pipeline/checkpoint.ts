import { compareLsn } from '../domain/position.js';

/**
 * The only component that decides what may be confirmed to the source. Batches are
 * registered in order; a position is released once its batch and every earlier batch
 * have been accepted by all sinks.
 */
export class Checkpoint {
  private readonly pending: { seq: number; ackLsn: string | null; done: boolean }[] = [];
  private released: string | null = null;

  constructor(private readonly confirm: (lsn: string) => void) {}

  register(seq: number, ackLsn: string | null): void {
    this.pending.push({ seq, ackLsn, done: false });
  }

  /** Marks a batch done; confirms the highest contiguous position, if any. */
  complete(seq: number): void {
    const entry = this.pending.find((p) => p.seq === seq);
    if (!entry) throw new Error(`checkpoint: unknown batch ${seq}`);
    entry.done = true;
    let release: string | null = null;
    while (this.pending.length > 0 && this.pending[0].done) {
      const head = this.pending.shift()!;
      if (head.ackLsn && (release === null || compareLsn(head.ackLsn, release) > 0)) release = head.ackLsn;
    }
    if (release && (this.released === null || compareLsn(release, this.released) > 0)) {
      this.released = release;
      this.confirm(release);
    }
  }

  get inFlight(): number {
    return this.pending.length;
  }
}
