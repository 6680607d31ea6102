import assert from 'node:assert/strict';
import perfHooks from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { createMetrics, EVENT_LOOP_SAMPLE_MS } from '../../src/observability/metrics.js';

describe('process metrics', () => {
  it('sample the event loop every EVENT_LOOP_SAMPLE_MS, not every 10 ms (an idle process woken 100 times a second)', async () => {
    // prom-client reads monitorEventLoopDelay from the module object when the metrics are made.
    const original = perfHooks.monitorEventLoopDelay;
    const resolutions: (number | undefined)[] = [];
    perfHooks.monitorEventLoopDelay = (options) => {
      resolutions.push(options?.resolution);
      return original(options);
    };
    let metrics: ReturnType<typeof createMetrics>;
    try {
      metrics = createMetrics();
    } finally {
      perfHooks.monitorEventLoopDelay = original;
    }
    assert.deepEqual(resolutions, [EVENT_LOOP_SAMPLE_MS]);
    assert.ok(EVENT_LOOP_SAMPLE_MS >= 100, `${EVENT_LOOP_SAMPLE_MS} ms`);
    // The lag metrics are still exported.
    assert.match(await metrics.registry.metrics(), /^engagement_nodejs_eventloop_lag_p99_seconds /m);
  });
});
