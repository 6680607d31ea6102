import { setMaxListeners } from 'node:events';
import type { Batch } from '../domain/types.js';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../server/metrics.js';
import type { Sink } from '../sinks/sink.js';
import { isoToMillis } from '../domain/timestamps.js';

export interface FanoutOptions {
  sinks: Sink[];
  metrics: Metrics;
  logger: Logger;
  /** Backoff bounds for retrying a failed sink write. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Told about every accepted batch (sink progress for `engagement status`). */
  onSuccess?: (sink: string, batch: Batch) => void;
}

/**
 * Writes each batch to every sink concurrently. Per sink, writes are serial and in order
 * (sinks rely on it for their replay watermarks). A failed write is retried with
 * exponential backoff until it succeeds or the fan-out is aborted: the source position
 * stays held meanwhile, so an outage loses nothing.
 */
export class Fanout {
  private readonly tails = new Map<Sink, Promise<void>>();
  private readonly abort = new AbortController();
  private readonly failingSince = new Map<string, number>();

  constructor(private readonly options: FanoutOptions) {
    // Every in-flight request of every sink listens on this one signal.
    setMaxListeners(0, this.abort.signal);
    for (const sink of options.sinks) {
      this.tails.set(sink, Promise.resolve());
      options.metrics.sinkUp.set({ sink: sink.name }, 1);
    }
  }

  /** Resolves when every sink accepted the batch; rejects only when aborted. */
  write(batch: Batch): Promise<void> {
    // A batch with only a position to confirm has nothing to write; the checkpoint keeps its order.
    if (batch.events.length === 0) return Promise.resolve();
    const writes = this.options.sinks.map((sink) => {
      const next = this.tails.get(sink)!.then(() => this.writeWithRetry(sink, batch));
      this.tails.set(
        sink,
        next.catch(() => undefined),
      );
      return next;
    });
    return Promise.all(writes).then(() => undefined);
  }

  /** Stops retrying; pending writes reject. */
  cancel(): void {
    this.abort.abort();
  }

  private async writeWithRetry(sink: Sink, batch: Batch): Promise<void> {
    const { metrics } = this.options;
    const labels = { sink: sink.name };
    for (let attempt = 0; ; attempt++) {
      if (this.abort.signal.aborted) throw new Error('fan-out aborted');
      const started = performance.now();
      try {
        await sink.write(batch, this.abort.signal);
        this.recordSuccess(sink.name, batch, (performance.now() - started) / 1000);
        return;
      } catch (err) {
        if (this.abort.signal.aborted) throw err;
        metrics.sinkErrors.inc(labels);
        metrics.sinkUp.set(labels, 0);
        if (!this.failingSince.has(sink.name)) {
          this.failingSince.set(sink.name, Date.now());
          this.options.logger.error(
            { sink: sink.name },
            `sink ${sink.name} write failed, retrying (source position held): ${describeError(err)}`,
          );
        }
        const base = this.options.retryBaseMs ?? 100;
        const max = this.options.retryMaxMs ?? 5_000;
        await sleep(Math.random() * Math.min(max, base * 2 ** Math.min(attempt, 10)), this.abort.signal);
      }
    }
  }

  private recordSuccess(sinkName: string, batch: Batch, seconds: number): void {
    const { metrics } = this.options;
    const labels = { sink: sinkName };
    metrics.sinkWriteSeconds.observe(labels, seconds);
    metrics.eventsDelivered.inc(labels, batch.events.length);
    metrics.batchesDelivered.inc(labels);
    metrics.sinkUp.set(labels, 1);
    const now = Date.now();
    metrics.sinkLastSuccess.set(labels, now / 1000);
    this.options.onSuccess?.(sinkName, batch);
    if (batch.events.length > 0) {
      // One sample per batch: the oldest commit in it is the worst-case event latency.
      metrics.commitToSinkSeconds.observe(
        labels,
        Math.max(0, now - isoToMillis(batch.events[0].committed_at)) / 1000,
      );
      // The newest event's commit -> this sink: how far behind the source the sink is.
      metrics.sinkLagSeconds.set(
        labels,
        Math.max(0, now - isoToMillis(batch.events[batch.events.length - 1].committed_at)) / 1000,
      );
    }
    const since = this.failingSince.get(sinkName);
    if (since !== undefined) {
      this.failingSince.delete(sinkName);
      this.options.logger.info(
        { sink: sinkName },
        `sink ${sinkName} recovered after ${((now - since) / 1000).toFixed(1)} s`,
      );
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
