import { eventPosition } from '../domain/position.js';
import type { Batch, EnrichedEvent } from '../domain/types.js';

/** The Redis sink benches' traffic: 500 content ids, five devices, events spread over recent seconds. */
const CONTENT_IDS = Array.from(
  { length: 500 },
  (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
);
const DEVICES = ['ios', 'android', 'web-chrome', 'tv', 'web-safari'];

/**
 * `size` events from `firstId`, dated up to `spreadSeconds` before now; with `probe`, the first
 * event is on that content id (a member the latency probe polls for).
 */
export function redisBenchBatch(
  seq: number,
  firstId: number,
  size: number,
  options: { spreadSeconds: number; probe?: string },
): Batch {
  const now = Date.now();
  const events: EnrichedEvent[] = [];
  const positions: string[] = [];
  for (let i = 0; i < size; i++) {
    const id = firstId + i;
    const ts = new Date(now - (id % options.spreadSeconds) * 1000).toISOString().replace('Z', '000Z');
    events.push({
      event_id: id,
      content_id: options.probe && i === 0 ? options.probe : CONTENT_IDS[(id * 7919) % CONTENT_IDS.length],
      user_id: null,
      event_type: 'play',
      event_ts: ts,
      duration_ms: (id * 37) % 600000,
      device: DEVICES[id % DEVICES.length],
      raw_payload: { n: id },
      content_type: 'video',
      length_seconds: 300,
      engagement_seconds: ((id * 37) % 600000) / 1000,
      engagement_pct: 0.5,
      committed_at: ts,
      processed_at: ts,
    });
    positions.push(eventPosition(`0/${(seq * 16).toString(16)}`, i));
  }
  return { seq, stream: 'bench', events, positions, ackLsn: null };
}
