import type pg from 'pg';
import {
  isBackfillRunning,
  readBackfills,
  readDeadLetterGauges,
  readSlotStatus,
} from '../db/status-queries.js';
import { slotInvalidatedError } from '../db/migrate.js';
import { describeError, ErrorCodes, PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from './metrics.js';

/**
 * Publishes the `engagement status` figures as Prometheus gauges in the running pipeline
 * (same queries, so the numbers agree), and notices a slot that is invalidated or dropped
 * while the pipeline runs: streaming cannot continue then, and `onSlotLost` stops it.
 */
export class StatusPoller {
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private reported = false;
  /**
   * Sinks whose dead-letter gauges are published: the configured ones and any that ever had
   * dead letters (`source`, a sink configured before). Once a sink's series exists it stays,
   * reading 0 when nothing is pending: a series that vanished at 0 would read as "no data" to
   * an alert (`> 0` never resolves, `absent()` fires) instead of as the good news it is.
   */
  private readonly deadLetterSinks: Set<string>;

  constructor(
    private readonly options: {
      pool: pg.Pool;
      slotName: string;
      metrics: Metrics;
      logger: Logger;
      intervalMs?: number;
      onSlotLost?: (err: PipelineError) => void;
      /** The configured sinks: their dead-letter gauges read 0 from the first poll. */
      sinks?: readonly string[];
    },
  ) {
    this.deadLetterSinks = new Set(options.sinks ?? []);
  }

  start(): void {
    void this.poll();
    this.timer = setInterval(() => void this.poll(), this.options.intervalMs ?? 5_000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    const { pool, slotName, metrics: m } = this.options;
    try {
      const [slot, dead, backfills] = await Promise.all([
        readSlotStatus(pool, slotName),
        readDeadLetterGauges(pool),
        readBackfills(pool),
      ]);
      m.slotActive.set(slot.active ? 1 : 0);
      const lost = !slot.exists || slot.walStatus === 'lost';
      m.slotInvalidated.set(lost ? 1 : 0);
      if (slot.lagBytes !== null) m.slotLagBytes.set(slot.lagBytes);
      if (slot.lagSeconds !== null) m.slotLagSeconds.set(slot.lagSeconds);
      if (slot.retainedBytes !== null) m.slotRetainedBytes.set(slot.retainedBytes);
      m.slotSafeWalSizeBytes.set(slot.safeWalSizeBytes ?? -1);
      for (const sink of Object.keys(dead)) this.deadLetterSinks.add(sink);
      for (const sink of this.deadLetterSinks) {
        m.deadLettersPending.set({ sink }, dead[sink]?.pending ?? 0);
        m.deadLettersOldestSeconds.set({ sink }, dead[sink]?.oldestSeconds ?? 0);
      }
      m.backfillsInProgress.set(backfills.filter(isBackfillRunning).length);
      if (lost && !this.reported) {
        this.reported = true;
        const err = slot.exists
          ? slotInvalidatedError(slotName)
          : new PipelineError(
              ErrorCodes.SLOT_MISSING,
              `replication slot '${slotName}' was dropped while the pipeline ran`,
              'fatal',
              'run `engagement migrate --recreate-slot`, then `engagement backfill --from <last delivered time> --to now`',
            );
        this.options.logger.error(err.oneLine());
        this.options.onSlotLost?.(err);
      }
    } catch (err) {
      this.options.logger.debug(`status poll failed: ${describeError(err)}`);
    } finally {
      this.polling = false;
    }
  }
}
