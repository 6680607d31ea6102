import type pg from 'pg';
import type { Batch } from '../domain/types.js';
import { describeError, type PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { SourceShape } from '../domain/source-shape.js';
import type { Metrics } from '../observability/metrics.js';
import type { Sink } from '../sinks/sink.js';
import type { Change } from '../source/changes.js';
import { ContentDimension } from '../enrichment/content-dimension.js';
import { isServerShutdown } from '../db/postgres.js';
import type { ReplicationSource } from '../source/replication-source.js';
import { isoToMillis } from '../domain/timestamps.js';
import type { DeadLetterStore } from '../state/dead-letter.js';
import { BatchAssembler } from './batch-assembler.js';
import { shutdownTimes, withDeadline } from './deadline.js';
import { Dispatcher } from './dispatcher.js';
import { Fanout } from './fanout.js';
import { drainSlotStream, slotSource } from './slot-stream.js';
import type { SinkHealth } from '../observability/stats.js';
import { batchWeight } from './row-weight.js';

export interface PipelineOptions {
  /** The user's tables (discovered at start); default: the tables `engagement migrate` creates. */
  shape?: SourceShape;
  databaseUrl: string;
  slotName: string;
  publicationName: string;
  pool: pg.Pool;
  sinks: Sink[];
  metrics: Metrics;
  logger: Logger;
  batchMaxRows: number;
  batchMaxWaitMs: number;
  maxInFlightBatches: number;
  /** stop() returns within this (SHUTDOWN_TIMEOUT_MS); default 20 s. */
  shutdownTimeoutMs?: number;
  /** A sink whose oldest pending event is older than this is "behind" (LAG_WARN_SECONDS). */
  lagWarnSeconds?: number;
  /** Rows a sink refuses deterministically are dead-lettered here for that sink. */
  deadLetters?: Pick<DeadLetterStore, 'record'>;
  onBadRow?: (change: Extract<Change, { kind: 'bad-row' }>) => Promise<void>;
  onSinkSuccess?: (sink: string, batch: Batch) => void;
  /** The stream stopped at a point it must not pass (the process should stop with this error). */
  onHalt?: (error: PipelineError) => void;
}

/**
 * Direct mode: replication slot -> batches -> every sink -> checkpoint -> confirm.
 * At most `maxInFlightBatches` batches are being written at once, plus the one being filled
 * (at most `batchMaxRows` events each); beyond that the source pauses and Postgres holds the
 * rest in the slot (see Dispatcher).
 */
export class Pipeline {
  readonly source: ReplicationSource;
  readonly fanout: Fanout;
  private readonly assembler: BatchAssembler;
  private readonly dispatcher: Dispatcher<Batch>;
  private readonly dimension: ContentDimension;
  private running = false;
  /** Events accepted by every sink (events/s is counted on delivery). */
  deliveredEvents = 0;

  constructor(private readonly options: PipelineOptions) {
    const logger = options.logger;
    // Postgres shutting down while the stream waits for it: see ReplicationSource.serverShuttingDown.
    const onPostgresError = (err: unknown): void => {
      if (isServerShutdown(err)) this.source?.serverShuttingDown();
    };
    this.dimension = new ContentDimension(options.pool, {
      logger,
      slotName: options.slotName,
      retry: true,
      shape: options.shape,
      onRetry: onPostgresError,
    });
    // A fast shutdown first ends every other backend, the pool's idle connections included.
    options.pool.on('error', onPostgresError);
    this.fanout = new Fanout({
      sinks: options.sinks,
      metrics: options.metrics,
      logger,
      deadLetters: options.deadLetters,
      lagWarnSeconds: options.lagWarnSeconds,
      fullRows: options.batchMaxRows,
      oldestUndispatched: () => {
        // (Asked once while the fan-out is being built, before the assembler exists.)
        const at = (this.assembler as BatchAssembler | undefined)?.oldestCommittedAt ?? null;
        return at === null ? null : isoToMillis(at);
      },
      onSuccess: options.onSinkSuccess,
      // (Asked only once the dispatcher exists: by the spill check, after start.)
      windowFull: () => !this.dispatcher.hasRoom,
      // The source goes on while the window has room (with MAX_IN_FLIGHT_BATCHES=1, only
      // once every batch was accepted: then nothing more comes until this write).
      moreBatchesComing: () => this.dispatcher.hasRoom,
    });
    this.dispatcher = new Dispatcher<Batch>({
      maxRows: options.batchMaxRows,
      maxWaitMs: options.batchMaxWaitMs,
      maxInFlight: options.maxInFlightBatches,
      rowsOf: (batch) => batchWeight(batch.events),
      write: (batch, rows) => {
        options.metrics.inFlightBatches.set(this.dispatcher.inFlightBatches);
        return this.fanout.write(batch, rows);
      },
      confirm: (lsn) => this.source.acknowledge(lsn),
      onAccepted: (batch) => {
        this.deliveredEvents += batch.events.length;
        options.metrics.inFlightBatches.set(this.dispatcher.inFlightBatches);
      },
    });
    this.assembler = new BatchAssembler({
      stream: options.slotName,
      dimension: this.dimension,
      metrics: options.metrics,
      logger,
      dispatcher: this.dispatcher,
      onBadRow: options.onBadRow ?? (async () => undefined),
    });
    this.source = slotSource(options, this.assembler);
  }

  /** Title of a known content id (for the dashboard). */
  contentTitle(id: string): string | null {
    return this.dimension.peek(id)?.title ?? null;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Per sink: state, lag, received/delivered (for /api/stats, /readyz, status). */
  sinkHealth(): SinkHealth[] {
    return this.fanout.health();
  }

  /**
   * True exactly when no transaction is open in the assembler, no events are buffered, no
   * batch is waiting for room, and nothing is in flight or unconfirmed.
   */
  isDrained(): boolean {
    return this.assembler.isDrained();
  }

  /** Largest number of events held at once (open batch + in flight) since start. */
  get peakBufferedEvents(): number {
    return this.dispatcher.peakRows;
  }

  async start(): Promise<void> {
    const loaded = await this.dimension.loadAsOfSlot();
    this.options.logger.info(
      { content: loaded.rows, from: loaded.from, asOf: loaded.asOf },
      'content dimension loaded',
    );
    for (const sink of this.options.sinks) await sink.start();
    await this.source.start(this.assembler.handle);
    this.fanout.startHealthTimer();
    this.running = true;
  }

  /**
   * Stops within `shutdownTimeoutMs` in every state (a sink down, the window full, a slow
   * sink): stops taking changes, hands on what is open, waits for the sinks while time
   * remains, then cancels what is left and closes everything. One line says what was left
   * unconfirmed; the slot replays it on the next start.
   */
  async stop(): Promise<void> {
    const { logger } = this.options;
    const times = shutdownTimes(this.options.shutdownTimeoutMs);
    const { started, deadline } = times;
    this.assembler.close();
    this.dimension.close();
    this.fanout.flush(); // sinks waiting out a write interval write now
    const { assembler, dispatcher, source } = this;
    const report = await drainSlotStream({ assembler, dispatcher, source, logger }, times, (r) => {
      if (!r.drained) this.fanout.cancel();
    });
    this.running = false;
    this.fanout.cancel();
    for (const sink of this.options.sinks) {
      await withDeadline(
        sink.stop().catch((err) => logger.warn(`stopping sink ${sink.name}: ${describeError(err)}`)),
        deadline,
        () => logger.warn(`shutdown: sink ${sink.name} did not stop in time`),
      );
    }
    const confirmed = this.source.confirmed;
    if (report.drained) {
      logger.info({ confirmedLsn: confirmed }, `stopped: every sink confirmed everything up to ${confirmed}`);
    } else {
      logger.warn(
        { confirmedLsn: confirmed, batches: report.batches, events: report.rows },
        `shutdown after ${((Date.now() - started) / 1000).toFixed(1)} s: ${report.rows} events in ${report.batches} batches were not confirmed by every sink; they replay from ${confirmed} on the next start (${this.unhealthySinks()})`,
      );
    }
  }

  /** The sinks still owing events, e.g. "external down, 770 events pending, lag 8 s: <error>". */
  private unhealthySinks(): string {
    const owing = this.fanout
      .health()
      .filter((h) => h.received > h.delivered + h.deadLettered || h.state !== 'up')
      .map(
        (h) =>
          `${h.name} ${h.state}, ${h.received - h.delivered - h.deadLettered} events pending, lag ${h.lagSeconds.toFixed(0)} s${h.error ? `: ${h.error}` : ''}`,
      );
    return owing.length === 0 ? 'waiting for a slot' : owing.join('; ');
  }
}
