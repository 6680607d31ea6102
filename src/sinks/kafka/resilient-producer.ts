import type { Admin, Kafka, Message, Producer, ProducerRecord, RecordMetadata } from 'kafkajs';
import { describeError } from '../../errors.js';
import { kafkajs } from '../../kafka/client.js';
import type { Logger } from '../../logger.js';
import { batchBytes, DEFAULT_MAX_MESSAGE_BYTES, fittingCount } from './record-size.js';

/**
 * A message the broker refused for its size although it was sent alone (MESSAGE_TOO_LARGE):
 * no retry can deliver it, the sender decides what becomes of it (capture and the fan-out
 * dead-letter it). Nothing after it in its partition was sent: order holds.
 */
export class MessageTooLarge extends Error {
  constructor(
    readonly topic: string,
    /** The message's index in the record's `messages`. */
    readonly index: number,
    /** Its record batch's encoded size (an upper bound) and the topic's limit as known here. */
    readonly bytes: number,
    readonly limit: number,
    options: { cause: unknown },
  ) {
    super(
      `Kafka refused a message of ${bytes} bytes as too large for ${topic} (limit ${limit} bytes: the topic's max.message.bytes)`,
      options,
    );
    this.name = 'MessageTooLarge';
  }
}

/** What the producer knows of a topic: its partitions and the largest record batch it takes. */
interface TopicLimits {
  partitions: number;
  maxBytes: number;
}

/** kafkajs's error for a record batch over the broker's limit (it is not retriable). */
function isTooLarge(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { type?: unknown }).type === 'MESSAGE_TOO_LARGE') return true;
  }
  return false;
}

/**
 * A kafkajs producer that is replaced after any failed send. Seen on a real 3-broker cluster:
 * when the partition leader is killed -9 mid-request, kafkajs's idempotent producer can
 * stop retrying without ever settling `send()` (no error, no log) — the capture then held
 * its LSN forever. Every request is therefore bounded by `timeoutMs`; on a timeout or an error
 * the producer is dropped and a new one (new producer id) is connected for the retry.
 * A request of the old producer that the broker did append is then in the topic twice;
 * readers of our topics drop copies by source position (and every sink is idempotent).
 *
 * Each send carries the messages of ONE partition (the record is split, partitions sent in
 * parallel). kafkajs's send retries per *broker*: when a leader dies mid-request and its
 * partition moves to a broker that already answered for other partitions of the same send,
 * the retry skips that broker and `send()` resolves with the moved partition's messages
 * never written. Seen on the real cluster: 17 acknowledged events missing after a leader
 * kill -9. With one partition per send there is no other broker's answer to confuse it.
 * Partitions are chosen here with the same murmur2 partitioner, so placement is unchanged.
 *
 * A partition's messages go out in sends of at most the topic's `max.message.bytes` (estimated
 * from above, record-size.ts), one after another (order matters), partitions in parallel:
 * kafkajs puts one send's messages for a partition into one record batch, and the broker
 * refuses a larger one as MESSAGE_TOO_LARGE, which no retry cures (one capture unit of 2000
 * events of ~770 B on a 1-partition topic wedged the capture before). The limit is read once
 * per topic (DescribeConfigs: the exact limit, raised or lowered by the operator, and named
 * when a message is refused; Kafka's default when that is not allowed). Should the broker
 * still refuse a send of several messages (its limit was lowered since, or is below the
 * default that could not be read), the limit known here is halved and the rest re-split; a
 * message refused alone is a MessageTooLarge for the caller.
 */
export class ResilientProducer {
  private producer: Producer | null = null;
  private admin: Admin | null = null;
  private readonly topics = new Map<string, TopicLimits>();
  private readonly partitioner = kafkajs().Partitioners.DefaultPartitioner();

  constructor(
    private readonly kafka: Kafka,
    private readonly make: () => Producer,
    private readonly logger: Logger,
    private readonly timeoutMs = 45_000,
  ) {}

  private async limitsOf(topic: string): Promise<TopicLimits> {
    const known = this.topics.get(topic);
    if (known) return known;
    if (!this.admin) {
      this.admin = this.kafka.admin();
      await this.admin.connect();
    }
    const meta = await this.admin.fetchTopicMetadata({ topics: [topic] });
    const limits = { partitions: meta.topics[0].partitions.length, maxBytes: await this.maxBytesOf(topic) };
    this.topics.set(topic, limits);
    return limits;
  }

  /** The topic's max.message.bytes (the broker's message.max.bytes unless the topic overrides it). */
  private async maxBytesOf(topic: string): Promise<number> {
    try {
      const { resources } = await this.admin!.describeConfigs({
        resources: [
          { type: kafkajs().ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] },
        ],
        includeSynonyms: false,
      });
      const value = Number(resources[0]?.configEntries[0]?.configValue);
      if (Number.isInteger(value) && value > 0) return value;
      throw new Error(`max.message.bytes is '${resources[0]?.configEntries[0]?.configValue}'`);
    } catch (err) {
      this.logger.warn(
        `could not read ${topic}'s max.message.bytes (${describeError(err)}); sending at most Kafka's default ${DEFAULT_MAX_MESSAGE_BYTES} bytes per request`,
      );
      return DEFAULT_MAX_MESSAGE_BYTES;
    }
  }

  /** The record's messages grouped by partition (explicit, or murmur2 of the key as kafkajs would), with their indexes. */
  private byPartition(
    record: ProducerRecord,
    count: number,
  ): Map<number, { message: Message; index: number }[]> {
    const partitionMetadata = Array.from({ length: count }, (_, partitionId) => ({ partitionId, leader: 0 }));
    const groups = new Map<number, { message: Message; index: number }[]>();
    record.messages.forEach((message, index) => {
      const partition =
        message.partition ??
        this.partitioner({
          topic: record.topic,
          partitionMetadata: partitionMetadata as Parameters<typeof this.partitioner>[0]['partitionMetadata'],
          message,
        });
      const group = groups.get(partition) ?? [];
      group.push({ message: { ...message, partition }, index });
      groups.set(partition, group);
    });
    return groups;
  }

  async connect(): Promise<void> {
    if (this.producer) return;
    const producer = this.make();
    await producer.connect();
    this.producer = producer;
  }

  /**
   * Resolves when Kafka acknowledged every message, with one result per partition (baseOffset
   * of its first send). Throws a MessageTooLarge when a message was refused alone (the producer
   * is kept: nothing is wrong with it); on any other failure the producer is replaced.
   */
  async send(record: ProducerRecord): Promise<RecordMetadata[]> {
    await this.connect();
    const producer = this.producer!;
    try {
      const limits = await this.bounded(this.limitsOf(record.topic));
      const groups = this.byPartition(record, limits.partitions);
      // A partition stopped by a refused message lets the others finish on this producer (it is
      // kept); any other failure replaces the producer at once.
      const results = await Promise.all(
        [...groups.values()].map((group) =>
          this.sendPartition(producer, record, group, limits).catch((err: unknown) => {
            if (err instanceof MessageTooLarge) return err;
            throw err;
          }),
        ),
      );
      const refused = results.find((r) => r instanceof MessageTooLarge);
      if (refused) throw refused;
      return results as RecordMetadata[];
    } catch (err) {
      if (err instanceof MessageTooLarge) throw err;
      if (this.producer === producer) this.producer = null;
      // The topic may have been recreated with fewer partitions: the next attempt reads them anew.
      this.topics.delete(record.topic);
      this.logger.warn(`Kafka produce failed, replacing the producer: ${describeError(err)}`);
      void producer.disconnect().catch(() => undefined);
      throw err;
    }
  }

  /** One partition's messages, in order, in sends the topic takes; stops at a message refused alone. */
  private async sendPartition(
    producer: Producer,
    record: ProducerRecord,
    group: { message: Message; index: number }[],
    limits: TopicLimits,
  ): Promise<RecordMetadata> {
    const messages = group.map((g) => g.message);
    const results: RecordMetadata[] = [];
    for (let i = 0; i < messages.length;) {
      const chunk = messages.slice(i, i + fittingCount(messages, i, limits.maxBytes));
      try {
        results.push(...(await this.bounded(producer.send({ ...record, messages: chunk }))));
        i += chunk.length;
      } catch (err) {
        if (!isTooLarge(err)) throw err;
        const bytes = batchBytes(chunk);
        if (chunk.length === 1) {
          throw new MessageTooLarge(record.topic, group[i].index, bytes, limits.maxBytes, { cause: err });
        }
        limits.maxBytes = Math.max(1, Math.floor(bytes / 2));
        this.logger.warn(
          `${record.topic} refused ${chunk.length} messages (${bytes} bytes) in one request: sending at most ${limits.maxBytes} bytes per request from now on`,
        );
      }
    }
    return { ...results[results.length - 1], baseOffset: results[0].baseOffset };
  }

  /** A request's answer, or an error after `timeoutMs` (see the class comment). */
  private async bounded<T>(request: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Kafka did not answer a request within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
    });
    try {
      return await Promise.race([request, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async disconnect(): Promise<void> {
    const producer = this.producer;
    this.producer = null;
    await producer?.disconnect();
    await this.admin?.disconnect().catch(() => undefined);
    this.admin = null;
  }
}
