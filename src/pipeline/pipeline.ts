import type pg from 'pg';
import type { Batch } from '../domain/types.js';
import { describeError, type PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../server/metrics.js';
import type { Sink } from '../sinks/sink.js';
import type { Change } from '../source/changes.js';
import { ContentDimension } from '../source/content-dimension.js';
import { ReplicationSource } from '../source/replication-source.js';
import { BatchAssembler } from './batch-assembler.js';
import { Checkpoint } from './checkpoint.js';
import { Fanout } from './fanout.js';

export interface PipelineOptions {
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
  onBadRow?: (change: Extract<Change, { kind: 'bad-row' }>) => Promise<void>;
  onSinkSuccess?: (sink: string, batch: Batch) => void;
  /** The stream stopped at a point it must not pass (the process should stop with this error). */
  onHalt?: (error: PipelineError) => void;
}

/**
 * Direct mode: replication slot -> batches -> every sink -> checkpoint -> confirm.
 * At most `maxInFlightBatches` batches are being written at once; beyond that the
 * assembler waits, the source pauses, and Postgres holds the rest in the slot.
 */
export class Pipeline {
  readonly source: ReplicationSource;
  private readonly assembler: BatchAssembler;
  private readonly fanout: Fanout;
  private readonly checkpoint: Checkpoint;
  private readonly dimension: ContentDimension;
  private readonly inFlight = new Set<Promise<void>>();
  private slotWaiters: (() => void)[] = [];
  private running = false;

  constructor(private readonly options: PipelineOptions) {
    const logger = options.logger;
    this.dimension = new ContentDimension(options.pool, { logger, slotName: options.slotName, retry: true });
    this.source = new ReplicationSource({
      databaseUrl: options.databaseUrl,
      slotName: options.slotName,
      publicationName: options.publicationName,
      logger,
      metrics: options.metrics,
      onDisconnect: async () => {
        this.assembler.resetTransaction();
        await this.assembler.flush();
      },
      isDrained: () => this.isDrained(),
      onHalt: (error) => {
        // Hand on the complete transactions before the halt point; nothing after it.
        void this.assembler.flush().catch(() => undefined);
        options.onHalt?.(error);
      },
    });
    this.checkpoint = new Checkpoint((lsn) => this.source.acknowledge(lsn));
    this.fanout = new Fanout({
      sinks: options.sinks,
      metrics: options.metrics,
      logger,
      onSuccess: options.onSinkSuccess,
    });
    this.assembler = new BatchAssembler({
      stream: options.slotName,
      maxRows: options.batchMaxRows,
      maxWaitMs: options.batchMaxWaitMs,
      dimension: this.dimension,
      metrics: options.metrics,
      logger,
      dispatch: (batch) => this.dispatch(batch),
      sinksIdle: () => this.inFlight.size === 0,
      onBadRow: options.onBadRow ?? (async () => undefined),
    });
  }

  /** Title of a known content id (for the dashboard). */
  contentTitle(id: string): string | null {
    return this.dimension.peek(id)?.title ?? null;
  }

  /** Everything received is delivered and confirmed: nothing open, buffered or in flight. */
  isDrained(): boolean {
    return this.assembler.isIdle && this.inFlight.size === 0 && this.checkpoint.inFlight === 0;
  }

  get isRunning(): boolean {
    return this.running;
  }

  async start(): Promise<void> {
    const loaded = await this.dimension.loadAsOfSlot();
    this.options.logger.info(
      { content: loaded.rows, from: loaded.from, asOf: loaded.asOf },
      'content dimension loaded',
    );
    for (const sink of this.options.sinks) await sink.start();
    await this.source.start(this.assembler.handle);
    this.running = true;
  }

  /** Drains: stop taking changes, write what is open, confirm it, close everything. */
  async stop(): Promise<void> {
    this.assembler.close();
    this.dimension.close();
    await this.assembler.flush().catch(() => undefined);
    const drained = Promise.allSettled([...this.inFlight]);
    const timeout = new Promise((resolve) => setTimeout(resolve, 15_000).unref());
    if ((await Promise.race([drained.then(() => 'drained'), timeout])) !== 'drained') {
      this.options.logger.warn(
        'shutdown: sinks did not drain within 15 s; unconfirmed events will be replayed',
      );
      this.fanout.cancel();
    }
    await this.source.stop();
    this.running = false;
    for (const sink of this.options.sinks) {
      await sink
        .stop()
        .catch((err) => this.options.logger.warn(`stopping sink ${sink.name}: ${describeError(err)}`));
    }
  }

  private async dispatch(batch: Batch): Promise<void> {
    while (this.inFlight.size >= this.options.maxInFlightBatches) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    this.checkpoint.register(batch.seq, batch.ackLsn);
    this.options.metrics.inFlightBatches.set(this.inFlight.size + 1);
    const work: Promise<void> = this.fanout
      .write(batch)
      .then(() => this.checkpoint.complete(batch.seq))
      .finally(() => {
        this.inFlight.delete(work);
        this.options.metrics.inFlightBatches.set(this.inFlight.size);
        this.slotWaiters.shift()?.();
      });
    work.catch(() => undefined);
    this.inFlight.add(work);
  }
}
