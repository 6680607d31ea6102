import { createRequire } from 'node:module';
import type * as KafkaJs from 'kafkajs';
import type { Kafka, logCreator, SASLOptions } from 'kafkajs';
import type { Config } from '../config.js';
import { configError, ErrorCodes, PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import { lazyRequire } from '../lazy-require.js';

/** kafkajs, loaded when a Kafka client is first made (see lazy-require.ts). */
export const kafkajs = lazyRequire<typeof KafkaJs>('kafkajs');

/** Topics of the native format (capture -> workers). */
export const EVENTS_TOPIC = 'engagement.events';
export const CONTENT_TOPIC = 'engagement.content';

/** Comma-separated KAFKA_BROKERS -> host:port list; one config line when it is unusable. */
export function parseBrokers(value: string | undefined): string[] {
  const brokers = (value ?? '')
    .split(',')
    .map((b) => b.trim())
    .filter(Boolean);
  if (brokers.length === 0) {
    throw new PipelineError(
      ErrorCodes.CONFIG,
      'KAFKA_BROKERS is not set',
      'config',
      'export KAFKA_BROKERS=host:9092[,host2:9092] or pass --kafka-brokers',
    );
  }
  for (const broker of brokers) {
    if (!/^[^\s:/]+:\d{1,5}$/.test(broker)) {
      throw new PipelineError(
        ErrorCodes.CONFIG,
        `KAFKA_BROKERS / --kafka-brokers: '${broker}' is not host:port`,
        'config',
      );
    }
  }
  return brokers;
}

/**
 * kafkajs's text for MESSAGE_TOO_LARGE. The producer's caller reports that refusal in one line
 * that names the event, its size and the limit (resilient-producer.ts), so kafkajs's own
 * lines about it (two per refused request) are debug.
 */
const TOO_LARGE_TEXT = 'larger than the max message size';

/** kafkajs logs through our logger (warn and above; kafkajs is chatty at info). */
function bridgeLogs(logger: Logger): logCreator {
  return () =>
    ({ level, log }) => {
      const { message, ...extra } = log;
      const levels = kafkajs().logLevel;
      const tooLarge = `${message} ${String(extra.error ?? '')}`.includes(TOO_LARGE_TEXT);
      if (tooLarge) logger.debug({ kafka: extra }, `kafka: ${message}`);
      else if (level <= levels.ERROR) logger.error({ kafka: extra }, `kafka: ${message}`);
      else if (level === levels.WARN) logger.warn({ kafka: extra }, `kafka: ${message}`);
      else logger.debug({ kafka: extra }, `kafka: ${message}`);
    };
}

export interface KafkaSecurity {
  ssl: boolean;
  sasl?: SASLOptions;
}

/** TLS and SASL from the validated config; a mechanism without credentials is a config error. */
export function kafkaSecurity(config: Config): KafkaSecurity {
  const mechanism = config.kafkaSaslMechanism;
  if (!mechanism) return { ssl: config.kafkaSsl };
  const username = config.kafkaSaslUsername;
  const password = config.kafkaSaslPassword?.reveal();
  if (!username || !password) {
    throw configError(
      `KAFKA_SASL_MECHANISM=${mechanism} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD`,
      'set both, or unset KAFKA_SASL_MECHANISM',
    );
  }
  return { ssl: config.kafkaSsl, sasl: { mechanism, username, password } as SASLOptions };
}

export function createKafka(
  brokers: string[],
  clientId: string,
  logger: Logger,
  security: KafkaSecurity = { ssl: false },
): Kafka {
  installControllerFallback();
  const { Kafka, logLevel } = kafkajs();
  return new Kafka({
    clientId,
    brokers,
    ssl: security.ssl,
    sasl: security.sasl,
    logLevel: logLevel.WARN,
    logCreator: bridgeLogs(logger.child({ component: 'kafkajs' })),
    retry: { initialRetryTime: 200, retries: 8 },
  });
}

let fallbackInstalled = false;

/**
 * kafkajs asks the *controller* for an idempotent producer's id, although (as its own
 * comment says) any broker may answer InitProducerId. Some Kafka-protocol servers report a
 * controller id that is not in the broker list (librdkafka's mock cluster reports 0), and
 * kafkajs then fails with "Broker 0 not found". Where the controller is
 * unknown we ask the first known broker instead; against a normal cluster nothing changes.
 * Patched on kafkajs's own Cluster class (the same CommonJS module instance it uses).
 */
function installControllerFallback(): void {
  if (fallbackInstalled) return;
  fallbackInstalled = true;
  const require = createRequire(import.meta.url);
  const Cluster = require('kafkajs/src/cluster/index.js') as {
    prototype: { findControllerBroker(): Promise<unknown> };
  };
  const original = Cluster.prototype.findControllerBroker;
  Cluster.prototype.findControllerBroker = async function (this: {
    brokerPool: { metadata?: { brokers: { nodeId: number }[] } };
    findBroker(args: { nodeId: string }): Promise<unknown>;
  }) {
    try {
      return await original.call(this);
    } catch (err) {
      const first = this.brokerPool.metadata?.brokers[0];
      if ((err as Error).name !== 'KafkaJSBrokerNotFound' || !first) throw err;
      return this.findBroker({ nodeId: String(first.nodeId) });
    }
  };
}

/** One line for "cannot reach Kafka" (exit 1), naming the brokers but nothing secret. */
export function kafkaUnreachable(brokers: string[], err: unknown, topics: string[] = []): PipelineError {
  // The brokers answered: a topic is missing (kafkajs: UNKNOWN_TOPIC_OR_PARTITION).
  if (
    (err as { type?: unknown } | null)?.type === 'UNKNOWN_TOPIC_OR_PARTITION' ||
    /does not host this topic-partition/.test((err as Error | null)?.message ?? '')
  )
    return new PipelineError(
      ErrorCodes.CONFIG,
      `Kafka at ${brokers.join(',')} does not have ${topics.length > 0 ? `the topics ${topics.join(', ')}` : 'a topic this command reads'}`,
      'config',
      'check the topic names (for --format debezium: --topic-prefix, the connector topic.prefix) and that their producer (the connector, or `engagement capture --to-kafka`) has created them',
      { cause: err },
    );
  return new PipelineError(
    ErrorCodes.KAFKA_UNREACHABLE,
    `cannot reach Kafka at ${brokers.join(',')}: ${(err as Error).message ?? String(err)}`,
    // At start-up (its only use), like an unreachable Postgres: one line, exit 2.
    'config',
    'check KAFKA_BROKERS and that the brokers are up',
    { cause: err },
  );
}
