import type { Config } from '../../config.js';
import type { KeyTypes } from '../../domain/source-shape.js';
import { configError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { DeadLetterStore } from '../../state/dead-letter.js';
import { RowCheckedSink, type RowProblem } from '../row-check.js';
import type { Sink } from '../sink.js';
import { bigQueryRowProblem } from './bigquery-schema.js';
import { BigQuerySink, parseBigQueryUrl } from './bigquery-sink.js';
import { clickHouseRowProblem } from './clickhouse-schema.js';
import { ClickHouseSink, parseClickHouseUrl } from './clickhouse-sink.js';
import { DuckDbSink } from './duckdb-sink.js';
import { DEFAULT_KEY_TYPES } from './columns.js';
import { duckDbRowProblem } from './representable.js';
import type { PositionedStream } from '../source-identity.js';

/** The analytics settings of the configuration (env-only, validated by configSpec). */
export type AnalyticsSettings = Pick<
  Config,
  | 'duckdbMemoryLimit'
  | 'duckdbThreads'
  | 'bigqueryApiEndpoint'
  | 'bigqueryAccessToken'
  | 'analyticsWriteIntervalMs'
>;

export interface AnalyticsSinkDeps {
  /**
   * Where rows the destination cannot hold go (values outside its ranges, checked before it
   * sees them, and BigQuery's per-row refusals); required for bigquery:// URLs. Without it a
   * row outside DuckDB's or ClickHouse's range fails its batch on every retry.
   */
  deadLetters?: DeadLetterStore;
  /** Counts the rows the row check dead-letters (engagement_dead_letters_total). */
  metrics?: Pick<Metrics, 'deadLetters'>;
  /** DUCKDB_MEMORY_LIMIT, BIGQUERY_API_ENDPOINT (emulator/test server) and BIGQUERY_ACCESS_TOKEN. */
  settings: AnalyticsSettings;
  /** DuckDB: wait for another writer's lock instead of failing start() (see DuckDbSink). */
  waitWhileLocked?: boolean;
  /** DuckDB: the stream whose positions recognise replays, and its source's identity (see DuckDbSink). */
  positionedStream?: PositionedStream;
  /**
   * The source's key types (SourceShape.keyTypes): content_id/user_id columns are typed from
   * them, and a table created earlier for other key types is refused at start. Default: UUID keys.
   */
  keyTypes?: KeyTypes;
}

/**
 * Picks the analytics destination from ANALYTICS_URL, behind its row check (see RowCheckedSink).
 * Every analytics store pays per commit (DuckDB's transaction, a ClickHouse part, a BigQuery
 * request), so it commits at most every ANALYTICS_WRITE_INTERVAL_MS (the fan-out merges what
 * arrives meanwhile).
 */
export function createAnalyticsSink(url: string, logger: Logger, deps: AnalyticsSinkDeps): Sink {
  const sink = pickAnalyticsSink(url, logger, deps);
  sink.writeIntervalMs = deps.settings.analyticsWriteIntervalMs;
  return sink;
}

function pickAnalyticsSink(url: string, logger: Logger, deps: AnalyticsSinkDeps): Sink {
  const child = logger.child({ sink: 'analytics' });
  const keyTypes = deps.keyTypes ?? DEFAULT_KEY_TYPES;
  const checked = (sink: Sink, problem: RowProblem, destination: string): Sink =>
    deps.deadLetters
      ? new RowCheckedSink(sink, problem, {
          deadLetters: deps.deadLetters,
          logger: child,
          metrics: deps.metrics,
          destination,
        })
      : sink;
  if (url.startsWith('duckdb:')) {
    const file = duckdbFileOf(url);
    return checked(
      new DuckDbSink({
        path: file,
        logger: child,
        waitWhileLocked: deps.waitWhileLocked,
        memoryLimit: deps.settings.duckdbMemoryLimit,
        threads: deps.settings.duckdbThreads,
        positionedStream: deps.positionedStream,
        keyTypes,
      }),
      (e) => duckDbRowProblem(e, keyTypes),
      'DuckDB',
    );
  }
  if (url.startsWith('clickhouse://') || url.startsWith('clickhouses://')) {
    return checked(
      new ClickHouseSink({ target: parseClickHouseUrl(url), logger: child, keyTypes }),
      (e) => clickHouseRowProblem(e, keyTypes),
      'ClickHouse',
    );
  }
  if (url.startsWith('bigquery://')) {
    if (!deps.deadLetters) throw configError('the BigQuery sink needs the dead-letter table (DATABASE_URL)');
    const sink = new BigQuerySink({
      target: parseBigQueryUrl(url),
      deadLetters: deps.deadLetters,
      logger: child,
      apiEndpoint: deps.settings.bigqueryApiEndpoint,
      accessToken: deps.settings.bigqueryAccessToken?.reveal(),
      keyTypes,
    });
    return checked(sink, (e) => bigQueryRowProblem(e, keyTypes), 'BigQuery');
  }
  throw configError(
    `ANALYTICS_URL has an unknown scheme (${url.split(':')[0]})`,
    'use duckdb:PATH, clickhouse://… or bigquery://…',
  );
}

/** The file a `duckdb:` ANALYTICS_URL names (`duckdb:PATH` or `duckdb://PATH`; empty: the default). */
export function duckdbFileOf(url: string): string {
  return url.slice('duckdb:'.length).replace(/^\/\//, '') || './data/engagement.duckdb';
}
