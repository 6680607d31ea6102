import type pg from 'pg';
import { STATE_SCHEMA } from '../db/schema.js';
import {
  columnOrNull,
  DEFAULT_SHAPE,
  qualifiedName,
  quoteIdent,
  type SourceShape,
} from '../domain/source-shape.js';
import type { ContentInfo } from '../domain/types.js';

/**
 * The content columns the dimension holds, as text/JSON-friendly values (one list for every
 * read): the shape's key column as `id` (text, whatever its type), optional columns the table
 * lacks as NULL.
 */
export function contentSelect(shape: SourceShape = DEFAULT_SHAPE): string {
  const optional = (column: string) => `${columnOrNull(shape, 'content', column)}::text AS ${column}`;
  return `SELECT ${quoteIdent(shape.contentKey)}::text AS id, ${optional('slug')}, ${optional('title')},
            content_type::text AS content_type, length_seconds::int AS length_seconds
       FROM ${qualifiedName(shape.content)}`;
}

/** The default tables' content select (see contentSelect). */
export const CONTENT_SELECT = contentSelect(DEFAULT_SHAPE);

const VERSIONS = `${STATE_SCHEMA}.content_versions`;
const ORIGIN = `${STATE_SCHEMA}.content_history`;

/** One change: the row after it (`null`: deleted) in the transaction committing at `commitLsn`. */
export interface ContentVersion {
  key: string;
  commitLsn: string;
  row: ContentInfo | null;
}

type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.Client, 'query'>;

/**
 * The content dimension's changes, each stored with the commit LSN of its transaction
 * (`valid_from_lsn`), per stream (slot). Postgres replays, after a restart, every transaction
 * whose commit record starts at or after the slot's confirmed position, so the dimension
 * as of that position is: for every key, the latest version whose commit LSN is below it.
 * Versions at or above it are rewritten identically when their transactions are replayed.
 *
 * A stream's history starts with a snapshot of `content` (valid from 0/0), taken when
 * `engagement migrate` creates the slot, or at the first start that finds no history.
 */
export class ContentHistory {
  constructor(
    private readonly db: Queryable,
    readonly stream: string,
    private readonly shape: SourceShape = DEFAULT_SHAPE,
  ) {}

  /** The slot's confirmed position (replay starts here) and restart position (safe to prune below). */
  async slotPositions(): Promise<{ confirmed: string; restart: string | null } | null> {
    const { rows } = await this.db.query<{ confirmed: string | null; restart: string | null }>(
      `SELECT confirmed_flush_lsn::text AS confirmed, restart_lsn::text AS restart
         FROM pg_replication_slots WHERE slot_name = $1`,
      [this.stream],
    );
    const row = rows[0];
    return row?.confirmed ? { confirmed: row.confirmed, restart: row.restart } : null;
  }

  async isSeeded(): Promise<boolean> {
    const { rowCount } = await this.db.query(`SELECT 1 FROM ${ORIGIN} WHERE stream = $1`, [this.stream]);
    return rowCount === 1;
  }

  /**
   * Records the content table as it is now as the stream's base versions (one statement, so
   * the marker and the rows commit together). Does nothing for an already seeded stream.
   */
  async seed(): Promise<number> {
    const { rows } = await this.db.query<{ n: string }>(
      `WITH seeded AS (
         INSERT INTO ${VERSIONS} (stream, content_key, valid_from_lsn, row_data, deleted)
         SELECT $1, c.id, '0/0', to_jsonb(c), false FROM (${contentSelect(this.shape)}) c
         WHERE NOT EXISTS (SELECT 1 FROM ${ORIGIN} WHERE stream = $1)
         ON CONFLICT DO NOTHING
         RETURNING 1)
       INSERT INTO ${ORIGIN} (stream, seeded_rows) SELECT $1, count(*) FROM seeded
       ON CONFLICT (stream) DO NOTHING
       RETURNING seeded_rows::text AS n`,
      [this.stream],
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** Forgets the stream's history (its slot was recreated: changes made while it was gone were never streamed). */
  async reset(): Promise<void> {
    await this.db.query(`DELETE FROM ${VERSIONS} WHERE stream = $1`, [this.stream]);
    await this.db.query(`DELETE FROM ${ORIGIN} WHERE stream = $1`, [this.stream]);
  }

  /** Every key's latest version committed before `lsn`; `null` for a deleted row. */
  async asOf(lsn: string): Promise<Map<string, ContentInfo | null>> {
    const { rows } = await this.db.query<{ key: string; row_data: ContentInfo | null; deleted: boolean }>(
      `SELECT DISTINCT ON (content_key) content_key AS key, row_data, deleted
         FROM ${VERSIONS} WHERE stream = $1 AND valid_from_lsn < $2::pg_lsn
        ORDER BY content_key, valid_from_lsn DESC`,
      [this.stream, lsn],
    );
    return new Map(rows.map((r) => [r.key, r.deleted ? null : r.row_data]));
  }

  /** Stores one change (see `recordMany`). */
  async record(key: string, commitLsn: string, row: ContentInfo | null): Promise<void> {
    await this.recordMany([{ key, commitLsn, row }]);
  }

  /**
   * Stores changes in one statement. Idempotent: a replayed transaction writes the same keys
   * and LSNs again. Several changes of one key in one transaction keep the last (the state at
   * its commit; one statement cannot update a row twice, so they are reduced here first).
   */
  async recordMany(versions: ContentVersion[]): Promise<void> {
    const last = new Map<string, ContentVersion>();
    for (const v of versions) last.set(`${v.key}\u0000${v.commitLsn}`, v);
    const rows = [...last.values()];
    if (rows.length === 0) return;
    await this.db.query(
      `INSERT INTO ${VERSIONS} (stream, content_key, valid_from_lsn, row_data, deleted)
       SELECT $1, v.key, v.lsn::pg_lsn, v.row_data, v.row_data IS NULL
         FROM unnest($2::text[], $3::text[], $4::jsonb[]) AS v(key, lsn, row_data)
       ON CONFLICT (stream, content_key, valid_from_lsn)
       DO UPDATE SET row_data = EXCLUDED.row_data, deleted = EXCLUDED.deleted, recorded_at = now()`,
      [
        this.stream,
        rows.map((v) => v.key),
        rows.map((v) => v.commitLsn),
        rows.map((v) => (v.row === null ? null : JSON.stringify(v.row))),
      ],
    );
  }

  /**
   * Deletes versions no replay can need: those superseded by a newer version that is itself
   * below `lsn`. The latest version below `lsn` of every key stays (deleted rows included, so
   * a replayed event of deleted content still finds it absent without a lookup).
   */
  async prune(lsn: string): Promise<number> {
    const { rowCount } = await this.db.query(
      `DELETE FROM ${VERSIONS} v
        WHERE v.stream = $1 AND v.valid_from_lsn < $2::pg_lsn
          AND EXISTS (SELECT 1 FROM ${VERSIONS} n
                       WHERE n.stream = v.stream AND n.content_key = v.content_key
                         AND n.valid_from_lsn > v.valid_from_lsn AND n.valid_from_lsn < $2::pg_lsn)`,
      [this.stream, lsn],
    );
    return rowCount ?? 0;
  }
}
