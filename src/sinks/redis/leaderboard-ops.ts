import { minuteBucketOfIso, windowBuckets } from '../../domain/windows.js';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { EnrichedEvent } from '../../domain/types.js';
import { eventJson } from '../event-json.js';
import {
  BUCKET_TTL_SECONDS,
  SEEN_CHUNK_BITS,
  UNKNOWN_DEVICE,
  WINDOW_MINUTES,
  WINDOW_ROLL_MAX_MINUTES,
  type RedisKeys,
} from './keys.js';

export interface LeaderboardOpsOptions {
  /** Events already counted (by an earlier batch, a replay or a backfill): no effect at all. */
  skip?: ReadonlySet<number>;
  /**
   * Minute bucket (YYYYMMDDHHMM) before which events get no minute-bucket increments (a
   * backfill's: those buckets have expired; writing them would resurrect keys nobody reads).
   * Their content:count and content:last still count.
   */
  bucketsFrom?: string;
  /** The source's key types: `content:last` holds the event with keys typed as in the source. */
  keyTypes?: KeyTypes;
}

/**
 * Aggregates a batch into the fewest Redis operations (pure): one INCRBY per content, one
 * conditional SET of the latest event per content (highest event_ts, ties: highest
 * event_id), one ZINCRBY per (minute, member), one EXPIRE per bucket. Returns the ops' KEYS
 * and ARGV triples (see apply-batch.lua). A bucket's EXPIRE also names its 10-minute board
 * (c: content events, s: content seconds, d: device events) and its minute, `c 202612011000`:
 * the script adds the bucket's increments to that board when the minute is in the window.
 */
export function leaderboardOps(
  events: readonly EnrichedEvent[],
  keys: RedisKeys,
  options: LeaderboardOpsOptions = {},
): { keys: string[]; args: string[] } {
  const counts = new Map<string, number>();
  const latest = new Map<string, { event: EnrichedEvent; order: string }>();
  // bucket key -> its board and minute, and member -> increment
  const buckets = new Map<string, { tag: string; members: Map<string, number> }>();
  const bump = (key: string, board: 'c' | 's' | 'd', minute: string, member: string, by: number) => {
    let bucket = buckets.get(key);
    if (!bucket) buckets.set(key, (bucket = { tag: `${board} ${minute}`, members: new Map() }));
    bucket.members.set(member, (bucket.members.get(member) ?? 0) + by);
  };
  const { skip, bucketsFrom } = options;
  for (const event of events) {
    if (skip?.has(event.event_id)) continue;
    if (event.content_id !== null) {
      counts.set(event.content_id, (counts.get(event.content_id) ?? 0) + 1);
      const order = lastOrder(event);
      const held = latest.get(event.content_id);
      if (!held || held.order < order) latest.set(event.content_id, { event, order });
    }
    const minute = minuteBucketOfIso(event.event_ts);
    if (bucketsFrom !== undefined && minute < bucketsFrom) continue;
    bump(keys.deviceBucket(minute), 'd', minute, event.device ?? UNKNOWN_DEVICE, 1);
    if (event.content_id === null) continue;
    bump(keys.contentBucket(minute), 'c', minute, event.content_id, 1);
    if (event.engagement_seconds)
      bump(keys.secondsBucket(minute), 's', minute, event.content_id, event.engagement_seconds);
  }
  const outKeys: string[] = [];
  const args: string[] = [];
  const op = (key: string, code: string, a: string, b = '') => {
    outKeys.push(key);
    args.push(code, a, b);
  };
  for (const [id, n] of counts) op(keys.contentCount(id), 'i', String(n));
  for (const [id, { event, order }] of latest)
    op(keys.contentLast(id), 'l', eventJson(event, options.keyTypes), order);
  for (const [key, { tag, members }] of buckets) {
    for (const [member, by] of members) op(key, 'z', member, String(by));
    op(key, 'e', String(BUCKET_TTL_SECONDS), tag);
  }
  return { keys: outKeys, args };
}

/**
 * A string that sorts like (event_ts, event_id): the year as a signed offset in 7 digits (ISO
 * years may be `+010000` or `-000044`), the rest of the timestamp, then the id in 20 digits.
 * apply-batch.lua computes the same key from the content:last it holds.
 */
export function lastOrder(event: Pick<EnrichedEvent, 'event_ts' | 'event_id'>): string {
  const m = /^([+-]?)(\d+)(.*)$/.exec(event.event_ts);
  const year = m ? Number(m[2]) * (m[1] === '-' ? -1 : 1) : -1_000_000;
  const rest = m ? m[3] : '';
  return `${String(year + 1_000_000).padStart(7, '0')}${rest} ${String(event.event_id).padStart(20, '0')}`;
}

/**
 * The seen-bitmap part of the script's arguments: event ids grouped by bitmap. `ids[k][j]`
 * is the event id of the j-th offset of bitmap k, to map a 'dup' reply back to events.
 */
export function seenArgs(
  events: readonly EnrichedEvent[],
  keys: RedisKeys,
  skip: ReadonlySet<number>,
): { keys: string[]; args: string[]; ids: number[][] } {
  const byChunk = new Map<number, number[]>();
  for (const event of events) {
    if (skip.has(event.event_id)) continue;
    const chunk = Math.floor(event.event_id / SEEN_CHUNK_BITS);
    let ids = byChunk.get(chunk);
    if (!ids) byChunk.set(chunk, (ids = []));
    ids.push(event.event_id);
  }
  const outKeys: string[] = [];
  const args: string[] = [];
  const ids: number[][] = [];
  for (const [chunk, chunkIds] of byChunk) {
    outKeys.push(keys.seen(chunk));
    args.push(String(chunkIds.length));
    for (const id of chunkIds) args.push(String(id % SEEN_CHUNK_BITS));
    ids.push(chunkIds);
  }
  return { keys: outKeys, args, ids };
}

/**
 * KEYS and ARGV of roll-window.lua for a caller whose clock reads `nowMs`: the window keys, then
 * the three buckets of each of the WINDOW_MINUTES + WINDOW_ROLL_MAX_MINUTES minutes ending at
 * `nowMs`'s minute (every bucket an incremental move or a rebuild reads, as Redis Cluster wants
 * them declared). `rebuild`: recompute the window from its buckets even when it is current.
 */
export function rollWindowArgs(
  keys: RedisKeys,
  nowMs: number,
  rebuild = false,
): { keys: string[]; args: string[] } {
  const minutes = windowBuckets(nowMs, WINDOW_MINUTES + WINDOW_ROLL_MAX_MINUTES);
  const outKeys: string[] = [...keys.windowKeys];
  for (const m of minutes) outKeys.push(keys.contentBucket(m), keys.secondsBucket(m), keys.deviceBucket(m));
  const args = [
    rebuild ? 'f' : 'r',
    new Date(nowMs).toISOString(),
    String(WINDOW_MINUTES),
    String(WINDOW_ROLL_MAX_MINUTES),
    ...minutes,
  ];
  return { keys: outKeys, args };
}
