import type { Batch } from '../../domain/types.js';
import { describeError, ErrorCodes, PipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { Sink } from '../sink.js';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { DEFAULT_KEY_TYPES } from './columns.js';
import type { EncodedChunk } from './duckdb/chunks.js';
import { CHUNK_ROWS, chunkLayout, encodeChunks, type ChunkLayout } from './duckdb/rows.js';
import { DuckDbThread } from './duckdb/thread.js';
import { DuckDbWriter, type DuckDbWriterOptions, type WarnLog } from './duckdb/writer.js';

export { ANALYTICS_TABLE, analyticsTableIn } from './duckdb/schema.js';
export { RowConversionError, DuckDbTransientError } from './duckdb/errors.js';
export { DEFAULT_THREADS } from './duckdb/writer.js';

export interface DuckDbSinkOptions extends DuckDbWriterOptions {
  logger: Logger;
  /**
   * The one stream whose positions recognise replays (direct mode: the replication slot) and
   * how to learn its source's identity (the Postgres system identifier). Batches of other
   * streams, and all batches when this is unset, are checked by event_id instead.
   */
  positionedStream?: { stream: string; sourceId: () => Promise<string> };
  /**
   * Where the writer runs: `worker` (default), a thread of its own (./duckdb/thread.ts);
   * `main`, this thread (tests and benches that measure the writer alone).
   */
  thread?: 'worker' | 'main';
}

/**
 * DuckDB, the embedded analytics default: one row per event_id in engagement.events_enriched,
 * written exactly once (./duckdb/writer.ts says how). This is the Sink the fan-out sees: it
 * learns the source's identity here and hands each batch to the writer, on its own thread.
 */
export class DuckDbSink implements Sink {
  readonly name = 'analytics';
  /** For the dashboard's reads (analytics-queries). */
  readonly dialect = 'duckdb' as const;
  private readonly writer: DuckDbWriter | DuckDbThread;
  private readonly layout: ChunkLayout;
  private sourceId: string | null = null;

  constructor(private readonly options: DuckDbSinkOptions) {
    const { logger, positionedStream: _p, thread, ...writerOptions } = options;
    this.layout = chunkLayout(options.keyTypes ?? DEFAULT_KEY_TYPES);
    const warn: WarnLog = (message, fields) => logger.warn(fields ?? {}, message);
    this.writer =
      thread === 'main' ? new DuckDbWriter(writerOptions, warn) : new DuckDbThread(writerOptions, warn);
  }

  get tableName(): string {
    return this.writer.tableName;
  }

  start(): Promise<void> {
    return this.writer.start();
  }

  /**
   * The rows are encoded here, on the caller's thread: every value is converted, and a value
   * the table cannot take throws a RowConversionError naming the event, column and value
   * before anything reaches DuckDB.
   */
  async write(batch: Batch, _signal?: AbortSignal): Promise<void> {
    const events = batch.events;
    if (events.length === 0) return;
    const sourceId = await this.sourceIdOf(batch.stream);
    const chunks: EncodedChunk[] = [];
    for (const chunk of encodeChunks(events, this.layout)) {
      chunks.push(chunk);
      // About 2-4 ms of work per chunk: the other sinks' replies are handled in between.
      if (chunks.length * CHUNK_ROWS < events.length) await yieldToEventLoop();
    }
    const ids = new Float64Array(events.length);
    for (let i = 0; i < events.length; i++) ids[i] = events[i].event_id;
    await this.writer.write({ stream: batch.stream, ids, positions: batch.positions, chunks }, sourceId);
  }

  /**
   * A read-only query on the same database (DuckDB admits one process; its other connections
   * read a consistent snapshot while writes go on). Fails while the file is not open.
   */
  query(sql: string): Promise<Record<string, unknown>[]> {
    return this.writer.query(sql);
  }

  stop(): Promise<void> {
    return this.writer.stop();
  }

  private async sourceIdOf(stream: string): Promise<string | null> {
    const positioned = this.options.positionedStream;
    if (!positioned || positioned.stream !== stream) return null;
    if (this.sourceId === null) {
      try {
        this.sourceId = await positioned.sourceId();
      } catch (err) {
        throw new PipelineError(
          ErrorCodes.ANALYTICS_UNAVAILABLE,
          `DuckDB sink: cannot read the source's identity: ${describeError(err)}`,
          'transient',
        );
      }
    }
    return this.sourceId;
  }
}
