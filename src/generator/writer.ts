import type pg from 'pg';
import { createPool, isConnectionLost } from '../db/postgres.js';
import type { ShapeSettings } from '../db/catalog.js';
import { display, shapeError } from '../db/catalog.js';
import type { TableName } from '../domain/source-shape.js';
import { configError, describeError, ErrorCodes, PipelineError } from '../errors.js';
import { buildCatalog, DEFAULT_CATALOG_SEED, DEFAULT_CATALOG_SIZE, type CatalogItem } from './catalog.js';
import { loadTarget, type GeneratorTarget } from './target.js';
import { createTraffic, type GeneratedEvent } from './traffic.js';
import { pause } from '../retry/retry.js';

/**
 * Writes synthetic traffic into Postgres at a target rate. A tick every TICK_MS inserts
 * exactly the rows owed since the start (rate × elapsed − inserted) in one multi-row
 * INSERT, so a slow statement is made up on the next tick and the achieved rate tracks
 * the target instead of drifting with timer jitter.
 */
export interface GeneratorProgress {
  inserted: number;
  elapsedSeconds: number;
  /** inserted / elapsedSeconds. */
  achievedRate: number;
  target: number | null;
}

export interface GeneratorOptions {
  databaseUrl: string;
  /** EVENTS_TABLE / CONTENT_TABLE / CONTENT_KEY: the tables the pipeline streams (default: the default tables). */
  source?: ShapeSettings;
  /** Events per second (> 0). */
  rate: number;
  /** Stop after this many seconds (rate × duration rows). */
  durationSeconds?: number;
  /** Stop after this many rows. With neither, runs until `signal` aborts. */
  count?: number;
  /**
   * Rows per INSERT (each its own transaction) at most (default 2,000). 1 makes the shape most
   * applications write: one event per transaction, from several connections at once.
   */
  rowsPerTransaction?: number;
  /** Traffic seed (default: random). */
  seed?: number;
  /** Catalogue seed and size (defaults keep one stable catalogue across runs). */
  catalogSeed?: number;
  catalogSize?: number;
  signal?: AbortSignal;
  /** Called once the catalogue is in place, just before the first insert. */
  onStart?: (info: { contentItems: number; eventsTable: string }) => void;
  onProgress?: (progress: GeneratorProgress) => void;
  /** Postgres went away (a restart): the run waits for it; told once per outage, and when it is back. */
  onPostgresGone?: (error: string) => void;
  onPostgresBack?: () => void;
}

export interface GeneratorResult {
  inserted: number;
  seconds: number;
  achievedRate: number;
}

const TICK_MS = 50;
/** Rows per statement at most; a tick that owes more sends several. */
const MAX_ROWS_PER_INSERT = 2000;
/** Parallel INSERTs at most (pool size): one connection tops out near 20k rows/s here. */
const INSERT_CONNECTIONS = 4;

export async function runGenerator(options: GeneratorOptions): Promise<GeneratorResult> {
  const { rate, signal } = options;
  if (!(rate > 0) || !Number.isFinite(rate))
    throw new RangeError(`rate must be a positive number, got ${rate}`);
  const target = targetRows(options);
  const finishAtMs = target === null ? null : (target * 1000) / rate;
  const rowsPerStatement = options.rowsPerTransaction ?? MAX_ROWS_PER_INSERT;
  if (!Number.isInteger(rowsPerStatement) || rowsPerStatement < 1)
    throw new RangeError(`rowsPerTransaction must be a positive integer, got ${rowsPerStatement}`);
  const pool = createPool(options.databaseUrl, INSERT_CONNECTIONS, 'engagement-generate');
  try {
    const { catalog, target: tables } = await ensureCatalog(
      pool,
      buildCatalog({
        seed: options.catalogSeed ?? DEFAULT_CATALOG_SEED,
        size: options.catalogSize ?? DEFAULT_CATALOG_SIZE,
      }),
      options.source,
    );
    const traffic = createTraffic({ catalog, seed: options.seed ?? Math.floor(Math.random() * 2 ** 32) });
    options.onStart?.({ contentItems: catalog.length, eventsTable: display(tables.shape.events) });

    const startPerf = performance.now();
    const startWall = Date.now();
    let inserted = 0;
    let lastDone = startPerf;
    const progress = (): GeneratorProgress => {
      const elapsedSeconds = (lastDone - startPerf) / 1000;
      return {
        inserted,
        elapsedSeconds,
        achievedRate: elapsedSeconds > 0 ? inserted / elapsedSeconds : 0,
        target,
      };
    };

    while (!signal?.aborted) {
      const elapsedMs = performance.now() - startPerf;
      let owed = Math.floor((rate * elapsedMs) / 1000);
      if (target !== null) owed = Math.min(owed, target);
      while (inserted < owed && !signal?.aborted) {
        // A tick that owes many rows sends them as a few statements in parallel (one per connection).
        const chunks: GeneratedEvent[][] = [];
        let planned = inserted;
        while (planned < owed && chunks.length < INSERT_CONNECTIONS) {
          const from = planned;
          const n = Math.min(owed - from, rowsPerStatement);
          // Each row is stamped at its ideal moment, so event_ts is smooth even though rows go in per
          // tick; when Postgres cannot keep up, never more than a tick in the past (it is "now" data).
          const floor = Date.now() - TICK_MS;
          chunks.push(
            Array.from({ length: n }, (_, k) =>
              traffic.next(Math.max(floor, startWall + ((from + k + 1) * 1000) / rate)),
            ),
          );
          planned += n;
        }
        await Promise.all(chunks.map((rows) => insertWaiting(pool, tables, rows, options)));
        inserted = planned;
      }
      lastDone = performance.now();
      options.onProgress?.(progress());
      if (target !== null && inserted >= target) break;
      // Sleep to the next tick boundary (not a fixed delay) so insert time does not accumulate;
      // the last sleep ends just after the finish time, so the run does not overshoot by a tick.
      const sinceStart = performance.now() - startPerf;
      const toTick = TICK_MS - (sinceStart % TICK_MS);
      const toFinish = finishAtMs === null ? Infinity : finishAtMs - sinceStart + 1;
      await pause(Math.max(1, Math.min(toTick, toFinish)), signal);
    }
    const { elapsedSeconds, achievedRate } = progress();
    return { inserted, seconds: elapsedSeconds, achievedRate };
  } finally {
    await pool.end().catch(() => undefined);
  }
}

function targetRows(options: GeneratorOptions): number | null {
  const limits: number[] = [];
  if (options.durationSeconds !== undefined) limits.push(Math.round(options.rate * options.durationSeconds));
  if (options.count !== undefined) limits.push(options.count);
  return limits.length > 0 ? Math.min(...limits) : null;
}

/**
 * Reads the shape of the source tables (EVENTS_TABLE / CONTENT_TABLE / CONTENT_KEY), inserts
 * the catalogue where absent and returns the items that exist afterwards, keyed as the content
 * table keys them (a key or slug already taken by a user's own row of another type is skipped,
 * never overwritten). Fails with one line when the tables are missing or cannot be filled.
 */
export async function ensureCatalog(
  pool: pg.Pool,
  catalog: CatalogItem[],
  source: ShapeSettings = {},
): Promise<{ catalog: CatalogItem[]; target: GeneratorTarget }> {
  const target = await loadTarget(pool, source).catch((err: unknown) => {
    if (err instanceof PipelineError) throw err;
    // The first statements of the run: a failure here is a connection/config problem, not a bug.
    throw new PipelineError(
      ErrorCodes.POSTGRES_UNREACHABLE,
      `cannot query Postgres: ${describeError(err)}`,
      'config',
      'check DATABASE_URL and that Postgres is running',
    );
  });
  const keyed = target.keyed(catalog);
  const insert = target.insertContent(keyed);
  await pool.query(insert.text, insert.values).catch(refusedRows(target.shape.content));
  const select = target.selectContent(keyed);
  const present = await pool.query<{ key: string; content_type: string | null }>(select.text, select.values);
  const types = new Map(present.rows.map((r) => [r.key, r.content_type]));
  const usable = keyed.filter((c) => types.get(c.id) === c.content_type);
  if (usable.length === 0)
    throw configError(`no generator content could be inserted into ${display(target.shape.content)}`);
  return { catalog: usable, target };
}

/**
 * insertEvents, waiting for Postgres while it restarts (the traffic rides it out as the pipeline
 * does; it stopped at the first fast shutdown). A statement refused is thrown at once.
 */
async function insertWaiting(
  pool: pg.Pool,
  target: GeneratorTarget,
  rows: GeneratedEvent[],
  options: Pick<GeneratorOptions, 'signal' | 'onPostgresGone' | 'onPostgresBack'>,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await insertEvents(pool, target, rows);
      if (attempt > 1) options.onPostgresBack?.();
      return;
    } catch (err) {
      if (options.signal?.aborted || !isConnectionLost(err)) throw err;
      if (attempt === 1) options.onPostgresGone?.(describeError(err));
      await pause(Math.min(2_000, 100 * 2 ** attempt), options.signal);
      if (options.signal?.aborted) return;
    }
  }
}

/** One multi-row INSERT: one array parameter per column, however many rows. */
async function insertEvents(pool: pg.Pool, target: GeneratorTarget, rows: GeneratedEvent[]): Promise<void> {
  const insert = target.insertEvents(rows);
  await pool.query(insert.text, insert.values).catch(refusedRows(target.shape.events));
}

/**
 * Postgres refusing generated values for a column's type or constraint (a VARCHAR(4) event_type,
 * a SMALLINT duration_ms, a CHECK of other content types, no partition for the row): the table is the problem, not the
 * run, so it is the same one-line shape error (exit 2) as a column generate cannot fill, naming
 * the table; every later tick would fail the same way. (Each INSERT is one statement: nothing
 * of it was written.)
 */
function refusedRows(table: TableName): (err: unknown) => never {
  return (err) => {
    const code = (err as { code?: unknown }).code;
    if (typeof code !== 'string' || !(code.startsWith('22') || code === '23514')) throw err;
    throw shapeError(
      `generated rows do not fit ${display(table)}: ${describeError(err)}`,
      'make the table take them (widen the column of that type, relax that constraint, add the partition it names), ' +
        'or generate into other tables (EVENTS_TABLE / CONTENT_TABLE)',
    );
  };
}
