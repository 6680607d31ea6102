import type pg from 'pg';
import { STATE_SCHEMA } from '../db/schema.js';
import { jsonbSafe, jsonTextOf, recordJson, textSafe } from '../domain/json-text.js';
import { pgTimestampToIso } from '../domain/timestamps.js';

/**
 * The dead-letter table (engagement_pipeline.dead_letters): events a sink gave up on, kept
 * with the reason so `engagement dlq list|replay` can show and re-send them.
 *
 * Idempotent by (sink, idempotency_key) among pending rows: recording the same event again
 * (a replay after a crash re-delivers the batch, and it fails again) updates the pending row
 * instead of adding a second one. Once a row is marked replayed, a new failure makes a new row.
 */

export interface DeadLetterEntry {
  sink: string;
  /** The event's event_id (null when the event could not be decoded far enough to have one). */
  eventId: number | string | null;
  /** The key the sink dedupes on; for the external sink the event_id as text. */
  idempotencyKey: string;
  event: unknown;
  /** Where the event came from, e.g. `<stream>@<position>`; informational. */
  source?: string | null;
  lastError: string;
  /** Delivery attempts made before giving up (added to any earlier count of the same pending key). */
  attempts: number;
}

export interface DeadLetterRow {
  /** BIGINT ids as text (JavaScript numbers lose precision past 2^53). */
  id: string;
  sink: string;
  eventId: string | null;
  idempotencyKey: string;
  event: unknown;
  source: string | null;
  lastError: string;
  attempts: number;
  /** ISO-8601 timestamps (text, whatever pg type parsers the process installed). */
  firstFailedAt: string;
  lastFailedAt: string;
  replayedAt: string | null;
}

export interface ListOptions {
  /** Only rows that last failed at or after this time. */
  since?: Date | string;
  /** Case-insensitive substring of last_error, e.g. '503' or 'circuit open'. */
  reason?: string;
  sink?: string;
  limit: number;
  /** Include rows already replayed (default: pending only). */
  includeReplayed?: boolean;
  /** Leave out rows whose last error is permanent (see listRedrivable). */
  redrivable?: boolean;
}

export interface DeadLetterSummary {
  pending: number;
  oldestPendingSeconds: number | null;
  replayed: number;
}

const TABLE = `${STATE_SCHEMA}.dead_letters`;
const MAX_ERROR_LENGTH = 2000;
/**
 * last_error is a permanent HTTP answer: `<3 digits> ` and not 408, 409, 429 or 5xx (409: a
 * retry that met its own first attempt still in progress at the receiver, see external-sink.ts).
 */
const PERMANENT_ERROR_SQL = `(last_error ~ '^[0-9]{3} ' AND left(last_error, 3) NOT IN ('408', '409', '429') AND left(last_error, 1) <> '5')`;

export class DeadLetterStore {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Inserts or refreshes the pending rows, in one statement (atomic for the whole call).
   * Returns how many were new: an event already pending for the sink (the same batch retried
   * after a failure, replayed after a restart, or refused again by a re-drive) is refreshed,
   * and counting it again would inflate engagement_dead_letters_total.
   */
  async record(entries: readonly DeadLetterEntry[]): Promise<number> {
    if (entries.length === 0) return 0;
    // One statement may not touch the same conflict key twice, so keep the last entry per key.
    const unique = new Map<string, DeadLetterEntry>();
    for (const entry of entries) unique.set(`${entry.sink}\u0000${entry.idempotencyKey}`, entry);
    const rows = [...unique.values()];
    const { rows: written } = await this.pool.query<{ inserted: boolean }>(
      `INSERT INTO ${TABLE} AS d (sink, event_id, idempotency_key, event, source, last_error, attempts)
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[], $5::text[], $6::text[], $7::int[])
       ON CONFLICT (sink, idempotency_key) WHERE replayed_at IS NULL
       DO UPDATE SET last_error = EXCLUDED.last_error,
                     attempts = d.attempts + EXCLUDED.attempts,
                     last_failed_at = now()
       RETURNING (xmax = 0) AS inserted -- xmax is 0 for a row this statement inserted, set for one it updated
      `,
      [
        rows.map((r) => r.sink),
        rows.map((r) => (r.eventId === null ? null : String(r.eventId))),
        rows.map((r) => r.idempotencyKey),
        // A NUL (a Kafka message's value, a source json column) must not make the row unwritable:
        // a dead letter that cannot be recorded holds its stream for good.
        rows.map((r) => jsonbSafe(recordJson(r.event))),
        rows.map((r) => (r.source == null ? null : textSafe(r.source))),
        rows.map((r) => textSafe(r.lastError.slice(0, MAX_ERROR_LENGTH))),
        rows.map((r) => r.attempts),
      ],
    );
    return written.filter((r) => r.inserted).length;
  }

  /** Pending (not yet replayed) dead letters, optionally of one sink. */
  async depth(sink?: string): Promise<number> {
    const { rows } = await this.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM ${TABLE} WHERE replayed_at IS NULL AND ($1::text IS NULL OR sink = $1)`,
      [sink ?? null],
    );
    return Number(rows[0].n);
  }

  /** Oldest first, so a replay re-sends in roughly the original order. */
  async list(options: ListOptions): Promise<DeadLetterRow[]> {
    const since = options.since instanceof Date ? options.since.toISOString() : (options.since ?? null);
    const { rows } = await this.pool.query(
      `SELECT id::text, sink, event_id::text, idempotency_key, event, source, last_error, attempts,
              (event -> 'raw_payload')::text AS payload,
              to_json(first_failed_at) #>> '{}' AS first_failed_at,
              to_json(last_failed_at) #>> '{}' AS last_failed_at,
              to_json(replayed_at) #>> '{}' AS replayed_at
         FROM ${TABLE} d
        WHERE ($1::boolean OR replayed_at IS NULL)
          AND ($2::timestamptz IS NULL OR last_failed_at >= $2)
          AND ($3::text IS NULL OR strpos(lower(last_error), lower($3)) > 0)
          AND ($4::text IS NULL OR sink = $4)
          AND NOT ($6::boolean AND ${PERMANENT_ERROR_SQL})
        ORDER BY d.id -- the column: the output's id is text, and '10' sorts before '9'
        LIMIT $5`,
      [
        options.includeReplayed ?? false,
        since,
        options.reason ?? null,
        options.sink ?? null,
        options.limit,
        options.redrivable ?? false,
      ],
    );
    return rows.map((r) => ({
      id: r.id,
      sink: r.sink,
      eventId: r.event_id,
      idempotencyKey: r.idempotency_key,
      event: withExactPayload(r.event, r.payload),
      source: r.source,
      lastError: r.last_error,
      attempts: r.attempts,
      // The pipeline's ISO form (Z, microseconds), which `dlq list --since` takes back as is.
      firstFailedAt: pgTimestampToIso(r.first_failed_at),
      lastFailedAt: pgTimestampToIso(r.last_failed_at),
      replayedAt: r.replayed_at === null ? null : pgTimestampToIso(r.replayed_at),
    }));
  }

  /**
   * Pending rows of a sink that a re-send may cure, oldest first: everything except rows whose
   * last error is a permanent HTTP answer (a status other than 408, 409, 429 and 5xx; the external
   * sink records those as `<status> <reason>...`). Network errors, timeouts and "circuit open"
   * rows qualify.
   */
  async listRedrivable(sink: string, limit: number): Promise<DeadLetterRow[]> {
    return this.list({ sink, limit, redrivable: true });
  }

  /**
   * For `engagement status`, /api/stats and the metrics: pending rows, the age of the oldest
   * pending one (seconds since its first failure; null when none), and rows replayed so far
   * (automatically re-driven or by `engagement dlq replay`).
   */
  async summary(sink?: string): Promise<DeadLetterSummary> {
    const { rows } = await this.pool.query<{ pending: string; oldest: number | null; replayed: string }>(
      `SELECT count(*) FILTER (WHERE replayed_at IS NULL) AS pending,
              extract(epoch FROM now() - min(first_failed_at) FILTER (WHERE replayed_at IS NULL))::float8 AS oldest,
              count(*) FILTER (WHERE replayed_at IS NOT NULL) AS replayed
         FROM ${TABLE} WHERE ($1::text IS NULL OR sink = $1)`,
      [sink ?? null],
    );
    const r = rows[0];
    return {
      pending: Number(r.pending),
      oldestPendingSeconds: r.oldest === null ? null : Math.max(0, Math.round(Number(r.oldest))),
      replayed: Number(r.replayed),
    };
  }

  /** Which of `ids` name a dead letter (of any sink, pending or replayed). */
  async existing(ids: readonly string[]): Promise<Set<string>> {
    const { rows } = await this.pool.query<{ id: string }>(
      `SELECT id::text FROM ${TABLE} WHERE id = ANY($1::bigint[])`,
      [ids],
    );
    return new Set(rows.map((r) => r.id));
  }

  /** Marks pending rows replayed; returns how many changed (already-replayed ids are skipped). */
  async markReplayed(ids: readonly (string | number)[]): Promise<number> {
    if (ids.length === 0) return 0;
    const result = await this.pool.query(
      `UPDATE ${TABLE} SET replayed_at = now() WHERE id = ANY($1::bigint[]) AND replayed_at IS NULL`,
      [ids.map(String)],
    );
    return result.rowCount ?? 0;
  }
}

/**
 * The stored event with its payload as the exact text jsonb kept (jsonb numbers are exact;
 * pg's parse of the whole event is not, past a double's precision).
 */
function withExactPayload(event: unknown, payload: string | null): unknown {
  if (payload === null || event === null || typeof event !== 'object' || Array.isArray(event)) return event;
  return { ...event, raw_payload: jsonTextOf(payload) };
}
