import path from 'node:path';
import {
  DuckDBInstance,
  type DuckDBAppender,
  type DuckDBConnection,
  type DuckDBDataChunk,
} from '@duckdb/node-api';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { Batch, EnrichedEvent } from '../../domain/types.js';
import { configError, describeError, ErrorCodes, PipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { Sink } from '../sink.js';
import { SourceIdentity, type PositionedStream } from '../source-identity.js';
import { invalidatesDatabase, isDuplicateKey, isLockConflict, transientWriteError } from './duckdb/errors.js';
import { PositionMemory, type WritePlan } from './duckdb/positions.js';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { chunkLayout, chunksOf, type ChunkLayout } from './duckdb/rows.js';
import {
  analyticsTableIn,
  createEventsTableSql,
  createPositionTableSql,
  duckDbColumnType,
  positionTableIn,
} from './duckdb/schema.js';
import { DEFAULT_KEY_TYPES, destinationShapeError, EVENT_COLUMNS, keyColumnDifferences } from './columns.js';
import { makeDirs } from '../../make-dirs.js';

export { analyticsTableIn } from './duckdb/schema.js';
export { RowConversionError, DuckDbTransientError } from './duckdb/errors.js';

export const ANALYTICS_TABLE = 'engagement.events_enriched';

/**
 * DuckDB's threads: one (the thread running a statement or flush does all of its work). With
 * two, the same writes cost 4-7 µs more CPU per row on DuckDB's threads (src/bench/duckdb-sink.ts,
 * batches of 2,000) and went no faster; a second thread would only speed up the dashboard's
 * scans of a large table, on a machine the pipeline shares.
 */
export const DEFAULT_THREADS = 1;

/**
 * The WAL size at which DuckDB checkpoints (its default: 16MB). A checkpoint compresses and
 * writes the row groups that changed, the table's last, partly filled one included: with
 * 16MB (about 50,000 of our rows) the same row group was compressed again at every checkpoint
 * until it filled (122,880 rows). At 64MB the catch-up of 2,000,000 events cost 23.8 µs of
 * pipeline CPU per event instead of 31.3 (35.6k events/s against 25.8k; 256MB: 26.2 µs), and
 * the sink alone 10.8 µs per row instead of 13.5 (bench/results/2026-12-02-duckdb-checkpoint.md).
 * The price: up to 64MB of WAL to replay after a crash (a few seconds at start) and to
 * checkpoint at a clean stop.
 */
const CHECKPOINT_THRESHOLD = '64MB';

export interface DuckDbSinkOptions {
  path: string;
  logger: Logger;
  /**
   * When another process holds the file's write lock at start: false (default) fails
   * start() with EP_ERR_ANALYTICS_LOCKED (a scale-out worker must refuse, not queue up);
   * true starts anyway and every write() retries the open and fails with that code until
   * the lock is free. The direct pipeline sets it: its fan-out retries the write while the
   * source position is held, so a lingering writer (an old instance still draining, an
   * analyst's read-write session) delays the analytics copy instead of crash-looping the
   * whole pipeline.
   */
  waitWhileLocked?: boolean;
  /** DuckDB `memory_limit` (DUCKDB_MEMORY_LIMIT), e.g. 64MB. */
  memoryLimit?: string;
  /** DuckDB `threads` (default DEFAULT_THREADS). */
  threads?: number;
  /**
   * The one stream whose positions recognise replays (direct mode: the replication slot) and
   * how to learn its source's identity (the Postgres system identifier). Batches of other
   * streams, and all batches when this is unset, are checked by event_id instead.
   */
  positionedStream?: PositionedStream;
  /** The source's key types: content_id/user_id are typed from them (default: UUID keys). */
  keyTypes?: KeyTypes;
  /** Tests only: called between the appended rows' flush and COMMIT (e.g. to die there). */
  beforeCommit?: (plan: WritePlan) => void;
}

interface OpenDb {
  instance: DuckDBInstance;
  connection: DuckDBConnection;
  appender: DuckDBAppender;
  table: string;
  positionTable: string;
  positions: PositionMemory;
}

/**
 * DuckDB, the embedded analytics default: one row per event_id in engagement.events_enriched.
 *
 * Each write is ONE DuckDB transaction: BEGIN; Appender rows straight into the keyed table;
 * flush (it joins the open transaction); upsert the stream's row in `sink_position`; COMMIT.
 * A replay is recognised by position (events at or below the stored position are skipped) or,
 * for streams without trusted positions, by reading which of the batch's event_ids the table
 * already holds within the batch's id range (see PositionMemory). The primary key backs both:
 * a duplicate that slips through fails the flush, and the batch is redone with the id check.
 *
 * Failure discipline (DuckDB's COMMIT of a transaction in which a statement failed returns
 * success and silently rolls back, and an Appender dropped while holding rows flushes them
 * again from its destructor into whatever transaction is open then):
 * - rows are converted in JS first; the Appender only ever receives whole DataChunks;
 * - on every error path the Appender is cleared and the transaction rolled back, never
 *   committed; any failure that is not about the rows closes the database, and the next
 *   write reopens it and reloads the positions from the file.
 *
 * DuckDB admits one writing process per file; a second gets a clear error, not a corrupt file.
 */
export class DuckDbSink implements Sink {
  readonly name = 'analytics';
  private db: OpenDb | null = null;
  private readonly identity: SourceIdentity;
  /** For the dashboard's reads (analytics-queries): a connection of its own, opened on first use. */
  readonly dialect = 'duckdb' as const;
  tableName = ANALYTICS_TABLE;
  private reader: DuckDBConnection | null = null;
  private readonly keyTypes: KeyTypes;
  private readonly layout: ChunkLayout;

  constructor(private readonly options: DuckDbSinkOptions) {
    this.keyTypes = options.keyTypes ?? DEFAULT_KEY_TYPES;
    this.layout = chunkLayout(this.keyTypes);
    this.identity = new SourceIdentity(options.positionedStream, {
      code: ErrorCodes.ANALYTICS_UNAVAILABLE,
      sink: 'DuckDB',
    });
  }

  async start(): Promise<void> {
    const file = this.options.path;
    if (file !== ':memory:') {
      try {
        makeDirs(path.dirname(path.resolve(file)));
      } catch (err) {
        throw configError(`ANALYTICS_URL: ${(err as Error).message}`);
      }
    }
    try {
      await this.open();
    } catch (err) {
      const locked = err instanceof PipelineError && err.code === ErrorCodes.ANALYTICS_LOCKED;
      if (!locked || !this.options.waitWhileLocked) throw err;
      // The fan-out logs the failing write once (with this code and the fix) and its recovery.
    }
  }

  async write(batch: Batch, _signal?: AbortSignal): Promise<void> {
    if (batch.events.length === 0) return;
    const db = this.db ?? (await this.open());
    const plan = db.positions.plan(batch, await this.identity.of(batch.stream));
    if (plan.events.length === 0) return; // all replayed
    try {
      await this.commit(db, plan);
    } catch (err) {
      if (plan.checkIds || !isDuplicateKey(err)) throw err;
      // A row the table already holds reached the position-only path (an event written by
      // another slot, or a restored cluster): redo the batch with the id check.
      this.options.logger.warn(
        { stream: plan.stream, minId: plan.minId, maxId: plan.maxId },
        'batch overlapped rows already stored; re-applied with the event_id check',
      );
      await this.commit(db, { ...plan, checkIds: true });
    }
  }

  /**
   * A read-only query on the same database (DuckDB admits one process; its other connections
   * read a consistent snapshot while writes go on). Fails while the file is not open.
   */
  async query(sql: string): Promise<Record<string, unknown>[]> {
    if (!this.db) throw new Error('the DuckDB file is not open (locked by another process?)');
    this.reader ??= await this.db.instance.connect();
    const result = await this.reader.runAndReadAll(sql);
    return result.getRowObjectsJson() as Record<string, unknown>[];
  }

  async stop(): Promise<void> {
    this.reader?.closeSync();
    this.reader = null;
    const db = this.db;
    this.db = null;
    if (!db) return;
    await db.connection.run('CHECKPOINT').catch(() => undefined);
    close(db);
  }

  /**
   * Rows are checked here, before any of them reaches DuckDB: every value is converted, and a
   * value the table cannot take throws a RowConversionError naming the event, column and value.
   * Value-range checks belong here too.
   */
  private async prepareRows(events: readonly EnrichedEvent[]): Promise<DuckDBDataChunk[]> {
    const chunks: DuckDBDataChunk[] = [];
    for (const chunk of chunksOf(events, this.layout, SLICE_ROWS)) {
      chunks.push(chunk);
      if (chunks.length * SLICE_ROWS < events.length) await yieldToEventLoop();
    }
    return chunks;
  }

  /** One transaction; on any error nothing of it stays (see the class comment). */
  private async commit(db: OpenDb, plan: WritePlan): Promise<void> {
    const { connection, appender } = db;
    let events = plan.events;
    let chunks: DuckDBDataChunk[] | null = null;
    try {
      if (!plan.checkIds) chunks = await this.prepareRows(events);
      await connection.run('BEGIN TRANSACTION');
      if (plan.checkIds) {
        const stored = await storedIdsOf(connection, db.table, events);
        if (stored.size > 0) events = events.filter((e) => !stored.has(e.event_id));
        chunks = await this.prepareRows(events);
      }
      // Flushed FLUSH_ROWS at a time (each flush joins the open transaction), yielding in
      // between: a merged write of thousands of rows never blocks the event loop (and Redis)
      // in one go, while each flush's fixed cost is shared by several slices.
      for (let i = 0, pending = 0; i < chunks!.length; i++) {
        appender.appendDataChunk(chunks![i]);
        pending += SLICE_ROWS;
        if (pending >= FLUSH_ROWS || i === chunks!.length - 1) {
          appender.flushSync();
          pending = 0;
          if (i < chunks!.length - 1) await yieldToEventLoop();
        }
      }
      for (const [stream, sourceId, position] of db.positions.updates(plan)) {
        await connection.run(
          db.positions.hasRow(stream)
            ? `UPDATE ${db.positionTable} SET source_id = $2, position = $3, updated_at = now() WHERE stream = $1`
            : `INSERT INTO ${db.positionTable} (stream, source_id, position) VALUES ($1, $2, $3)`,
          [stream, sourceId, position],
        );
      }
      this.options.beforeCommit?.(plan);
      await connection.run('COMMIT');
    } catch (err) {
      const rowsRefused = err instanceof PipelineError; // a row's value (from prepareRows)
      const keepOpen = await this.abandon(db);
      if (!keepOpen || !(rowsRefused || isDuplicateKey(err)) || invalidatesDatabase(err)) {
        // Unknown state (IO, a failed COMMIT, a broken Appender): reopen from the file, which
        // also reloads the positions, on the next write.
        this.db = null;
        this.reader?.closeSync();
        this.reader = null;
        close(db);
      }
      if (rowsRefused) throw err;
      throw transientWriteError(err, isDuplicateKey(err) ? 'append' : 'write');
    }
    db.positions.committed(plan);
  }

  /**
   * Nothing of a failed transaction may survive: no rows in the Appender, no open transaction.
   * Returns false when that could not be ensured (the database must be closed).
   */
  private async abandon(db: OpenDb): Promise<boolean> {
    let clean = true;
    try {
      db.appender.clear();
    } catch (err) {
      this.options.logger.warn(`clearing the DuckDB appender: ${describeError(err)}`);
      clean = false;
    }
    try {
      await db.connection.run('ROLLBACK');
    } catch (err) {
      // After a failed COMMIT (or a failure before BEGIN) no transaction is left: expected.
      if (!/no transaction/i.test((err as Error).message ?? '')) clean = false;
    }
    return clean;
  }

  private async open(): Promise<OpenDb> {
    const file = this.options.path;
    let instance: DuckDBInstance;
    try {
      // DuckDB's buffer pool defaults to 80 % of RAM; bounded, it spills and evicts instead.
      instance = await DuckDBInstance.create(file, {
        ...(this.options.memoryLimit ? { memory_limit: this.options.memoryLimit } : {}),
        threads: String(this.options.threads ?? DEFAULT_THREADS),
        checkpoint_threshold: CHECKPOINT_THRESHOLD,
      });
    } catch (err) {
      if (isLockConflict(err) || /lock/i.test((err as Error).message ?? '')) {
        throw new PipelineError(
          ErrorCodes.ANALYTICS_LOCKED,
          `DuckDB file ${file} is in use by another process (DuckDB admits one writer)`,
          'config',
          'stop the other pipeline, or use ClickHouse/BigQuery for several workers',
        );
      }
      throw transientWriteError(err, `open of ${file}`);
    }
    let connection: DuckDBConnection | null = null;
    try {
      connection = await instance.connect();
      const catalog = String((await connection.runAndReadAll('SELECT current_database()')).getRows()[0]![0]);
      const { schema, qualified } = analyticsTableIn(catalog);
      const positionTable = positionTableIn(catalog);
      await connection.run(createEventsTableSql(schema, qualified, this.keyTypes));
      await this.checkKeyColumns(connection, catalog, schema, qualified);
      await connection.run(createPositionTableSql(positionTable));
      const positions = new PositionMemory();
      const rows = (
        await connection.runAndReadAll(`SELECT stream, source_id, position FROM ${positionTable}`)
      ).getRows();
      positions.load(
        rows.map(([stream, sourceId, position]) => ({
          stream: String(stream),
          sourceId: sourceId === null ? null : String(sourceId),
          position: String(position),
        })),
      );
      const appender = await connection.createAppender('events_enriched', schema, catalog);
      this.db = { instance, connection, appender, table: qualified, positionTable, positions };
      this.tableName = qualified;
      return this.db;
    } catch (err) {
      connection?.closeSync();
      instance.closeSync();
      throw transientWriteError(err, `open of ${file}`);
    }
  }

  /**
   * A table created earlier for other key types (another source, or the same one before its
   * keys changed type) is refused with one line, never written to with cast keys.
   */
  private async checkKeyColumns(
    connection: DuckDBConnection,
    catalog: string,
    schema: string,
    qualified: string,
  ): Promise<void> {
    const reader = await connection.runAndReadAll(
      `SELECT column_name, data_type FROM information_schema.columns
        WHERE table_catalog = $1 AND table_schema = $2 AND table_name = 'events_enriched'`,
      [catalog, schema],
    );
    const existing = new Map(reader.getRows().map(([name, type]) => [String(name), String(type)]));
    const expected = new Map(EVENT_COLUMNS.map((c) => [c.name, duckDbColumnType(c, this.keyTypes)]));
    const differences = keyColumnDifferences(existing, expected);
    if (differences.length === 0) return;
    throw destinationShapeError(
      'DuckDB',
      `${qualified} in ${this.options.path}`,
      differences,
      this.keyTypes,
      `keep that table for its old source and point ANALYTICS_URL at another file (duckdb:./data/other.duckdb), ` +
        `or rename it (ALTER TABLE ${qualified} RENAME TO events_enriched_old) or drop it and re-run ` +
        '`engagement backfill` to fill the new one',
    );
  }
}

/**
 * Which of `events`' ids the table holds: one range read per run of ids without a gap wider
 * than ID_GAP (rows are stored in about id order, so each read touches few row groups; a batch
 * whose ids are far apart does not scan everything between them).
 */
async function storedIdsOf(
  connection: DuckDBConnection,
  table: string,
  events: readonly EnrichedEvent[],
): Promise<Set<number>> {
  const ids = events.map((e) => e.event_id).sort((a, b) => a - b);
  const stored = new Set<number>();
  let lo = 0;
  for (let i = 1; i <= ids.length; i++) {
    if (i < ids.length && ids[i] - ids[i - 1] <= ID_GAP) continue;
    const reader = await connection.runAndReadAll(
      `SELECT event_id FROM ${table} WHERE event_id BETWEEN $1 AND $2`,
      [BigInt(ids[lo]), BigInt(ids[i - 1])],
    );
    for (const [id] of reader.getRows()) stored.add(Number(id));
    lo = i;
  }
  return stored;
}

const ID_GAP = 65_536;

/**
 * Rows converted into one DataChunk between two yields to the event loop: about a millisecond
 * of work, so the other sinks' replies are handled while a large merged write
 * (ANALYTICS_WRITE_INTERVAL_MS) goes in.
 */
const SLICE_ROWS = 256;

/**
 * Rows appended between two Appender flushes (and yields): a flush has a large fixed cost
 * (flushing every 256 rows cost ~5 µs more JS-thread CPU per row than every 2,048), and one
 * of 2,048 rows is a few milliseconds of DuckDB's work on the event loop.
 */
const FLUSH_ROWS = 2048;

function close(db: OpenDb): void {
  try {
    db.appender.clear(); // never let closeSync (or V8) flush leftover rows
    db.appender.closeSync();
  } catch {
    // closing anyway
  }
  try {
    db.connection.closeSync();
  } catch {
    // closing anyway
  }
  try {
    db.instance.closeSync();
  } catch {
    // closing anyway
  }
}
