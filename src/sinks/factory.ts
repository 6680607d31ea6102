import type { Config } from '../config.js';
import type { KeyTypes } from '../domain/source-shape.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../observability/metrics.js';
import { DeadLetterStore } from '../state/dead-letter.js';
import { createAnalyticsSink, type AnalyticsSinkDeps } from './analytics/create-analytics-sink.js';
import { ExternalSink, type ExternalSinkOptions } from './external/external-sink.js';
import { createKafkaEnrichedSink } from './kafka/kafka-sink.js';
import { RedisSink, type RedisSinkOptions } from './redis/redis-sink.js';
import type { Sink } from './sink.js';
import type { PositionedStream } from './source-identity.js';

/**
 * The one place sinks are built from the configuration: `run` (direct mode), `work` (Kafka
 * workers), `backfill` and `dlq replay` differ only in which sinks they want and in a few
 * per-mode choices, never in how a sink is put together.
 */

/** The destinations, in fan-out order. */
export const SINK_NAMES = ['analytics', 'redis', 'external', 'kafka'] as const;
export type SinkName = (typeof SINK_NAMES)[number];

export interface SinkFactoryDeps {
  logger: Logger;
  metrics: Metrics;
  deadLetters: DeadLetterStore;
}

/**
 * A mode's choices for the analytics sink: everything createAnalyticsSink takes besides
 * what the factory supplies (the dead-letter table, metrics, settings), handed on as given.
 */
export type AnalyticsOptions = Omit<AnalyticsSinkDeps, 'deadLetters' | 'metrics' | 'settings'>;

export interface SinkFactoryOptions {
  /** The sinks wanted (default: all); external needs EXTERNAL_URL, kafka KAFKA_ENRICHED_TOPIC. */
  only?: readonly SinkName[];
  analytics?: AnalyticsOptions;
  /** A mode's choices for the Redis sink (direct mode: the slot's source identity, stored with its watermark). */
  redis?: Pick<RedisSinkOptions, 'positionedStream'>;
  /** The same for the enriched topic's sink (stored in each record's headers). */
  kafka?: { positionedStream?: PositionedStream };
  /** The source's key types (discovered from the catalog); every destination types its keys by them. */
  keyTypes?: KeyTypes;
}

export interface SinkSet {
  analytics?: Sink;
  redis?: RedisSink;
  external?: ExternalSink;
  kafka?: Sink;
  /** Every sink built, in fan-out order. */
  all: Sink[];
}

/** Builds the sinks named by the configuration (and `only`), each with its own logger. */
export function createSinks(
  config: Config,
  deps: SinkFactoryDeps,
  options: SinkFactoryOptions = {},
): SinkSet {
  const wanted = (name: SinkName) => options.only?.includes(name) ?? true;
  const { logger, metrics, deadLetters } = deps;
  const set: SinkSet = { all: [] };
  if (wanted('analytics')) {
    set.analytics = createAnalyticsSink(config.analyticsUrl, logger, {
      ...options.analytics,
      keyTypes: options.keyTypes,
      deadLetters,
      metrics,
      settings: config,
    });
  }
  if (wanted('redis')) {
    set.redis = new RedisSink({
      url: config.redisUrl,
      prefix: config.redisPrefix,
      logger: logger.child({ sink: 'redis' }),
      keyTypes: options.keyTypes,
      positionedStream: options.redis?.positionedStream,
    });
  }
  if (wanted('external')) {
    set.external =
      externalSinkFromConfig(config, {
        deadLetters,
        metrics,
        // Not a child logger: the sink's lines name it themselves (a child would repeat the key).
        logger,
        keyTypes: options.keyTypes,
      }) ?? undefined;
    if (!set.external) logger.warn('EXTERNAL_URL is not set: the external sink is off');
  }
  if (wanted('kafka') && config.kafkaEnrichedTopic)
    set.kafka = createKafkaEnrichedSink(config, logger, options.keyTypes, options.kafka?.positionedStream);
  for (const name of SINK_NAMES) {
    const sink = set[name];
    if (sink) set.all.push(sink);
  }
  return set;
}

/**
 * The external sink as configured by the EXTERNAL_* settings, or null when EXTERNAL_URL is
 * unset (sink off). `dlq replay` passes a record-only stand-in for the dead-letter table.
 */
export function externalSinkFromConfig(
  config: Pick<
    Config,
    | 'externalUrl'
    | 'externalSecret'
    | 'externalPolicy'
    | 'externalBatchSize'
    | 'externalConcurrency'
    | 'externalMaxAttempts'
    | 'externalTimeoutMs'
    | 'externalRetryFor'
    | 'externalSpillAfter'
    | 'externalRedriveRate'
    | 'externalWriteIntervalMs'
  >,
  deps: Pick<ExternalSinkOptions, 'deadLetters' | 'metrics' | 'logger' | 'keyTypes'>,
): ExternalSink | null {
  if (!config.externalUrl) return null;
  const store = deps.deadLetters;
  const sink = new ExternalSink({
    url: config.externalUrl,
    secret: config.externalSecret?.reveal(),
    policy: config.externalPolicy,
    batchSize: config.externalBatchSize,
    concurrency: config.externalConcurrency,
    maxAttempts: config.externalMaxAttempts,
    timeoutMs: config.externalTimeoutMs,
    retryForMs: config.externalRetryFor,
    spillAfterMs: config.externalSpillAfter,
    // Re-drive needs the table itself (the pipeline's store), not a record-only stand-in.
    redrive:
      store instanceof DeadLetterStore ? { store, ratePerSecond: config.externalRedriveRate } : undefined,
    ...deps,
  });
  sink.writeIntervalMs = config.externalWriteIntervalMs;
  return sink;
}
