import type { Redis } from 'ioredis';
import { minuteBucketOfMs, windowBuckets } from '../../domain/windows.js';
import { redisKeys, WINDOW_MINUTES } from './keys.js';

export interface LeaderboardQuery {
  minutes: number;
  by: 'events' | 'seconds';
  dim: 'content' | 'device';
  limit: number;
}

export interface LeaderboardRow {
  member: string;
  score: number;
}

export interface Leaderboard {
  rows: LeaderboardRow[];
  /** Read from the maintained 10-minute ZSETs (current): their sibling boards may be read too. */
  live: boolean;
  /** The clock the window was taken at (otherContentScores reads the same minutes). */
  nowMs: number;
}

/**
 * Why a leaderboard cannot be read, or null: engagement seconds are summed per content only
 * (there are no device seconds ZSETs). Shared by `engagement top` and GET /api/top.
 */
export function leaderboardQueryProblem(query: Pick<LeaderboardQuery, 'by' | 'dim'>): string | null {
  return query.dim === 'device' && query.by === 'seconds'
    ? 'seconds is available for dim=content only (devices are ranked by events)'
    : null;
}

/**
 * Reads a leaderboard: the maintained 10-minute ZSETs for the 10m window while they are current,
 * otherwise a union of the minute buckets computed on the fly (read-only: ZUNION, not
 * ZUNIONSTORE). The 10-minute ZSETs move only while a pipeline runs (its 1 s ticker): once none
 * does, their stored window (top:meta:10m) falls behind the clock, and they are not read then,
 * so `top` never shows stale counts as the last 10 minutes.
 */
export async function readLeaderboard(
  redis: Redis,
  prefix: string,
  query: LeaderboardQuery,
  nowMs = Date.now(),
): Promise<Leaderboard> {
  const k = redisKeys(prefix);
  const dim = query.dim === 'device' ? 'device' : query.by === 'seconds' ? 'seconds' : 'content';
  if (query.minutes === WINDOW_MINUTES) {
    const key = dim === 'device' ? k.topDevice10m : dim === 'seconds' ? k.topSeconds10m : k.topContent10m;
    const [to, flat] = await Promise.all([
      redis.hget(k.windowMeta, 'to'),
      redis.zrevrange(key, 0, query.limit - 1, 'WITHSCORES'),
    ]);
    if (to !== null && to >= minuteBucketOfMs(nowMs)) {
      const rows: LeaderboardRow[] = [];
      for (let i = 0; i < flat.length; i += 2) rows.push({ member: flat[i], score: Number(flat[i + 1]) });
      return { rows, live: true, nowMs };
    }
  }
  const rows = await bucketUnion(redis, prefix, dim, query.minutes, nowMs);
  // Same order as ZREVRANGE: score descending, ties by member descending.
  rows.sort((a, b) => b.score - a.score || (a.member < b.member ? 1 : a.member > b.member ? -1 : 0));
  return { rows: rows.slice(0, query.limit), live: false, nowMs };
}

/**
 * The content's other score (events when ranked by seconds, seconds when ranked by events) over
 * the window a non-live leaderboard was read for (`board.nowMs`), from the same minute buckets:
 * one value per member, 0 for a member without events of that kind in the window.
 */
export async function otherContentScores(
  redis: Redis,
  prefix: string,
  board: { by: 'events' | 'seconds'; minutes: number; nowMs: number },
  members: readonly string[],
): Promise<number[]> {
  const k = redisKeys(prefix);
  const bucketKey = board.by === 'events' ? k.secondsBucket : k.contentBucket;
  // Only the listed members: one ZMSCORE per minute in one round trip, not a union of everyone.
  const pipeline = redis.pipeline();
  for (const minute of windowBuckets(board.nowMs, board.minutes))
    pipeline.zmscore(bucketKey(minute), ...members);
  const sums = members.map(() => 0);
  for (const [err, scores] of (await pipeline.exec()) ?? []) {
    if (err) throw err;
    (scores as (string | null)[]).forEach((s, i) => (sums[i] += s === null ? 0 : Number(s)));
  }
  return sums; // seconds unrounded, as ZMSCORE gives them on the live board: the reader rounds both
}

/** Every member of a board summed over the window's minute buckets (read-only ZUNION). */
async function bucketUnion(
  redis: Redis,
  prefix: string,
  dim: 'device' | 'seconds' | 'content',
  minutes: number,
  nowMs: number,
): Promise<LeaderboardRow[]> {
  const k = redisKeys(prefix);
  const bucketKey = dim === 'device' ? k.deviceBucket : dim === 'seconds' ? k.secondsBucket : k.contentBucket;
  const keys = windowBuckets(nowMs, minutes).map(bucketKey);
  // The typed zunion returns a flat [member, score, ...] list (a raw call() nests the pairs).
  const all = await redis.zunion(keys.length, ...keys, 'WITHSCORES');
  const rows: LeaderboardRow[] = [];
  for (let i = 0; i < all.length; i += 2) {
    const score = Number(all[i + 1]);
    // Seconds are sums of millisecond values in binary floating point: shown to the millisecond,
    // as the 10-minute board keeps them (roll-window.lua).
    rows.push({ member: all[i], score: dim === 'seconds' ? Math.round(score * 1000) / 1000 : score });
  }
  return rows;
}
