import type pg from 'pg';
import { ErrorCodes, PipelineError } from '../errors.js';
import { ident, withClient } from './postgres.js';
import { STATE_SCHEMA } from './schema.js';

/**
 * How `migrate` reads and writes the state schema. When the schema belongs to another role (the
 * pipeline's own, `migrate --create-role`), that role can put triggers, defaults, policies or a
 * view in place of a table, and such code runs with the rights of whoever touches them. `SET
 * ROLE` does not contain it (the code can `RESET ROLE`). A `SECURITY DEFINER` function does:
 * inside one, Postgres refuses `SET ROLE` and `RESET ROLE`. So each access runs in a session of
 * its own, through a temporary function owned by the schema's owner that executes our
 * statements (parameters inlined as literals), and the session is closed right after: code of
 * the role runs with the role's rights only, and nothing it leaves in that session (settings,
 * temporary objects) reaches a statement run with the administrator's.
 */
export interface StateAccess {
  /** Runs the statements in order, in one transaction. */
  exec(statements: readonly Statement[]): Promise<void>;
  /** The rows of one SELECT. */
  select<T>(statement: Statement): Promise<T[]>;
}

export interface Statement {
  text: string;
  params?: readonly (string | number | null)[];
}

/** The state schema's owner when it exists and is not the connected role, else null. */
export async function foreignStateOwner(client: pg.Client): Promise<string | null> {
  const { rows } = await client.query<{ owner: string }>(
    `SELECT pg_catalog.pg_get_userbyid(nspowner) AS owner FROM pg_catalog.pg_namespace
      WHERE nspname = $1 AND nspowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)`,
    [STATE_SCHEMA],
  );
  return rows[0]?.owner ?? null;
}

/** The connected role's own schema (or none yet): statements run on `client` as they are. */
export function directStateAccess(client: pg.Client): StateAccess {
  return {
    async exec(statements) {
      await client.query('BEGIN');
      try {
        for (const s of statements) await client.query(s.text, s.params as unknown[]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    },
    async select<T>(s: Statement) {
      return (await client.query(s.text, s.params as unknown[])).rows as T[];
    },
  };
}

/** Another role's schema: every access in a session of its own, inside a function owned by `owner`. */
export function ownerStateAccess(databaseUrl: string, owner: string): StateAccess {
  const run = <T>(statements: readonly Statement[], returning: boolean): Promise<T[]> =>
    withClient(databaseUrl, async (client) => {
      await assertTriggersRunAsQueuer(client, owner);
      const body = returning
        ? `RETURN QUERY EXECUTE 'SELECT pg_catalog.to_jsonb(r) FROM (' || statements[1] || ') r';`
        : 'FOREACH s IN ARRAY statements LOOP EXECUTE s; END LOOP;';
      await client.query(
        `CREATE FUNCTION pg_temp.engagement_state_access(statements text[]) RETURNS SETOF jsonb
           LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
           AS $body$ DECLARE s text; BEGIN ${body} END $body$`,
      );
      try {
        await client.query(`ALTER FUNCTION pg_temp.engagement_state_access(text[]) OWNER TO ${ident(owner)}`);
      } catch (err) {
        if ((err as { code?: string }).code !== '42501') throw err;
        throw new PipelineError(
          ErrorCodes.CONFIG,
          `the state schema ${STATE_SCHEMA} belongs to role ${owner}, and migrate works in it only with that role's rights, which the connected role cannot give`,
          'config',
          `run migrate as a superuser, or as a member of ${owner} (GRANT ${ident(owner)} TO <you>)`,
        );
      }
      const inlined = statements.map((s) => inline(client, s));
      const { rows } = await client.query<{ row: T }>(
        'SELECT r AS row FROM pg_temp.engagement_state_access($1::text[]) AS r',
        [inlined],
      );
      return rows.map((r) => r.row);
    });
  return {
    async exec(statements) {
      if (statements.length > 0) await run(statements, false);
    },
    select: <T>(s: Statement) => run<T>([s], true),
  };
}

/**
 * Before PostgreSQL 17, a deferred trigger (a constraint trigger the role made `INITIALLY
 * DEFERRED`) fires at COMMIT with the rights of whoever commits, outside the function: the
 * administrator. No check inside the function holds against code that may re-defer and alter
 * its triggers, so there migrate leaves another role's schema alone. Since 17 such triggers run
 * as the role that queued them.
 */
async function assertTriggersRunAsQueuer(client: pg.Client, owner: string): Promise<void> {
  const { rows } = await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
  if (Number(rows[0].v) >= 170000) return;
  throw new PipelineError(
    ErrorCodes.CONFIG,
    `the state schema ${STATE_SCHEMA} belongs to role ${owner}; before PostgreSQL 17 an administrator's session would run that role's deferred triggers with the administrator's rights, so migrate does not touch it`,
    'config',
    `run migrate as ${owner} itself (DATABASE_URL with its user: with the publication in place it may create its slot; the state schema is its own)`,
  );
}

/**
 * `$n` replaced by the parameter as a literal (the function's EXECUTE takes no parameters);
 * quoted identifiers and literals are left as they are (a column may be named `cid$1`).
 */
export function inline(client: Pick<pg.Client, 'escapeLiteral'>, s: Statement): string {
  return s.text.replace(/"(?:[^"]|"")*"|'(?:[^']|'')*'|\$(\d+)/g, (token, n: string | undefined) => {
    if (n === undefined) return token;
    const v = s.params?.[Number(n) - 1];
    if (v === undefined) throw new Error(`statement parameter $${n} missing`);
    if (v === null) return 'NULL';
    return typeof v === 'number' ? String(v) : client.escapeLiteral(v);
  });
}
