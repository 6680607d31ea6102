import type { ContentInfo, EngagementEventRow } from '../../domain/types.js';

/**
 * What a Kafka message means to a worker, whatever the wire format (native or Debezium).
 * `position` (events only) is a string that sorts in source order within one partition,
 * when the format carries one; otherwise the worker uses the Kafka offset.
 */
export type WorkerRecord =
  | {
      kind: 'event';
      row: EngagementEventRow;
      committedAt: string;
      position?: string;
      /** The source cluster of `position` (`postgres:<system identifier>`), when the format names it. */
      source?: string;
    }
  | { kind: 'content-upsert'; content: Partial<ContentInfo> & { id: string } }
  | { kind: 'content-delete'; id: string }
  /** An update/delete of an event row (events are immutable facts), counted only. */
  | { kind: 'ignored'; what: 'event-update' | 'event-delete' | 'truncate' }
  /** Nothing to do (tombstone, heartbeat, schema-change message). */
  | { kind: 'skip'; why: string }
  /** Cannot be decoded: dead-lettered with topic/partition/offset, never stalls the partition. */
  | { kind: 'bad'; reason: string };

/** A format turns raw messages of its event and content topics into records. */
export interface WireFormat {
  readonly name: 'native' | 'debezium';
  readonly eventsTopic: string;
  readonly contentTopic: string;
  /** `offset`: the message's Kafka offset (a tiebreak for records that share a source position). */
  decodeEvent(key: Buffer | null, value: Buffer | null, timestampMs: string, offset?: string): WorkerRecord;
  decodeContent(key: Buffer | null, value: Buffer | null): WorkerRecord;
}
