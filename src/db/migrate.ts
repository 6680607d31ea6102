import type pg from 'pg';
import { ErrorCodes, PipelineError } from '../errors.js';
import { qualifiedName, type SourceShape } from '../domain/source-shape.js';
import { ContentHistory } from '../enrichment/content-history.js';
import { assertReplicaIdentity, discoverShape, sourceTablesExist, type ShapeSettings } from './catalog.js';
import { ident, withClient } from './postgres.js';
import { assertPublicationStreams } from './publication.js';
import { ensureStateSchema, SOURCE_TABLES_SQL, STATE_SCHEMA, STATE_TABLES_SQL } from './schema.js';
import {
  directStateAccess,
  foreignStateOwner,
  ownerStateAccess,
  type Statement,
  type StateAccess,
} from './state-owner.js';

export interface MigrateOptions extends ShapeSettings {
  slotName: string;
  publicationName: string;
  /** Drop and recreate an invalidated slot, or recreate one that disappeared (data since then is lost). */
  recreateSlot?: boolean;
}

export interface MigrateReport {
  createdTables: string[];
  /** The source tables as discovered after migrating. */
  shape: SourceShape;
  publication: 'created' | 'updated' | 'present';
  slot: 'created' | 'present' | 'recreated';
  /** When the slot was recreated: the last commit time the pipeline delivered (backfill from here). */
  lastDeliveredAt?: string | null;
}

/**
 * Idempotent: the default tables when neither source table exists (a user's table is never
 * created next to, or altered), the shape check, publication, state schema, then the slot
 * (last, so it starts after all DDL).
 */
export async function migrate(databaseUrl: string, options: MigrateOptions): Promise<MigrateReport> {
  return withClient(databaseUrl, async (client) => {
    await assertReplicationReady(client);
    const existing = await sourceTablesExist(client, options);
    const createdTables: string[] = [];
    // Only the default names: tables named by EVENTS_TABLE / CONTENT_TABLE are the user's, and
    // when they are missing (a typo, another database) that is said, not papered over with new tables.
    const named = options.eventsTable !== undefined || options.contentTable !== undefined;
    if (!existing.events && !existing.content && !named) {
      await client.query(SOURCE_TABLES_SQL);
      createdTables.push('content', 'engagement_events');
    }
    // A table that does not fit (a needed column missing, an unsupported key type) stops here, in one line.
    const shape = await discoverShape(client, options);
    await assertReplicaIdentity(client, shape);
    // The state schema may be the pipeline role's: see state-owner.ts for why it is then only
    // touched through that role's rights, in sessions of their own.
    const owner = await foreignStateOwner(client);
    const state = owner === null ? directStateAccess(client) : ownerStateAccess(databaseUrl, owner);
    if (owner === null) await ensureStateSchema(client);
    else await state.exec([{ text: STATE_TABLES_SQL }]);
    await stateTablesToSchemaOwner(client);
    const publication = await ensurePublication(client, options.publicationName, shape);
    const slot = await ensureSlot(client, options.slotName, options.recreateSlot ?? false, state);
    // A new slot starts a new content history, as close to its starting point as we can read.
    // Both or neither: a slot left without its history would read as 'present' next time and
    // keep the old slot's history, so a failure here drops the slot again. A recreated slot is
    // then missing, and the next migrate says to recreate it (the gap needs a backfill); a
    // first slot is forgotten too, so the next migrate simply creates it.
    if (slot !== 'present') {
      try {
        await restartContentHistory(state, options.slotName, shape);
      } catch (err) {
        await client.query('SELECT pg_drop_replication_slot($1)', [options.slotName]).catch(() => undefined);
        if (slot === 'created') await state.exec([forgetSlot(options.slotName)]).catch(() => undefined);
        throw err;
      }
    }
    const report: MigrateReport = { createdTables, shape, publication, slot };
    if (slot === 'recreated') report.lastDeliveredAt = await lastDeliveredAt(state, options.slotName);
    return report;
  });
}

/** Fails with one line and the exact fix when logical replication cannot work. */
export async function assertReplicationReady(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{
    wal_level: string;
    rolreplication: boolean;
    rolsuper: boolean;
    rolname: string;
  }>(
    `SELECT current_setting('wal_level') AS wal_level, rolreplication, rolsuper, rolname
       FROM pg_roles WHERE rolname = current_user`,
  );
  const row = rows[0];
  if (row.wal_level !== 'logical') {
    throw new PipelineError(
      ErrorCodes.WAL_LEVEL,
      `wal_level is '${row.wal_level}', logical replication needs 'logical'`,
      'config',
      `ALTER SYSTEM SET wal_level = logical; then restart Postgres`,
    );
  }
  if (!row.rolreplication && !row.rolsuper) {
    throw new PipelineError(
      ErrorCodes.NO_REPLICATION_PRIVILEGE,
      `role ${row.rolname} lacks the REPLICATION attribute`,
      'config',
      `ALTER ROLE ${ident(row.rolname)} WITH REPLICATION; (as a superuser)`,
    );
  }
}

/**
 * The publication covers the shape's two tables (others it already covers stay), with every
 * action and no row filter or column list (CREATE PUBLICATION's defaults). One that exists is
 * checked before anything is changed (assertPublicationStreams): what would filter changes is
 * refused, a missing table added. A partitioned table's rows are published under the
 * partition's own name unless the publication says publish_via_partition_root: the stream
 * would not recognise them as the events (or content) table and every such row would be passed
 * over. So with a partitioned table the publication publishes through the root (set on an
 * existing one too: it is ours).
 */
async function ensurePublication(
  client: pg.Client,
  name: string,
  shape: SourceShape,
): Promise<MigrateReport['publication']> {
  const tables = [shape.content, shape.events];
  const viaRoot = await anyPartitioned(client, shape);
  const exists = await client.query<{ pubviaroot: boolean }>(
    'SELECT pubviaroot FROM pg_publication WHERE pubname = $1',
    [name],
  );
  if (exists.rowCount === 0) {
    await client.query(
      `CREATE PUBLICATION ${ident(name)} FOR TABLE ${tables.map(qualifiedName).join(', ')}` +
        (viaRoot ? ' WITH (publish_via_partition_root = true)' : ''),
    );
    return 'created';
  }
  const missing = await assertPublicationStreams(client, name, shape, { tablesMayBeMissing: true });
  let result: MigrateReport['publication'] = 'present';
  if (viaRoot && !exists.rows[0].pubviaroot) {
    await client.query(`ALTER PUBLICATION ${ident(name)} SET (publish_via_partition_root = true)`);
    result = 'updated';
  }
  if (missing.length === 0) return result;
  await client.query(`ALTER PUBLICATION ${ident(name)} ADD TABLE ${missing.map(qualifiedName).join(', ')}`);
  return 'updated';
}

async function anyPartitioned(client: pg.Client, shape: SourceShape): Promise<boolean> {
  const { rows } = await client.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_class WHERE oid IN (to_regclass($1), to_regclass($2)) AND relkind = 'p'`,
    [qualifiedName(shape.content), qualifiedName(shape.events)],
  );
  return rows[0].n > 0;
}

/**
 * Creates the slot once. A slot that migrate created before and that is now gone, or one
 * Postgres invalidated (wal_status 'lost'), means changes were lost: that is reported with
 * the recovery steps and only repaired with --recreate-slot, never silently.
 */
async function ensureSlot(
  client: pg.Client,
  name: string,
  recreate: boolean,
  state: StateAccess,
): Promise<MigrateReport['slot']> {
  const slot = await readSlot(client, name);
  const known = await state.select<{ created_at: string }>({
    text: `SELECT created_at::text AS created_at FROM ${STATE_SCHEMA}.slot_state WHERE slot_name = $1`,
    params: [name],
  });
  if (slot.exists && slot.otherDatabase) throw slotOfOtherDatabaseError(name, slot.database ?? null);
  if (slot.exists && slot.walStatus !== 'lost') {
    if (known.length === 0) await state.exec([recordSlot(name)]);
    return 'present';
  }
  if (slot.exists) {
    if (!recreate) throw slotInvalidatedError(name);
    await client.query('SELECT pg_drop_replication_slot($1)', [name]);
  } else if (known.length > 0 && !recreate) {
    throw new PipelineError(
      ErrorCodes.SLOT_MISSING,
      `replication slot '${name}' (created ${known[0].created_at}) no longer exists; changes since it was dropped are not in any slot`,
      'config',
      'run `engagement migrate --recreate-slot`, then `engagement backfill --from <time printed> --to now` for the gap',
    );
  }
  const { rows } = await client.query<{ lsn: string }>(
    `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`,
    [name],
  );
  await state.exec([recordSlot(name, rows[0].lsn)]);
  return slot.exists || known.length > 0 ? 'recreated' : 'created';
}

/**
 * A state table this migrate added (an upgrade) belongs to whoever ran it; when the state
 * schema was handed to the pipeline's own role (`--create-role`), that role could not use it.
 * Tables follow the schema's owner (their sequences move with them).
 */
async function stateTablesToSchemaOwner(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ name: string; owner: string }>(
    `SELECT c.relname AS name, pg_get_userbyid(n.nspowner) AS owner
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relowner <> n.nspowner`,
    [STATE_SCHEMA],
  );
  for (const { name, owner } of rows) {
    try {
      await client.query(`ALTER TABLE ${STATE_SCHEMA}.${ident(name)} OWNER TO ${ident(owner)}`);
    } catch (err) {
      // Not allowed to (not a member of the owner role): `migrate --create-role` as a superuser fixes it.
      if ((err as { code?: string }).code !== '42501') throw err;
    }
  }
}

async function restartContentHistory(
  state: StateAccess,
  slotName: string,
  shape: SourceShape,
): Promise<void> {
  // ContentHistory's own statements, collected and run in one transaction.
  const statements: Statement[] = [];
  const collect = {
    query: async (text: string, params?: (string | number | null)[]) => {
      statements.push({ text, params });
      return { rows: [], rowCount: 0 };
    },
  } as unknown as pg.Client;
  const history = new ContentHistory(collect, slotName, shape);
  await history.reset();
  await history.seed();
  await state.exec(statements);
}

function forgetSlot(name: string): Statement {
  return { text: `DELETE FROM ${STATE_SCHEMA}.slot_state WHERE slot_name = $1`, params: [name] };
}

function recordSlot(name: string, lsn?: string): Statement {
  return {
    text: `INSERT INTO ${STATE_SCHEMA}.slot_state (slot_name, created_lsn) VALUES ($1, $2)
     ON CONFLICT (slot_name) DO UPDATE SET created_at = now(), created_lsn = EXCLUDED.created_lsn`,
    params: [name, lsn ?? null],
  };
}

async function lastDeliveredAt(state: StateAccess, name: string): Promise<string | null> {
  const rows = await state.select<{ t: string | null }>({
    text: `SELECT to_json(max(last_committed_at)) #>> '{}' AS t FROM ${STATE_SCHEMA}.sink_progress WHERE slot_name = $1`,
    params: [name],
  });
  return rows[0]?.t ?? null;
}

/**
 * Slot names are cluster-wide but a logical slot decodes one database: a second database on
 * the same server (a second pipeline, a staging copy) with the default SLOT_NAME would find
 * the first one's slot, and streaming from it fails (or would read the other database).
 */
export function slotOfOtherDatabaseError(name: string, database: string | null): PipelineError {
  return new PipelineError(
    ErrorCodes.SLOT_IN_USE,
    `replication slot '${name}' belongs to database '${database ?? '?'}', not this one (a slot streams one database)`,
    'config',
    'give this database a slot and publication of its own: SLOT_NAME=... PUBLICATION_NAME=... `engagement migrate` (same settings for run)',
  );
}

/** Another process streams from the slot (a slot takes one reader at a time). */
export function slotInUseError(name: string, slot: SlotState): PipelineError {
  const who = [
    slot.activePid == null ? null : `PID ${slot.activePid}`,
    slot.activeApplication ? `application_name '${slot.activeApplication}'` : null,
  ].filter((x) => x !== null);
  return new PipelineError(
    ErrorCodes.SLOT_IN_USE,
    `replication slot '${name}' is in use by another process${who.length > 0 ? ` (${who.join(', ')})` : ''}: a slot streams to one reader at a time`,
    'config',
    'stop the other `engagement run` (or `capture`) first; a second pipeline needs a slot of its own: SLOT_NAME=... PUBLICATION_NAME=... `engagement migrate`',
  );
}

/** The slot exists but Postgres removed WAL it still needed (max_slot_wal_keep_size). */
export function slotInvalidatedError(name: string): PipelineError {
  return new PipelineError(
    ErrorCodes.SLOT_INVALIDATED,
    `replication slot '${name}' was invalidated (wal_status lost: Postgres removed WAL past max_slot_wal_keep_size); changes since the last confirmed position are lost`,
    'fatal',
    'run `engagement migrate --recreate-slot`, then `engagement backfill --from <last delivered time> --to now` (see `engagement status`)',
  );
}

export interface SlotState {
  exists: boolean;
  active: boolean;
  confirmedFlushLsn: string | null;
  walStatus: string | null;
  /** The slot's database (a logical slot serves one) and whether it is the one connected to. */
  database?: string | null;
  otherDatabase?: boolean;
  /** While active: the process streaming from it, and its application_name. */
  activePid?: number | null;
  activeApplication?: string | null;
}

export async function readSlot(client: pg.Client | pg.Pool, name: string): Promise<SlotState> {
  const { rows } = await client.query<{
    active: boolean;
    confirmed_flush_lsn: string | null;
    wal_status: string | null;
    database: string | null;
    other_database: boolean;
    active_pid: number | null;
    application_name: string | null;
  }>(
    `SELECT s.active, s.confirmed_flush_lsn::text, s.wal_status, s.database::text,
            coalesce(s.database <> current_database(), false) AS other_database,
            s.active_pid, a.application_name
       FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
      WHERE s.slot_name = $1`,
    [name],
  );
  if (rows.length === 0) return { exists: false, active: false, confirmedFlushLsn: null, walStatus: null };
  return {
    exists: true,
    active: rows[0].active,
    confirmedFlushLsn: rows[0].confirmed_flush_lsn,
    walStatus: rows[0].wal_status,
    database: rows[0].database,
    otherDatabase: rows[0].other_database,
    activePid: rows[0].active_pid,
    activeApplication: rows[0].application_name,
  };
}
