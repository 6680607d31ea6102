import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { eventPosition } from '../../src/domain/position.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { minuteBucketOfIso } from '../../src/domain/windows.js';
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
    const minute = minuteBucketOfIso(new Date().toISOString());
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
    assert.equal(await countTotal(), 70, 'totals are the stream’s alone');
    assert.equal(await sink.writeBackfill(events(range(base, base + 119))), 20); // only 20 new
    await sink.write(batch(2, range(base + 100, base + 119))); // stream catches up: buckets done
    await sink.write(batch(2, range(base + 100, base + 119))); // replay: watermark no-op
    assert.equal(await bucketTotal(), 120);
    assert.equal(await countTotal(), 90);
    const seconds = await redis.client.zscore(
      `${redis.prefix}top:content:seconds:bucket:${MINUTE}`,
      CONTENT[0],
    );
    assert.equal(Number(seconds), 60 * 1.5);
  });
});
