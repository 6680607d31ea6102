import type { Admin, Kafka, Message } from 'kafkajs';
import type { Config } from '../../config.js';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { Batch } from '../../domain/types.js';
import { ErrorCodes, PipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { createKafka, kafkajs, kafkaSecurity, parseBrokers } from '../../kafka/client.js';
import { ResilientProducer } from './resilient-producer.js';
import { ensureTopics } from '../../kafka/topics.js';
import { eventJson } from '../event-json.js';
import type { Sink } from '../sink.js';
import { readLastRecords } from './last-records.js';
import { SourceIdentity, type PositionedStream } from '../source-identity.js';

/** Headers every record carries: the source stream and the event's position in it. */
export const STREAM_HEADER = 'engagement-stream';
export const POSITION_HEADER = 'engagement-position';
/** The cluster the position belongs to (`postgres:<system identifier>`), when the stream has one. */
export const SOURCE_HEADER = 'engagement-source';

export interface KafkaEnrichedSinkOptions {
  kafka: Kafka;
  topic: string;
  /** Partitions and replication of the topic when this sink has to create it. */
  partitions: number;
  replicationFactor: number;
  logger: Logger;
  /** The source's key types: the value's keys are typed from them (see event-json.ts); default UUID. */
  keyTypes?: KeyTypes;
  /** Direct mode: the slot's stream and its cluster's identity (Kafka batches carry their own). */
  positionedStream?: PositionedStream;
}

interface PartitionState {
  /** The stream and position of the partition's last record ('' when it is empty or foreign). */
  stream: string;
  position: string;
  /** The cluster of that position; '' when the record names none (an earlier version wrote it). */
  source: string;
  /** The partition's end offset when that was read or written by this sink. */
  end: bigint;
}

/**
 * Publishes enriched events to a Kafka topic (`KAFKA_ENRICHED_TOPIC`): key `content_id` (its
 * text form), value the enriched event as JSON with keys typed as in the source (integer keys
 * as numbers), headers with the source stream and position.
 *
 * No duplicates in the topic across a crash of the writer: each partition of the topic has
 * one writer at a time, which appends in stream order, so the partition's last record says
 * how far the writers got. An event whose position is at or below its partition's last
 * position (same stream, same Postgres cluster) was already published and is skipped. Before each send the sink
 * compares the touched partitions' end offsets with what it last saw; where they moved
 * (another writer: a worker that owned the partition before a rebalance or a kill -9, or a
 * failed send that landed after all) it reads the partition's last record again.
 * The partition is fixed per event so that replays land where the first copy did:
 * - `work` (stream `kafka:<topic>:<p>`): partition p, the same partition number as the input
 *   (capture keys both by content_id with the same partitioner, and one group member owns p);
 * - `run` (one replication stream): the Java client's murmur2 of the key (content_id, or
 *   the event id when content_id is NULL).
 * The producer is idempotent with acks=all, so its own retries neither duplicate nor reorder.
 * An event the topic refuses even alone (over its max.message.bytes) fails the write with a
 * MessageTooLarge, a `rows` failure: the fan-out splits the batch and dead-letters that event
 * for this sink. Its partition was sent up to it and no further, so the events after it are
 * not taken for published (skipped by position) when the parts are written.
 * Left open: two live writers of one partition at once (a worker expelled from its group
 * while still writing) can both publish the same events; consumers should still key on event_id.
 */
export class KafkaEnrichedSink implements Sink {
  readonly name = 'kafka';
  private readonly producer: ResilientProducer;
  private readonly admin: Admin;
  private readonly log: Logger;
  private readonly partitioner = kafkajs().Partitioners.DefaultPartitioner();
  private partitionCount = 0;
  private readonly state = new Map<number, PartitionState>();
  /** Events skipped because the topic already had them (replays after a crash). */
  skipped = 0;
  private readonly identity: SourceIdentity;

  constructor(private readonly options: KafkaEnrichedSinkOptions) {
    this.log = options.logger;
    this.identity = new SourceIdentity(options.positionedStream, {
      code: ErrorCodes.POSTGRES_UNREACHABLE,
      sink: 'Kafka',
    });
    this.admin = options.kafka.admin();
    this.producer = new ResilientProducer(
      options.kafka,
      () =>
        options.kafka.producer({
          idempotent: true,
          maxInFlightRequests: 1,
          createPartitioner: kafkajs().Partitioners.DefaultPartitioner,
          retry: { retries: 10, maxRetryTime: 10_000 },
        }),
      options.logger,
    );
  }

  async start(): Promise<void> {
    const { kafka, topic, partitions, replicationFactor, logger } = this.options;
    await ensureTopics(kafka, [{ topic }], { partitions, replicationFactor }, logger);
    await this.admin.connect();
    await this.producer.connect();
    await this.readPartitionCount();
    await this.verify(new Set(Array.from({ length: this.partitionCount }, (_, p) => p)));
    this.log.info(
      { topic, partitions: this.partitionCount, written: Object.fromEntries(this.state) },
      'enriched topic: last positions read',
    );
  }

  async write(batch: Batch): Promise<void> {
    if (batch.events.length === 0) return;
    const fixed = /^kafka:.+:(\d+)$/.exec(batch.stream);
    const partitions = batch.events.map((event) =>
      fixed ? Number(fixed[1]) : this.partitionOf(event.content_id ?? String(event.event_id)),
    );
    const touched = new Set(partitions);
    // The operator may have added partitions (the fix below says to): read the count again.
    if (Math.max(...touched) >= this.partitionCount) await this.readPartitionCount();
    for (const partition of touched) {
      if (partition >= this.partitionCount)
        throw new PipelineError(
          ErrorCodes.CONFIG,
          `${this.options.topic} has ${this.partitionCount} partitions; input partition ${partition} has no counterpart`,
          'config',
          `give ${this.options.topic} at least as many partitions as the events topic`,
        );
    }
    await this.verify(touched);
    // Positions compare only within one cluster: a Postgres restored into a new one restarts its
    // LSNs lower, and its events are not the ones already published.
    const source = batch.sourceId ?? (await this.identity.of(batch.stream)) ?? '';

    const messages: Message[] = [];
    const sent = new Map<number, { position: string; count: number }>();
    batch.events.forEach((event, i) => {
      const position = batch.positions[i];
      const partition = partitions[i];
      const last = this.state.get(partition);
      // A record or batch that names no cluster (an earlier version, a Debezium feed) counts as this one's.
      const sameSource = last?.source === '' || source === '' || last?.source === source;
      if (last && last.stream === batch.stream && sameSource && position <= last.position) {
        this.skipped += 1;
        return;
      }
      sent.set(partition, { position, count: (sent.get(partition)?.count ?? 0) + 1 });
      messages.push({
        key: event.content_id ?? String(event.event_id),
        partition,
        value: eventJson(event, this.options.keyTypes),
        headers: {
          [STREAM_HEADER]: batch.stream,
          [POSITION_HEADER]: position,
          ...(source === '' ? {} : { [SOURCE_HEADER]: source }),
        },
      });
    });
    if (messages.length === 0) return;
    // On failure nothing is recorded: the next attempt sees the end offsets and re-reads, with
    // the partition count read again (the topic may have been recreated with fewer).
    const results = await this.producer
      .send({ topic: this.options.topic, acks: -1, messages })
      .catch(async (err: unknown) => {
        await this.readPartitionCount().catch(() => undefined);
        throw err;
      });
    for (const r of results) {
      const written = sent.get(r.partition);
      if (!written || r.baseOffset === undefined) continue;
      this.state.set(r.partition, {
        stream: batch.stream,
        position: written.position,
        source,
        end: BigInt(r.baseOffset) + BigInt(written.count),
      });
    }
  }

  async stop(): Promise<void> {
    await this.producer.disconnect();
    await this.admin.disconnect().catch(() => undefined);
  }

  private async readPartitionCount(): Promise<void> {
    const meta = await this.admin.fetchTopicMetadata({ topics: [this.options.topic] });
    this.partitionCount = meta.topics[0].partitions.length;
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

  /** Makes `state` current for `partitions`: re-reads the last record of any whose end offset moved. */
  private async verify(partitions: Set<number>): Promise<void> {
    const { kafka, topic } = this.options;
    const offsets = await this.admin.fetchTopicOffsets(topic);
    const stale = new Map<number, bigint>();
    for (const o of offsets) {
      if (!partitions.has(o.partition)) continue;
      const end = BigInt(o.high);
      const known = this.state.get(o.partition);
      if (known?.end === end) continue;
      if (end === 0n) this.state.set(o.partition, { stream: '', position: '', source: '', end });
      else stale.set(o.partition, end);
    }
    if (stale.size === 0) return;
    const last = await readLastRecords(kafka, topic, new Set(stale.keys()));
    for (const [partition, end] of stale) {
      const m = last.get(partition);
      this.state.set(partition, {
        stream: m?.headers?.[STREAM_HEADER]?.toString() ?? '',
        position: m?.headers?.[POSITION_HEADER]?.toString() ?? '',
        source: m?.headers?.[SOURCE_HEADER]?.toString() ?? '',
        end,
      });
    }
  }
}

/** The sink from the validated config (KAFKA_ENRICHED_TOPIC set); KAFKA_BROKERS is then required. */
export function createKafkaEnrichedSink(
  config: Config,
  logger: Logger,
  keyTypes?: KeyTypes,
  positionedStream?: PositionedStream,
): KafkaEnrichedSink {
  const brokers = parseBrokers(config.kafkaBrokers);
  const log = logger.child({ sink: 'kafka' });
  return new KafkaEnrichedSink({
    kafka: createKafka(brokers, 'engagement-enriched', log, kafkaSecurity(config)),
    topic: config.kafkaEnrichedTopic!,
    partitions: config.kafkaTopicPartitions,
    replicationFactor: config.kafkaReplicationFactor,
    logger: log,
    keyTypes,
    positionedStream,
  });
}
