import { sinkReadinessReasons } from './observability/readiness.js';
import type pg from 'pg';
import type { Config } from './config.js';
import { requireDatabaseUrl } from './config.js';
import { createPool, withClient } from './db/postgres.js';
import { assertReplicationReady } from './db/migrate.js';
import { assertPublicationStreams } from './db/publication.js';
import {
  assertPartitionsPublishedAsRoot,
  assertReplicaIdentity,
  describeShape,
  discoverShape,
  type ShapeSettings,
} from './db/catalog.js';
import type { SourceShape } from './domain/source-shape.js';
import { describeError, ErrorCodes, PipelineError, redactSecrets } from './errors.js';
import type { Logger } from './logger.js';
import { Pipeline } from './pipeline/direct.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { postgresSystemIdentifier } from './db/system-identifier.js';
import { DeadLetterStore } from './state/dead-letter.js';
import { createRedis, type RedisSink } from './sinks/redis/redis-sink.js';
import { createSinks } from './sinks/factory.js';
import { ThroughputMeter } from './observability/throughput.js';
import { buildApp } from './server/app.js';
import { startServer } from './server/listen.js';
import { sinkStatsFromMetrics, type PipelineStats } from './observability/stats.js';
import type { Change } from './source/changes.js';
import type { Sink } from './sinks/sink.js';
import { SinkProgressWriter } from './state/sink-progress.js';
import { withDeadline } from './pipeline/deadline.js';
import { Heartbeat } from './source/heartbeat.js';
import { StatusPoller } from './observability/status-poller.js';
import { asQueryable, readRowCount } from './server/analytics-queries.js';
import { cached, RateHistory } from './server/dashboard-data.js';
import { EnrichedEventStream } from './server/event-stream.js';
import { readBackfills } from './db/status-queries.js';

/** A replication stream lost this long makes /readyz answer 503 (a reconnect blip does not). */
const STREAM_LOST_UNREADY_MS = 5_000;

/** The HTTP server of `run` and `demo` over a running pipeline. */
export async function startHttpServer(
  runtime: Runtime,
  config: Config,
  logger: Logger,
): Promise<{ url: string; close(): Promise<void> }> {
  const redis = createRedis(config.redisUrl);
  const connecting = redis.connect().catch(() => undefined); // /api/top answers 503 until Redis is back
  // Awaited only while Redis answers the sink: one that does not answer would hold the server's
  // start for a reply timeout (REDIS_REPLY_TIMEOUT_MS) more, and /readyz says so meanwhile.
  if (runtime.redisSink.client.status === 'ready') await connecting;
  const startedAt = new Date().toISOString();
  // Counted on delivery (every sink accepted), not on receipt: a stuck sink shows as 0/s.
  const meter = new ThroughputMeter(() => runtime.pipeline.deliveredEvents);
  meter.start();
  // Kept by the server, so the dashboard shows the last ten minutes however long it has been open.
  const history = new RateHistory(async () => ({
    received: sumCounter(await runtime.metrics.eventsReceived.get()),
    delivered: Object.fromEntries(
      (await runtime.metrics.eventsDelivered.get()).values.map((v) => [String(v.labels.sink), v.value]),
    ),
  }));
  history.start();
  const analytics = asQueryable(runtime.sinks.find((s) => s.name === 'analytics'));
  const analyticsRows = analytics ? cached(() => readRowCount(analytics), 5_000) : null;
  const backfills = cached(() => readBackfills(runtime.pool), 5_000);
  const app = buildApp({
    redis,
    redisPrefix: config.redisPrefix,
    metrics: runtime.metrics,
    logger,
    apiToken: config.apiToken?.reveal(),
    analytics,
    events: runtime.events,
    dashboard: async () => ({
      history: history.history(),
      totals: history.latest(),
      analyticsRows: analyticsRows ? await analyticsRows().catch(() => null) : null,
      backfills: await backfills().catch(() => []),
      sinkLagSeconds: Object.fromEntries(
        (await runtime.metrics.sinkLagSeconds.get()).values.map((v) => [String(v.labels.sink), v.value]),
      ),
    }),
    ready: () => {
      const reasons: string[] = [];
      if (!runtime.pipeline.isRunning) reasons.push('pipeline not running');
      // A reconnect within a few seconds is a blip; longer, nothing new reaches any sink.
      const lostSince = runtime.pipeline.source.lostSince;
      if (lostSince !== null && Date.now() - lostSince >= STREAM_LOST_UNREADY_MS)
        reasons.push(
          `replication stream lost for ${((Date.now() - lostSince) / 1000).toFixed(0)} s (reconnecting to Postgres)`,
        );
      reasons.push(...sinkReadinessReasons(runtime.pipeline.sinkHealth(), config.lagWarnSeconds));
      // Either client: this one serves /api/top and may sit idle on a connection to a Redis that
      // stopped answering; the sink's talks to Redis every second (its window roll), so its
      // connection is dropped within a reply timeout once Redis stops answering.
      if (redis.status !== 'ready' || runtime.redisSink.client.status !== 'ready')
        reasons.push(`Redis unreachable at ${redactSecrets(config.redisUrl)}`);
      return { ready: reasons.length === 0, reasons };
    },
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
      totalDelivered: runtime.pipeline.deliveredEvents,
      sinks: await sinkStatsFromMetrics(
        runtime.metrics,
        runtime.sinks.map((s) => s.name),
      ),
      ...(await deadLetterStats(runtime.deadLetters)),
      // The slot's lag as `engagement status` computes it (polled by the StatusPoller).
      replicationLagBytes: (await runtime.metrics.slotLagBytes.get()).values[0]?.value ?? null,
      confirmedLsn: runtime.pipeline.source.confirmed,
      startedAt,
    }),
  });
  const server = await startServer(app, { host: config.host, port: config.port }).catch(async (err) => {
    // Nothing opened here may outlive a failed start (a busy PORT): the process must exit.
    meter.stop();
    redis.disconnect();
    await app.close().catch(() => undefined);
    throw err;
  });
  return {
    url: server.url,
    close: async () => {
      meter.stop();
      history.stop();
      await server.close();
      redis.disconnect();
    },
  };
}

/** deadLetters (pending, all sinks), the oldest pending one's age and rows replayed so far. */
async function deadLetterStats(
  store: DeadLetterStore,
): Promise<Pick<PipelineStats, 'deadLetters' | 'deadLettersOldestSeconds' | 'deadLettersRedriven'>> {
  const s = await store.summary().catch(() => null);
  return {
    deadLetters: s?.pending ?? 0,
    deadLettersOldestSeconds: s?.oldestPendingSeconds ?? null,
    deadLettersRedriven: s?.replayed ?? 0,
  };
}

function sumCounter(metric: { values: { value: number }[] }): number {
  return metric.values.reduce((sum, v) => sum + v.value, 0);
}

export interface Runtime {
  pipeline: Pipeline;
  /** The user's tables as discovered at start. */
  shape: SourceShape;
  metrics: Metrics;
  pool: pg.Pool;
  deadLetters: DeadLetterStore;
  redisSink: RedisSink;
  sinks: Sink[];
  /** What the analytics store accepted, as it happens (GET /api/events). */
  events: EnrichedEventStream;
  /**
   * Settles if streaming cannot go on: the slot is invalidated or dropped, or the stream
   * halted at a point it must not pass (TRUNCATE … RESTART IDENTITY).
   */
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

/**
 * The start-up checks of a slot-fed mode (`run`, `capture`): the slot and publication are
 * ready, the source tables' shape is discovered and can be streamed (replica identity,
 * partitions published as their root, a publication that publishes every change of both
 * tables). Logs the shape in one line.
 */
export async function readStreamedShape(
  databaseUrl: string,
  config: Pick<Config, 'publicationName'> & ShapeSettings,
  logger: Logger,
): Promise<SourceShape> {
  const shape = await withClient(databaseUrl, async (client) => {
    await assertReplicationReady(client);
    const discovered = await discoverShape(client, config);
    await assertReplicaIdentity(client, discovered);
    await assertPartitionsPublishedAsRoot(client, discovered, config.publicationName);
    await assertPublicationStreams(client, config.publicationName, discovered);
    return discovered;
  });
  logger.info({ shape }, describeShape(shape));
  return shape;
}

/** Starts the direct-mode pipeline from a validated configuration. */
export async function startRuntime(
  config: Config,
  logger: Logger,
  metrics = createMetrics(),
): Promise<Runtime> {
  const databaseUrl = requireDatabaseUrl(config);
  await assertPostgresReachable(databaseUrl);
  const shape = await readStreamedShape(databaseUrl, config, logger);
  const pool = createPool(databaseUrl, 4, 'engagement-pipeline');
  const deadLetters = new DeadLetterStore(pool);
  // Direct mode: a DuckDB file locked by another process holds the position and retries
  // (the fan-out's write retry) instead of exiting into a restart loop.
  // The slot's positions recognise replays in DuckDB and Redis, tied to this cluster's identity
  // (a Postgres dump/restored into a new cluster restarts its LSNs below the stored positions).
  // The identity the replication source read at its start (and checks at every reconnect, halting
  // when it changed), so the sinks label positions with the cluster they were streamed from;
  // before the source started, one IDENTIFY_SYSTEM of their own (a failed one is asked again).
  let identity: Promise<string> | null = null;
  let streamedFrom: () => string | null = () => null;
  const positionedStream = {
    stream: config.slotName,
    sourceId: async () =>
      streamedFrom() ??
      (identity ??= postgresSystemIdentifier(databaseUrl).catch((err: unknown) => {
        identity = null;
        throw err;
      })),
  };
  const built = createSinks(
    config,
    { logger, metrics, deadLetters },
    {
      analytics: { waitWhileLocked: true, positionedStream },
      redis: { positionedStream },
      kafka: { positionedStream },
      keyTypes: shape.keyTypes,
    },
  );
  const sinks = built.all;
  const redisSink = built.redis!;
  const progress = new SinkProgressWriter(pool, config.slotName, logger);
  let onSlotLost!: (err: PipelineError) => void;
  const slotLost = new Promise<PipelineError>((resolve) => (onSlotLost = resolve));
  const events = new EnrichedEventStream();
  const pipeline = new Pipeline({
    databaseUrl,
    slotName: config.slotName,
    publicationName: config.publicationName,
    shape,
    pool,
    sinks,
    metrics,
    logger,
    batchMaxRows: config.batchMaxRows,
    batchMaxWaitMs: config.batchMaxWaitMs,
    maxInFlightBatches: config.maxInFlightBatches,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    lagWarnSeconds: config.lagWarnSeconds,
    deadLetters,
    onBadRow: deadLetterBadRow(deadLetters),
    onSinkSuccess: (sink, batch) => {
      progress.record(sink, batch);
      // The live event stream carries what the analytics store durably accepted, in stream order.
      if (sink === 'analytics') events.publish(batch.events, batch.positions);
    },
    onHalt: (err) => onSlotLost(err),
  });
  streamedFrom = () => pipeline.source.sourceId;
  try {
    await pipeline.start();
  } catch (err) {
    await Promise.allSettled(sinks.map((s) => s.stop()));
    await pool.end().catch(() => undefined);
    throw err;
  }
  const heartbeat = new Heartbeat(pool, config.heartbeatIntervalMs, logger.child({ component: 'heartbeat' }));
  const poller = new StatusPoller({
    pool,
    slotName: config.slotName,
    metrics,
    logger,
    onSlotLost,
    sinks: sinks.map((s) => s.name),
  });
  progress.trackHealth(() => pipeline.sinkHealth());
  progress.start();
  heartbeat.start();
  poller.start();
  return {
    pipeline,
    shape,
    metrics,
    pool,
    deadLetters,
    redisSink,
    sinks,
    events,
    slotLost,
    stop: async () => {
      // Bounded by SHUTDOWN_TIMEOUT_MS (plus a little for the state connection): a Postgres
      // that stopped answering must not hold the process.
      const deadline = Date.now() + config.shutdownTimeoutMs + 2_000;
      heartbeat.stop();
      poller.stop();
      await pipeline.stop();
      events.closeAll();
      await withDeadline(progress.stop(), deadline);
      await withDeadline(pool.end(), deadline);
    },
  };
}
