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

/**
 * Session settings every connection pins, the replication connection included (the
 * walsender formats pgoutput's text values with them): the parsers here read ISO timestamps
 * in UTC, so a database or role set to `DateStyle='SQL, DMY'` or another time zone must not
 * change what arrives. Startup options take precedence over ALTER DATABASE/ROLE … SET.
 */
export const PINNED_SESSION_SETTINGS =
  '-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex';

/**
 * Connection options shared by every client: the pinned session settings above, after any
 * `options` the URL carries (pg lets a URL's `options` replace ours wholesale, so they are
 * taken out of the URL and put first; the pins, last, win).
 */
export function clientConfig(databaseUrl: string, applicationName = 'engagement-pipeline'): pg.ClientConfig {
  const { connectionString, options } = splitUrlOptions(databaseUrl);
  return {
    connectionString,
    application_name: applicationName,
    options: [options, PINNED_SESSION_SETTINGS].filter(Boolean).join(' '),
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
  };
}

function splitUrlOptions(databaseUrl: string): { connectionString: string; options: string } {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    return { connectionString: databaseUrl, options: '' }; // a key=value string: left as it is
  }
  const options = url.searchParams.get('options') ?? '';
  if (!options) return { connectionString: databaseUrl, options: '' };
  url.searchParams.delete('options');
  return { connectionString: url.toString(), options };
}

export function createPool(databaseUrl: string, max = 4, applicationName?: string): pg.Pool {
  const pool = new pg.Pool({ ...clientConfig(databaseUrl, applicationName), max });
  // An idle client's error (server restart) must not crash the process; the next query fails instead.
  pool.on('error', () => undefined);
  return pool;
}

/**
 * Postgres is shutting down or not yet accepting connections: admin_shutdown (57P01, sent to
 * every backend by a fast or smart shutdown), crash_shutdown (57P02), cannot_connect_now (57P03).
 */
export function isServerShutdown(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '57P01' || code === '57P02' || code === '57P03';
}

/**
 * The connection to Postgres was lost or refused (a restart, a failover), not a statement
 * refused: worth waiting for.
 */
export function isConnectionLost(err: unknown): boolean {
  if (isServerShutdown(err)) return true;
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (
    typeof code === 'string' &&
    (code.startsWith('08') || ['ECONNREFUSED', 'ECONNRESET', 'EPIPE'].includes(code))
  )
    return true;
  return typeof message === 'string' && /Connection terminated/.test(message);
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
