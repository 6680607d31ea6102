import { setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { DeadLetterRow, DeadLetterStore } from '../../state/dead-letter.js';

/**
 * Automatic re-drive of a sink's pending dead letters, so a short outage of the external
 * system needs no operator: once the system answers again the rows an outage dead-lettered
 * are re-sent in the background and marked replayed.
 *
 * - At full rate only while the live stream is healthy (circuit closed, no failure streak).
 *   Otherwise one row per interval, through the breaker: it is the probe that finds the
 *   system back when no live traffic would (an idle pipeline after an outage).
 * - Oldest first (by dead-letter id), at most `ratePerSecond` events a second, one event per
 *   request under the Idempotency-Key it was dead-lettered with (the first attempt's key), so
 *   a receiver that already got it (a reply lost in the outage) absorbs the re-send.
 * - Permanent failures (4xx other than 408/409/429, recorded as such) are never re-driven; a
 *   row that fails permanently now is recorded with that error and left for `engagement dlq`
 *   (under EXTERNAL_POLICY=block, a 401/403/404/407 is not recorded: the row stays as it was,
 *   re-driven once the receiver is fixed, as the live stream is held).
 * - A retryable failure ends the pass: the live stream's breaker takes over, the next pass
 *   starts when the system answers again.
 * - Ordering: the live stream promises no order across requests (concurrent requests), only
 *   at-least-once by key; re-driven events are older than the live ones around them, and the
 *   receiver orders by event_ts / event_id as it must anyway.
 *
 * Crash-safe by construction: a row is marked replayed only after the receiver accepted it;
 * a crash in between re-sends it under the same key.
 */

export type RedriveOutcome =
  | { kind: 'accepted' }
  | { kind: 'permanent'; error: string }
  | { kind: 'retryable'; error: string }
  /**
   * Not sent, or refused in a way that leaves the row as it was: stopping, the breaker refused
   * (open, or another request is the probe), or (block) a refusal an operator must fix.
   */
  | { kind: 'not-sent' };

export interface RedriverOptions {
  store: Pick<DeadLetterStore, 'listRedrivable' | 'markReplayed' | 'record' | 'summary'>;
  /** Events re-sent per second at most (> 0). */
  ratePerSecond: number;
  /** How often pending rows are looked for (and the gauges refreshed) while nothing wakes it. */
  intervalMs?: number;
  sink: string;
  metrics: Metrics;
  logger: Logger;
  /** May a re-drive run now? */
  healthy: () => boolean;
  /** Rows it may send at once now (free request slots); unset: no limit but the rate. */
  room?: () => number;
  /**
   * Rows not dead-lettered by a failure (set aside unsent behind a slow receiver): while healthy
   * they go at the receiver's pace, as many at once as `room` allows, not at ratePerSecond,
   * which is there to spare a receiver that just came back from an outage.
   */
  unpaced?: (row: DeadLetterRow) => boolean;
  /** Unpaced rows per request (EXTERNAL_BATCH_SIZE): `room` requests take room x this many rows. */
  perRequest?: number;
  /** Sends unpaced rows together (in requests of perRequest); one outcome per row, in order. */
  sendMany?: (rows: DeadLetterRow[], signal: AbortSignal) => Promise<RedriveOutcome[]>;
  /** One attempt for one row. */
  send: (row: DeadLetterRow, signal: AbortSignal) => Promise<RedriveOutcome>;
}

const READ_LIMIT = 500;
const ERROR_LOG_INTERVAL_MS = 60_000;

export class Redriver {
  readonly #o: RedriverOptions;
  #stop = new AbortController();
  #wake: AbortController | null = null;
  #loop: Promise<void> | null = null;
  #errorLoggedAt = 0;
  /** First failure (epoch ms) of the oldest row waiting to be re-sent, as last read; null: none. */
  #oldestWaitingAt: number | null = null;

  constructor(options: RedriverOptions) {
    if (!(options.ratePerSecond > 0)) throw new RangeError('redrive: ratePerSecond must be > 0');
    this.#o = options;
  }

  start(): void {
    if (this.#loop) return;
    this.#stop = new AbortController();
    this.#loop = this.#run();
  }

  /**
   * Seconds the oldest set-aside row (unpaced) has waited to be re-sent (0: none), as of the
   * last look: the sink's events are not all delivered while they wait, whatever its live
   * stream does.
   */
  waitingSeconds(now = Date.now()): number {
    return this.#oldestWaitingAt === null ? 0 : Math.max(0, now - this.#oldestWaitingAt) / 1000;
  }

  /** Look now (the system just recovered) instead of at the next interval. */
  wake(): void {
    this.#wake?.abort();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    this.#wake?.abort();
    await this.#loop;
    this.#loop = null;
  }

  async #run(): Promise<void> {
    const stop = this.#stop.signal;
    setMaxListeners(0, stop); // every request of a tick listens on it
    while (!stop.aborted) {
      // Armed before the pass, so a recovery during the pass is not missed.
      this.#wake = new AbortController();
      const wake = this.#wake.signal;
      try {
        await this.#pass(stop);
        await this.#refreshGauges();
      } catch (err) {
        const now = Date.now();
        if (now - this.#errorLoggedAt >= ERROR_LOG_INTERVAL_MS) {
          this.#errorLoggedAt = now;
          this.#o.logger.warn(
            { sink: this.#o.sink },
            `${this.#o.sink}: dead-letter re-drive failed, will retry: ${describeError(err)}`,
          );
        }
      }
      await sleep(this.#o.intervalMs ?? 5_000, undefined, {
        signal: AbortSignal.any([stop, wake]),
      }).catch(() => undefined);
    }
  }

  /**
   * Re-sends pending rows, oldest first, until none is left or one fails. While the system is
   * not known healthy a tick sends one row (a probe); its success makes it healthy again.
   */
  async #pass(stop: AbortSignal): Promise<void> {
    const { store, sink, ratePerSecond, metrics } = this.#o;
    // Paced in ticks of a few events, so a burst never exceeds the rate by much.
    const perTick = Math.max(1, Math.ceil(ratePerSecond / 10));
    // A tick's length follows what it sent, so fewer free slots than perTick do not slow the rate.
    const tickMs = (rows: number) => (rows * 1000) / ratePerSecond;
    let redriven = 0;
    let permanent = 0;
    const started = Date.now();
    try {
      for (;;) {
        const rows = await store.listRedrivable(sink, READ_LIMIT);
        // Set-aside rows only: a row of a failure can fail for ever (a payload the receiver
        // chokes on), and would keep the sink `behind` for good.
        const waiting = rows.find((row) => this.#o.unpaced?.(row) === true);
        this.#oldestWaitingAt = waiting === undefined ? null : Date.parse(waiting.firstFailedAt);
        if (rows.length === 0) return;
        for (let i = 0; i < rows.length;) {
          if (stop.aborted) return;
          const tickStart = Date.now();
          const healthy = this.#o.healthy();
          const room = this.#o.room?.() ?? perTick;
          const unpaced = (row: DeadLetterRow) => this.#o.unpaced?.(row) === true;
          const fast = healthy && unpaced(rows[i]);
          const size = fast ? room * (this.#o.perRequest ?? 1) : Math.min(healthy ? perTick : 1, room);
          if (size === 0) {
            // Every request slot is taken by the live stream (or it spills): wait, it comes first.
            await sleep(tickMs(perTick), undefined, { signal: stop }).catch(() => undefined);
            continue;
          }
          let slice = rows.slice(i, i + size);
          if (fast) {
            const paced = slice.findIndex((row) => !unpaced(row));
            if (paced > 0) slice = slice.slice(0, paced);
          }
          i += slice.length;
          const outcomes =
            fast && this.#o.sendMany
              ? await this.#o.sendMany(slice, stop)
              : await Promise.all(slice.map((row) => this.#o.send(row, stop)));
          const accepted = slice.filter((_, j) => outcomes[j].kind === 'accepted');
          const n = await store.markReplayed(accepted.map((r) => r.id));
          redriven += n;
          metrics.deadLettersRedriven.inc({ sink }, n);
          const failed = slice.flatMap((row, j) => {
            const o = outcomes[j];
            return o.kind === 'permanent' || o.kind === 'retryable' ? [{ row, error: o.error }] : [];
          });
          permanent += outcomes.filter((o) => o.kind === 'permanent').length;
          if (failed.length > 0) {
            await store.record(
              failed.map(({ row, error }) => ({
                sink,
                eventId: row.eventId,
                idempotencyKey: row.idempotencyKey,
                event: row.event,
                source: row.source,
                lastError: error,
                attempts: 1,
              })),
            );
          }
          if (outcomes.some((o) => o.kind !== 'accepted' && o.kind !== 'permanent')) return;
          const left = fast ? 0 : tickMs(slice.length) - (Date.now() - tickStart);
          if (left > 0) await sleep(left, undefined, { signal: stop }).catch(() => undefined);
        }
      }
    } finally {
      if (redriven > 0 || permanent > 0) {
        this.#o.logger.info(
          { sink, redriven, permanent },
          `${sink}: re-drove ${redriven} dead letter(s) in ${((Date.now() - started) / 1000).toFixed(1)} s` +
            (permanent > 0 ? `; ${permanent} rejected permanently, left pending (engagement dlq list)` : ''),
        );
      }
    }
  }

  async #refreshGauges(): Promise<void> {
    // Both gauges, 0 when none is pending (never removed): the only source of them where no
    // StatusPoller runs (`work`); in `run` the poller sets the same values from the same table.
    const summary = await this.#o.store.summary(this.#o.sink);
    this.#o.metrics.deadLettersPending.set({ sink: this.#o.sink }, summary.pending);
    this.#o.metrics.deadLettersOldestSeconds.set({ sink: this.#o.sink }, summary.oldestPendingSeconds ?? 0);
  }
}
