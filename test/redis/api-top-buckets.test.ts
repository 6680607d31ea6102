import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { windowBuckets } from '../../src/domain/windows.js';
import { silentLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { buildApp } from '../../src/server/app.js';
import { testRedis } from '../helpers/redis.js';

const [alpha, bravo, charlie] = ['a', 'b', 'c'].map((c) => `00000000-0000-4000-8000-00000000000${c}`);

/**
 * GET /api/top read from the minute buckets: a window other than 10m, or the 10-minute boards
 * when no pipeline keeps them current (their stored window is behind the clock). Each item still
 * carries both scores, summed over the same minutes as its rank.
 */
describe('GET /api/top from the minute buckets', () => {
  const redis = testRedis();
  const app = buildApp({
    redis: redis.client,
    redisPrefix: redis.prefix,
    metrics: createMetrics(),
    logger: silentLogger(),
    stats: async () => {
      throw new Error('not used');
    },
    ready: () => true,
  });

  before(async () => {
    const p = redis.prefix;
    const minutes = windowBuckets(Date.now(), 8);
    const [sevenAgo, older, latest] = [minutes[0], minutes[6], minutes[7]];
    // Last 2 minutes: alpha 3 + 2 events, 1.5 + 0.25 s; bravo 4 events, 10.125 s.
    await redis.client.zadd(`${p}top:content:bucket:${older}`, 3, alpha, 4, bravo);
    await redis.client.zadd(`${p}top:content:bucket:${latest}`, 2, alpha);
    await redis.client.zadd(`${p}top:content:seconds:bucket:${older}`, 1.5, alpha, 10.125, bravo);
    await redis.client.zadd(`${p}top:content:seconds:bucket:${latest}`, 0.25, alpha);
    // Seven minutes ago (in 10m, not in 5m): charlie 6 events without seconds (clicks), bravo 5 s.
    await redis.client.zadd(`${p}top:content:bucket:${sevenAgo}`, 6, charlie);
    await redis.client.zadd(`${p}top:content:seconds:bucket:${sevenAgo}`, 5, bravo);
    // Stale 10-minute boards (a pipeline stopped long ago): never read as the last 10 minutes.
    await redis.client.zadd(`${p}top:content:10m`, 99, alpha);
    await redis.client.zadd(`${p}top:content:seconds:10m`, 99, alpha);
    await redis.client.hset(`${p}top:meta:10m`, 'from', '200001010000', 'to', '200001010009');
  });
  after(async () => {
    await app.close();
    await redis.cleanup();
  });

  const items = async (query: string) => {
    const res = await app.inject({ url: `/api/top?${query}` });
    assert.equal(res.statusCode, 200, res.body);
    return res
      .json()
      .items.map((i: { content_id: string; score: number; events: number; engagement_seconds: number }) => [
        i.content_id,
        i.score,
        i.events,
        i.engagement_seconds,
      ]);
  };

  it("by=events over 10m (stale boards) carries each item's engagement seconds over the same minutes", async () => {
    assert.deepEqual(await items('window=10m'), [
      [charlie, 6, 6, 0],
      [alpha, 5, 5, 1.75],
      [bravo, 4, 4, 15.125],
    ]);
  });

  it("by=seconds over 10m (stale boards) carries each item's events", async () => {
    assert.deepEqual(await items('window=10m&by=seconds'), [
      [bravo, 15.125, 4, 15.125],
      [alpha, 1.75, 5, 1.75],
    ]);
  });

  it('over 5m, both scores leave out the minutes before the window', async () => {
    assert.deepEqual(await items('window=5m'), [
      [alpha, 5, 5, 1.75],
      [bravo, 4, 4, 10.125],
    ]);
    assert.deepEqual(await items('window=5m&by=seconds'), [
      [bravo, 10.125, 4, 10.125],
      [alpha, 1.75, 5, 1.75],
    ]);
  });
});
