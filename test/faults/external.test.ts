import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { ConfigKey } from '../../src/config.js';
import type { Runtime } from '../../src/runtime.js';
import {
  createFaultHarness,
  mockControl,
  sleep,
  waitCaughtUp,
  type FaultHarness,
} from './support/harness.js';
import { assertExact, reconcile, type Reconciliation } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';

interface Outage {
  overrides: Partial<Record<ConfigKey, unknown>>;
  /** Mock settings for the outage, and to end it. */
  fault: object;
  clear: object;
  durationMs: number;
}

/** Runs the pipeline with traffic, applies the outage at the mock, clears it, waits, reconciles. */
async function runOutage(
  harnesses: FaultHarness[],
  outage: Outage,
): Promise<{ h: FaultHarness; r: Reconciliation; recoveryMs: number; injected: Record<string, number> }> {
  const h = await createFaultHarness();
  harnesses.push(h);
  let runtime: Runtime | null = await h.start({ externalBatchSize: 1, ...outage.overrides });
  const traffic = startTraffic(h.databaseUrl, 20);
  let cleared = 0;
  try {
    await sleep(1500);
    await mockControl(h, outage.fault);
    await sleep(outage.durationMs);
    await mockControl(h, outage.clear);
    cleared = Date.now();
    await sleep(1500);
    await traffic.stop();
    await waitCaughtUp(h);
    assert.equal(runtime.pipeline.isRunning, true);
  } finally {
    await traffic.stop();
    await runtime?.stop();
    runtime = null;
  }
  const recoveryMs = Date.now() - cleared;
  const stats = (await (await fetch(`${h.mock.url}_stats`)).json()) as { injected: Record<string, number> };
  return { h, r: await reconcile(h), recoveryMs, injected: stats.injected };
}

describe('fault: the external system failing (5xx storm, 429 with Retry-After, timeouts)', () => {
  const harnesses: FaultHarness[] = [];
  after(async () => {
    for (const h of harnesses) await h.cleanup().catch(() => undefined);
  });

  it('5xx storm under best-effort: every event delivered or dead-lettered, never lost', async () => {
    const { h, r, recoveryMs, injected } = await runOutage(harnesses, {
      // The old behaviour, still available: no riding out (EXTERNAL_RETRY_FOR=0), no automatic
      // re-drive; test/faults/external-outage.test.ts covers the defaults.
      overrides: {
        externalPolicy: 'best-effort',
        externalMaxAttempts: 3,
        externalRetryFor: 0,
        externalRedriveRate: 0,
      },
      fault: { mode: 'fail500' },
      clear: { mode: 'ok' },
      durationMs: 6000,
    });
    const lines = {
      'external system failing': h.logs.count(/external system failing/),
      'external circuit open': h.logs.count(/external circuit open/),
      'external system recovered': h.logs.count(/external system recovered/),
    };
    recordScenario({
      id: '07-external-5xx',
      scenario: 'external 5xx storm (best-effort)',
      fault: `the mock answered 500 to every request for 6 s (${injected.fail500} answers); policy best-effort, 3 attempts, EXTERNAL_RETRY_FOR=0, re-drive off`,
      reconciliation: r,
      recoveryMs,
      logLines: lines,
      notes:
        'the dead-letter table holds exactly the events the external system never accepted (`engagement dlq replay` re-sends them)',
    });
    assertExact(r);
    assert.ok(r.externalDeadLettered > 0, 'the storm dead-lettered events');
    assert.deepEqual(
      lines,
      { 'external system failing': 1, 'external circuit open': 1, 'external system recovered': 1 },
      h.logs.problems(),
    );
  });

  it('429 with Retry-After under block: Retry-After honoured, nothing dead-lettered', async () => {
    const { h, r, recoveryMs, injected } = await runOutage(harnesses, {
      overrides: { externalPolicy: 'block' },
      fault: { mode: 'rate429', retryAfterSeconds: 2 },
      clear: { mode: 'ok' },
      durationMs: 5000,
    });
    const failing = h.logs.count(/external system failing: 429/);
    recordScenario({
      id: '08-external-429',
      scenario: 'external 429 with Retry-After (block)',
      fault: `the mock answered 429 Retry-After: 2 to every request for 5 s (${injected.rate429} answers to 32 concurrent senders); policy block`,
      reconciliation: r,
      recoveryMs,
      logLines: {
        'external system failing: 429': failing,
        'external system recovered': h.logs.count(/external system recovered/),
      },
    });
    assertExact(r);
    assert.equal(r.externalDeadLettered, 0);
    assert.equal(failing, 1, h.logs.problems());
    // Honouring a 2 s Retry-After, 32 senders make at most ~3 rounds in 5 s (plus breaker probes).
    assert.ok(injected.rate429 <= 32 * 4, `${injected.rate429} requests during the 429 storm`);
  });

  it('timeouts under block: requests time out, are retried with the same key, nothing lost', async () => {
    const { h, r, recoveryMs, injected } = await runOutage(harnesses, {
      overrides: { externalPolicy: 'block', externalTimeoutMs: 500 },
      fault: { latencyMs: 2000 },
      clear: { latencyMs: 0 },
      durationMs: 5000,
    });
    const failing = h.logs.count(/external system failing: timeout/);
    recordScenario({
      id: '09-external-timeouts',
      scenario: 'external timeouts (block)',
      fault: 'the mock answered after 2 s for 5 s while the sink timed out at 500 ms; policy block',
      reconciliation: r,
      recoveryMs,
      logLines: {
        'external system failing: timeout': failing,
        'external system recovered': h.logs.count(/external system recovered/),
      },
      notes: `${r.externalRedelivered} re-sends of a key the mock had already accepted (it finished requests the sink had given up on), absorbed by Idempotency-Key; ${JSON.stringify(injected)}`,
    });
    assertExact(r);
    assert.equal(r.externalDeadLettered, 0);
    assert.equal(failing, 1, h.logs.problems());
  });
});
