import { minuteBucketOfIso } from '../../domain/windows.js';
import type { EnrichedEvent } from '../../domain/types.js';
import {
  BUCKET_TTL_SECONDS,
  CONTENT_LAST_TTL_SECONDS,
  SEEN_CHUNK_BITS,
  UNKNOWN_DEVICE,
  type RedisKeys,
} from './keys.js';

export interface LeaderboardOpsOptions {
  /** content:count and content:last (the stream owns them; a backfill never writes them). */
  totals: boolean;
  /** Events whose minute-bucket increments were already applied (by the other writer). */
  skipBuckets?: ReadonlySet<number>;
}

/**
 * Aggregates a batch into the fewest Redis operations (pure): one INCRBY per content, one
 * SET of the latest event per content, one ZINCRBY per (minute, member), one EXPIRE per
 * bucket. Returns the ops' KEYS and ARGV triples (see apply-batch.lua).
 */
export function leaderboardOps(
  events: readonly EnrichedEvent[],
  keys: RedisKeys,
  options: LeaderboardOpsOptions = { totals: true },
): { keys: string[]; args: string[] } {
  const counts = new Map<string, number>();
  const latest = new Map<string, EnrichedEvent>();
  const buckets = new Map<string, Map<string, number>>(); // bucket key -> member -> increment
  const bump = (key: string, member: string, by: number) => {
    let members = buckets.get(key);
    if (!members) buckets.set(key, (members = new Map()));
    members.set(member, (members.get(member) ?? 0) + by);
  };
  const skip = options.skipBuckets;
  for (const event of events) {
    if (options.totals && event.content_id !== null) {
      counts.set(event.content_id, (counts.get(event.content_id) ?? 0) + 1);
      latest.set(event.content_id, event);
    }
    if (skip?.has(event.event_id)) continue;
    const minute = minuteBucketOfIso(event.event_ts);
    bump(keys.deviceBucket(minute), event.device ?? UNKNOWN_DEVICE, 1);
    if (event.content_id === null) continue;
    bump(keys.contentBucket(minute), event.content_id, 1);
    if (event.engagement_seconds)
      bump(keys.secondsBucket(minute), event.content_id, event.engagement_seconds);
  }
  const outKeys: string[] = [];
  const args: string[] = [];
  const op = (key: string, code: string, a: string, b = '') => {
    outKeys.push(key);
    args.push(code, a, b);
  };
  for (const [id, n] of counts) op(keys.contentCount(id), 'i', String(n));
  for (const [id, event] of latest)
    op(keys.contentLast(id), 's', JSON.stringify(event), String(CONTENT_LAST_TTL_SECONDS));
  for (const [key, members] of buckets) {
    for (const [member, by] of members) op(key, 'z', member, String(by));
    op(key, 'e', String(BUCKET_TTL_SECONDS));
  }
  return { keys: outKeys, args };
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
