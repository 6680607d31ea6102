import { minuteBucketOfIso } from '../../domain/windows.js';
import type { EnrichedEvent } from '../../domain/types.js';
import { BUCKET_TTL_SECONDS, CONTENT_LAST_TTL_SECONDS, UNKNOWN_DEVICE, type RedisKeys } from './keys.js';

/**
 * Aggregates a batch into the fewest Redis operations (pure): one INCRBY per content, one
 * SET of the latest event per content, one ZINCRBY per (minute, member), one EXPIRE per
 * bucket. Returns the script's KEYS (after the watermark key) and op ARGV triples.
 */
export function leaderboardOps(events: EnrichedEvent[], keys: RedisKeys): { keys: string[]; args: string[] } {
  const counts = new Map<string, number>();
  const latest = new Map<string, EnrichedEvent>();
  const buckets = new Map<string, Map<string, number>>(); // bucket key -> member -> increment
  const bump = (key: string, member: string, by: number) => {
    let members = buckets.get(key);
    if (!members) buckets.set(key, (members = new Map()));
    members.set(member, (members.get(member) ?? 0) + by);
  };
  for (const event of events) {
    const minute = minuteBucketOfIso(event.event_ts);
    bump(keys.deviceBucket(minute), event.device ?? UNKNOWN_DEVICE, 1);
    if (event.content_id === null) continue;
    counts.set(event.content_id, (counts.get(event.content_id) ?? 0) + 1);
    latest.set(event.content_id, event);
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
