import type { Message } from 'kafkajs';

/**
 * A broker refuses a record batch larger than the topic's `max.message.bytes` (the broker's
 * `message.max.bytes` unless the topic sets it; 1048588 by default) with MESSAGE_TOO_LARGE, and
 * kafkajs puts every message of one partition in one `send` into one batch. These bound a
 * batch's encoded size from above (uncompressed record batch v2), so that a run of messages
 * whose estimate is within the limit is never refused for its size.
 */

/** Kafka's default limit, used when a topic's own cannot be read. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1_048_588;

/** The batch header, log overhead (offset, length) and record count included. */
const BATCH_OVERHEAD = 61;
/**
 * A record's fixed fields at their largest varint sizes: length 5, attributes 1, timestamp
 * delta 10, offset delta 5, key and value lengths 5 + 5, header count 5.
 */
const RECORD_OVERHEAD = 36;
/** A header's key and value lengths. */
const HEADER_OVERHEAD = 10;

function bytesOf(value: Buffer | string | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'string' ? Buffer.byteLength(value) : value.length;
}

/** At least the bytes `message` adds to a record batch. */
export function recordBytes(message: Message): number {
  let size = RECORD_OVERHEAD + bytesOf(message.key) + bytesOf(message.value);
  for (const [key, value] of Object.entries(message.headers ?? {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      size += HEADER_OVERHEAD + Buffer.byteLength(key) + bytesOf(v);
    }
  }
  return size;
}

/** At least the encoded size of one record batch of `messages`. */
export function batchBytes(messages: readonly Message[]): number {
  return messages.reduce((sum, m) => sum + recordBytes(m), BATCH_OVERHEAD);
}

/**
 * How many of `messages`, from index `from`, fit one batch of at most `limit` bytes: at least
 * one (a message too large alone goes alone, and the broker decides).
 */
export function fittingCount(messages: readonly Message[], from: number, limit: number): number {
  let size = BATCH_OVERHEAD;
  for (let i = from; i < messages.length; i++) {
    size += recordBytes(messages[i]);
    if (size > limit) return Math.max(1, i - from);
  }
  return messages.length - from;
}
