import pg from 'pg';

/**
 * Type parsing for every Postgres connection of the process (the replication decoder uses
 * pg's global parsers too): timestamps stay text so no microseconds are lost; int8 stays
 * text and is converted where it is read.
 */
const TIMESTAMPTZ_OID = 1184;
const TIMESTAMP_OID = 1114;
pg.types.setTypeParser(TIMESTAMPTZ_OID, (value: string) => value);
pg.types.setTypeParser(TIMESTAMP_OID, (value: string) => value);

/** Connection options shared by every client: UTC session so timestamp text is +00. */
export function clientConfig(databaseUrl: string, applicationName = 'engagement-pipeline'): pg.ClientConfig {
  return {
    connectionString: databaseUrl,
    application_name: applicationName,
    options: '-c TimeZone=UTC',
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
  };
}

export function createPool(databaseUrl: string, max = 4, applicationName?: string): pg.Pool {
  const pool = new pg.Pool({ ...clientConfig(databaseUrl, applicationName), max });
  // An idle client's error (server restart) must not crash the process; the next query fails instead.
  pool.on('error', () => undefined);
  return pool;
}

export async function withClient<T>(databaseUrl: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(clientConfig(databaseUrl));
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Quotes an identifier that config validation already restricted to [a-z0-9_]. */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
