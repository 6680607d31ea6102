import type pg from 'pg';
import { createPool } from '../db/postgres.js';
import { configError, describeError, ErrorCodes, PipelineError } from '../errors.js';
import { buildCatalog, DEFAULT_CATALOG_SEED, DEFAULT_CATALOG_SIZE, type CatalogItem } from './catalog.js';
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
  /** Events per second (> 0). */
  rate: number;
  /** Stop after this many seconds (rate × duration rows). */
  durationSeconds?: number;
  /** Stop after this many rows. With neither, runs until `signal` aborts. */
  count?: number;
  /** Traffic seed (default: random). */
  seed?: number;
  /** Catalogue seed and size (defaults keep one stable catalogue across runs). */
  catalogSeed?: number;
  catalogSize?: number;
  signal?: AbortSignal;
  /** Called once the catalogue is in place, just before the first insert. */
  onStart?: (info: { contentItems: number }) => void;
  onProgress?: (progress: GeneratorProgress) => void;
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
  const pool = createPool(options.databaseUrl, INSERT_CONNECTIONS, 'engagement-generate');
  try {
    const catalog = await ensureCatalog(
      pool,
      buildCatalog({
        seed: options.catalogSeed ?? DEFAULT_CATALOG_SEED,
        size: options.catalogSize ?? DEFAULT_CATALOG_SIZE,
      }),
    );
    const traffic = createTraffic({ catalog, seed: options.seed ?? Math.floor(Math.random() * 2 ** 32) });
    options.onStart?.({ contentItems: catalog.length });

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
          const n = Math.min(owed - from, MAX_ROWS_PER_INSERT);
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
        await Promise.all(chunks.map((rows) => insertEvents(pool, rows)));
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
 * Inserts the catalogue where absent and returns the items that exist afterwards (an id
 * or slug already taken by a user's own row is skipped, never overwritten). Fails with one
 * line when the source tables are missing.
 */
export async function ensureCatalog(pool: pg.Pool, catalog: CatalogItem[]): Promise<CatalogItem[]> {
  const { rows } = await pool
    .query<{ content: string | null; events: string | null }>(
      `SELECT to_regclass('content')::text AS content, to_regclass('engagement_events')::text AS events`,
    )
    .catch((err: unknown) => {
      // The first statement of the run: a failure here is a connection/config problem, not a bug.
      throw new PipelineError(
        ErrorCodes.POSTGRES_UNREACHABLE,
        `cannot query Postgres: ${describeError(err)}`,
        'config',
        'check DATABASE_URL and that Postgres is running',
      );
    });
  const missing = [rows[0].content ? null : 'content', rows[0].events ? null : 'engagement_events'].filter(
    Boolean,
  );
  if (missing.length > 0) {
    const what = missing.length > 1 ? 'tables' : 'table';
    throw configError(
      `source ${what} ${missing.join(' and ')} not found in the database`,
      'run `engagement migrate` first',
    );
  }
  await pool.query(
    `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[])
     ON CONFLICT DO NOTHING`,
    [
      catalog.map((c) => c.id),
      catalog.map((c) => c.slug),
      catalog.map((c) => c.title),
      catalog.map((c) => c.content_type),
      catalog.map((c) => c.length_seconds),
      catalog.map((c) => c.publish_ts),
    ],
  );
  const present = await pool.query<{ id: string }>(
    `SELECT id::text FROM content WHERE id = ANY($1::uuid[])`,
    [catalog.map((c) => c.id)],
  );
  const ids = new Set(present.rows.map((r) => r.id));
  const usable = catalog.filter((c) => ids.has(c.id));
  if (usable.length === 0) throw configError('no generator content could be inserted into `content`');
  return usable;
}

/** One multi-row INSERT: seven array parameters, however many rows. */
async function insertEvents(pool: pg.Pool, rows: GeneratedEvent[]): Promise<void> {
  await pool.query(
    `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::jsonb[])`,
    [
      rows.map((r) => r.content_id),
      rows.map((r) => r.user_id),
      rows.map((r) => r.event_type),
      rows.map((r) => r.event_ts),
      rows.map((r) => r.duration_ms),
      rows.map((r) => r.device),
      rows.map((r) => JSON.stringify(r.raw_payload)),
    ],
  );
}
