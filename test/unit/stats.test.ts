import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMetrics } from '../../src/observability/metrics.js';
import { quantileMs, sinkLatencyFromMetrics } from '../../src/observability/stats.js';

describe('latency quantiles from histogram buckets', () => {
  const buckets = (pairs: [number, number][]) => pairs.map(([le, count]) => ({ le, count }));

  it('interpolates within the bucket like histogram_quantile', () => {
    // 100 observations: 50 ≤ 10 ms, 40 in (10, 20], 10 in (20, 50].
    const b = buckets([
      [0.01, 50],
      [0.02, 90],
      [0.05, 100],
      [Infinity, 100],
    ]);
    assert.equal(quantileMs(b, 0.5), 10);
    assert.equal(quantileMs(b, 0.7), 15);
    assert.equal(quantileMs(b, 0.99), 47);
  });

  it('is null without observations and caps at the last finite bound', () => {
    assert.equal(
      quantileMs(
        buckets([
          [0.01, 0],
          [Infinity, 0],
        ]),
        0.5,
      ),
      null,
    );
    assert.equal(
      quantileMs(
        buckets([
          [0.01, 1],
          [30, 1],
          [Infinity, 10],
        ]),
        0.99,
      ),
      30_000,
    );
  });

  it('reads every sink of the commit-to-sink histogram', async () => {
    const metrics = createMetrics();
    for (let i = 0; i < 99; i++) metrics.commitToSinkSeconds.observe({ sink: 'redis' }, 0.015);
    metrics.commitToSinkSeconds.observe({ sink: 'redis' }, 3);
    metrics.commitToSinkSeconds.observe({ sink: 'analytics' }, 0.3);
    const latency = await sinkLatencyFromMetrics(metrics);
    assert.deepEqual(
      latency.map((l) => l.name),
      ['analytics', 'redis'],
    );
    const redis = latency[1];
    assert.equal(redis.count, 100);
    assert.ok(redis.p50Ms! > 10 && redis.p50Ms! <= 20, `p50 ${redis.p50Ms}`);
    assert.ok(redis.p99Ms! > 10 && redis.p99Ms! <= 20, `p99 ${redis.p99Ms}`);
    assert.ok(latency[0].p50Ms! > 200 && latency[0].p50Ms! <= 500);
  });
});
