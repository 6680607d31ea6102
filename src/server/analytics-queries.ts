import { microsToIso } from '../domain/timestamps.js';

/**
 * What the dashboard reads from the analytics store (not from Redis): engagement per minute
 * by content type, the latest enriched rows, and the row count. The store answers in its own
 * SQL dialect; these functions build the statements (numbers only ever come from validated
 * integers, never from user text) and return plain JSON.
 */
export interface AnalyticsQueryable {
  readonly dialect: 'duckdb' | 'clickhouse';
  /** Runs a read-only statement; rows as plain objects. */
  query(sql: string): Promise<Record<string, unknown>[]>;
  /** The table's fully qualified name in that store. */
  readonly tableName: string;
}

/** A sink that can answer dashboard queries, or null (BigQuery, or a sink that is not analytics). */
export function asQueryable(sink: unknown): AnalyticsQueryable | null {
  // A sink behind a wrapper (the row check) is queried through the wrapped one.
  const inner = (sink as { inner?: unknown } | null)?.inner;
  if (inner) return asQueryable(inner);
  const s = sink as Partial<AnalyticsQueryable> | null;
  return s && typeof s.query === 'function' && (s.dialect === 'duckdb' || s.dialect === 'clickhouse')
    ? (s as AnalyticsQueryable)
    : null;
}

export interface TimelinePoint {
  /** Start of the UTC minute, ISO-8601. */
  minute: string;
  content_type: string;
  events: number;
  engagement_seconds: number;
  /** Mean engagement_pct (a fraction: 0.25 = 25 %) of the minute's events that have one. */
  avg_engagement_pct: number | null;
  /** How many of the minute's events have an engagement_pct (to weigh averages across minutes). */
  pct_events: number;
}

export interface Timeline {
  minutes: number;
  from: string;
  to: string;
  points: TimelinePoint[];
}

/** One enriched row as the analytics store holds it (keys as text, whatever their type), plus the title. */
export interface RecentEvent {
  event_id: string;
  content_id: string | null;
  title?: string;
  user_id: string | null;
  event_type: string | null;
  event_ts: string;
  duration_ms: number | null;
  device: string | null;
  raw_payload: unknown;
  content_type: string | null;
  length_seconds: number | null;
  engagement_seconds: number | null;
  engagement_pct: number | null;
  committed_at: string | null;
  processed_at: string | null;
}

/** Engagement over the last `minutes` minutes (by event_ts), per UTC minute and content type. */
export async function readTimeline(
  store: AnalyticsQueryable,
  minutes: number,
  now = Date.now(),
): Promise<Timeline> {
  const toMinute = Math.floor(now / 60_000) * 60;
  const since = toMinute - (minutes - 1) * 60; // the current (partial) minute is the last one
  const t = store.tableName;
  const sql =
    store.dialect === 'duckdb'
      ? `SELECT CAST(floor(epoch(event_ts) / 60) AS BIGINT) * 60 AS minute,
                coalesce(content_type, 'unknown') AS content_type,
                count(*) AS events,
                CAST(coalesce(sum(engagement_seconds), 0) AS DOUBLE) AS engagement_seconds,
                CAST(avg(engagement_pct) AS DOUBLE) AS avg_engagement_pct,
                count(engagement_pct) AS pct_events
           FROM ${t} WHERE event_ts >= to_timestamp(${since})
          GROUP BY 1, 2 ORDER BY 1, 2`
      : `SELECT toUnixTimestamp(toStartOfMinute(event_ts)) AS minute,
                ifNull(content_type, 'unknown') AS content_type,
                count() AS events,
                toFloat64(ifNull(sum(engagement_seconds), 0)) AS engagement_seconds,
                toFloat64OrNull(toString(avg(engagement_pct))) AS avg_engagement_pct,
                count(engagement_pct) AS pct_events
           FROM ${t} FINAL WHERE event_ts >= toDateTime64(${since}, 6, 'UTC')
          GROUP BY minute, content_type ORDER BY minute, content_type`;
  const rows = await store.query(sql);
  return {
    minutes,
    from: new Date(since * 1000).toISOString(),
    to: new Date((toMinute + 60) * 1000).toISOString(),
    points: rows.map((r) => ({
      minute: new Date(Number(r.minute) * 1000).toISOString(),
      content_type: String(r.content_type),
      events: Number(r.events),
      engagement_seconds: round3(Number(r.engagement_seconds)),
      avg_engagement_pct: numberOrNull(r.avg_engagement_pct, 4),
      pct_events: Number(r.pct_events ?? 0),
    })),
  };
}

/**
 * The latest `limit` enriched rows, newest event_id first. event_id is selected as is (an
 * alias of the same name would shadow the column in ORDER BY and sort it as text); both
 * stores return 64-bit integers to JSON as strings.
 */
export async function readRecent(store: AnalyticsQueryable, limit: number): Promise<RecentEvent[]> {
  const t = store.tableName;
  const sql =
    store.dialect === 'duckdb'
      ? `SELECT event_id, CAST(content_id AS VARCHAR) AS content_id, CAST(user_id AS VARCHAR) AS user_id,
                event_type, epoch_us(event_ts) AS event_ts_us, duration_ms, device,
                CAST(raw_payload AS VARCHAR) AS raw_payload, content_type, length_seconds,
                CAST(engagement_seconds AS DOUBLE) AS engagement_seconds,
                CAST(engagement_pct AS DOUBLE) AS engagement_pct, epoch_us(committed_at) AS committed_at_us,
                epoch_us(processed_at) AS processed_at_us
           FROM ${t} ORDER BY event_id DESC LIMIT ${limit}`
      : `SELECT event_id, toString(content_id) AS content_id, toString(user_id) AS user_id, event_type,
                toUnixTimestamp64Micro(event_ts) AS event_ts_us, duration_ms, device, raw_payload,
                content_type, length_seconds,
                toFloat64OrNull(toString(engagement_seconds)) AS engagement_seconds,
                toFloat64OrNull(toString(engagement_pct)) AS engagement_pct,
                toUnixTimestamp64Micro(committed_at) AS committed_at_us,
                toUnixTimestamp64Micro(processed_at) AS processed_at_us
           FROM ${t} FINAL ORDER BY event_id DESC LIMIT ${limit}`;
  const rows = await store.query(sql);
  return rows.map((r) => ({
    event_id: String(r.event_id),
    content_id: textOrNull(r.content_id),
    user_id: textOrNull(r.user_id),
    event_type: (r.event_type as string | null) ?? null,
    event_ts: isoOfMicros(r.event_ts_us) ?? '',
    duration_ms: numberOrNull(r.duration_ms, 0),
    device: (r.device as string | null) ?? null,
    // Stored as the source's JSON text: handed back as the same JSON value.
    raw_payload: typeof r.raw_payload === 'string' ? JSON.parse(r.raw_payload) : null,
    content_type: (r.content_type as string | null) ?? null,
    length_seconds: numberOrNull(r.length_seconds, 0),
    engagement_seconds: numberOrNull(r.engagement_seconds, 3),
    engagement_pct: numberOrNull(r.engagement_pct, 2),
    committed_at: isoOfMicros(r.committed_at_us),
    processed_at: isoOfMicros(r.processed_at_us),
  }));
}

/** Rows in the analytics table (ClickHouse: distinct by event_id, i.e. after merges). */
export async function readRowCount(store: AnalyticsQueryable): Promise<number> {
  const sql =
    store.dialect === 'duckdb'
      ? `SELECT count(*) AS n FROM ${store.tableName}`
      : `SELECT count() AS n FROM ${store.tableName} FINAL`;
  const [row] = await store.query(sql);
  return Number(row?.n ?? 0);
}

/** `?minutes=` (1..1440, default 60) and `?limit=` (1..200, default 20). */
export function parseBoundedInt(
  value: unknown,
  name: string,
  fallback: number,
  max: number,
): { ok: true; value: number } | { ok: false; error: string } {
  if (value === undefined || value === '') return { ok: true, value: fallback };
  // Decimal digits only, as settings and flags are read: Number() would take 0x14, 1e1, ' 5'.
  const n = typeof value === 'string' && /^\d{1,9}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > max)
    return { ok: false, error: `${name} must be an integer from 1 to ${max}` };
  return { ok: true, value: n };
}

/**
 * A stored timestamp's microseconds (64-bit integers arrive as text) as the pipeline's ISO
 * form: exact, and for every year the stores hold (a JavaScript Date ends in year 275760).
 */
function isoOfMicros(v: unknown): string | null {
  if (v === null || v === undefined || v === '') return null;
  return microsToIso(BigInt(v as string | number));
}

function textOrNull(v: unknown): string | null {
  return v === null || v === undefined ? null : String(v);
}

function numberOrNull(v: unknown, digits: number): number | null {
  if (v === null || v === undefined || v === '') return null;
  const n = Number(v);
  if (!Number.isFinite(n)) return null;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
