import { Partitioners, type Kafka, type Message, type Producer } from 'kafkajs';
import type { Config } from '../../config.js';
import type { Batch } from '../../domain/types.js';
import { ErrorCodes, PipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { createKafka, kafkaSecurity, parseBrokers } from '../../source/kafka/client.js';
import { ensureTopics } from '../../source/kafka/topics.js';
import type { Sink } from '../sink.js';
import { readLastRecords } from './last-records.js';

/** Headers every record carries: the source stream and the event's position in it. */
export const STREAM_HEADER = 'engagement-stream';
export const POSITION_HEADER = 'engagement-position';

export interface KafkaEnrichedSinkOptions {
  kafka: Kafka;
  topic: string;
  /** Partitions and replication of the topic when this sink has to create it. */
  partitions: number;
  replicationFactor: number;
  logger: Logger;
}

interface Watermark {
  stream: string;
  position: string;
}

/**
 * Publishes enriched events to a Kafka topic (`KAFKA_ENRICHED_TOPIC`): key `content_id`,
 * value the enriched event as JSON, headers with the source stream and position.
 *
 * No duplicates in the topic across a crash of the writer: each partition of the topic has
 * exactly one writer at a time, which appends in stream order, so the partition's last
 * record says how far that writer got. On start (and after any failed send, whose outcome
 * is unknown) the sink reads every partition's last record; an event whose position is at
 * or below its partition's last position (same stream) was already published and is skipped.
 * The partition is fixed per event so that replays land where the first copy did:
 * - `work` (stream `kafka:<topic>:<p>`): partition p, the same partition number as the input
 *   (capture keys both by content_id with the same partitioner, and one group member owns p);
 * - `run` (one replication stream): the Java client's murmur2 of the key (content_id, or
 *   the event id when content_id is NULL).
 * The producer is idempotent with acks=all, so its own retries neither duplicate nor reorder.
 */
export class KafkaEnrichedSink implements Sink {
  readonly name = 'kafka';
  private readonly producer: Producer;
  private readonly log: Logger;
  private readonly partitioner = Partitioners.DefaultPartitioner();
  private partitionCount = 0;
  private watermarks: Map<number, Watermark> | null = null;
  /** Events skipped because the topic already had them (replays after a crash). */
  skipped = 0;

  constructor(private readonly options: KafkaEnrichedSinkOptions) {
    this.log = options.logger;
    this.producer = options.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { retries: 10, maxRetryTime: 10_000 },
    });
  }

  async start(): Promise<void> {
    const { kafka, topic, partitions, replicationFactor, logger } = this.options;
    await ensureTopics(kafka, [{ topic }], { partitions, replicationFactor }, logger);
    await this.producer.connect();
    await this.refresh();
  }

  async write(batch: Batch): Promise<void> {
    if (batch.events.length === 0) return;
    if (!this.watermarks) await this.refresh();
    const watermarks = this.watermarks!;
    const fixed = /^kafka:.+:(\d+)$/.exec(batch.stream);
    const messages: Message[] = [];
    const newest = new Map<number, string>();
    batch.events.forEach((event, i) => {
      const position = batch.positions[i];
      const key = event.content_id ?? String(event.event_id);
      const partition = fixed ? Number(fixed[1]) : this.partitionOf(key);
      if (partition >= this.partitionCount) {
        throw new PipelineError(
          ErrorCodes.CONFIG,
          `${this.options.topic} has ${this.partitionCount} partitions; input partition ${partition} has no counterpart`,
          'config',
          `give ${this.options.topic} at least as many partitions as the events topic`,
        );
      }
      const last = watermarks.get(partition);
      if (last && last.stream === batch.stream && position <= last.position) {
        this.skipped += 1;
        return;
      }
      newest.set(partition, position);
      messages.push({
        key,
        partition,
        value: JSON.stringify(event),
        headers: { [STREAM_HEADER]: batch.stream, [POSITION_HEADER]: position },
      });
    });
    if (messages.length === 0) return;
    try {
      await this.producer.send({ topic: this.options.topic, acks: -1, messages });
    } catch (err) {
      // Some of it may be in the topic: find out from the topic itself before the retry.
      this.watermarks = null;
      throw err;
    }
    for (const [partition, position] of newest) watermarks.set(partition, { stream: batch.stream, position });
  }

  async stop(): Promise<void> {
    await this.producer.disconnect();
  }

  private partitionOf(key: string): number {
    const partitionMetadata = Array.from({ length: this.partitionCount }, (_, partitionId) => ({
      partitionId,
      leader: 0,
    }));
    return this.partitioner({
      topic: this.options.topic,
      partitionMetadata: partitionMetadata as Parameters<typeof this.partitioner>[0]['partitionMetadata'],
      message: { key, value: null },
    });
  }

  /** Each partition's last record -> (stream, position) it carries. */
  private async refresh(): Promise<void> {
    const { kafka, topic } = this.options;
    const admin = kafka.admin();
    await admin.connect();
    try {
      const meta = await admin.fetchTopicMetadata({ topics: [topic] });
      this.partitionCount = meta.topics[0].partitions.length;
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    const last = await readLastRecords(kafka, topic);
    const watermarks = new Map<number, Watermark>();
    for (const [partition, m] of last) {
      const stream = m.headers?.[STREAM_HEADER]?.toString();
      const position = m.headers?.[POSITION_HEADER]?.toString();
      if (stream && position) watermarks.set(partition, { stream, position });
    }
    this.watermarks = watermarks;
    this.log.info(
      { topic, partitions: this.partitionCount, written: Object.fromEntries(watermarks) },
      'enriched topic positions read',
    );
  }
}

/** The sink from the validated config (KAFKA_ENRICHED_TOPIC set); KAFKA_BROKERS is then required. */
export function createKafkaEnrichedSink(config: Config, logger: Logger): KafkaEnrichedSink {
  const brokers = parseBrokers(config.kafkaBrokers);
  const log = logger.child({ sink: 'kafka' });
  return new KafkaEnrichedSink({
    kafka: createKafka(brokers, 'engagement-enriched', log, kafkaSecurity(config)),
    topic: config.kafkaEnrichedTopic!,
    partitions: config.kafkaTopicPartitions,
    replicationFactor: config.kafkaReplicationFactor,
    logger: log,
  });
}
