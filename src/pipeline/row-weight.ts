import { JsonText } from '../domain/json-text.js';
import type { EnrichedEvent } from '../domain/types.js';

/**
 * What an event counts toward BATCH_MAX_ROWS (and so toward the in-flight bound): one, plus one
 * per ROW_WEIGHT_BYTES of its payload and device text. Counting rows alone bounded memory only
 * for ordinary events: one transaction of 2,000 events with 2.5 MB payloads filled a single
 * batch of 5 GB and the process died of heap exhaustion, on every start. Weighted, a batch holds
 * at most about BATCH_MAX_ROWS x ROW_WEIGHT_BYTES of such text (32 MB with the defaults), and an
 * ordinary event (a payload of a few hundred bytes) still counts one.
 */
export const ROW_WEIGHT_BYTES = 16 * 1024;

export function rowWeight(e: EnrichedEvent): number {
  const payload = e.raw_payload;
  // Lengths in UTF-16 units: a bound on memory, not an exact byte count (and cheap per event).
  const text =
    (payload instanceof JsonText ? payload.text.length : typeof payload === 'string' ? payload.length : 0) +
    (e.device?.length ?? 0);
  return weightOfLength(text);
}

/** The weight of one row or message whose variable-length text or bytes measure `length`. */
export function weightOfLength(length: number): number {
  return length < ROW_WEIGHT_BYTES ? 1 : 1 + Math.floor(length / ROW_WEIGHT_BYTES);
}

export function batchWeight(events: readonly EnrichedEvent[]): number {
  let weight = 0;
  for (let i = 0; i < events.length; i++) weight += rowWeight(events[i]!);
  return weight;
}
