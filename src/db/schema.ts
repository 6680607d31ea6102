import type pg from 'pg';

/** DDL owned by `engagement migrate`. Source tables are created only when absent, never altered. */

export const SOURCE_TABLES_SQL = `
CREATE TABLE IF NOT EXISTS content (
  id             UUID PRIMARY KEY,
  slug           TEXT UNIQUE NOT NULL,
  title          TEXT NOT NULL,
  content_type   TEXT CHECK (content_type IN ('podcast','newsletter','video')),
  length_seconds INTEGER,
  publish_ts     TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS engagement_events (
  id          BIGSERIAL PRIMARY KEY,
  content_id  UUID REFERENCES content(id),
  user_id     UUID,
  event_type  TEXT CHECK (event_type IN ('play','pause','finish','click')),
  event_ts    TIMESTAMPTZ NOT NULL,
  duration_ms INTEGER,
  device      TEXT,
  raw_payload JSONB
);`;

export const STATE_SCHEMA = 'engagement_pipeline';

/** The state schema's tables, in a schema that exists already (STATE_SCHEMA_SQL creates both). */
export const STATE_TABLES_SQL = `
CREATE TABLE IF NOT EXISTS ${STATE_SCHEMA}.dead_letters (
  id               BIGSERIAL PRIMARY KEY,
  sink             TEXT NOT NULL,
  event_id         BIGINT,
  idempotency_key  TEXT NOT NULL,
  event            JSONB NOT NULL,
  source           TEXT,
  last_error       TEXT NOT NULL,
  attempts         INTEGER NOT NULL,
  first_failed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_failed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  replayed_at      TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS dead_letters_pending ON ${STATE_SCHEMA}.dead_letters (last_failed_at) WHERE replayed_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_once ON ${STATE_SCHEMA}.dead_letters (sink, idempotency_key) WHERE replayed_at IS NULL;
CREATE TABLE IF NOT EXISTS ${STATE_SCHEMA}.backfill_progress (
  id             BIGSERIAL PRIMARY KEY,
  from_ts        TIMESTAMPTZ NOT NULL,
  to_ts          TIMESTAMPTZ NOT NULL,
  sinks          TEXT NOT NULL,
  last_event_ts  TIMESTAMPTZ,
  last_id        BIGINT,
  rows_done      BIGINT NOT NULL DEFAULT 0,
  status         TEXT NOT NULL DEFAULT 'running',
  started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Added by the backfill command (our own table, so extending it is safe on upgrade).
ALTER TABLE ${STATE_SCHEMA}.backfill_progress
  ADD COLUMN IF NOT EXISTS max_id        BIGINT,
  ADD COLUMN IF NOT EXISTS rows_total    BIGINT,
  ADD COLUMN IF NOT EXISTS redis_applied BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS error         TEXT,
  ADD COLUMN IF NOT EXISTS destinations  TEXT;
-- Written by the running pipeline at most once a second, read by \`engagement status\`.
CREATE TABLE IF NOT EXISTS ${STATE_SCHEMA}.sink_progress (
  slot_name        TEXT NOT NULL,
  sink             TEXT NOT NULL,
  last_success_at  TIMESTAMPTZ NOT NULL,
  last_committed_at TIMESTAMPTZ,
  lag_seconds      DOUBLE PRECISION,
  events_total     BIGINT NOT NULL DEFAULT 0,
  updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (slot_name, sink)
);
-- The sink's health as the running pipeline sees it (up|behind|down|failed) and its current failure.
ALTER TABLE ${STATE_SCHEMA}.sink_progress
  ADD COLUMN IF NOT EXISTS state      TEXT,
  ADD COLUMN IF NOT EXISTS last_error TEXT;
-- The process that wrote the state, and when: a consumer group's workers share one row (sink-progress.ts).
ALTER TABLE ${STATE_SCHEMA}.sink_progress
  ADD COLUMN IF NOT EXISTS writer TEXT,
  ADD COLUMN IF NOT EXISTS health_at TIMESTAMPTZ;
-- Which slots migrate created, so a slot that disappears later is recognised as lost, not new.
CREATE TABLE IF NOT EXISTS ${STATE_SCHEMA}.slot_state (
  slot_name    TEXT PRIMARY KEY,
  created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  created_lsn  PG_LSN
);
-- The content dimension's changes with the commit LSN of their transaction, per slot, so a
-- restart rebuilds the dimension as of the slot's confirmed position (point-in-time enrichment).
CREATE TABLE IF NOT EXISTS ${STATE_SCHEMA}.content_versions (
  stream          TEXT NOT NULL,
  content_key     TEXT NOT NULL,
  valid_from_lsn  PG_LSN NOT NULL,
  row_data        JSONB,
  deleted         BOOLEAN NOT NULL DEFAULT false,
  recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (stream, content_key, valid_from_lsn)
);
-- One row per slot whose history exists: seeded from a snapshot of content, then kept by the stream.
CREATE TABLE IF NOT EXISTS ${STATE_SCHEMA}.content_history (
  stream       TEXT PRIMARY KEY,
  seeded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  seeded_rows  BIGINT NOT NULL
);`;

export const STATE_SCHEMA_SQL = `CREATE SCHEMA IF NOT EXISTS ${STATE_SCHEMA};\n${STATE_TABLES_SQL}`;

/**
 * The state schema and its tables, for a process that may run before `migrate` did (a worker
 * fed by Debezium). Postgres checks CREATE on the database before it looks at IF NOT EXISTS,
 * so the least-privilege role (owner of the schema, without CREATE on the database) must not
 * send CREATE SCHEMA once the schema exists.
 */
export async function ensureStateSchema(db: Pick<pg.Pool, 'query'>): Promise<void> {
  const { rows } = await db.query<{ present: boolean }>('SELECT to_regnamespace($1) IS NOT NULL AS present', [
    STATE_SCHEMA,
  ]);
  await db.query(rows[0]?.present ? STATE_TABLES_SQL : STATE_SCHEMA_SQL);
}
