import { randomBytes } from 'node:crypto';
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
      await adminQuery(
        admin,
        `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '${name}' AND NOT active`,
      ).catch(() => undefined);
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
