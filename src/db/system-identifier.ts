import pg from 'pg';
import { clientConfig } from './postgres.js';

/**
 * The Postgres cluster's system identifier (IDENTIFY_SYSTEM on a replication connection, which
 * the pipeline's role may open anyway). It changes when a cluster is rebuilt (initdb, a new
 * replica promoted from elsewhere), and with it the meaning of every LSN.
 */
export async function postgresSystemIdentifier(databaseUrl: string): Promise<string> {
  const client = new pg.Client({
    ...clientConfig(databaseUrl, 'engagement-identify'),
    replication: 'database',
  } as pg.ClientConfig);
  client.on('error', () => undefined);
  await client.connect();
  try {
    const result = await client.query<{ systemid: string }>('IDENTIFY_SYSTEM');
    const id = result.rows[0]?.systemid;
    if (!id) throw new Error('IDENTIFY_SYSTEM returned no system identifier');
    return `postgres:${id}`;
  } finally {
    await client.end().catch(() => undefined);
  }
}
