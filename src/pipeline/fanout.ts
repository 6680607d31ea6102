import { setMaxListeners } from 'node:events';
import type { Batch, EnrichedEvent } from '../domain/types.js';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { SinkHealth, SinkState } from '../observability/stats.js';
import type { DeadLetterEntry, DeadLetterStore } from '../state/dead-letter.js';
import type { BackoffOptions } from '../retry/backoff.js';
import { OPERATOR_BACKOFF, retry, TRANSIENT_BACKOFF } from '../retry/retry.js';
import type { Sink } from '../sinks/sink.js';
import { isoToMillis } from '../domain/timestamps.js';
import { policyFor, type ErrorPolicy } from '../retry/error-policy.js';
import { batchWeight } from './row-weight.js';

export interface FanoutOptions {
  sinks: Sink[];
  metrics: Metrics;
  logger: Logger;
  /** Rows a sink rejects deterministically are recorded here (with the sink's name). */
  deadLetters?: Pick<DeadLetterStore, 'record'>;
  /** Backoff for transient failures. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Backoff for a sink that failed permanently (auth, schema): slow, until an operator fixes it. */
  failedRetryBaseMs?: number;
  failedRetryMaxMs?: number;
  /** Lag past which a sink counts as behind (LAG_WARN_SECONDS). */
  lagWarnSeconds?: number;
  /**
   * Commit time (epoch ms) of the oldest event received but not yet handed to the sinks (the
   * open batch): it is pending for every sink too, so a stuck pipeline shows a growing lag.
   */
  oldestUndispatched?: () => number | null;
  /** Told about every accepted batch (sink progress for `engagement status`). */
  onSuccess?: (sink: string, batch: Batch) => void;
  /**
   * A sink with a write interval writes early once this many rows wait for it (BATCH_MAX_ROWS,
   * weighed as the dispatcher weighs them: row-weight.ts): the interval saves commits at low
   * rates and never holds a full batch.
   */
  fullRows?: number;
  /**
   * True while the source is paused for room in the in-flight window (the dispatcher's window is
   * full): what makes a sink that alone holds its batches hold every other sink too (spilling,
   * see Sink.spillAfterMs).
   */
  windowFull?: () => boolean;
  /**
   * True while the producer may hand on another batch without waiting for the ones it handed
   * on (the direct pipeline while its window has room). Only then does a write that waited out
   * its sink's interval wait for the next batch to carry it (see pump). Unset (the Kafka
   * worker, which waits for each batch to be accepted before taking the next): never assumed.
   */
  moreBatchesComing?: () => boolean;
}

/** A batch handed to one sink and not yet written: settled when that sink accepted it. */
interface Queued {
  batch: Batch;
  /** batchWeight(batch.events): what fullRows counts, as the dispatcher's window does. */
  weight: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface Tracked {
  sink: Sink;
  /** Batches waiting for this sink, in stream order; written together when it is free. */
  queue: Queued[];
  queuedRows: number;
  writing: boolean;
  /** When the last write started (performance.now()), for the sink's write interval. */
  lastWriteAt: number;
  timer: NodeJS.Timeout | null;
  /** The timer waits for idleWriteMs, the next batch being expected to carry the write. */
  timerIdle: boolean;
  /** Oldest commit time (ms) of each batch handed to the sink and not yet accepted, in order. */
  pending: number[];
  received: number;
  delivered: number;
  deadLettered: number;
  failing: { policy: Exclude<ErrorPolicy, 'rows'>; since: number; error: string } | null;
  /** The seq of the last batch handed to this sink. */
  lastSeq: number;
  /** Since when (Date.now()) this sink alone holds a full window (see checkSpill); null: it does not. */
  aloneSince: number | null;
  /** Writes this sink completed (successes): a sink that completes one is making progress. */
  writesDone: number;
  /** writesDone when aloneSince was set. */
  aloneFrom: number;
  /** Spilling until the batch with this seq is written (see checkSpill); null: not spilling. */
  spillThrough: number | null;
  /** The gauge values last set for this sink (see updateGauges); null: none yet. */
  shown: { lagSeconds: number | null; state: SinkState | null };
}

/** Bisecting found every row bad: that is the sink failing, not the rows. */
class AllRowsRejected extends Error {}

/**
 * Writes each batch to every sink concurrently. Per sink, writes are serial and in order
 * (sinks rely on it for their replay watermarks), and the batches that arrived while a sink was
 * busy (or within its `writeIntervalMs` of its last write) are written together as one batch
 * of the same stream: a slow or commit-priced sink (DuckDB pays milliseconds per transaction)
 * takes fewer, larger writes, and never holds up a fast one (Redis keeps its own pace). A
 * failed write is handled by its policy (see error-policy.ts): transient -> retried with
 * backoff; permanent for the sink -> marked failed and retried slowly; permanent for some rows
 * -> the batch is split to find them, they are dead-lettered for that sink, the rest is
 * delivered. Until a sink accepted a batch the source position stays held, so an outage loses
 * nothing.
 *
 * A sink that can set events aside durably (Sink.spillAfterMs: the external sink under
 * best-effort) is made to, once it alone has held a full window that long while answering:
 * otherwise a receiver slower than the event rate, which fails nothing, would set the pace of
 * every destination for as long as it stays slow (Redis minutes stale behind a webhook).
 */
export class Fanout {
  private readonly tracked: Tracked[];
  private readonly abort = new AbortController();
  private readonly transientBackoff: BackoffOptions;
  private readonly failedBackoff: BackoffOptions;
  /** When the last spill line was logged (one per SPILL_LOG_INTERVAL_MS while a receiver stays slow). */
  private spillLoggedAt = -Infinity;
  /** Shutting down: write what waits at once. */
  private flushing = false;
  private timer: NodeJS.Timeout | null = null;
  private spillTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: FanoutOptions) {
    // Every in-flight request of every sink listens on this one signal.
    setMaxListeners(0, this.abort.signal);
    this.tracked = options.sinks.map((sink) => ({
      sink,
      queue: [],
      queuedRows: 0,
      writing: false,
      lastWriteAt: -Infinity,
      timer: null,
      timerIdle: false,
      pending: [],
      received: 0,
      delivered: 0,
      deadLettered: 0,
      failing: null,
      lastSeq: -Infinity,
      aloneSince: null,
      writesDone: 0,
      aloneFrom: 0,
      spillThrough: null,
      shown: { lagSeconds: null, state: null },
    }));
    this.transientBackoff = {
      baseMs: options.retryBaseMs ?? TRANSIENT_BACKOFF.baseMs,
      maxMs: options.retryMaxMs ?? TRANSIENT_BACKOFF.maxMs,
    };
    this.failedBackoff = {
      baseMs: options.failedRetryBaseMs ?? OPERATOR_BACKOFF.baseMs,
      maxMs: options.failedRetryMaxMs ?? OPERATOR_BACKOFF.maxMs,
    };
    this.updateGauges();
  }

  /** Refreshes lag and state gauges every second, so a stuck sink's lag keeps growing. */
  startHealthTimer(intervalMs = 1_000): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.updateGauges(), intervalMs);
    this.timer.unref();
    if (this.tracked.some((t) => t.sink.spillAfterMs !== undefined)) {
      this.spillTimer = setInterval(() => this.checkSpill(), SPILL_CHECK_MS);
      this.spillTimer.unref();
    }
  }

  /**
   * Turns spilling on for a spill-capable sink that alone has held a full window (the source is
   * paused for room, every other sink accepted everything it was handed) for its spillAfterMs
   * without completing a write, while no failure is being ridden out (an outage is
   * EXTERNAL_RETRY_FOR's business: short ones dead-letter nothing). A sink completing writes is
   * not spilled, so a receiver catching up after a short outage dead-letters nothing either; the
   * price is that one completing writes more slowly than events arrive sets the pace (README,
   * "a slow sink"). It spills through the last batch handed to it so far; spill(false) follows
   * once that one is written (pump), so what arrives later is sent as usual. Public for tests.
   */
  checkSpill(now = Date.now()): void {
    const full = this.options.windowFull?.() ?? false;
    for (const t of this.tracked) {
      const after = t.sink.spillAfterMs;
      if (after === undefined || t.spillThrough !== null) continue;
      const alone =
        full &&
        t.pending.length > 0 &&
        t.failing === null &&
        (t.sink.failure?.() ?? null) === null &&
        this.tracked.every((o) => o === t || o.pending.length === 0);
      if (!alone) {
        t.aloneSince = null;
        continue;
      }
      if (t.aloneSince === null || t.writesDone !== t.aloneFrom) {
        t.aloneSince = now;
        t.aloneFrom = t.writesDone;
      }
      const held = now - t.aloneSince;
      if (held < after) continue;
      t.aloneSince = null;
      t.spillThrough = t.lastSeq;
      t.sink.spill?.(true);
      this.options.metrics.sinkSpills.inc({ sink: t.sink.name });
      if (now - this.spillLoggedAt >= SPILL_LOG_INTERVAL_MS) {
        this.spillLoggedAt = now;
        this.options.logger.warn(
          { sink: t.sink.name, heldSeconds: held / 1000 },
          `sink ${t.sink.name} answers more slowly than events arrive and alone held the other sinks for ${(held / 1000).toFixed(1)} s: ` +
            `its unsent events are set aside in the dead-letter table and re-sent automatically (engagement dlq list --sink ${t.sink.name})`,
        );
      }
    }
  }

  /**
   * Resolves when every sink accepted the batch; rejects only when cancelled. `weight`: its
   * batchWeight, when the caller has it already (the dispatcher's count).
   */
  write(batch: Batch, weight = batchWeight(batch.events)): Promise<void> {
    // A batch with only a position to confirm has nothing to write; the checkpoint keeps its order.
    if (batch.events.length === 0) return Promise.resolve();
    if (this.abort.signal.aborted) return Promise.reject(new Error('fan-out aborted'));
    const oldest = isoToMillis(batch.events[0].committed_at);
    const writes = this.tracked.map((t) => {
      t.received += batch.events.length;
      this.options.metrics.sinkEventsReceived.inc({ sink: t.sink.name }, batch.events.length);
      t.pending.push(oldest);
      t.lastSeq = batch.seq;
      return new Promise<void>((resolve, reject) => {
        t.queue.push({ batch, weight, resolve, reject });
        t.queuedRows += weight;
        this.pump(t);
      });
    });
    return Promise.all(writes).then(() => undefined);
  }

  /** Writes what waits for every sink now, without waiting out write intervals (shutdown). */
  flush(): void {
    this.flushing = true;
    for (const t of this.tracked) this.pump(t);
  }

  /** Stops retrying; pending writes reject. */
  cancel(): void {
    this.abort.abort();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.spillTimer) clearInterval(this.spillTimer);
    this.spillTimer = null;
    for (const t of this.tracked) {
      if (t.timer) clearTimeout(t.timer);
      t.timer = null;
      for (const q of t.queue.splice(0)) q.reject(new Error('fan-out aborted'));
      t.queuedRows = 0;
    }
  }

  health(now = Date.now()): SinkHealth[] {
    const undispatched = this.options.oldestUndispatched?.() ?? null;
    const warn = this.options.lagWarnSeconds ?? 30;
    return this.tracked.map((t) => {
      const oldest = t.pending[0] ?? undispatched;
      const lagSeconds = Math.max(
        oldest === null ? 0 : Math.max(0, now - oldest) / 1000,
        t.sink.backlogSeconds?.() ?? 0,
      );
      // A failure the sink rides out inside its write (it retries on its own) is down too.
      const riding = t.failing ? null : (t.sink.failure?.() ?? null);
      const state: SinkState = t.failing
        ? t.failing.policy === 'sink'
          ? 'failed'
          : 'down'
        : riding !== null
          ? 'down'
          : lagSeconds > warn
            ? 'behind'
            : 'up';
      return {
        name: t.sink.name,
        state,
        lagSeconds: Math.round(lagSeconds * 1000) / 1000,
        received: t.received,
        delivered: t.delivered,
        deadLettered: t.deadLettered,
        error: t.failing?.error ?? riding,
      };
    });
  }

  /**
   * The per-sink gauges, all from one health() reading so they never disagree: lag, state, and
   * engagement_sink_up, which is 1 exactly while the state is up or behind (writes succeed) and
   * 0 while it is down or failed, whatever made it so (a failed write here, or a failure the
   * sink rides out inside a write that still resolves: the external sink dead-lettering under
   * best-effort). Set nowhere else.
   */
  private updateGauges(): void {
    const { metrics } = this.options;
    const health = this.health();
    for (let i = 0; i < health.length; i++) {
      const h = health[i];
      const shown = this.tracked[i].shown;
      // Each set hashes its labels (prom-client sorts their names): with one refresh per
      // completed write, re-setting unchanged values made a fifth of the fan-out's garbage at
      // 1,000 events/s. A value is set when it differs from the one last set (or none was).
      if (shown.lagSeconds !== h.lagSeconds) {
        metrics.sinkLagSeconds.set({ sink: h.name }, h.lagSeconds);
        shown.lagSeconds = h.lagSeconds;
      }
      if (shown.state === h.state) continue;
      metrics.sinkUp.set({ sink: h.name }, h.state === 'up' || h.state === 'behind' ? 1 : 0);
      for (const state of ['up', 'behind', 'down', 'failed'] as const) {
        metrics.sinkState.set({ sink: h.name, state }, h.state === state ? 1 : 0);
      }
      shown.state = h.state;
    }
  }

  /**
   * Starts the sink's next write when it is free and its interval is over (or enough waits).
   * Called for every batch that arrives and after every write. While more batches are coming
   * (options.moreBatchesComing), the write that waited out its interval goes with the next one
   * to arrive, in a turn of the event loop that ran anyway: a timer due when the interval ends
   * woke the thread for it, and a wake-up on this kind of machine costs about as much as the
   * write (1,000 events/s, paired runs: 6 % less pipeline CPU, 21 fewer wake-ups a second;
   * bench/results/2026-12-03-s17-paired.md). The timer is then left for a stream that stopped:
   * what waits goes idleWriteMs(interval) after the last write began. A producer that waits for
   * this write (a full window, the Kafka worker) gets the timer at the interval's end.
   */
  private pump(t: Tracked): void {
    if (t.writing || t.queue.length === 0 || this.abort.signal.aborted) return;
    const interval = t.sink.writeIntervalMs ?? 0;
    const wait = t.lastWriteAt + interval - performance.now();
    if (wait > 0 && !this.flushing && t.queuedRows < (this.options.fullRows ?? Infinity)) {
      const carried = this.options.moreBatchesComing?.() ?? false;
      if (t.timer && t.timerIdle && !carried) {
        clearTimeout(t.timer); // nothing more is coming after all: back to the interval's end
        t.timer = null;
      }
      if (!t.timer) {
        t.timerIdle = carried;
        t.timer = setTimeout(
          () => {
            t.timer = null;
            this.pump(t);
          },
          carried ? wait + idleWriteMs(interval) - interval : wait,
        );
      }
      return;
    }
    if (t.timer) clearTimeout(t.timer);
    t.timer = null;
    const parts = takeSameStream(t.queue);
    for (const q of parts) t.queuedRows -= q.weight;
    t.writing = true;
    t.lastWriteAt = performance.now();
    const sizes = parts.map((q) => q.batch.events.length);
    const batch = merge(parts.map((q) => q.batch));
    this.writeWithPolicy(t, batch, sizes).then(
      () => {
        t.writing = false;
        if (t.spillThrough !== null && batch.seq >= t.spillThrough) {
          t.spillThrough = null;
          t.sink.spill?.(false);
        }
        for (const q of parts) q.resolve();
        this.pump(t);
      },
      (err) => {
        t.writing = false;
        for (const q of parts) q.reject(err);
        this.pump(t);
      },
    );
  }

  /** `sizes`: the rows of each of the pipeline's batches merged into `batch`, in order. */
  private writeWithPolicy(t: Tracked, batch: Batch, sizes: number[]): Promise<void> {
    const parts = sizes.length;
    const signal = this.abort.signal;
    return retry(
      async () => {
        const started = performance.now();
        try {
          const result = await t.sink.write(batch, signal);
          const accepted = this.withoutDeadLettered(t, batch, result?.deadLettered);
          this.recordSuccess(t, batch, parts, accepted, (performance.now() - started) / 1000);
        } catch (error) {
          if (signal.aborted || policyFor(error) !== 'rows') throw error;
          const refused = await this.isolateBadRows(t, batch, error, sizes);
          const accepted = this.withoutDeadLettered(t, batch, refused.setAside, refused.refused);
          this.recordSuccess(t, batch, parts, accepted, (performance.now() - started) / 1000);
        }
      },
      {
        signal,
        aborted: () => new Error('fan-out aborted'),
        backoff: { transient: this.transientBackoff, sink: this.failedBackoff },
        // Every row refused: that is the sink failing, not the rows. A rows failure while
        // isolating is retried as transient (the whole batch again; sinks are idempotent).
        policyOf: (err) => (err instanceof AllRowsRejected ? 'sink' : policyFor(err)),
        onFailure: (err, { policy }) =>
          this.recordFailure(t, policy, err instanceof AllRowsRejected ? (err.cause ?? err) : err),
      },
    );
  }

  /**
   * The sink rejected the batch for its contents: splits it (bisection, in stream order) to
   * find the rows it refuses, writes every other row, and dead-letters the refused ones for
   * this sink. Returns the positions of the dead-lettered rows. Throws on any other kind of failure (the
   * whole batch is then retried; sinks are idempotent, so rows already written are no-ops).
   */
  private async isolateBadRows(
    t: Tracked,
    batch: Batch,
    firstError: unknown,
    sizes: number[],
  ): Promise<{ refused: Set<string>; setAside: Set<string> }> {
    const deadLetters = this.options.deadLetters;
    if (!deadLetters) throw firstError;
    const bad: { event: EnrichedEvent; position: string; reason: string }[] = [];
    // What the sink's own writes of the parts recorded as dead letters (WriteResult).
    const setAside = new Set<string>();
    const visit = async (from: number, to: number, error: unknown): Promise<void> => {
      if (to - from === 1) {
        bad.push({
          event: batch.events[from],
          position: batch.positions[from],
          reason: describeError(error),
        });
        return;
      }
      const mid = from + Math.ceil((to - from) / 2);
      for (const [a, b] of [
        [from, mid],
        [mid, to],
      ]) {
        const part: Batch = {
          ...batch,
          events: batch.events.slice(a, b),
          positions: batch.positions.slice(a, b),
        };
        try {
          const result = await t.sink.write(part, this.abort.signal);
          for (const position of result?.deadLettered ?? []) setAside.add(position);
        } catch (err) {
          if (policyFor(err) !== 'rows') throw err;
          await visit(a, b, err);
        }
      }
    };
    await visit(0, batch.events.length, firstError);
    // Judged per batch of the pipeline, as if each had been written alone: single bad rows that
    // merely arrived back to back (merged) are still the rows' fault, each dead-lettered.
    if (bad.length === batch.events.length && sizes.some((n) => n > 1)) {
      throw new AllRowsRejected('every row of the batch was rejected', { cause: firstError });
    }
    const entries: DeadLetterEntry[] = bad.map((b) => ({
      sink: t.sink.name,
      eventId: b.event.event_id,
      idempotencyKey: String(b.event.event_id),
      event: b.event,
      source: `${batch.stream}@${b.position}`,
      lastError: b.reason,
      attempts: 1,
    }));
    const added = await deadLetters.record(entries);
    t.deadLettered += bad.length;
    this.options.metrics.deadLetters.inc({ sink: t.sink.name }, added);
    this.options.logger.error(
      { sink: t.sink.name, events: bad.map((b) => b.event.event_id).slice(0, 20) },
      `sink ${t.sink.name} refused ${bad.length} of ${batch.events.length} events; dead-lettered for ${t.sink.name} (engagement dlq list --sink ${t.sink.name}): ${bad[0]?.reason ?? ''}`,
    );
    return { refused: new Set(bad.map((b) => b.position)), setAside };
  }

  /**
   * The batch without the events at `positions` (the sink recorded them in the dead-letter
   * table itself: WriteResult), counted as dead-lettered for the sink; `refused`: positions the
   * fan-out dead-lettered (isolateBadRows, counted there), also left out.
   */
  private withoutDeadLettered(
    t: Tracked,
    batch: Batch,
    positions: ReadonlySet<string> | undefined,
    refused: ReadonlySet<string> = new Set(),
  ): Batch {
    const n = positions?.size ?? 0;
    if (n === 0 && refused.size === 0) return batch;
    t.deadLettered += n;
    const keep = batch.positions.map((p) => !refused.has(p) && !(positions?.has(p) ?? false));
    return {
      ...batch,
      events: batch.events.filter((_, i) => keep[i]),
      positions: batch.positions.filter((_, i) => keep[i]),
    };
  }

  private recordFailure(t: Tracked, policy: 'transient' | 'sink', err: unknown): void {
    const { metrics, logger } = this.options;
    const labels = { sink: t.sink.name };
    metrics.sinkErrors.inc(labels);
    const error = describeError(err);
    const previous = t.failing;
    t.failing = { policy, since: previous?.since ?? Date.now(), error };
    // One line when a failure starts, and one when it turns out to need an operator.
    if (previous === null || (policy === 'sink' && previous.policy !== 'sink')) {
      logger.error(
        { sink: t.sink.name, policy },
        policy === 'sink'
          ? `sink ${t.sink.name} failed and needs attention (source position held, retrying slowly): ${error}`
          : `sink ${t.sink.name} write failed, retrying (source position held): ${error}`,
      );
    }
    this.updateGauges();
  }

  /**
   * `batch` may be `parts` batches written as one; `accepted` is what the sink took of it (all
   * of it, or all but the rows dead-lettered for it): what onSuccess hears of, e.g. the live
   * event stream, which carries only what the analytics store holds.
   */
  private recordSuccess(t: Tracked, batch: Batch, parts: number, accepted: Batch, seconds: number): void {
    const { metrics } = this.options;
    const delivered = accepted.events.length;
    const labels = { sink: t.sink.name };
    t.pending.splice(0, parts);
    t.writesDone += 1;
    t.delivered += delivered;
    metrics.sinkWriteSeconds.observe(labels, seconds);
    metrics.eventsDelivered.inc(labels, delivered);
    metrics.batchesDelivered.inc(labels);
    const now = Date.now();
    metrics.sinkLastSuccess.set(labels, now / 1000);
    if (delivered > 0) this.options.onSuccess?.(t.sink.name, accepted);
    // One sample per batch: the oldest commit in it is the worst-case event latency.
    metrics.commitToSinkSeconds.observe(
      labels,
      Math.max(0, now - isoToMillis(batch.events[0].committed_at)) / 1000,
    );
    const since = t.failing?.since;
    t.failing = null;
    if (since !== undefined) {
      this.options.logger.info(
        { sink: t.sink.name },
        `sink ${t.sink.name} recovered after ${((now - since) / 1000).toFixed(1)} s`,
      );
    }
    this.updateGauges();
  }
}

/** How often a spill-capable sink's hold is checked (checkSpill). */
const SPILL_CHECK_MS = 250;
/** While a receiver stays slow, one spill line per minute. */
const SPILL_LOG_INTERVAL_MS = 60_000;

/**
 * The queue's first batches of one stream and source (a sink's replay positions are per stream,
 * and compare only within one source), removed from it.
 */
function takeSameStream(queue: Queued[]): Queued[] {
  const { stream, sourceId } = queue[0].batch;
  let n = 1;
  while (n < queue.length && queue[n].batch.stream === stream && queue[n].batch.sourceId === sourceId) n++;
  return queue.splice(0, n);
}

/** Consecutive batches of one stream as one: their events and positions in order, the last one's seq and ackLsn. */
function merge(batches: Batch[]): Batch {
  if (batches.length === 1) return batches[0];
  const last = batches[batches.length - 1];
  return {
    seq: last.seq,
    stream: last.stream,
    events: batches[0].events.concat(...batches.slice(1).map((b) => b.events)),
    positions: batches[0].positions.concat(...batches.slice(1).map((b) => b.positions)),
    ackLsn: last.ackLsn,
    ...(last.sourceId === undefined ? {} : { sourceId: last.sourceId }),
  };
}

/**
 * How long after a write began what queued for a sink with `interval` may wait when no batch
 * comes to carry it (see Fanout.pump): ten intervals, at most a second, never less than one.
 */
export function idleWriteMs(interval: number): number {
  return Math.max(interval, Math.min(IDLE_WRITE_MAX_MS, 10 * interval));
}

const IDLE_WRITE_MAX_MS = 1_000;
