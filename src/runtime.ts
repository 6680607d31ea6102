import type pg from 'pg';
import type { Config } from './config.js';
import { requireDatabaseUrl } from './config.js';
import { createPool, withClient } from './db/postgres.js';
import { assertReplicationReady } from './db/migrate.js';
import { describeError, ErrorCodes, PipelineError } from './errors.js';
import type { Logger } from './logger.js';
import { Pipeline } from './pipeline/pipeline.js';
import { createMetrics, type Metrics } from './server/metrics.js';
import { createAnalyticsSink } from './sinks/analytics/create-analytics-sink.js';
import { DeadLetterStore } from './sinks/dead-letter.js';
import { ExternalSink } from './sinks/external/external-sink.js';
import { createRedis, RedisSink } from './sinks/redis/redis-sink.js';
import { ThroughputMeter } from './pipeline/throughput.js';
import { buildApp } from './server/app.js';
import { startServer } from './server/listen.js';
import { sinkStatsFromMetrics } from './server/stats.js';
import type { Change } from './source/changes.js';
import { createKafkaEnrichedSink } from './sinks/kafka/kafka-sink.js';
import type { Sink } from './sinks/sink.js';
import { SinkProgressWriter } from './pipeline/sink-progress.js';
import { Heartbeat } from './source/heartbeat.js';
import { StatusPoller } from './server/status-poller.js';

/** The HTTP server of `run` and `demo` over a running pipeline. */
export async function startHttpServer(
  runtime: Runtime,
  config: Config,
  logger: Logger,
): Promise<{ url: string; close(): Promise<void> }> {
  const redis = createRedis(config.redisUrl);
  await redis.connect().catch(() => undefined); // /api/top answers 503 until Redis is back
  const startedAt = new Date().toISOString();
  const meter = new ThroughputMeter(async () => sumCounter(await runtime.metrics.eventsReceived.get()));
  meter.start();
  const app = buildApp({
    redis,
    redisPrefix: config.redisPrefix,
    metrics: runtime.metrics,
    logger,
    apiToken: config.apiToken?.reveal(),
    ready: () => runtime.pipeline.isRunning,
    contentTitles: async (ids) => {
      const titles = new Map<string, string>();
      for (const id of ids) {
        const title = runtime.pipeline.contentTitle(id);
        if (title) titles.set(id, title);
      }
      return titles;
    },
    stats: async () => ({
      eventsPerSecond: Math.round(meter.perSecond),
      totalEvents: sumCounter(await runtime.metrics.eventsReceived.get()),
      sinks: await sinkStatsFromMetrics(
        runtime.metrics,
        runtime.sinks.map((s) => s.name),
      ),
      deadLetters: await runtime.deadLetters.depth().catch(() => 0),
      replicationLagBytes: (await runtime.metrics.replicationLagBytes.get()).values[0]?.value ?? null,
      confirmedLsn: runtime.pipeline.source.confirmed,
      startedAt,
    }),
  });
  const server = await startServer(app, { host: config.host, port: config.port });
  return {
    url: server.url,
    close: async () => {
      meter.stop();
      await server.close();
      redis.disconnect();
    },
  };
}

function sumCounter(metric: { values: { value: number }[] }): number {
  return metric.values.reduce((sum, v) => sum + v.value, 0);
}

export interface Runtime {
  pipeline: Pipeline;
  metrics: Metrics;
  pool: pg.Pool;
  deadLetters: DeadLetterStore;
  redisSink: RedisSink;
  sinks: Sink[];
  /** Settles if the slot is invalidated or dropped while running (streaming cannot go on). */
  slotLost: Promise<PipelineError>;
  stop(): Promise<void>;
}

/** Fails with one line (exit 2) when Postgres cannot be reached at all. */
export async function assertPostgresReachable(databaseUrl: string): Promise<void> {
  try {
    await withClient(databaseUrl, (client) => client.query('SELECT 1'));
  } catch (err) {
    const where = (() => {
      try {
        const url = new URL(databaseUrl);
        return `${url.hostname}:${url.port || 5432}${url.pathname}`;
      } catch {
        return 'DATABASE_URL';
      }
    })();
    throw new PipelineError(
      ErrorCodes.POSTGRES_UNREACHABLE,
      `cannot connect to Postgres at ${where}: ${describeError(err)}`,
      'config',
      'check DATABASE_URL and that Postgres is running',
    );
  }
}

/** Builds the sinks named by the configuration (analytics, Redis, and external when EXTERNAL_URL is set). */
export function createSinks(
  config: Config,
  logger: Logger,
  metrics: Metrics,
  deadLetters: DeadLetterStore,
  options: { waitForAnalyticsLock?: boolean } = {},
): { sinks: Sink[]; redisSink: RedisSink } {
  const analytics = createAnalyticsSink(config.analyticsUrl, logger, {
    deadLetters,
    waitWhileLocked: options.waitForAnalyticsLock,
  });
  const redisSink = new RedisSink({
    url: config.redisUrl,
    prefix: config.redisPrefix,
    logger: logger.child({ sink: 'redis' }),
  });
  const sinks: Sink[] = [analytics, redisSink];
  if (config.externalUrl) {
    sinks.push(
      new ExternalSink({
        url: config.externalUrl,
        secret: config.externalSecret?.reveal(),
        policy: config.externalPolicy,
        batchSize: config.externalBatchSize,
        concurrency: config.externalConcurrency,
        maxAttempts: config.externalMaxAttempts,
        timeoutMs: config.externalTimeoutMs,
        deadLetters,
        metrics,
        logger: logger.child({ sink: 'external' }),
      }),
    );
  } else {
    logger.warn('EXTERNAL_URL is not set: the external sink is off');
  }
  if (config.kafkaEnrichedTopic) sinks.push(createKafkaEnrichedSink(config, logger));
  return { sinks, redisSink };
}

/** A source row that cannot be decoded goes to the dead-letter table (sink 'source'), never stops the stream. */
export function deadLetterBadRow(deadLetters: DeadLetterStore) {
  return async (change: Extract<Change, { kind: 'bad-row' }>): Promise<void> => {
    const raw = (change.raw ?? {}) as Record<string, unknown>;
    const id = typeof raw.id === 'string' || typeof raw.id === 'number' ? String(raw.id) : null;
    await deadLetters.record([
      {
        sink: 'source',
        eventId: id !== null && /^\d+$/.test(id) ? id : null,
        idempotencyKey: `${change.table}:${id ?? JSON.stringify(raw).slice(0, 200)}`,
        event: raw,
        source: change.table,
        lastError: change.reason,
        attempts: 1,
      },
    ]);
  };
}

/** Starts the direct-mode pipeline from a validated configuration. */
export async function startRuntime(
  config: Config,
  logger: Logger,
  metrics = createMetrics(),
): Promise<Runtime> {
  const databaseUrl = requireDatabaseUrl(config);
  await assertPostgresReachable(databaseUrl);
  await withClient(databaseUrl, assertReplicationReady);
  const pool = createPool(databaseUrl, 4, 'engagement-pipeline');
  const deadLetters = new DeadLetterStore(pool);
  // Direct mode: a DuckDB file locked by another process holds the position and retries
  // (the fan-out's write retry) instead of exiting into a restart loop.
  const { sinks, redisSink } = createSinks(config, logger, metrics, deadLetters, {
    waitForAnalyticsLock: true,
  });
  const progress = new SinkProgressWriter(pool, config.slotName, logger);
  const pipeline = new Pipeline({
    databaseUrl,
    slotName: config.slotName,
    publicationName: config.publicationName,
    pool,
    sinks,
    metrics,
    logger,
    batchMaxRows: config.batchMaxRows,
    batchMaxWaitMs: config.batchMaxWaitMs,
    maxInFlightBatches: config.maxInFlightBatches,
    onBadRow: deadLetterBadRow(deadLetters),
    onSinkSuccess: (sink, batch) => progress.record(sink, batch),
  });
  try {
    await pipeline.start();
  } catch (err) {
    await Promise.allSettled(sinks.map((s) => s.stop()));
    await pool.end().catch(() => undefined);
    throw err;
  }
  const heartbeat = new Heartbeat(pool, config.heartbeatIntervalMs, logger.child({ component: 'heartbeat' }));
  let onSlotLost!: (err: PipelineError) => void;
  const slotLost = new Promise<PipelineError>((resolve) => (onSlotLost = resolve));
  const poller = new StatusPoller({ pool, slotName: config.slotName, metrics, logger, onSlotLost });
  progress.start();
  heartbeat.start();
  poller.start();
  return {
    pipeline,
    metrics,
    pool,
    deadLetters,
    redisSink,
    sinks,
    slotLost,
    stop: async () => {
      heartbeat.stop();
      poller.stop();
      await pipeline.stop();
      await progress.stop();
      await pool.end().catch(() => undefined);
    },
  };
}
