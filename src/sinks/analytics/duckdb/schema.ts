import type { KeyTypes } from '../../../domain/source-shape.js';
import { DEFAULT_KEY_TYPES, EVENT_COLUMNS, typeName, type Column, type TypeNames } from '../columns.js';

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

/** DuckDB's names for the logical types (UUID keys stay UUID: 16 bytes, not text). */
export const DUCKDB_TYPES: TypeNames = {
  event_id: 'BIGINT',
  key: { uuid: 'UUID', bigint: 'BIGINT', integer: 'INTEGER', text: 'VARCHAR' },
  category: 'VARCHAR',
  int32: 'INTEGER',
  timestamp: 'TIMESTAMPTZ',
  decimal: (precision, scale) => `DECIMAL(${precision},${scale})`,
  json: 'JSON',
};

/** A column's DuckDB type, as `information_schema.columns.data_type` spells it. */
export function duckDbColumnType(column: Column, keyTypes: KeyTypes = DEFAULT_KEY_TYPES): string {
  return typeName(column, keyTypes, DUCKDB_TYPES);
}

/**
 * The events table, from the column description. The primary key stays: it is not what made
 * the old path slow (the keyed merge statement was), and it turns any duplicate that slipped
 * past the position and range checks into an error the sink handles instead of a second row.
 */
export const createEventsTableSql = (
  schema: string,
  table: string,
  keyTypes: KeyTypes = DEFAULT_KEY_TYPES,
) => `
CREATE SCHEMA IF NOT EXISTS ${schema};
CREATE TABLE IF NOT EXISTS ${table} (
${EVENT_COLUMNS.map((c) => `  ${c.name.padEnd(18)} ${duckDbColumnType(c, keyTypes)}${constraint(c)}`).join(',\n')}
);`;

function constraint(c: Column): string {
  if (c.type.kind === 'event_id') return ' PRIMARY KEY';
  return c.nullable ? '' : ' NOT NULL';
}

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
