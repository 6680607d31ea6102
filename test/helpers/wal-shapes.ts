import assert from 'node:assert/strict';
import pg from 'pg';
import { clientConfig } from '../../src/db/postgres.js';
import { HEARTBEAT_PREFIX } from '../../src/source/pgoutput-decoder.js';
import { CONTENT_IDS } from './pipeline.js';

/**
 * WAL shapes that ordinary traffic rarely makes and that break a CDC consumer confirming one
 * byte too far: a transaction whose commit record starts exactly where the previous
 * transaction's commit (or a logical message) ended.
 */

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(url));
  await client.connect();
  return client;
}

/** The slot's confirmed_flush_lsn. */
export async function confirmedFlush(databaseUrl: string, slotName = 'engagement_pipeline'): Promise<string> {
  const client = await connect(databaseUrl);
  try {
    const { rows } = await client.query<{ lsn: string }>(
      `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
      [slotName],
    );
    return rows[0].lsn;
  } finally {
    await client.end();
  }
}

/**
 * Session B inserts `bigRows` in an open transaction; then A commits one row (or emits the
 * pipeline's heartbeat message); then B commits at once. Returns where A ended, where B's
 * commit ended, and whether (pg_walinspect) B's commit record starts exactly where A ended.
 */
export async function backToBack(
  databaseUrl: string,
  bigRows: number,
  first: 'commit' | 'heartbeat',
): Promise<{ aEnd: string; bCommitEnd: string; exact: boolean }> {
  const a = await connect(databaseUrl);
  const b = await connect(databaseUrl);
  try {
    await b.query('BEGIN');
    await b.query(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device)
       SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), 'play', now(), g % 60000, 'web' FROM generate_series(1, $2::int) g`,
      [CONTENT_IDS, bigRows],
    );
    let aEnd: string;
    if (first === 'commit') {
      await a.query(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device)
         VALUES ($1, gen_random_uuid(), 'click', now(), 1000, 'ios')`,
        [CONTENT_IDS[0]],
      );
      aEnd = (await a.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0].lsn;
    } else {
      aEnd = (
        await a.query<{ lsn: string }>(`SELECT pg_logical_emit_message(false, $1, 'x')::text AS lsn`, [
          HEARTBEAT_PREFIX,
        ])
      ).rows[0].lsn;
    }
    await b.query('COMMIT');
    const bCommitEnd = (await b.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn'))
      .rows[0].lsn;
    await a.query('CREATE EXTENSION IF NOT EXISTS pg_walinspect');
    const records = (
      await a.query<{ start_lsn: string; record_type: string }>(
        `SELECT start_lsn::text, record_type FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)
          WHERE resource_manager = 'Transaction' ORDER BY start_lsn LIMIT 1`,
        [aEnd, bCommitEnd],
      )
    ).rows;
    assert.equal(records[0]?.record_type, 'COMMIT', 'B committed after A');
    // The shape under test: B's commit record starts exactly where A's record ended. It can
    // miss (A ended on a WAL page boundary, so B starts after the page header; or another
    // record came between): callers make it again.
    return { aEnd, bCommitEnd, exact: records[0].start_lsn === aEnd };
  } finally {
    await a.end();
    await b.end();
  }
}

/** backToBack() until the shape is exact (at most `tries` times); the last attempt's positions. */
export async function exactBackToBack(
  databaseUrl: string,
  bigRows: number,
  first: 'commit' | 'heartbeat',
  tries = 4,
): Promise<{ aEnd: string; bCommitEnd: string }> {
  for (let i = 1; ; i++) {
    const shape = await backToBack(databaseUrl, bigRows, first);
    if (shape.exact) return shape;
    if (i >= tries) throw new Error(`could not make the back-to-back WAL shape in ${tries} tries`);
  }
}
