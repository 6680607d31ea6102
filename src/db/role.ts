import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { DEFAULT_SHAPE, qualifiedName, quoteIdent, type SourceShape } from '../domain/source-shape.js';
import { configError } from '../errors.js';
import { ident } from './postgres.js';
import { STATE_SCHEMA } from './schema.js';

export interface PipelineRole {
  name: string;
  /** Set when this call generated the password (shown once); null when the caller gave it. */
  generatedPassword: string | null;
  created: boolean;
}

/**
 * The least-privilege role the pipeline should run as (`engagement migrate --create-role`):
 * LOGIN + REPLICATION (stream the slot, emit heartbeats), SELECT on the two source tables
 * (content snapshot, lookups, backfill), and ownership of its own state schema and every
 * table in it (dead letters, progress, the content history; tables a later `migrate` adds
 * are handed to the schema's owner there) — nothing else: it cannot write the user's tables,
 * read other tables, create databases or roles.
 * Idempotent: an existing role is brought to exactly these grants (its password changes only
 * when one is given or it was just created).
 */
export async function ensurePipelineRole(
  client: pg.Client,
  options: { name: string; password?: string; shape?: SourceShape },
): Promise<PipelineRole> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(options.name)) {
    throw configError(
      `--create-role: "${options.name}" is not a plain role name`,
      'use lower-case letters, digits and _',
    );
  }
  const role = ident(options.name);
  const exists =
    (await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [options.name])).rowCount === 1;
  const generatedPassword = options.password || exists ? null : randomBytes(18).toString('base64url');
  const password = options.password ?? generatedPassword;
  const { rows } = await client.query<{ db: string }>('SELECT current_database() AS db');
  const database = ident(rows[0]!.db);

  await client.query('BEGIN');
  try {
    await client.query(
      `${exists ? 'ALTER' : 'CREATE'} ROLE ${role} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS`,
    );
    if (password !== null) {
      // The password travels as a literal (ALTER ROLE takes no parameters); quote_literal escapes it.
      const { rows: lit } = await client.query<{ q: string }>('SELECT quote_literal($1) AS q', [password]);
      await client.query(`ALTER ROLE ${role} PASSWORD ${lit[0]!.q}`);
    }
    await client.query(`GRANT CONNECT ON DATABASE ${database} TO ${role}`);
    const { content, events } = options.shape ?? DEFAULT_SHAPE;
    for (const schema of new Set([content.schema, events.schema]))
      await client.query(`GRANT USAGE ON SCHEMA ${quoteIdent(schema)} TO ${role}`);
    await client.query(`GRANT SELECT ON ${qualifiedName(content)}, ${qualifiedName(events)} TO ${role}`);
    // Its own state schema: owner of the schema and of everything in it.
    await client.query(`ALTER SCHEMA ${STATE_SCHEMA} OWNER TO ${role}`);
    const owned = await client.query<{ kind: string; name: string }>(
      `SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind, c.relname AS name
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'S') AND NOT EXISTS (
          SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'a' AND c.relkind = 'S')`,
      [STATE_SCHEMA],
    );
    for (const { kind, name } of owned.rows) {
      await client.query(`ALTER ${kind} ${STATE_SCHEMA}.${ident(name)} OWNER TO ${role}`);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  return { name: options.name, generatedPassword, created: !exists };
}
