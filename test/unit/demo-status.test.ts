import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StatusSampler } from '../../src/demo/status.js';
import { createMetrics } from '../../src/observability/metrics.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("demo status line's events/s", () => {
  it('is the rate over the last seconds, not the last sample: a second with nothing read is not 0', async () => {
    const metrics = createMetrics();
    const sampler = new StatusSampler(metrics, async () => 0);
    assert.equal((await sampler.sample()).eventsPerSecond, 0);
    metrics.eventsReceived.inc(100);
    await sleep(100);
    const busy = (await sampler.sample()).eventsPerSecond;
    assert.ok(busy > 300 && busy <= 1000, `${busy}`);
    await sleep(100);
    const paused = (await sampler.sample()).eventsPerSecond;
    assert.ok(paused > 150 && paused < busy, `${paused} after a pause (was ${busy})`);
  });
});
