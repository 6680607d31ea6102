import { configError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { Sink } from '../sink.js';
import { DuckDbSink } from './duckdb-sink.js';

/** Picks the analytics destination from ANALYTICS_URL. */
export function createAnalyticsSink(url: string, logger: Logger): Sink {
  if (url.startsWith('duckdb:')) {
    const file = url.slice('duckdb:'.length).replace(/^\/\//, '') || './data/engagement.duckdb';
    return new DuckDbSink({ path: file, logger: logger.child({ sink: 'analytics' }) });
  }
  if (url.startsWith('clickhouse://') || url.startsWith('clickhouses://') || url.startsWith('bigquery://')) {
    throw configError(
      `ANALYTICS_URL scheme of ${url.split(':')[0]} is not available in this build yet`,
      'use duckdb:PATH',
    );
  }
  throw configError(
    `ANALYTICS_URL has an unknown scheme (${url.split(':')[0]})`,
    'use duckdb:PATH, clickhouse://… or bigquery://…',
  );
}
