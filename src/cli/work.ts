import type { Command } from 'commander';
import { assertSafeHttpExposure, requireDatabaseUrl, type Config } from '../config.js';
import { buildProbeApp } from '../server/app.js';
import { assertPortFree, startServer } from '../server/listen.js';
import { sinkReadinessReasons } from '../observability/readiness.js';
import type { Metrics } from '../observability/metrics.js';
import type { Logger } from '../logger.js';
import { createPool } from '../db/postgres.js';
import { ensureStateSchema } from '../db/schema.js';
import { configError, describeError, type PipelineError } from '../errors.js';
import { createLogger } from '../logger.js';
import { assertPostgresReachable } from '../runtime.js';
import { createSinks } from '../sinks/factory.js';
import { createMetrics } from '../observability/metrics.js';
import { DeadLetterStore } from '../state/dead-letter.js';
import type { Sink } from '../sinks/sink.js';
import { ContentDimension } from '../enrichment/content-dimension.js';
import { createKafka, kafkaSecurity, kafkaUnreachable, parseBrokers } from '../kafka/client.js';
import { ContentFeed } from '../source/kafka/content-feed.js';
import { debeziumFormat } from '../source/kafka/debezium-format.js';
import { nativeFormat } from '../source/kafka/native-wire.js';
import { KafkaWorker } from '../pipeline/worker.js';
import { PROCESS_WRITER, SinkProgressWriter } from '../state/sink-progress.js';
import {
  action,
  configFrom,
  integerOption,
  KAFKA_CONFIG_KEYS,
  SINK_CONFIG_KEYS,
  SOURCE_CONFIG_KEYS,
  withConfigOptions,
} from './common.js';
import { describeShape, discoverShape } from '../db/catalog.js';
import { closingDeadline, withDeadline } from '../pipeline/deadline.js';
import { exitIfStuck, exitSoonIfHeld, waitForShutdownSignal } from './signals.js';
import { keepHeapSmall } from './heap.js';

const WORK_CONFIG_KEYS = [
  'databaseUrl',
  ...SOURCE_CONFIG_KEYS,
  ...KAFKA_CONFIG_KEYS,
  ...SINK_CONFIG_KEYS,
  'batchMaxRows',
  'maxInFlightBatches',
  'shutdownTimeoutMs',
  'lagWarnSeconds',
  'logLevel',
  // Only when PORT or --port is given (several workers often share a machine): see probeServer.
  'port',
  'host',
  'apiToken',
] as const;

export function registerWork(program: Command): void {
  withConfigOptions(
    program
      .command('work')
      .description(
        'scale-out mode: one worker of a consumer group (enrich + fan out what capture or Debezium published)',
      )
      .option('--from-kafka', 'consume from Kafka (the only work source)')
      .option('--group <id>', 'consumer group; every worker of one deployment uses the same id', 'engagement')
      .option(
        '--format <format>',
        'native (engagement capture) | debezium (a Debezium Postgres connector)',
        'native',
      )
      .option(
        '--topic-prefix <prefix>',
        'Debezium topic.prefix (topics <prefix>.<schema>.<table> of the events and content tables, e.g. <prefix>.public.engagement_events)',
      )
      .option('--partitions-concurrently <n>', 'partitions this worker processes at once', '4'),
    WORK_CONFIG_KEYS,
  ).action(
    action(async (options: Record<string, unknown>) => {
      if (!options.fromKafka)
        throw configError('work needs --from-kafka', 'engagement work --from-kafka --group G');
      const group = options.group;
      if (typeof group !== 'string' || !/^[A-Za-z0-9._-]{1,200}$/.test(group))
        throw configError(
          '--group must be letters, digits, . _ - (at most 200)',
          'engagement work --from-kafka --group engagement',
        );
      const format = options.format;
      if (format !== 'native' && format !== 'debezium')
        throw configError(`--format must be native or debezium (got ${JSON.stringify(format)})`);
      const prefix = options.topicPrefix;
      if (format === 'debezium' && (typeof prefix !== 'string' || prefix === ''))
        throw configError('--format debezium needs --topic-prefix (the connector topic.prefix)');
      const concurrently = integerOption(options.partitionsConcurrently, '--partitions-concurrently', 1);
      keepHeapSmall();
      const config = configFrom(options);
      const serve = options.port !== undefined || Boolean(process.env.PORT);
      if (serve) {
        assertSafeHttpExposure(config);
        // Before joining the group: a worker that then fails on its port would cost the group
        // two rebalances per restart.
        await assertPortFree(
          config.host,
          config.port,
          'set PORT / --port (0 = any free port), or unset it: a worker serves HTTP only when given a port',
        );
      }
      const brokers = parseBrokers(config.kafkaBrokers);
      // Postgres holds the dead-letter table and answers content lookups on a miss.
      const databaseUrl = requireDatabaseUrl(config);
      const logger = createLogger(config.logLevel);
      await assertPostgresReachable(databaseUrl);

      const pool = createPool(databaseUrl, 4, 'engagement-worker');
      await ensureStateSchema(pool); // idempotent: Debezium users may never have run `migrate`
      // The tables the events come from: their keys type the destinations' columns; lookups read content.
      const shape = await discoverShape(pool, config).catch(async (err) => {
        await pool.end().catch(() => undefined);
        throw err;
      });
      logger.info({ shape }, describeShape(shape));
      const metrics = createMetrics();
      const deadLetters = new DeadLetterStore(pool);
      const sinks = createSinks(config, { logger, metrics, deadLetters }, { keyTypes: shape.keyTypes }).all;
      const kafka = createKafka(brokers, `engagement-worker-${group}`, logger, kafkaSecurity(config));
      const wire = format === 'native' ? nativeFormat : debeziumFormat(prefix as string, shape);
      // retry: a lookup failing (Postgres down, content locked) holds the partition, never
      // enriches without content (DESIGN.md section 4: a failing lookup holds the stream).
      const dimension = new ContentDimension(pool, {
        shape,
        retry: true,
        logger: logger.child({ component: 'content' }),
      });
      const feed = new ContentFeed(kafka, wire, dimension, logger, group);
      let fatal!: (err: PipelineError) => void;
      const fatalError = new Promise<PipelineError>((resolve) => (fatal = resolve));
      // `engagement status` lists these sinks under the stream kafka:<group>.
      const progress = new SinkProgressWriter(pool, `kafka:${group}`, logger);
      const worker = new KafkaWorker({
        kafka,
        group,
        format: wire,
        sinks,
        lagWarnSeconds: config.lagWarnSeconds,
        dimension,
        feed,
        deadLetters,
        metrics,
        logger,
        batchMaxRows: config.batchMaxRows,
        maxInFlightBatches: config.maxInFlightBatches,
        shutdownTimeoutMs: config.shutdownTimeoutMs,
        partitionsConcurrently: concurrently,
        exclusive: config.analyticsUrl.startsWith('duckdb:'),
        onFatal: fatal,
        onSinkSuccess: (sink, batch) => progress.record(sink, batch),
      });
      progress.trackHealth(() => worker.sinkHealth(), PROCESS_WRITER);
      const started: Sink[] = [];
      let http: { close(): Promise<void> } | null = null;
      const shutdown = async () => {
        const stopping = Date.now();
        await worker.stop();
        const deadline = closingDeadline(stopping, config.shutdownTimeoutMs);
        await withDeadline(feed.stop(), deadline);
        for (const sink of started) {
          await withDeadline(
            sink.stop().catch((err) => logger.warn(`stopping sink ${sink.name}: ${describeError(err)}`)),
            deadline,
          );
        }
        await withDeadline(progress.stop(), deadline);
        await withDeadline(pool.end(), deadline);
        // Last: /readyz says 503 while the worker drains.
        if (http) await withDeadline(http.close(), deadline);
      };
      try {
        // Sinks first: a second DuckDB writer on this machine fails here (EP_ERR_ANALYTICS_LOCKED).
        for (const sink of sinks) {
          await sink.start();
          started.push(sink);
        }
        try {
          await feed.start();
          await worker.start();
        } catch (err) {
          throw kafkaUnreachable(brokers, err, [wire.contentTopic, wire.eventsTopic]);
        }
        if (serve) {
          const server = await probeServer(config, metrics, logger, worker);
          http = server;
          process.stdout.write(`worker health and metrics at ${server.url}\n`);
        }
      } catch (err) {
        await shutdown();
        throw err;
      }
      progress.start();
      process.stdout.write(
        `engagement worker running: group ${group}, ${wire.name} format, topic ${wire.eventsTopic}\n`,
      );
      const outcome = await Promise.race([waitForShutdownSignal(), fatalError]);
      const stopBy = Date.now() + config.shutdownTimeoutMs;
      logger.info(typeof outcome === 'string' ? { signal: outcome } : {}, 'draining');
      exitIfStuck(config.shutdownTimeoutMs);
      await shutdown();
      if (typeof outcome !== 'string') {
        exitSoonIfHeld(logger, stopBy);
        throw outcome;
      }
      logger.info({ delivered: worker.delivered }, 'stopped cleanly');
      exitSoonIfHeld(logger, stopBy);
    }),
  );
}

/**
 * `work`'s HTTP server, when PORT or --port is given: /healthz, /readyz (503 with the reasons
 * while the worker has not joined its group, or a sink is behind, down or failed) and /metrics,
 * on HOST (127.0.0.1 by default; API_TOKEN as for `run`). Off otherwise, so several workers can
 * share a machine without a port each.
 */
async function probeServer(
  config: Config,
  metrics: Metrics,
  logger: Logger,
  worker: KafkaWorker,
): Promise<{ url: string; close(): Promise<void> }> {
  const app = buildProbeApp({
    metrics,
    logger,
    apiToken: config.apiToken?.reveal(),
    ready: () => {
      const reasons = worker.isStopping
        ? ['stopping']
        : worker.joined
          ? []
          : ['not a member of the consumer group yet'];
      reasons.push(...sinkReadinessReasons(worker.sinkHealth(), config.lagWarnSeconds));
      return { ready: reasons.length === 0, reasons };
    },
  });
  return startServer(app, { host: config.host, port: config.port }).catch(async (err) => {
    await app.close().catch(() => undefined);
    throw err;
  });
}
