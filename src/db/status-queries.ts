import type pg from 'pg';
import { pgTimestampToIso } from '../domain/timestamps.js';
import { STATE_SCHEMA } from './schema.js';

/**
 * The figures of `engagement status` and of the running pipeline's slot metrics, read from
 * Postgres itself (pg_replication_slots, pg_stat_replication, pg_current_wal_lsn()) and from
 * the state tables the pipeline and the backfill write. Shared so both show the same numbers.
 */

export interface SlotStatus {
  slotName: string;
  exists: boolean;
  /**
   * The slot existed here once (migrate recorded it, or the pipeline delivered from it): when it
   * is gone, changes were lost. A deployment fed only by Debezium never has one.
   */
  known: boolean;
  active: boolean;
  walStatus: string | null;
  confirmedLsn: string | null;
  restartLsn: string | null;
  currentLsn: string;
  /** Current WAL position minus the confirmed one: what the pipeline has not confirmed yet. */
  lagBytes: number | null;
  /**
   * Seconds behind: Postgres's own replay_lag of the active walsender (0 when caught up);
   * while nothing streams, the time since the pipeline last delivered anything.
   */
  lagSeconds: number | null;
  /** WAL the server keeps for this slot (current minus restart_lsn). */
  retainedBytes: number | null;
  /** Bytes that may still be written before the slot is invalidated (null: no limit). */
  safeWalSizeBytes: number | null;
  maxSlotWalKeepSize: string;
}

export interface SinkProgressRow {
  sink: string;
  /** Whose sink: the slot (run) or `kafka:<group>` (the workers of a consumer group). */
  stream: string;
  lastSuccessAt: string;
  lastCommittedAt: string | null;
  lagSeconds: number | null;
  eventsTotal: number;
  updatedAt: string;
  /** up | behind | down | failed, as the running pipeline last wrote it (null: older pipeline). */
  state: string | null;
  lastError: string | null;
}

export interface BackfillRow {
  id: string;
  fromTs: string;
  toTs: string;
  sinks: string;
  rowsDone: number;
  rowsTotal: number | null;
  status: string;
  /** Why it failed (status 'failed'), else null. */
  error: string | null;
  /** True while a backfill process holds the run's lock (false: killed, resumable). */
  live: boolean;
  startedAt: string;
  updatedAt: string;
}

/** Advisory-lock class a running backfill holds (with its progress id) so status can tell live from killed. */
export const BACKFILL_LOCK_CLASS = 0x4550; // 'EP'

type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.Client, 'query'>;

export async function readSlotStatus(db: Queryable, slotName: string): Promise<SlotStatus> {
  const { rows } = await db.query(
    `SELECT s.active, s.wal_status, s.confirmed_flush_lsn::text AS confirmed, s.restart_lsn::text AS restart,
            pg_current_wal_lsn()::text AS current,
            pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::text AS lag_bytes,
            pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::text AS retained_bytes,
            s.safe_wal_size::text AS safe_wal_size,
            extract(epoch FROM coalesce(r.replay_lag, r.flush_lag))::float8 AS replay_lag,
            r.pid IS NOT NULL AS streaming,
            (SELECT extract(epoch FROM now() - max(p.last_success_at))::float8
               FROM ${STATE_SCHEMA}.sink_progress p WHERE p.slot_name = s.slot_name) AS since_delivery,
            current_setting('max_slot_wal_keep_size') AS max_keep,
            EXISTS (SELECT 1 FROM ${STATE_SCHEMA}.slot_state k WHERE k.slot_name = $1)
              OR EXISTS (SELECT 1 FROM ${STATE_SCHEMA}.sink_progress p WHERE p.slot_name = $1) AS known
       FROM (SELECT 1) AS one
       LEFT JOIN pg_replication_slots s ON s.slot_name = $1
       LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid`,
    [slotName],
  );
  const r = rows[0];
  const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  const lagBytes = num(r.lag_bytes);
  let lagSeconds: number | null;
  if (lagBytes !== null && lagBytes <= 0) lagSeconds = 0;
  else if (r.streaming) lagSeconds = num(r.replay_lag) ?? 0;
  else lagSeconds = num(r.since_delivery);
  return {
    slotName,
    exists: r.active !== null && r.active !== undefined,
    known: r.known === true,
    active: r.active === true,
    walStatus: r.wal_status ?? null,
    confirmedLsn: r.confirmed ?? null,
    restartLsn: r.restart ?? null,
    currentLsn: r.current,
    lagBytes,
    lagSeconds,
    retainedBytes: num(r.retained_bytes),
    safeWalSizeBytes: num(r.safe_wal_size),
    maxSlotWalKeepSize: r.max_keep,
  };
}

/** The slot's sinks (run) and those of every worker group (work --from-kafka: `kafka:<group>`). */
export async function readSinkProgress(db: Queryable, slotName: string): Promise<SinkProgressRow[]> {
  const { rows } = await db.query(
    `SELECT slot_name, sink, to_json(last_success_at) #>> '{}' AS last_success_at,
            to_json(last_committed_at) #>> '{}' AS last_committed_at, lag_seconds, events_total::text,
            to_json(updated_at) #>> '{}' AS updated_at,
            to_jsonb(p) ->> 'state' AS state, to_jsonb(p) ->> 'last_error' AS last_error
       FROM ${STATE_SCHEMA}.sink_progress p WHERE slot_name = $1 OR slot_name LIKE 'kafka:%'
      ORDER BY slot_name <> $1, slot_name, sink`,
    [slotName],
  );
  return rows.map((r) => ({
    sink: r.sink,
    stream: r.slot_name,
    lastSuccessAt: isoTime(r.last_success_at),
    lastCommittedAt: isoTime(r.last_committed_at),
    lagSeconds: r.lag_seconds,
    eventsTotal: Number(r.events_total),
    updatedAt: isoTime(r.updated_at),
    state: r.state ?? null,
    lastError: r.last_error ?? null,
  }));
}

/** Pending dead letters per sink. */
export async function readDeadLetterDepth(db: Queryable): Promise<Record<string, number>> {
  const { rows } = await db.query(
    `SELECT sink, count(*)::int AS n FROM ${STATE_SCHEMA}.dead_letters WHERE replayed_at IS NULL GROUP BY sink`,
  );
  return Object.fromEntries(rows.map((r) => [r.sink, r.n]));
}

/**
 * Per sink with pending dead letters: how many, and the age in seconds of the oldest one (since
 * its first failure, as DeadLetterStore.summary counts it). Sinks with none are absent.
 */
export async function readDeadLetterGauges(
  db: Queryable,
): Promise<Record<string, { pending: number; oldestSeconds: number }>> {
  const { rows } = await db.query(
    `SELECT sink, count(*)::int AS n, extract(epoch FROM now() - min(first_failed_at))::float8 AS oldest
       FROM ${STATE_SCHEMA}.dead_letters WHERE replayed_at IS NULL GROUP BY sink`,
  );
  return Object.fromEntries(
    rows.map((r) => [r.sink, { pending: r.n, oldestSeconds: Math.max(0, Math.round(Number(r.oldest))) }]),
  );
}

/** Backfills not finished: running now (live), or failed / killed and waiting to be resumed. */
export async function readBackfills(db: Queryable): Promise<BackfillRow[]> {
  const { rows } = await db.query(
    `SELECT b.id::text, to_json(b.from_ts) #>> '{}' AS from_ts, to_json(b.to_ts) #>> '{}' AS to_ts, b.sinks,
            b.rows_done::text, b.rows_total::text, b.status, b.error,
            EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND l.classid = $1 AND l.objid::text::bigint = b.id AND l.objsubid = 2) AS live,
            to_json(b.started_at) #>> '{}' AS started_at, to_json(b.updated_at) #>> '{}' AS updated_at
       FROM ${STATE_SCHEMA}.backfill_progress b WHERE b.status <> 'done' ORDER BY b.id`,
    [BACKFILL_LOCK_CLASS],
  );
  return rows.map((r) => ({
    id: r.id,
    fromTs: isoTime(r.from_ts),
    toTs: isoTime(r.to_ts),
    sinks: r.sinks,
    rowsDone: Number(r.rows_done),
    rowsTotal: r.rows_total === null ? null : Number(r.rows_total),
    status: r.status,
    error: r.error ?? null,
    live: r.live,
    startedAt: isoTime(r.started_at),
    updatedAt: isoTime(r.updated_at),
  }));
}

/** Running now: a process holds the run's lock and has not marked it failed. */
export function isBackfillRunning(b: Pick<BackfillRow, 'live' | 'status'>): boolean {
  return b.live && b.status !== 'failed';
}

/**
 * Times as the pipeline writes them everywhere else (UTC, Z, microseconds), whatever the
 * session's TimeZone.
 */
function isoTime<T extends string | null>(text: T): T {
  if (text === null) return text;
  try {
    return pgTimestampToIso(text) as T;
  } catch {
    return text; // infinity, or a form this reader does not know: shown as Postgres wrote it
  }
}
