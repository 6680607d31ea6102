import type { Command } from 'commander';
import { Partitioners } from 'kafkajs';
import { requireDatabaseUrl } from '../config.js';
import { createPool } from '../db/postgres.js';
import { configError } from '../errors.js';
import { createLogger } from '../logger.js';
import { assertPostgresReachable, deadLetterBadRow, readStreamedShape } from '../runtime.js';
import { createMetrics } from '../observability/metrics.js';
import { DeadLetterStore } from '../state/dead-letter.js';
import { KafkaCapture } from '../pipeline/capture.js';
import {
  CONTENT_TOPIC,
  EVENTS_TOPIC,
  createKafka,
  kafkaSecurity,
  kafkaUnreachable,
  parseBrokers,
} from '../kafka/client.js';
import { ResilientProducer } from '../sinks/kafka/resilient-producer.js';
import { ensureTopics } from '../kafka/topics.js';
import { action, configFrom, KAFKA_CONFIG_KEYS, SOURCE_CONFIG_KEYS, withConfigOptions } from './common.js';
import { closingDeadline, withDeadline } from '../pipeline/deadline.js';
import { exitIfStuck, exitSoonIfHeld, waitForShutdownSignal } from './signals.js';
import { keepHeapSmall } from './heap.js';

const CAPTURE_CONFIG_KEYS = [
  'databaseUrl',
  ...SOURCE_CONFIG_KEYS,
  ...KAFKA_CONFIG_KEYS,
  'slotName',
  'publicationName',
  'batchMaxRows',
  'batchMaxWaitMs',
  'maxInFlightBatches',
  'shutdownTimeoutMs',
  'logLevel',
] as const;

export function registerCapture(program: Command): void {
  withConfigOptions(
    program
      .command('capture')
      .description(
        `scale-out mode: stream the replication slot into Kafka (${EVENTS_TOPIC}, ${CONTENT_TOPIC}); workers do the rest`,
      )
      .option('--to-kafka', 'publish to Kafka (the only capture target)'),
    CAPTURE_CONFIG_KEYS,
  ).action(
    action(async (options: Record<string, unknown>) => {
      if (!options.toKafka) throw configError('capture needs --to-kafka', 'engagement capture --to-kafka');
      keepHeapSmall();
      const config = configFrom(options);
      const brokers = parseBrokers(config.kafkaBrokers);
      const databaseUrl = requireDatabaseUrl(config);
      const logger = createLogger(config.logLevel);
      await assertPostgresReachable(databaseUrl);
      const shape = await readStreamedShape(databaseUrl, config, logger);

      const kafka = createKafka(brokers, 'engagement-capture', logger, kafkaSecurity(config));
      // Idempotent + acks=all + one request in flight: kafkajs's retries never duplicate or
      // reorder within a partition, so each partition is a gap-free prefix of the stream (a
      // replaced producer's resend can add copies, which workers drop by source position).
      // The Java client's murmur2 partitioner, so keys land where other Kafka tools expect them.
      const producer = new ResilientProducer(
        kafka,
        () =>
          kafka.producer({
            idempotent: true,
            maxInFlightRequests: 1,
            createPartitioner: Partitioners.DefaultPartitioner,
            retry: { retries: Number.MAX_SAFE_INTEGER, maxRetryTime: 30_000 },
          }),
        logger.child({ component: 'capture' }),
      );
      try {
        await producer.connect();
      } catch (err) {
        throw kafkaUnreachable(brokers, err);
      }
      // engagement.content is compacted: the latest row per content id, read by every worker on start.
      await ensureTopics(
        kafka,
        [{ topic: EVENTS_TOPIC }, { topic: CONTENT_TOPIC, compacted: true }],
        {
          partitions: config.kafkaTopicPartitions,
          replicationFactor: config.kafkaReplicationFactor,
        },
        logger,
      );
      const pool = createPool(databaseUrl, 2, 'engagement-capture');
      const metrics = createMetrics();
      const capture = new KafkaCapture({
        databaseUrl,
        slotName: config.slotName,
        publicationName: config.publicationName,
        shape,
        pool,
        producer,
        logger,
        metrics,
        maxRows: config.batchMaxRows,
        maxWaitMs: config.batchMaxWaitMs,
        maxInFlight: config.maxInFlightBatches,
        shutdownTimeoutMs: config.shutdownTimeoutMs,
        onBadRow: deadLetterBadRow(new DeadLetterStore(pool)),
      });
      const shutdown = async () => {
        const stopping = Date.now();
        await capture.stop();
        const deadline = closingDeadline(stopping, config.shutdownTimeoutMs);
        await withDeadline(producer.disconnect(), deadline);
        await withDeadline(pool.end(), deadline);
      };
      try {
        await capture.start();
      } catch (err) {
        await shutdown();
        throw err;
      }
      process.stdout.write(
        `engagement capture running: slot ${config.slotName} -> Kafka ${brokers.join(',')}\n`,
      );
      const outcome = await Promise.race([waitForShutdownSignal(), capture.halted]);
      const stopBy = Date.now() + config.shutdownTimeoutMs;
      if (typeof outcome !== 'string') {
        // The stream reached a point it must not pass: stop and say how to recover.
        exitIfStuck(config.shutdownTimeoutMs);
        await shutdown();
        throw outcome;
      }
      logger.info({ signal: outcome }, 'draining');
      exitIfStuck(config.shutdownTimeoutMs);
      await shutdown();
      logger.info({ published: capture.published }, 'stopped cleanly');
      exitSoonIfHeld(logger, stopBy);
    }),
  );
}
