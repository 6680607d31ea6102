import { randomUUID } from 'node:crypto';
import type { Kafka, KafkaMessage } from 'kafkajs';

/**
 * The last record of every non-empty partition of `topic` (or of those in `only`) (partition -> message).
 * kafkajs has no assign(): a throw-away consumer group (never commits, so the broker drops it)
 * subscribes and seeks each partition to its high watermark - 1. With a non-transactional
 * producer the record before the high watermark is always a data record.
 */
export async function readLastRecords(
  kafka: Kafka,
  topic: string,
  only?: Set<number>,
  timeoutMs = 60_000,
): Promise<Map<number, KafkaMessage>> {
  const admin = kafka.admin();
  await admin.connect();
  let offsets: { partition: number; high: string; low: string }[];
  try {
    offsets = await admin.fetchTopicOffsets(topic);
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
  const wanted = new Map(
    offsets
      .filter((o) => BigInt(o.high) > BigInt(o.low) && (!only || only.has(o.partition)))
      .map((o) => [o.partition, (BigInt(o.high) - 1n).toString()] as const),
  );
  const found = new Map<number, KafkaMessage>();
  if (wanted.size === 0) return found;

  const consumer = kafka.consumer({
    groupId: `engagement-last-record-${randomUUID()}`,
    sessionTimeout: 10_000,
    heartbeatInterval: 1_000,
    maxWaitTimeInMs: 100,
  });
  let done!: () => void;
  const complete = new Promise<void>((resolve) => (done = resolve));
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: false });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        const target = wanted.get(batch.partition);
        if (target === undefined) return;
        for (const m of batch.messages) if (m.offset === target) found.set(batch.partition, m);
        if (found.size === wanted.size) done();
      },
    });
    for (const [partition, offset] of wanted) consumer.seek({ topic, partition, offset });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>(
      (resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)),
    );
    const outcome = await Promise.race([complete, timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      const missing = [...wanted.keys()].filter((p) => !found.has(p));
      throw new Error(
        `could not read the last records of ${topic} partitions ${missing.join(',')} within ${timeoutMs} ms`,
      );
    }
    return found;
  } finally {
    await consumer.disconnect().catch(() => undefined);
  }
}
