import { civilToMicros, type TimestampRange } from '../../domain/timestamps.js';
import type { EnrichedEvent } from '../../domain/types.js';
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

export const BIGQUERY_FIELDS: BigQueryField[] = [
  { name: 'event_id', type: 'INT64', mode: 'REQUIRED', description: 'engagement_events.id' },
  { name: 'content_id', type: 'STRING', mode: 'NULLABLE' },
  { name: 'user_id', type: 'STRING', mode: 'NULLABLE' },
  { name: 'event_type', type: 'STRING', mode: 'NULLABLE' },
  { name: 'event_ts', type: 'TIMESTAMP', mode: 'REQUIRED' },
  { name: 'duration_ms', type: 'INT64', mode: 'NULLABLE' },
  { name: 'device', type: 'STRING', mode: 'NULLABLE' },
  { name: 'raw_payload', type: 'JSON', mode: 'NULLABLE' },
  { name: 'content_type', type: 'STRING', mode: 'NULLABLE' },
  { name: 'length_seconds', type: 'INT64', mode: 'NULLABLE' },
  { name: 'engagement_seconds', type: 'NUMERIC', mode: 'NULLABLE', precision: '12', scale: '3' },
  { name: 'engagement_pct', type: 'NUMERIC', mode: 'NULLABLE', precision: '12', scale: '2' },
  { name: 'committed_at', type: 'TIMESTAMP', mode: 'REQUIRED', description: 'source commit time' },
  { name: 'processed_at', type: 'TIMESTAMP', mode: 'REQUIRED' },
];

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

/**
 * insertAll's raw row. insertId = event_id, so BigQuery drops a re-sent row (best-effort, about
 * a minute). INT64 and NUMERIC travel as strings: JSON numbers are doubles, and BigQuery
 * parses the text exactly. JSON columns take the document as a string.
 */
export function toInsertAllRow(e: EnrichedEvent): InsertAllRow {
  return {
    insertId: String(e.event_id),
    json: {
      event_id: String(e.event_id),
      content_id: e.content_id,
      user_id: e.user_id,
      event_type: e.event_type,
      event_ts: e.event_ts,
      duration_ms: e.duration_ms,
      device: e.device,
      raw_payload:
        e.raw_payload === null || e.raw_payload === undefined ? null : JSON.stringify(e.raw_payload),
      content_type: e.content_type,
      length_seconds: e.length_seconds,
      engagement_seconds: e.engagement_seconds === null ? null : String(e.engagement_seconds),
      engagement_pct: e.engagement_pct === null ? null : String(e.engagement_pct),
      committed_at: e.committed_at,
      processed_at: e.processed_at,
    },
  };
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
export function bigQueryRowProblem(e: EnrichedEvent): string | null {
  const problem = timestampsProblem(e, BIGQUERY_TIMESTAMP_RANGE);
  if (problem) return problem;
  const bytes = Buffer.byteLength(JSON.stringify(toInsertAllRow(e)));
  return bytes > BIGQUERY_MAX_ROW_BYTES
    ? `the row is ${bytes} bytes as JSON, over insertAll's ${BIGQUERY_MAX_ROW_BYTES}-byte budget per row`
    : null;
}
