import type { Admin, Kafka, Message, Producer, ProducerRecord, RecordMetadata } from 'kafkajs';
import { describeError } from '../../errors.js';
import { kafkajs } from '../../kafka/client.js';
import type { Logger } from '../../logger.js';

/**
 * A kafkajs producer that is replaced after any failed send. Seen on a real 3-broker cluster:
 * when the partition leader is killed -9 mid-request, kafkajs's idempotent producer can
 * stop retrying without ever settling `send()` (no error, no log) — the capture then held
 * its LSN forever. Every send is therefore bounded by `timeoutMs`; on a timeout or an error
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
 */
export class ResilientProducer {
  private producer: Producer | null = null;
  private admin: Admin | null = null;
  private readonly partitionCounts = new Map<string, number>();
  private readonly partitioner = kafkajs().Partitioners.DefaultPartitioner();

  constructor(
    private readonly kafka: Kafka,
    private readonly make: () => Producer,
    private readonly logger: Logger,
    private readonly timeoutMs = 45_000,
  ) {}

  private async partitionsOf(topic: string): Promise<number> {
    const known = this.partitionCounts.get(topic);
    if (known) return known;
    if (!this.admin) {
      this.admin = this.kafka.admin();
      await this.admin.connect();
    }
    const meta = await this.admin.fetchTopicMetadata({ topics: [topic] });
    const count = meta.topics[0].partitions.length;
    this.partitionCounts.set(topic, count);
    return count;
  }

  /** The record's messages grouped by partition (explicit, or murmur2 of the key as kafkajs would). */
  private async byPartition(record: ProducerRecord): Promise<Map<number, Message[]>> {
    const count = await this.partitionsOf(record.topic);
    const partitionMetadata = Array.from({ length: count }, (_, partitionId) => ({ partitionId, leader: 0 }));
    const groups = new Map<number, Message[]>();
    for (const message of record.messages) {
      const partition =
        message.partition ??
        this.partitioner({
          topic: record.topic,
          partitionMetadata: partitionMetadata as Parameters<typeof this.partitioner>[0]['partitionMetadata'],
          message,
        });
      const group = groups.get(partition) ?? [];
      group.push({ ...message, partition });
      groups.set(partition, group);
    }
    return groups;
  }

  async connect(): Promise<void> {
    if (this.producer) return;
    const producer = this.make();
    await producer.connect();
    this.producer = producer;
  }

  async send(record: ProducerRecord): Promise<RecordMetadata[]> {
    await this.connect();
    const producer = this.producer!;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Kafka did not answer a produce request within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
    });
    try {
      const groups = await this.byPartition(record);
      const sends = [...groups.values()].map((messages) => producer.send({ ...record, messages }));
      return (await Promise.race([Promise.all(sends), timeout])).flat();
    } catch (err) {
      if (this.producer === producer) this.producer = null;
      this.logger.warn(`Kafka produce failed, replacing the producer: ${describeError(err)}`);
      void producer.disconnect().catch(() => undefined);
      throw err;
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
