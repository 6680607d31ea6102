import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Config } from '../config.js';
import { deleteSecretParameters } from '../errors.js';
import { duckdbFileOf } from '../sinks/analytics/create-analytics-sink.js';
import { parseClusterUrl } from '../sinks/redis/redis-sink.js';
import type { BackfillSinkName } from './backfill.js';

export type DestinationSettings = Pick<Config, 'analyticsUrl' | 'redisUrl' | 'redisPrefix' | 'externalUrl'>;

/**
 * What a backfill writes into, as one short key stored with its progress: a run resumes only
 * into the same destinations. Keyed by range and sinks alone, a run killed while writing to
 * one Redis prefix (or DuckDB file, or receiver) was "resumed" by the same command aimed at
 * another, and the rows before the stored position never reached it. Credentials are left out
 * (a rotated password is the same destination) and never stored.
 */
export function destinationsKey(settings: DestinationSettings, sinks: readonly BackfillSinkName[]): string {
  const where = sinks.map((sink) => `${sink}=${destination(settings, sink)}`).join('\n');
  return createHash('sha256').update(where).digest('hex').slice(0, 16);
}

function destination(settings: DestinationSettings, sink: BackfillSinkName): string {
  switch (sink) {
    case 'analytics':
      return endpoint(settings.analyticsUrl);
    case 'redis':
      return `${endpoint(settings.redisUrl)} prefix=${settings.redisPrefix}`;
    case 'external':
      return endpoint(settings.externalUrl ?? '');
  }
}

/**
 * Scheme, host, port, path and the query but its secret parameters (a receiver may route on
 * `?tenant=`); a DuckDB file by its absolute path, as the sink opens it; a Redis Cluster by its
 * nodes.
 */
function endpoint(url: string): string {
  if (url.startsWith('duckdb:')) return `duckdb:${path.resolve(duckdbFileOf(url))}`;
  const cluster = parseClusterUrl(url);
  if (cluster) return `cluster:${cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Not a URL (config validation lets none through): only its shape, never its text.
    return 'unparsed';
  }
  deleteSecretParameters(parsed);
  parsed.searchParams.sort();
  return `${parsed.protocol}//${parsed.host}${parsed.pathname}${parsed.search}`;
}
