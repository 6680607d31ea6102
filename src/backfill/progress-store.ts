import type pg from 'pg';
import { STATE_SCHEMA } from '../db/schema.js';
import { configError } from '../errors.js';
import { BACKFILL_LOCK_CLASS } from '../db/status-queries.js';

const TABLE = `${STATE_SCHEMA}.backfill_progress`;

export interface BackfillRun {
  id: string;
  fromTs: string;
  toTs: string;
  sinks: string;
  /** Keyset position: every id <= lastId inside the range is written to every sink. */
  lastId: string;
  /** The highest id when the run started; rows inserted later are the stream's. */
  maxId: string;
  rowsDone: number;
  rowsTotal: number | null;
  redisApplied: number;
  resumed: boolean;
}

/**
 * engagement_pipeline.backfill_progress: one row per backfill run, updated after every chunk
 * all sinks accepted, so a killed run resumes where it stopped. A run is identified by its
 * range, sinks and destinations (destinations.ts; a run from before they were stored matches
 * any); while it runs, its process holds an advisory lock on the row's id.
 */
export class BackfillProgressStore {
  constructor(private readonly client: pg.Client) {}

  /** The unfinished run with the same range, sinks and destinations, if any. */
  async findResumable(
    fromTs: string,
    toTs: string,
    sinks: string,
    destinations: string,
  ): Promise<BackfillRun | null> {
    const { rows } = await this.query(
      `SELECT id::text, to_json(from_ts) #>> '{}' AS from_ts, to_json(to_ts) #>> '{}' AS to_ts, sinks,
              coalesce(last_id, 0)::text AS last_id, max_id::text, rows_done::text, rows_total::text,
              redis_applied::text
         FROM ${TABLE}
        WHERE from_ts = $1 AND to_ts = $2 AND sinks = $3 AND status <> 'done' AND max_id IS NOT NULL
          AND coalesce(destinations, $4) = $4
        ORDER BY id DESC LIMIT 1`,
      [fromTs, toTs, sinks, destinations],
    );
    if (rows.length === 0) return null;
    const r = rows[0];
    return {
      id: r.id,
      fromTs: r.from_ts,
      toTs: r.to_ts,
      sinks: r.sinks,
      lastId: r.last_id,
      maxId: r.max_id,
      rowsDone: Number(r.rows_done),
      rowsTotal: r.rows_total === null ? null : Number(r.rows_total),
      redisApplied: Number(r.redis_applied),
      resumed: true,
    };
  }

  /**
   * The end of the latest unfinished run with the same start and sinks that ends before
   * `before`: a `--to now` run killed earlier (its "now" was stored), which a new `--to now`
   * resumes before covering the rest.
   */
  async unfinishedEndBefore(
    fromTs: string,
    before: string,
    sinks: string,
    destinations: string,
  ): Promise<string | null> {
    const { rows } = await this.query(
      `SELECT to_json(to_ts) #>> '{}' AS to_ts
         FROM ${TABLE}
        WHERE from_ts = $1 AND to_ts < $2 AND to_ts > $1 AND sinks = $3 AND status <> 'done' AND max_id IS NOT NULL
          AND coalesce(destinations, $4) = $4
        ORDER BY id DESC LIMIT 1`,
      [fromTs, before, sinks, destinations],
    );
    return rows.length === 0 ? null : (rows[0].to_ts as string);
  }

  async create(
    fromTs: string,
    toTs: string,
    sinks: string,
    destinations: string,
    maxId: string,
    total: number,
  ): Promise<BackfillRun> {
    const { rows } = await this.query(
      `INSERT INTO ${TABLE} (from_ts, to_ts, sinks, destinations, last_id, max_id, rows_total)
       VALUES ($1, $2, $3, $4, 0, $5, $6) RETURNING id::text`,
      [fromTs, toTs, sinks, destinations, maxId, total],
    );
    return {
      id: rows[0].id,
      fromTs,
      toTs,
      sinks,
      lastId: '0',
      maxId,
      rowsDone: 0,
      rowsTotal: total,
      redisApplied: 0,
      resumed: false,
    };
  }

  /** A state schema from before a column this version reads: one line saying to migrate. */
  private async query(text: string, params: unknown[]): Promise<pg.QueryResult> {
    try {
      return await this.client.query(text, params);
    } catch (err) {
      if ((err as { code?: string }).code !== '42703') throw err;
      throw configError(
        `${TABLE} predates this version (${(err as Error).message})`,
        'run `engagement migrate` once (it adds the missing columns; nothing else changes)',
      );
    }
  }

  /** A run from before destinations were stored takes the first resumer's (it resumes nowhere else). */
  async stampDestinations(run: BackfillRun, destinations: string): Promise<void> {
    await this.query(`UPDATE ${TABLE} SET destinations = $2 WHERE id = $1 AND destinations IS NULL`, [
      run.id,
      destinations,
    ]);
  }

  /** False when another process is running this backfill right now. */
  async lock(id: string): Promise<boolean> {
    const { rows } = await this.client.query<{ ok: boolean }>(
      'SELECT pg_try_advisory_lock($1, $2::int) AS ok',
      [BACKFILL_LOCK_CLASS, id],
    );
    return rows[0].ok;
  }

  async advance(run: BackfillRun, lastId: string, rows: number, redisApplied: number): Promise<void> {
    run.lastId = lastId;
    run.rowsDone += rows;
    run.redisApplied += redisApplied;
    await this.client.query(
      `UPDATE ${TABLE} SET last_id = $2, rows_done = $3, redis_applied = $4, status = 'running',
              error = NULL, updated_at = now() WHERE id = $1`,
      [run.id, lastId, run.rowsDone, run.redisApplied],
    );
  }

  async finish(run: BackfillRun, status: 'done' | 'failed', error?: string): Promise<void> {
    await this.client.query(`UPDATE ${TABLE} SET status = $2, error = $3, updated_at = now() WHERE id = $1`, [
      run.id,
      status,
      error ?? null,
    ]);
  }
}
