/**
 * Where the DuckDB sink keeps its rows and its positions. DDL only, no I/O.
 */

/**
 * Where `engagement.events_enriched` lives in a DuckDB file. DuckDB names a file's catalog
 * after the file, so in the default `engagement.duckdb` a schema `engagement` would make
 * `engagement.events_enriched` ambiguous (catalog.table or schema.table: a Binder Error for
 * every reader). There the table goes in the `main` schema, so `engagement.events_enriched`
 * resolves as catalog.table; in any other file it goes in schema `engagement`. Either way the
 * contract's name `engagement.events_enriched` works for anyone who opens the file.
 */
export function analyticsTableIn(catalog: string): { schema: string; qualified: string } {
  const schema = catalog === 'engagement' ? 'main' : 'engagement';
  return { schema, qualified: `${quoteIdent(catalog)}.${schema}.events_enriched` };
}

/** The position table sits beside the events table (same catalog and schema). */
export function positionTableIn(catalog: string): string {
  return `${quoteIdent(catalog)}.${analyticsTableIn(catalog).schema}.sink_position`;
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * The events table. The primary key stays: it is not what made the old path slow (the keyed
 * merge statement was), and it turns any duplicate that slipped past the position and range
 * checks into an error the sink handles instead of a second row.
 */
export const createEventsTableSql = (schema: string, table: string) => `
CREATE SCHEMA IF NOT EXISTS ${schema};
CREATE TABLE IF NOT EXISTS ${table} (
  event_id           BIGINT PRIMARY KEY,
  content_id         UUID,
  user_id            UUID,
  event_type         VARCHAR,
  event_ts           TIMESTAMPTZ NOT NULL,
  duration_ms        INTEGER,
  device             VARCHAR,
  raw_payload        JSON,
  content_type       VARCHAR,
  length_seconds     INTEGER,
  engagement_seconds DECIMAL(12,3),
  engagement_pct     DECIMAL(12,2),
  committed_at       TIMESTAMPTZ NOT NULL,
  processed_at       TIMESTAMPTZ NOT NULL
);`;

/**
 * One row per stream: the position of the last event the sink committed for it, written in
 * the same transaction as the rows. `source_id` names the source the position belongs to
 * (the Postgres cluster's system identifier): a position of another source says nothing about
 * this one (a rebuilt cluster restarts its LSNs), so it is ignored rather than used to skip.
 * The row `DEDUPE_HIGH_STREAM` holds the highest event_id written by a batch that was not
 * position-checked (backfill, Kafka); stream batches at or below it are checked by event_id.
 */
export const createPositionTableSql = (table: string) => `
CREATE TABLE IF NOT EXISTS ${table} (
  stream     VARCHAR PRIMARY KEY,
  source_id  VARCHAR,
  position   VARCHAR NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);`;

export const DEDUPE_HIGH_STREAM = '#dedupe-high-event-id';
