import type { Kafka } from 'kafkajs';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';

export interface TopicSpec {
  topic: string;
  /** Latest record per key only (cleanup.policy=compact): the content dimension. */
  compacted?: boolean;
}

export interface TopicSettings {
  partitions: number;
  /** Wanted replication factor; capped by the number of brokers the cluster reports. */
  replicationFactor: number;
}

/**
 * Creates the topics that do not exist yet: `partitions` partitions, replication factor
 * min(wanted, brokers), `min.insync.replicas` = factor - 1 (at least 1) so that with
 * acks=all a write survives one broker lost and the topic stays writable while one broker is
 * down. Existing topics are left as they are (an operator's settings win) but reported when
 * they differ. A cluster that refuses CreateTopics (no rights, or librdkafka's mock cluster)
 * gets one warning and we rely on auto-creation.
 */
export async function ensureTopics(
  kafka: Kafka,
  specs: TopicSpec[],
  settings: TopicSettings,
  logger: Logger,
): Promise<void> {
  const admin = kafka.admin();
  try {
    await admin.connect();
    const { brokers } = await admin.describeCluster();
    const replicationFactor = Math.max(1, Math.min(settings.replicationFactor, brokers.length));
    const minIsr = Math.max(1, replicationFactor - 1);
    const existing = new Set(await admin.listTopics());
    const wanted = specs.filter((s) => !existing.has(s.topic));
    if (wanted.length > 0) {
      await admin.createTopics({
        waitForLeaders: true,
        topics: wanted.map((s) => ({
          topic: s.topic,
          numPartitions: settings.partitions,
          replicationFactor,
          configEntries: [
            { name: 'min.insync.replicas', value: String(minIsr) },
            ...(s.compacted ? [{ name: 'cleanup.policy', value: 'compact' }] : []),
          ],
        })),
      });
      logger.info(
        { topics: wanted.map((s) => s.topic), partitions: settings.partitions, replicationFactor, minIsr },
        'Kafka topics created',
      );
    }
    const present = specs.filter((s) => existing.has(s.topic)).map((s) => s.topic);
    if (present.length > 0) {
      const meta = await admin.fetchTopicMetadata({ topics: present });
      for (const t of meta.topics) {
        const rf = t.partitions[0]?.replicas.length ?? 0;
        if (rf < replicationFactor)
          logger.warn(
            `Kafka topic ${t.name} has replication factor ${rf} (< ${replicationFactor}): a broker lost can lose acknowledged events`,
          );
      }
    }
  } catch (err) {
    const names = specs.map((s) => s.topic).join(', ');
    const compacted = specs.filter((s) => s.compacted).map((s) => s.topic);
    logger.warn(
      `could not create Kafka topics ${names} (${describeError(err)}); relying on auto-creation` +
        (compacted.length > 0 ? ` — make ${compacted.join(', ')} compacted (cleanup.policy=compact)` : ''),
    );
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}
