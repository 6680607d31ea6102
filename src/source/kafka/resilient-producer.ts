import type { Producer, ProducerRecord, RecordMetadata } from 'kafkajs';
import { describeError } from '../../errors.js';
import type { Logger } from '../../logger.js';

/**
 * A kafkajs producer that is replaced after any failed send. Seen on a real 3-broker cluster:
 * when the partition leader is killed -9 mid-request, kafkajs's idempotent producer can
 * stop retrying without ever settling `send()` (no error, no log) — the capture then held
 * its LSN forever. Every send is therefore bounded by `timeoutMs`; on a timeout or an error
 * the producer is dropped and a new one (new producer id) is connected for the retry.
 * A request of the old producer that the broker did append is then in the topic twice;
 * readers of our topics drop copies by source position (and every sink is idempotent).
 */
export class ResilientProducer {
  private producer: Producer | null = null;

  constructor(
    private readonly make: () => Producer,
    private readonly logger: Logger,
    private readonly timeoutMs = 45_000,
  ) {}

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
      return await Promise.race([producer.send(record), timeout]);
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
  }
}
