import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { eventPosition } from '../../src/domain/position.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { minuteBucketOfIso } from '../../src/domain/windows.js';
import { describeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { RedisSink } from '../../src/sinks/redis/redis-sink.js';
import { testRedis } from '../helpers/redis.js';

const CONTENT = ['00000000-0000-4000-8000-00000000000a', '00000000-0000-4000-8000-00000000000b'];

// One timestamp for every event, so a minute boundary during the test cannot split buckets.
const TS = new Date().toISOString().replace('Z', '000Z');
const MINUTE = minuteBucketOfIso(TS);

function events(ids: number[]): EnrichedEvent[] {
  const ts = TS;
  return ids.map((id) => ({
    event_id: id,
    content_id: CONTENT[id % 2],
    user_id: null,
    event_type: 'play',
    event_ts: ts,
    duration_ms: 1500,
    device: 'ios',
    raw_payload: null,
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: 1.5,
    engagement_pct: 0.01,
    committed_at: ts,
    processed_at: ts,
  }));
}

function batch(seq: number, ids: number[]): Batch {
  return {
    seq,
    stream: 'dedupe',
    events: events(ids),
    positions: ids.map((_, i) => eventPosition(`0/${(seq * 256).toString(16)}`, i)),
    ackLsn: null,
  };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('Redis: stream and backfill count each event once (seen bitmaps)', () => {
  const redis = testRedis();
  const sink = new RedisSink({ url: redis.url, prefix: redis.prefix, logger: silentLogger() });
  after(async () => {
    await sink.stop();
    await redis.cleanup();
  });

  const bucketTotal = async () => {
    // The events' minute (TS), not the clock's: a test crossing a minute boundary read another bucket.
    const minute = MINUTE;
    const flat = await redis.client.zrange(
      `${redis.prefix}top:content:bucket:${minute}`,
      '0',
      '-1',
      'WITHSCORES',
    );
    let sum = 0;
    for (let i = 1; i < flat.length; i += 2) sum += Number(flat[i]);
    return sum;
  };
  const countTotal = async () =>
    (await Promise.all(CONTENT.map((id) => redis.client.get(`${redis.prefix}content:count:${id}`)))).reduce(
      (s, c) => s + Number(c ?? 0),
      0,
    );

  it('overlapping writes in either order, across a bitmap boundary, count every event once', async () => {
    await sink.start();
    // Ids straddle a 65,536-id bitmap chunk.
    const base = 65_536 - 50;
    assert.equal(await sink.writeBackfill(events(range(base, base + 59))), 60); // backfill first
    await sink.write(batch(1, range(base + 30, base + 99))); // stream overlaps 30 of them
    assert.equal(await bucketTotal(), 100);
    assert.equal(await countTotal(), 100, 'totals count each event once, whoever wrote it');
    assert.equal(await sink.writeBackfill(events(range(base, base + 119))), 20); // only 20 new
    assert.equal(await sink.writeBackfill(events(range(base, base + 119))), 0); // again: nothing
    await sink.write(batch(2, range(base + 100, base + 119))); // stream catches up: all seen
    await sink.write(batch(2, range(base + 100, base + 119))); // replay: watermark no-op
    await sink.write(batch(3, range(base + 110, base + 129))); // past the watermark, 10 seen
    assert.equal(await bucketTotal(), 130);
    assert.equal(await countTotal(), 130);
    const seconds = await redis.client.zscore(
      `${redis.prefix}top:content:seconds:bucket:${MINUTE}`,
      CONTENT[0],
    );
    assert.equal(Number(seconds), 65 * 1.5);
    const ttl = await redis.client.ttl(`${redis.prefix}pipeline:seen:0`);
    assert.equal(ttl, -1, 'the seen bitmaps never expire');
  });

  it('the same event twice in one batch (a redelivery) counts once', async () => {
    const before = await countTotal();
    const twice = batch(4, [300_001, 300_002, 300_001]);
    assert.equal(await sink.writeBackfill(twice.events), 2);
    await sink.write(batch(5, [300_003, 300_003, 300_004]));
    assert.equal(await countTotal(), before + 4);
  });

  it('a batch of 20,000 events with distinct content ids and minutes goes through, stream and backfill', async () => {
    // Over 100,000 script arguments: spread into the call they overflowed the JS stack on every
    // retry (the stream stopped for good, and so did `backfill --sinks redis`).
    const ids = range(1_000_000, 1_019_999);
    const distinct = (b: Batch): Batch => ({
      ...b,
      events: b.events.map((e, i) => ({
        ...e,
        content_id: `10000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
        event_ts: new Date(Date.now() - i * 60_000).toISOString(),
      })),
    });
    const big = distinct(batch(10, ids));
    await sink.write(big);
    const counted = await redis.client.mget(
      big.events.filter((_, i) => i % 997 === 0).map((e) => `${redis.prefix}content:count:${e.content_id}`),
    );
    assert.ok(
      counted.every((c) => c === '1'),
      JSON.stringify(counted.slice(0, 5)),
    );
    const more = distinct(batch(11, range(2_000_000, 2_019_999)));
    assert.equal(await sink.writeBackfill(more.events), 20_000);
  });

  it('content:last holds the highest event_ts (ties: highest event_id), whoever wrote it', async () => {
    const id = '00000000-0000-4000-8000-0000000000cc';
    const at = (eventId: number, ts: string) => ({ ...events([eventId])[0], content_id: id, event_ts: ts });
    const last = async () =>
      JSON.parse((await redis.client.get(`${redis.prefix}content:last:${id}`)) ?? 'null') as {
        event_id: number;
      } | null;
    await sink.writeBackfill([at(500_002, '2026-01-01T00:00:02.000001Z')]);
    await sink.writeBackfill([at(500_001, '2026-01-01T00:00:02.000000Z')]); // older: kept out
    assert.equal((await last())?.event_id, 500_002);
    // In one batch, stream order differs from event_ts order; a tie on event_ts goes to the higher id.
    await sink.writeBackfill([
      at(500_010, '2026-01-01T00:00:03.000000Z'),
      at(500_004, '2026-01-01T00:00:03.000000Z'),
      at(500_003, '2025-12-31T00:00:00.000000Z'),
    ]);
    assert.equal((await last())?.event_id, 500_010);
    await sink.writeBackfill([at(500_005, '+010000-01-01T00:00:00.000000Z')]); // year 10000 sorts last
    assert.equal((await last())?.event_id, 500_005);
    await sink.writeBackfill([at(500_006, '2027-01-01T00:00:00.000000Z')]);
    assert.equal((await last())?.event_id, 500_005);
  });

  it('a key of the wrong type mid-batch: one clear error naming it, nothing written; exact once fixed', async () => {
    const ids = range(700_000, 700_039); // content a, b alternating
    const badKey = `${redis.prefix}content:count:${CONTENT[1]}`; // the second INCRBY of the batch
    const countA = async () => Number(await redis.client.get(`${redis.prefix}content:count:${CONTENT[0]}`));
    const aBefore = await countA();
    const bucketBefore = await bucketTotal();
    await redis.client.del(badKey);
    await redis.client.hset(badKey, 'x', '1');
    const refused = (pattern: RegExp) => (err: unknown) => {
      const line = describeError(err);
      assert.match(line, pattern);
      assert.ok(line.includes(badKey), line);
      return true;
    };
    await assert.rejects(sink.write(batch(10, ids)), refused(/^EP_ERR_REDIS_KEY_TYPE: .* holds a hash/));
    await assert.rejects(sink.write(batch(10, ids)), refused(/EP_ERR_REDIS_KEY_TYPE/)); // retried: still nothing
    assert.equal(await countA(), aBefore, 'the INCRBY before the bad key did not happen');
    assert.equal(await bucketTotal(), bucketBefore);
    assert.equal(await redis.client.getbit(`${redis.prefix}pipeline:seen:10`, 700_000 % 65_536), 0);
    // Not an integer, or one INCRBY would refuse ('007', '-0', past 64 bits) or could overflow
    // (19 digits): the same refusal, before any write. (The pattern once let '007' through:
    // INCRBY then failed after the seen bits were set, and a retry skipped the whole batch.)
    for (const value of ['not a number', '007', '-0', '+5', '99999999999999999999', '9223372036854775807']) {
      await redis.client.set(badKey, value);
      await assert.rejects(sink.write(batch(10, ids)), refused(/EP_ERR_REDIS_KEY_TYPE.*expected an integer/));
      assert.equal(await countA(), aBefore, value);
      assert.equal(await redis.client.getbit(`${redis.prefix}pipeline:seen:10`, 700_000 % 65_536), 0, value);
    }
    await redis.client.del(badKey);
    // A content:last or a minute bucket of the wrong type (the last keys the script reads): the
    // same refusal, nothing written.
    for (const [key, make] of [
      [
        `${redis.prefix}content:last:${CONTENT[1]}`,
        () => redis.client.rpush(`${redis.prefix}content:last:${CONTENT[1]}`, 'x'),
      ],
      [
        `${redis.prefix}top:device:bucket:${MINUTE}`,
        () => redis.client.set(`${redis.prefix}top:device:bucket:${MINUTE}`, 'x'),
      ],
    ] as const) {
      const held = await redis.client.dumpBuffer(key);
      await redis.client.del(key);
      await make();
      await assert.rejects(sink.write(batch(10, ids)), (err: unknown) => {
        const line = describeError(err);
        assert.match(line, /^EP_ERR_REDIS_KEY_TYPE: /);
        assert.ok(line.includes(key), line);
        return true;
      });
      assert.equal(await countA(), aBefore);
      assert.equal(await bucketTotal(), bucketBefore);
      await redis.client.del(key);
      if (held) await redis.client.restore(key, 0, held);
    }
    // Operator fixes the keys: the retried batch counts each event exactly once (added to the
    // largest count the script takes, 18 digits).
    await redis.client.set(badKey, '999999999999999999');
    await sink.write(batch(10, ids));
    assert.equal(await countA(), aBefore + 20);
    assert.equal(await redis.client.get(badKey), '1000000000000000019');
    assert.equal(await bucketTotal(), bucketBefore + 40);
  });
});
