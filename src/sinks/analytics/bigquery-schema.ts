import { civilToMicros, type TimestampRange } from '../../domain/timestamps.js';
import type { EnrichedEvent } from '../../domain/types.js';
import type { KeyTypes } from '../../domain/source-shape.js';
import {
  DEFAULT_KEY_TYPES,
  EVENT_COLUMNS,
  KEY_COLUMNS,
  keysProblem,
  typeName,
  type Column,
  type ColumnName,
  type ColumnTypeDifference,
  type TypeNames,
} from './columns.js';
import { timestampsProblem } from './representable.js';

/**
 * The BigQuery table (REST `Table` resource parts) and the insertAll rows. Pure, so the test's
 * fake BigQuery can check exactly what the sink sends.
 */

export interface BigQueryField {
  name: string;
  type: 'INT64' | 'STRING' | 'TIMESTAMP' | 'NUMERIC' | 'JSON';
  mode: 'REQUIRED' | 'NULLABLE';
  /** Parameterized NUMERIC(precision, scale): BigQuery rejects a value that does not fit. */
  precision?: string;
  scale?: string;
  description?: string;
}

export const BIGQUERY_TABLE = 'events_enriched';
/** A view with one row per event_id; insertId dedup is best-effort, this view is exact. */
export const BIGQUERY_UNIQUE_VIEW = 'events_enriched_unique';

/** BigQuery's names for the logical types: INT64 holds both integer key widths. */
export const BIGQUERY_TYPES: TypeNames = {
  event_id: 'INT64',
  key: { uuid: 'STRING', bigint: 'INT64', integer: 'INT64', text: 'STRING' },
  category: 'STRING',
  int32: 'INT64',
  timestamp: 'TIMESTAMP',
  decimal: () => 'NUMERIC', // precision and scale are the field's own properties
  json: 'JSON',
};

const DESCRIPTIONS: Partial<Record<ColumnName, string>> = {
  event_id: 'engagement_events.id',
  committed_at: 'source commit time',
};

/** A column as a BigQuery schema field. */
export function bigQueryField(column: Column, keyTypes: KeyTypes = DEFAULT_KEY_TYPES): BigQueryField {
  const t = column.type;
  const f: BigQueryField = {
    name: column.name,
    type: typeName(column, keyTypes, BIGQUERY_TYPES) as BigQueryField['type'],
    mode: column.nullable ? 'NULLABLE' : 'REQUIRED',
  };
  if (t.kind === 'decimal') Object.assign(f, { precision: String(t.precision), scale: String(t.scale) });
  const description = DESCRIPTIONS[column.name];
  if (description) f.description = description;
  return f;
}

/** The table's schema for the source's key types. */
export function bigQueryFields(keyTypes: KeyTypes = DEFAULT_KEY_TYPES): BigQueryField[] {
  return EVENT_COLUMNS.map((c) => bigQueryField(c, keyTypes));
}

/** A field of an existing table as tables.get answers it (mode absent: NULLABLE). */
export interface ExistingField {
  name?: string;
  type?: string;
  mode?: string;
}

/**
 * What makes insertAll refuse every row of an existing table, beyond the key columns' types
 * (keyColumnDifferences): a column the pipeline writes that the table lacks ("no such field"),
 * and a REQUIRED column it does not write ("Missing required field"). Other differences (a
 * non-key type, a mode) are not judged here. BigQuery's column names ignore case.
 */
export function bigQueryColumnDifferences(
  existing: readonly ExistingField[],
  expected: readonly BigQueryField[],
): ColumnTypeDifference[] {
  const have = new Set(existing.map((f) => String(f.name).toLowerCase()));
  const written = new Set(expected.map((f) => f.name.toLowerCase()));
  const out: ColumnTypeDifference[] = [];
  for (const f of expected) {
    if ((KEY_COLUMNS as readonly string[]).includes(f.name)) continue; // keyColumnDifferences' part
    if (!have.has(f.name.toLowerCase()))
      out.push({ column: f.name, existing: '(missing)', expected: f.type });
  }
  for (const f of existing) {
    if (f.mode === 'REQUIRED' && !written.has(String(f.name).toLowerCase()))
      out.push({
        column: String(f.name),
        existing: `${f.type} REQUIRED`,
        expected: 'NULLABLE (the pipeline does not write it)',
      });
  }
  return out;
}

/** The schema with UUID keys (the default shape). */
export const BIGQUERY_FIELDS: BigQueryField[] = bigQueryFields();

/**
 * Partitioned by DATE(event_ts): queries over a time range scan (and bill) only those days, and
 * an event_id's event_ts never changes, so every copy of an event lands in the same partition.
 * Clustered by the two columns the query pack filters and groups on most.
 */
export const BIGQUERY_TABLE_OPTIONS = {
  timePartitioning: { type: 'DAY', field: 'event_ts' },
  clustering: { fields: ['content_type', 'event_type'] },
};

/** The dedup view's query (Standard SQL); keeps the first processed copy of each event_id. */
export function uniqueViewQuery(projectId: string, datasetId: string): string {
  return `SELECT * FROM \`${projectId}.${datasetId}.${BIGQUERY_TABLE}\`
QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY processed_at) = 1`;
}

export interface InsertAllRow {
  insertId: string;
  json: Record<string, string | number | null>;
}

type Encode = (value: never) => string | number | null;

/** How one column's value goes into insertAll's `json`. */
function bigQueryEncoder(column: Column): Encode {
  switch (column.type.kind) {
    case 'event_id':
      return (v: number) => String(v);
    case 'key': // INT64 keys travel as their exact text, like event_id; STRING keys as they are
    case 'category':
    case 'timestamp':
      return (v: string | null) => v;
    case 'int32':
      return (v: number | null) => v;
    case 'decimal':
      return (v: number | null) => (v === null ? null : String(v));
    case 'json':
      // Parsed and written again: BigQuery's JSON type holds numbers as INT64, NUMERIC or
      // FLOAT64 and may refuse one it cannot hold exactly, so such numbers arrive rounded
      // (as every sink's did before payloads were kept as text) rather than the row refused.
      return (v: unknown) => (v === null || v === undefined ? null : JSON.stringify(v));
  }
}

const ENCODERS = EVENT_COLUMNS.map(
  (c) => [c.name, bigQueryEncoder(c) as (v: unknown) => string | number | null] as const,
);

/**
 * insertAll's raw row. insertId = event_id, so BigQuery drops a re-sent row (best-effort, about
 * a minute). INT64 (event_id, integer keys) and NUMERIC travel as strings: JSON numbers are
 * doubles, and BigQuery parses the text exactly. JSON columns take the document as a string.
 * Every key type travels as its text form, so one serializer serves every source shape.
 */
export function toInsertAllRow(e: EnrichedEvent): InsertAllRow {
  const json: InsertAllRow['json'] = {};
  for (const [name, encode] of ENCODERS) json[name] = encode(e[name]);
  return { insertId: String(e.event_id), json };
}

/** BigQuery TIMESTAMP: 0001-01-01 00:00:00 .. 9999-12-31 23:59:59.999999 UTC. */
export const BIGQUERY_TIMESTAMP_RANGE: TimestampRange = {
  label: 'BigQuery TIMESTAMP',
  min: civilToMicros(1, 1, 1),
  max: civilToMicros(9999, 12, 31, 23, 59, 59, 999_999),
};

/**
 * insertAll takes rows up to 10 MB in requests up to 10 MB; a bigger row fails its whole
 * request (not one row), which would be retried forever. Leave room for the request envelope.
 */
export const BIGQUERY_MAX_ROW_BYTES = 9 * 1024 * 1024;

/** Why BigQuery cannot take the row (null when it can). */
export function bigQueryRowProblem(e: EnrichedEvent, keyTypes: KeyTypes = DEFAULT_KEY_TYPES): string | null {
  const problem = timestampsProblem(e, BIGQUERY_TIMESTAMP_RANGE) ?? keysProblem(e, keyTypes);
  if (problem) return problem;
  const bytes = Buffer.byteLength(JSON.stringify(toInsertAllRow(e)));
  return bytes > BIGQUERY_MAX_ROW_BYTES
    ? `the row is ${bytes} bytes as JSON, over insertAll's ${BIGQUERY_MAX_ROW_BYTES}-byte budget per row`
    : null;
}
