import { configError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { DeadLetterStore } from '../dead-letter.js';
import type { Sink } from '../sink.js';
import { BigQuerySink, parseBigQueryUrl } from './bigquery-sink.js';
import { ClickHouseSink, parseClickHouseUrl } from './clickhouse-sink.js';
import { DuckDbSink } from './duckdb-sink.js';

export interface AnalyticsSinkDeps {
  /** Where BigQuery's per-row refusals go; required for bigquery:// URLs. */
  deadLetters?: DeadLetterStore;
  /** BIGQUERY_API_ENDPOINT (emulator/test server) and BIGQUERY_ACCESS_TOKEN are read from here. */
  env?: NodeJS.ProcessEnv;
  /** DuckDB: wait for another writer's lock instead of failing start() (see DuckDbSink). */
  waitWhileLocked?: boolean;
  /** DuckDB: the stream whose positions recognise replays, and its source's identity (see DuckDbSink). */
  positionedStream?: { stream: string; sourceId: () => Promise<string> };
}

/** Picks the analytics destination from ANALYTICS_URL. */
export function createAnalyticsSink(url: string, logger: Logger, deps: AnalyticsSinkDeps = {}): Sink {
  const child = logger.child({ sink: 'analytics' });
  if (url.startsWith('duckdb:')) {
    const file = url.slice('duckdb:'.length).replace(/^\/\//, '') || './data/engagement.duckdb';
    // 64MB: the buffer pool spills and evicts instead of growing (RSS stayed flat up to 3M rows).
    const memoryLimit = (deps.env ?? process.env).DUCKDB_MEMORY_LIMIT || '64MB';
    if (!/^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i.test(memoryLimit)) {
      throw configError(`DUCKDB_MEMORY_LIMIT: expected a size like 256MB or 1GiB (got "${memoryLimit}")`);
    }
    return new DuckDbSink({
      path: file,
      logger: child,
      waitWhileLocked: deps.waitWhileLocked,
      memoryLimit,
      positionedStream: deps.positionedStream,
    });
  }
  if (url.startsWith('clickhouse://') || url.startsWith('clickhouses://')) {
    return new ClickHouseSink({ target: parseClickHouseUrl(url), logger: child });
  }
  if (url.startsWith('bigquery://')) {
    if (!deps.deadLetters) throw configError('the BigQuery sink needs the dead-letter table (DATABASE_URL)');
    const env = deps.env ?? process.env;
    return new BigQuerySink({
      target: parseBigQueryUrl(url),
      deadLetters: deps.deadLetters,
      logger: child,
      apiEndpoint: env.BIGQUERY_API_ENDPOINT || undefined,
      accessToken: env.BIGQUERY_ACCESS_TOKEN || undefined,
    });
  }
  throw configError(
    `ANALYTICS_URL has an unknown scheme (${url.split(':')[0]})`,
    'use duckdb:PATH, clickhouse://… or bigquery://…',
  );
}
