import { minuteBucketEndMs, minuteBucketOfIso, windowBuckets } from '../../domain/windows.js';
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
  /** The clock, for the TTL of buckets of minutes still to come (default: Date.now()). */
  nowMs?: number;
}

/**
 * A bucket's TTL: BUCKET_TTL_SECONDS from now, or, for a minute still to come (an event_ts
 * ahead of the clock), that long after its minute ends, so it is there while the minute is in
 * the window. At most an hour more than usual: a producer days ahead would keep keys nobody reads.
 */
export function bucketTtlSeconds(minute: string, nowMs: number): number {
  const end = minuteBucketEndMs(minute);
  if (end === null || end <= nowMs) return BUCKET_TTL_SECONDS;
  return Math.min(BUCKET_TTL_SECONDS + Math.ceil((end - nowMs) / 1000), BUCKET_TTL_SECONDS + 3600);
}

/**
 * A batch's leaderboard effects as apply-batch.lua takes them: `contents` pairs of KEYS
 * (content:count, content:last) with three ARGV each (the content's event count in the batch,
 * its latest event's JSON, that event's lastOrder), then one KEY per minute bucket with ARGV
 * (its board and minute, e.g. `c 202612011000`, its TTL, the number m of its members, then m
 * pairs: member, increment). Boards: c content events, s content seconds, d device events; the
 * script adds a bucket's increments to its 10-minute board when the minute is in the window.
 * Each key is sent once: with a key and an op name per (bucket, member), a batch whose events
 * are on different contents (most, at 1,000 events/s) took 21 arguments per event, now 12.
 */
export interface LeaderboardOps {
  keys: string[];
  args: string[];
  /** How many (content:count, content:last) key pairs lead `keys`. */
  contents: number;
}

/**
 * Aggregates a batch into the fewest Redis operations (pure): one INCRBY per content, one
 * conditional SET of the latest event per content (highest event_ts, ties: highest
 * event_id), one ZINCRBY per (minute, member), one EXPIRE per bucket (see LeaderboardOps).
 */
export function leaderboardOps(
  events: readonly EnrichedEvent[],
  keys: RedisKeys,
  options: LeaderboardOpsOptions = {},
): LeaderboardOps {
  // Per content, in order of first appearance: its event count and its latest event (one
  // entry each, in that order).
  const contents = new Map<string, Latest>();
  // Bucket key -> its board and minute, and member -> increment; in order of first appearance.
  const buckets = new Map<string, Bucket>();
  // The three buckets of each minute met, so an event's buckets are found by its minute alone.
  const byMinute = new Map<string, MinuteBuckets>();
  // The first characters of the timestamps of `minuteOf` (see minutePrefixOf), or null.
  let minutePrefix: string | null = null;
  let minuteOf: MinuteBuckets | null = null;
  const { skip, bucketsFrom } = options;
  for (const event of events) {
    if (skip?.has(event.event_id)) continue;
    const contentId = event.content_id;
    if (contentId !== null) {
      const held = contents.get(contentId);
      const plain = isPlainOrder(event);
      if (held === undefined) contents.set(contentId, { count: 1, latest: event, plain });
      else {
        held.count += 1;
        if (
          plain && held.plain ? isPlainLater(event, held.latest) : lastOrder(event) > lastOrder(held.latest)
        ) {
          held.latest = event;
          held.plain = plain;
        }
      }
    }
    // Consecutive events mostly share a minute: its buckets are looked up once.
    if (minuteOf === null || minutePrefix === null || !event.event_ts.startsWith(minutePrefix)) {
      const minute = minuteBucketOfIso(event.event_ts);
      minutePrefix = minutePrefixOf(event.event_ts);
      minuteOf = byMinute.get(minute) ?? null;
      if (minuteOf === null) {
        minuteOf = {
          minute,
          from: bucketsFrom === undefined || minute >= bucketsFrom,
          d: null,
          c: null,
          s: null,
        };
        byMinute.set(minute, minuteOf);
      }
    }
    if (!minuteOf.from) continue;
    const m = minuteOf;
    bump(
      (m.d ??= bucket(buckets, keys.deviceBucket(m.minute), 'd', m.minute)),
      event.device ?? UNKNOWN_DEVICE,
      1,
    );
    if (contentId === null) continue;
    bump((m.c ??= bucket(buckets, keys.contentBucket(m.minute), 'c', m.minute)), contentId, 1);
    if (event.engagement_seconds)
      bump(
        (m.s ??= bucket(buckets, keys.secondsBucket(m.minute), 's', m.minute)),
        contentId,
        event.engagement_seconds,
      );
  }
  const outKeys: string[] = [];
  const args: string[] = [];
  for (const [id, { count, latest }] of contents) {
    outKeys.push(keys.contentCount(id), keys.contentLast(id));
    args.push(String(count), eventJson(latest, options.keyTypes), lastOrder(latest));
  }
  const nowMs = options.nowMs ?? Date.now();
  for (const [key, { tag, members }] of buckets) {
    outKeys.push(key);
    args.push(tag, String(bucketTtlSeconds(tag.slice(2), nowMs)), String(members.size));
    for (const [member, by] of members) args.push(member, String(by));
  }
  return { keys: outKeys, args, contents: contents.size };
}

interface Bucket {
  tag: string;
  members: Map<string, number>;
}

interface MinuteBuckets {
  minute: string;
  /** False when the minute is before bucketsFrom (no bucket increments). */
  from: boolean;
  d: Bucket | null;
  c: Bucket | null;
  s: Bucket | null;
}

function bucket(buckets: Map<string, Bucket>, key: string, board: 'c' | 's' | 'd', minute: string): Bucket {
  let b = buckets.get(key);
  if (!b) buckets.set(key, (b = { tag: `${board} ${minute}`, members: new Map() }));
  return b;
}

function bump(b: Bucket, member: string, by: number): void {
  b.members.set(member, (b.members.get(member) ?? 0) + by);
}

/**
 * The characters minuteBucketOfIso reads (through the minute: 16, or 19 with an expanded year):
 * a timestamp starting with them has the same bucket. Null for a text too short to have them.
 */
function minutePrefixOf(ts: string): string | null {
  const c = ts.charCodeAt(0);
  const n = c === 43 || c === 45 ? 19 : 16;
  return ts.length >= n ? ts.slice(0, n) : null;
}

/** A content's event count and latest event (see isPlainOrder for `plain`). */
interface Latest {
  count: number;
  latest: EnrichedEvent;
  plain: boolean;
}

/**
 * True when the event's lastOrder text is "100" + event_ts + " " + its id padded to 20 digits
 * (a canonical event_ts with a 4-digit year, a non-negative safe-integer id): two such texts
 * compare as (event_ts, event_id), which isPlainLater does without building either.
 */
function isPlainOrder(e: Pick<EnrichedEvent, 'event_ts' | 'event_id'>): boolean {
  return Number.isSafeInteger(e.event_id) && e.event_id >= 0 && isCanonicalIso(e.event_ts);
}

/** lastOrder(a) > lastOrder(b) for two events isPlainOrder accepts. */
function isPlainLater(a: EnrichedEvent, b: EnrichedEvent): boolean {
  if (a.event_ts !== b.event_ts) return a.event_ts > b.event_ts;
  return a.event_id > b.event_id;
}

/** `YYYY-MM-DDTHH:MM:SS.ffffffZ` exactly. */
function isCanonicalIso(ts: string): boolean {
  if (
    ts.length !== 27 ||
    ts.charCodeAt(4) !== 45 || // -
    ts.charCodeAt(7) !== 45 ||
    ts.charCodeAt(10) !== 84 || // T
    ts.charCodeAt(13) !== 58 || // :
    ts.charCodeAt(16) !== 58 ||
    ts.charCodeAt(19) !== 46 || // .
    ts.charCodeAt(26) !== 90 // Z
  )
    return false;
  for (let k = 0; k < DIGIT_AT.length; k++) {
    const c = ts.charCodeAt(DIGIT_AT[k]);
    if (c < 48 || c > 57) return false;
  }
  return true;
}
const DIGIT_AT = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25];

/**
 * A string that sorts like (event_ts, event_id): the year as a signed offset in 7 digits (ISO
 * years may be `+010000` or `-000044`), the rest of the timestamp, then the id in 20 digits.
 * apply-batch.lua computes the same key from the content:last it holds.
 */
export function lastOrder(event: Pick<EnrichedEvent, 'event_ts' | 'event_id'>): string {
  // The usual event (see isPlainOrder): its 4-digit year plus 1,000,000 is "100" and the year,
  // so the text is built without the pattern (written once per content per batch).
  if (isPlainOrder(event)) return `100${event.event_ts} ${String(event.event_id).padStart(20, '0')}`;
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
