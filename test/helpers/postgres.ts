import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { clientConfig } from '../../src/db/postgres.js';

/**
 * Each test file gets a fresh database on the cluster that scripts/test.mjs started
 * (embedded Postgres 18 with wal_level=logical); TEST_PG_URL points at its admin database.
 */
export async function freshDatabase(
  prefix = 't',
): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const admin = process.env.TEST_PG_URL;
  if (!admin) throw new Error('TEST_PG_URL is not set: run tests through `npm test` (scripts/test.mjs)');
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  await adminQuery(admin, `CREATE DATABASE ${name}`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: async () => {
      // Slot names are cluster-wide and most files use the default one: a slot left behind
      // (a pipeline of a failed test still streaming, or still shutting down on a slow machine)
      // would fail every later file with "slot belongs to database ...". End its walsender and
      // retry until the slot is gone.
      const slots = `FROM pg_replication_slots WHERE database = '${name}'`;
      const deadline = Date.now() + 60_000;
      for (;;) {
        await adminQuery(
          admin,
          `SELECT pg_terminate_backend(active_pid) ${slots} AND active_pid IS NOT NULL`,
        ).catch(() => undefined);
        await adminQuery(admin, `SELECT pg_drop_replication_slot(slot_name) ${slots} AND NOT active`).catch(
          () => undefined,
        );
        const left = await query<{ n: string }>(admin, `SELECT count(*) AS n ${slots}`).catch(() => [
          { n: '1' },
        ]);
        if (Number(left[0].n) === 0 || Date.now() > deadline) break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      await adminQuery(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    },
  };
}

async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client(clientConfig(url));
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export async function query<T extends pg.QueryResultRow = pg.QueryResultRow>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client(clientConfig(url));
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/**
 * Signals a cluster's postmaster (its pid from `postmaster.pid` in `dataDir`) and waits for it
 * to exit; returns how long that took. SIGQUIT is an immediate shutdown: every backend killed
 * at once, crash recovery on the next start, as after a power cut or an OOM kill. SIGINT is the
 * fast shutdown `pg_ctl stop` (and a terminal's Ctrl-C) sends, which waits for each walsender
 * to see its client confirm the sent position. Past `limitMs` it is killed with SIGQUIT, so no
 * hung cluster is left behind, and this throws.
 */
export async function stopPostmaster(
  dataDir: string,
  signal: 'SIGQUIT' | 'SIGINT',
  limitMs: number,
): Promise<number> {
  const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const started = Date.now();
  process.kill(pid, signal);
  while (Date.now() - started < limitMs) {
    try {
      process.kill(pid, 0);
    } catch {
      return Date.now() - started;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  process.kill(pid, 'SIGQUIT');
  throw new Error(`postmaster ${pid} did not exit within ${limitMs} ms of ${signal}`);
}
