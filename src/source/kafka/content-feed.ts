import { randomUUID } from 'node:crypto';
import type { Admin, Consumer, Kafka } from 'kafkajs';
import { describeError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { ContentDimension } from '../../enrichment/content-dimension.js';
import type { WireFormat } from './records.js';

/**
 * Keeps a worker's content dimension current from the content topic (compacted
 * engagement.content, or Debezium's `<prefix>.public.content`). Every worker reads the
 * whole topic from the beginning (kafkajs has no manual partition assignment, so this is a
 * consumer group of its own, unique per process, that never commits).
 *
 * `catchUp()` waits until everything in the topic *now* has been applied: capture publishes
 * a content row before the events that follow it, so after catching up a worker knows the
 * content of every event it already holds. What is still missing is looked up in Postgres.
 */
export class ContentFeed {
  private readonly consumer: Consumer;
  private readonly admin: Admin;
  /** Next offset to apply, per partition. */
  private readonly next = new Map<number, bigint>();
  private readonly log: Logger;
  private applied = 0;

  constructor(
    kafka: Kafka,
    private readonly format: WireFormat,
    private readonly dimension: ContentDimension,
    logger: Logger,
    groupPrefix: string,
  ) {
    this.log = logger.child({ component: 'content-feed' });
    this.consumer = kafka.consumer({
      groupId: `${groupPrefix}.content.${randomUUID()}`,
      maxWaitTimeInMs: 200,
    });
    this.admin = kafka.admin();
  }

  async start(): Promise<void> {
    await this.admin.connect();
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.format.contentTopic, fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const message of batch.messages) {
          const record = this.format.decodeContent(message.key, message.value);
          if (record.kind === 'content-upsert') this.dimension.upsert(record.content);
          else if (record.kind === 'content-delete') this.dimension.delete(record.id);
          else if (record.kind === 'bad') {
            this.log.warn(
              { topic: batch.topic, partition: batch.partition, offset: message.offset },
              `content message skipped: ${record.reason}`,
            );
          }
          this.applied += 1;
          this.next.set(batch.partition, BigInt(message.offset) + 1n);
        }
      },
    });
    await this.catchUp(60_000);
    this.log.info(
      { topic: this.format.contentTopic, messages: this.applied },
      'content dimension loaded from Kafka',
    );
  }

  /** Resolves once every message the topic holds now has been applied (or after `timeoutMs`). */
  async catchUp(timeoutMs = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let targets: { partition: number; high: bigint; low: bigint }[];
    try {
      targets = (await this.admin.fetchTopicOffsets(this.format.contentTopic)).map((p) => ({
        partition: p.partition,
        high: BigInt(p.high),
        low: BigInt(p.low),
      }));
    } catch (err) {
      this.log.warn(`cannot read ${this.format.contentTopic} offsets: ${describeError(err)}`);
      return false;
    }
    for (;;) {
      const behind = targets.filter((t) => t.high > t.low && (this.next.get(t.partition) ?? 0n) < t.high);
      if (behind.length === 0) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect().catch(() => undefined);
    await this.admin.disconnect().catch(() => undefined);
  }
}
