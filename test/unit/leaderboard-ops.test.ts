import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { microsToIso, pgTimestampToMicros } from '../../src/domain/timestamps.js';
import type { EnrichedEvent } from '../../src/domain/types.js';
import { minuteBucketOfIso } from '../../src/domain/windows.js';
import {
  BUCKET_TTL_SECONDS,
  redisKeys,
  SEEN_CHUNK_BITS,
  UNKNOWN_DEVICE,
} from '../../src/sinks/redis/keys.js';
import {
  bucketTtlSeconds,
  lastOrder,
  leaderboardOps,
  type LeaderboardOps,
  rollWindowArgs,
  seenArgs,
} from '../../src/sinks/redis/leaderboard-ops.js';
import { intBetween, pick, prng, seeds } from '../helpers/prng.js';

const keys = redisKeys('t:');
/** The clock of the property tests' ops and of their specification (bucket TTLs depend on it). */
const AT = { nowMs: Date.parse('2026-12-01T10:30:00Z') };
const CONTENT = ['c1', 'c2', 'c3', 'c4'];
const BASE_MICROS = pgTimestampToMicros('2026-12-01 10:00:00+00');

function event(id: number, overrides: Partial<EnrichedEvent> = {}): EnrichedEvent {
  return {
    event_id: id,
    content_id: 'c1',
    user_id: null,
    event_type: 'play',
    event_ts: '2026-12-01T10:00:30.000000Z',
    duration_ms: 2000,
    device: 'tv',
    raw_payload: null,
    content_type: 'video',
    length_seconds: 100,
    engagement_seconds: 2,
    engagement_pct: 0.02,
    committed_at: '2026-12-01T10:00:31.000000Z',
    processed_at: '2026-12-01T10:00:31.000000Z',
    ...overrides,
  };
}

/** What apply-batch.lua does with the ops (past its guards), on an in-memory Redis. */
interface State {
  strings: Map<string, string>;
  lastOrders: Map<string, string>;
  zsets: Map<string, Map<string, number>>;
  ttls: Map<string, number>;
}
const emptyState = (): State => ({
  strings: new Map(),
  lastOrders: new Map(),
  zsets: new Map(),
  ttls: new Map(),
});

/** The ops as apply-batch.lua reads them (see LeaderboardOps); fails unless every ARGV is read. */
function decode(ops: LeaderboardOps): {
  contents: { countKey: string; lastKey: string; count: string; json: string; order: string }[];
  buckets: { key: string; tag: string; ttl: string; members: [string, string][] }[];
} {
  const contents = [];
  let a = 0;
  for (let c = 0; c < ops.contents; c++, a += 3) {
    const [count, json, order] = ops.args.slice(a, a + 3);
    contents.push({ countKey: ops.keys[2 * c], lastKey: ops.keys[2 * c + 1], count, json, order });
  }
  const buckets = [];
  for (let i = 2 * ops.contents; i < ops.keys.length; i++) {
    const [tag, ttl, m] = ops.args.slice(a, a + 3);
    a += 3;
    const members: [string, string][] = [];
    for (let j = 0; j < Number(m); j++, a += 2) members.push([ops.args[a], ops.args[a + 1]]);
    buckets.push({ key: ops.keys[i], tag, ttl, members });
  }
  assert.equal(a, ops.args.length, 'every ARGV belongs to a key');
  return { contents, buckets };
}

function apply(state: State, ops: LeaderboardOps): State {
  const { contents, buckets } = decode(ops);
  for (const { countKey, lastKey, count, json, order } of contents) {
    state.strings.set(countKey, String(Number(state.strings.get(countKey) ?? 0) + Number(count)));
    const held = state.lastOrders.get(lastKey);
    if (held === undefined || held < order) {
      state.strings.set(lastKey, json);
      state.lastOrders.set(lastKey, order);
    }
  }
  for (const { key, ttl, members } of buckets) {
    let zset = state.zsets.get(key);
    if (!zset) state.zsets.set(key, (zset = new Map()));
    for (const [member, by] of members) zset.set(member, (zset.get(member) ?? 0) + Number(by));
    state.ttls.set(key, Number(ttl));
  }
  return state;
}

/** The state computed directly from the events, without the ops (the specification). */
function expected(events: EnrichedEvent[]): State {
  const state = emptyState();
  const latest = new Map<string, EnrichedEvent>();
  const later = (a: EnrichedEvent, b: EnrichedEvent) => {
    const ta = pgTimestampToMicros(a.event_ts);
    const tb = pgTimestampToMicros(b.event_ts);
    return ta !== tb ? ta > tb : a.event_id > b.event_id;
  };
  const bump = (key: string, member: string, by: number) => {
    let members = state.zsets.get(key);
    if (!members) state.zsets.set(key, (members = new Map()));
    members.set(member, (members.get(member) ?? 0) + by);
    state.ttls.set(key, bucketTtlSeconds(key.slice(key.lastIndexOf(':') + 1), AT.nowMs));
  };
  for (const e of events) {
    const minute = minuteBucketOfIso(e.event_ts);
    bump(keys.deviceBucket(minute), e.device ?? UNKNOWN_DEVICE, 1);
    if (e.content_id === null) continue;
    const countKey = keys.contentCount(e.content_id);
    state.strings.set(countKey, String(Number(state.strings.get(countKey) ?? 0) + 1));
    const held = latest.get(e.content_id);
    if (!held || later(e, held)) latest.set(e.content_id, e);
    bump(keys.contentBucket(minute), e.content_id, 1);
    if (e.engagement_seconds) bump(keys.secondsBucket(minute), e.content_id, e.engagement_seconds);
  }
  for (const [id, e] of latest) {
    state.strings.set(keys.contentLast(id), JSON.stringify(e));
    state.lastOrders.set(keys.contentLast(id), lastOrder(e));
  }
  return state;
}

/** Equal states; sums of engagement seconds compared to a tolerance (float addition order). */
function assertSameState(actual: State, wanted: State, what: string): void {
  assert.deepEqual(
    new Map([...actual.strings].sort()),
    new Map([...wanted.strings].sort()),
    `${what}: strings`,
  );
  assert.deepEqual(new Map([...actual.ttls].sort()), new Map([...wanted.ttls].sort()), `${what}: TTLs`);
  assert.deepEqual([...actual.zsets.keys()].sort(), [...wanted.zsets.keys()].sort(), `${what}: sorted sets`);
  for (const [key, members] of wanted.zsets) {
    const got = actual.zsets.get(key)!;
    assert.deepEqual([...got.keys()].sort(), [...members.keys()].sort(), `${what}: members of ${key}`);
    for (const [member, score] of members)
      assert.ok(
        Math.abs(got.get(member)! - score) < 1e-6,
        `${what}: ${key} ${member} ${got.get(member)} != ${score}`,
      );
  }
}

function randomEvents(random: () => number, count: number, firstId = 1): EnrichedEvent[] {
  return Array.from({ length: count }, (_, i) => {
    // Mostly a few minutes of today (buckets shared, some at the same instant), sometimes a
    // far year of Postgres's range (4713 BC .. 294276 AD): before year 0 and after 9999 the
    // ISO text is spelled with a sign, which the order of content:last must still follow.
    const farYear = pick(random, [
      () => intBetween(random, -4_700, -1),
      () => intBetween(random, 0, 9_999),
      () => intBetween(random, 10_000, 294_000),
    ])();
    const micros =
      random() < 0.15
        ? BigInt(Math.round((farYear - 1970) * 365.2425 * 86_400)) * 1_000_000n
        : BASE_MICROS + BigInt(intBetween(random, 0, 5 * 60)) * 1_000_000n * (random() < 0.3 ? 0n : 1n);
    const seconds = pick(random, [null, 0, 1.5, 2.001, 300]);
    return event(firstId + i, {
      content_id: random() < 0.15 ? null : pick(random, CONTENT),
      device: pick(random, ['tv', 'ios', null]),
      event_ts: microsToIso(micros),
      engagement_seconds: seconds,
    });
  });
}

describe('leaderboard ops', () => {
  it('an empty batch, or one whose events are all skipped, has no ops', () => {
    assert.deepEqual(leaderboardOps([], keys), { keys: [], args: [], contents: 0 });
    assert.deepEqual(leaderboardOps([event(1), event(2)], keys, { skip: new Set([1, 2]) }), {
      keys: [],
      args: [],
      contents: 0,
    });
  });

  it('one INCRBY and one conditional SET per content, one ZINCRBY per (minute, member), one EXPIRE per bucket', () => {
    const events = [
      event(1),
      event(2),
      event(3, { content_id: 'c2', device: null, engagement_seconds: null }),
      event(4, { event_ts: '2026-12-01T10:01:00.000000Z', engagement_seconds: 0 }),
      event(5, { content_id: null }),
    ];
    const ops = leaderboardOps(events, keys);
    const m0 = '202612011000';
    const m1 = '202612011001';
    const ttl = String(BUCKET_TTL_SECONDS);
    assert.deepEqual(decode(ops), {
      contents: [
        {
          countKey: 't:content:count:c1',
          lastKey: 't:content:last:c1',
          count: '3',
          json: JSON.stringify(events[3]),
          order: lastOrder(events[3]),
        },
        {
          countKey: 't:content:count:c2',
          lastKey: 't:content:last:c2',
          count: '1',
          json: JSON.stringify(events[2]),
          order: lastOrder(events[2]),
        },
      ],
      buckets: [
        {
          key: `t:top:device:bucket:${m0}`,
          tag: `d ${m0}`,
          ttl,
          members: [
            ['tv', '3'],
            [UNKNOWN_DEVICE, '1'],
          ],
        },
        {
          key: `t:top:content:bucket:${m0}`,
          tag: `c ${m0}`,
          ttl,
          members: [
            ['c1', '2'],
            ['c2', '1'],
          ],
        },
        { key: `t:top:content:seconds:bucket:${m0}`, tag: `s ${m0}`, ttl, members: [['c1', '4']] },
        { key: `t:top:device:bucket:${m1}`, tag: `d ${m1}`, ttl, members: [['tv', '1']] },
        { key: `t:top:content:bucket:${m1}`, tag: `c ${m1}`, ttl, members: [['c1', '1']] },
      ],
    });
    // Every key once: 2 per content, 1 per bucket; 3 ARGV per content and per bucket, 2 per member.
    assert.equal(ops.keys.length, new Set(ops.keys).size);
    assert.equal(ops.args.length, 2 * 3 + 5 * 3 + 7 * 2);
  });

  it('a minute still to come keeps its buckets until it has left the window (an hour ahead at most)', () => {
    const now = Date.parse('2026-12-01T10:00:30Z');
    // Past minutes: the usual TTL from now.
    assert.equal(bucketTtlSeconds('202612010959', now), BUCKET_TTL_SECONDS);
    // The minute now running: 15 minutes after it ends (30 s from now).
    assert.equal(bucketTtlSeconds('202612011000', now), BUCKET_TTL_SECONDS + 30);
    // 20 minutes ahead: its minute ends 20.5 min from now, then 15 more.
    assert.equal(bucketTtlSeconds('202612011020', now), BUCKET_TTL_SECONDS + 20 * 60 + 30);
    // Days ahead, or another era's bucket: never more than an hour past the usual.
    assert.equal(bucketTtlSeconds('202612051000', now), BUCKET_TTL_SECONDS + 3600);
    assert.equal(bucketTtlSeconds('+01000001010000', now), BUCKET_TTL_SECONDS);
    assert.equal(bucketTtlSeconds('000101010000', now), BUCKET_TTL_SECONDS, 'year 1 is in the past');
    const ops = leaderboardOps([event(1, { event_ts: '2026-12-01T10:20:00.000000Z' })], keys, { nowMs: now });
    assert.deepEqual(
      decode(ops).buckets.map((b) => b.ttl),
      Array(3).fill(String(BUCKET_TTL_SECONDS + 20 * 60 + 30)),
    );
  });

  it('the latest event per content: highest event_ts, ties broken by the highest event_id', () => {
    const same = '2026-12-01T10:00:00.000000Z';
    const events = [
      event(9, { event_ts: same }),
      event(12, { event_ts: same }),
      event(10, { event_ts: same }),
    ];
    const ops = leaderboardOps(events, keys);
    assert.equal(JSON.parse(decode(ops).contents[0].json).event_id, 12);
    const older = leaderboardOps([event(99, { event_ts: '2026-12-01T09:59:59.999999Z' }), event(1)], keys);
    assert.equal(
      JSON.parse(decode(older).contents[0].json).event_id,
      1,
      'a later timestamp beats a higher id',
    );
  });

  it('a backfill (bucketsFrom) counts old events in content:count and content:last but writes no expired bucket', () => {
    const events = [
      event(1, { event_ts: '2026-12-01T09:00:00.000000Z' }),
      event(2, { event_ts: '2026-12-01T10:00:00.000000Z' }),
    ];
    const state = apply(emptyState(), leaderboardOps(events, keys, { bucketsFrom: '202612011000' }));
    assert.equal(state.strings.get(keys.contentCount('c1')), '2');
    assert.equal(JSON.parse(state.strings.get(keys.contentLast('c1'))!).event_id, 2);
    assert.deepEqual(
      [...state.zsets.keys()].sort(),
      [
        keys.contentBucket('202612011000'),
        keys.deviceBucket('202612011000'),
        keys.secondsBucket('202612011000'),
      ].sort(),
    );
  });

  it('roll arguments: the window keys, then three buckets for each of the 13 minutes ending now', () => {
    const now = Date.parse('2026-12-01T10:00:59.999Z');
    const roll = rollWindowArgs(keys, now);
    // 09:48 .. 09:59, then 10:00: the caller's minute last.
    const minutes = [...Array.from({ length: 12 }, (_, i) => `2026120109${48 + i}`), '202612011000'];
    assert.deepEqual(roll.args, ['r', '2026-12-01T10:00:59.999Z', '10', '3', ...minutes]);
    assert.deepEqual(roll.keys.slice(0, 4), [
      keys.windowMeta,
      keys.topContent10m,
      keys.topSeconds10m,
      keys.topDevice10m,
    ]);
    assert.deepEqual(
      roll.keys.slice(4),
      minutes.flatMap((m) => [keys.contentBucket(m), keys.secondsBucket(m), keys.deviceBucket(m)]),
    );
    assert.equal(rollWindowArgs(keys, now, true).args[0], 'f');
  });

  it('seen bitmaps: ids grouped by chunk, offsets within it, skipped ids left out', () => {
    const ids = [5, SEEN_CHUNK_BITS - 1, SEEN_CHUNK_BITS, 3 * SEEN_CHUNK_BITS + 7, 6];
    const seen = seenArgs(
      ids.map((id) => event(id)),
      keys,
      new Set([6]),
    );
    assert.deepEqual(seen.keys, [keys.seen(0), keys.seen(1), keys.seen(3)]);
    assert.deepEqual(seen.args, ['2', '5', String(SEEN_CHUNK_BITS - 1), '1', '0', '1', '7']);
    assert.deepEqual(seen.ids, [[5, SEEN_CHUNK_BITS - 1], [SEEN_CHUNK_BITS], [3 * SEEN_CHUNK_BITS + 7]]);
  });

  // Properties: the ops of a batch, applied as apply-batch.lua does, give the state the
  // events specify (counts, latest event, bucket scores, TTLs), and the same state whatever
  // the order and the batching of the events (a replay in other batches, a backfill
  // interleaved with the stream). Skipping an event is exactly leaving it out.
  for (const seed of seeds(20)) {
    it(`random events (seed ${seed}): ops give the specified state, whatever the order and batching`, () => {
      const random = prng(seed);
      const events = randomEvents(random, intBetween(random, 1, 120));
      const whole = apply(emptyState(), leaderboardOps(events, keys, AT));
      assertSameState(whole, expected(events), 'one batch');

      const shuffled = [...events];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = intBetween(random, 0, i);
        [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
      }
      const chunked = emptyState();
      for (let from = 0; from < shuffled.length;) {
        const to = from + intBetween(random, 1, 10);
        apply(chunked, leaderboardOps(shuffled.slice(from, to), keys, AT));
        from = to;
      }
      assertSameState(chunked, whole, 'shuffled, in random batches');

      const skip = new Set(events.filter(() => random() < 0.3).map((e) => e.event_id));
      assert.deepEqual(
        leaderboardOps(events, keys, { ...AT, skip }),
        leaderboardOps(
          events.filter((e) => !skip.has(e.event_id)),
          keys,
          AT,
        ),
      );

      const ops = leaderboardOps(events, keys, AT);
      assert.ok(
        ops.keys.every((k) => k.startsWith('t:')),
        'every key carries the prefix',
      );
      // Each key once; each (bucket, member) incremented once; a bucket's tag names its board and
      // minute (the script's window check reads them).
      assert.equal(new Set(ops.keys).size, ops.keys.length, 'every key once');
      const { contents, buckets } = decode(ops);
      for (const c of contents) assert.equal(c.countKey.replace(':count:', ':last:'), c.lastKey);
      const expiredAt = new Map<string, number>();
      buckets.forEach(({ key, tag, members }, i) => {
        assert.equal(new Set(members.map(([m]) => m)).size, members.length, `${key}: a member twice`);
        const [board, minute] = tag.split(' ');
        const bucketKey = { c: keys.contentBucket, s: keys.secondsBucket, d: keys.deviceBucket }[board];
        assert.equal(bucketKey?.(minute), key, `tag of ${key}`);
        expiredAt.set(key, i);
      });
      assert.deepEqual([...expiredAt.keys()].sort(), [...whole.zsets.keys()].sort());
    });
  }
});

/** leaderboardOps as first written (a lastOrder text per event, bucket keys spelled per event): the reference. */
function referenceOps(
  events: readonly EnrichedEvent[],
  options: { skip?: ReadonlySet<number>; bucketsFrom?: string } = {},
): LeaderboardOps {
  const counts = new Map<string, number>();
  const latest = new Map<string, { event: EnrichedEvent; order: string }>();
  const buckets = new Map<string, { tag: string; members: Map<string, number> }>();
  const bump = (key: string, board: string, minute: string, member: string, by: number) => {
    let bucket = buckets.get(key);
    if (!bucket) buckets.set(key, (bucket = { tag: `${board} ${minute}`, members: new Map() }));
    bucket.members.set(member, (bucket.members.get(member) ?? 0) + by);
  };
  for (const event of events) {
    if (options.skip?.has(event.event_id)) continue;
    if (event.content_id !== null) {
      counts.set(event.content_id, (counts.get(event.content_id) ?? 0) + 1);
      const order = lastOrder(event);
      const held = latest.get(event.content_id);
      if (!held || held.order < order) latest.set(event.content_id, { event, order });
    }
    const minute = minuteBucketOfIso(event.event_ts);
    if (options.bucketsFrom !== undefined && minute < options.bucketsFrom) continue;
    bump(keys.deviceBucket(minute), 'd', minute, event.device ?? UNKNOWN_DEVICE, 1);
    if (event.content_id === null) continue;
    bump(keys.contentBucket(minute), 'c', minute, event.content_id, 1);
    if (event.engagement_seconds)
      bump(keys.secondsBucket(minute), 's', minute, event.content_id, event.engagement_seconds);
  }
  const outKeys: string[] = [];
  const args: string[] = [];
  for (const [id, n] of counts) {
    const { event, order } = latest.get(id)!;
    outKeys.push(keys.contentCount(id), keys.contentLast(id));
    args.push(String(n), JSON.stringify(event), order);
  }
  for (const [key, { tag, members }] of buckets) {
    outKeys.push(key);
    args.push(tag, String(bucketTtlSeconds(tag.slice(2), AT.nowMs)), String(members.size));
    for (const [member, by] of members) args.push(member, String(by));
  }
  return { keys: outKeys, args, contents: counts.size };
}

describe('leaderboard ops are byte for byte those of the reference', () => {
  for (const seed of seeds(20)) {
    it(`random batches (seed ${seed}), with skips, a bucketsFrom, equal instants, odd timestamps and ids`, () => {
      const random = prng(seed);
      const events = randomEvents(random, intBetween(random, 1, 300)).map((e) => {
        const r = random();
        // Same instant as another event, a non-canonical text, a negative or huge id.
        if (r < 0.05) return { ...e, event_ts: '2026-12-01T10:00:30.000000Z' };
        if (r < 0.07)
          return {
            ...e,
            event_ts: pick(random, [
              '2026-12-01T10:00:30Z',
              '2026-12-01T10:00:30.5+01:00',
              '',
              'x',
              '20261-12-01T10:00:30.000000Z',
              '2026-12-01T10:00:30.00000\nZ',
            ]),
          };
        if (r < 0.09) return { ...e, event_id: pick(random, [-e.event_id, 2 ** 53 + 2, 0.5]) };
        return e;
      });
      const skip = new Set(events.filter(() => random() < 0.2).map((e) => e.event_id));
      const bucketsFrom = pick(random, [undefined, '202612011002', '0']);
      assert.deepEqual(leaderboardOps(events, keys, AT), referenceOps(events));
      assert.deepEqual(
        leaderboardOps(events, keys, { ...AT, skip, bucketsFrom }),
        referenceOps(events, { skip, bucketsFrom }),
      );
    });
  }
});
