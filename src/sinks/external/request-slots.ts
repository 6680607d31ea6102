/**
 * The external system's request slots (EXTERNAL_CONCURRENCY), shared by the live stream and the
 * automatic re-drive. The live stream waits for a slot, in order; the re-drive takes only a free
 * slot no live request is waiting for. So:
 * - a request never queues in the HTTP pool behind another (the pool has as many connections
 *   as there are slots): the per-attempt timeout measures the receiver, not our own queue. A
 *   re-drive of many rows behind a receiver answering in 3 s made live requests time out in
 *   the pool, and the timed-out arrays were then re-sent event by event (taken twice);
 * - the re-drive uses only what the live stream leaves (it never delays a live event by more
 *   than one request).
 * A slot is held for one attempt, not across a backoff.
 */
export class RequestSlots {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(size: number) {
    this.#free = size;
  }

  /** Slots the re-drive may take now (0 while a live request waits for one). */
  get free(): number {
    return this.#waiting.length > 0 ? 0 : this.#free;
  }

  /** Waits for a slot (rejects with the signal's reason once it aborts). */
  acquire(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.free > 0) {
      this.#free -= 1;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const granted = (): void => {
        signal.removeEventListener('abort', aborted);
        resolve();
      };
      const aborted = (): void => {
        const at = this.#waiting.indexOf(granted);
        // Not in the queue any more: release() handed it the slot already, which it then owns.
        if (at < 0) return;
        this.#waiting.splice(at, 1);
        reject(signal.reason);
      };
      signal.addEventListener('abort', aborted, { once: true });
      this.#waiting.push(granted);
    });
  }

  /** A free slot nobody waits for, or false. */
  tryAcquire(): boolean {
    if (this.free === 0) return false;
    this.#free -= 1;
    return true;
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free += 1;
  }
}
