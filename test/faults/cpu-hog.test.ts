import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { Runtime } from '../../src/runtime.js';
import { createFaultHarness, drainAndStop, sleep, type FaultHarness } from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';

const SECONDS = Number(process.env.FAULT_HOG_SECONDS ?? 60);

/**
 * Another process takes a whole core (the machine has two) while OLTP-shaped traffic flows:
 * the pipeline must keep up (batches grow by themselves) rather than fall further behind
 * every second. The lag sampled here is each sink's: now minus the commit time of the oldest
 * event it has not accepted.
 */
describe('fault: a CPU hog on one core while traffic flows', () => {
  let h: FaultHarness;
  let runtime: Runtime | null = null;
  let hog: ChildProcess | null = null;
  before(async () => {
    h = await createFaultHarness();
  });
  after(async () => {
    hog?.kill('SIGKILL');
    await runtime?.stop().catch(() => undefined);
    await h.cleanup();
  });

  it(`keeps up for ${SECONDS} s beside a busy core, then exact`, async () => {
    runtime = await h.start({ externalBatchSize: 100 });
    hog = spawn('python3', ['-c', 'while True: pass'], { stdio: 'ignore' });
    const traffic = startTraffic(h.databaseUrl, 5, [1, 20]);
    const maxLag = new Map<string, number>();
    const lagAtEnd = new Map<string, number>();
    const started = Date.now();
    let rss = 0;
    try {
      while (Date.now() - started < SECONDS * 1000) {
        await sleep(1000);
        rss = Math.max(rss, process.memoryUsage().rss);
        for (const s of runtime.pipeline.sinkHealth()) {
          maxLag.set(s.name, Math.max(maxLag.get(s.name) ?? 0, s.lagSeconds));
          lagAtEnd.set(s.name, s.lagSeconds);
        }
      }
    } finally {
      await traffic.stop();
      hog.kill('SIGKILL');
      hog = null;
    }
    const rate = Math.round(traffic.committed / SECONDS);
    const cleared = Date.now();
    const recoveryMs = await drainAndStop(h, runtime, cleared);
    runtime = null;
    const r = await reconcile(h);
    const lags = [...maxLag.entries()]
      .map(([sink, lag]) => `${sink} max ${lag.toFixed(1)} s / at end ${lagAtEnd.get(sink)?.toFixed(1)} s`)
      .join('; ');
    recordScenario({
      id: '17-cpu-hog',
      scenario: 'a CPU hog on one core under traffic',
      fault: `\`python3 -c 'while True: pass'\` on one of the two cores for ${SECONDS} s while ${rate} events/s of 1–20-row transactions flowed`,
      reconciliation: r,
      recoveryMs,
      notes: `sink lag (oldest unaccepted event): ${lags}; test process peak RSS ${Math.round(rss / 2 ** 20)} MiB`,
    });
    assertExact(r);
    // Keeping up means the lag does not grow with time: at the end of the run it is still
    // bounded (generously here: the machine's other work is not ours to control).
    for (const [sink, lag] of lagAtEnd) assert.ok(lag < 15, `${sink} kept up (lag at end ${lag} s; ${lags})`);
  });
});
