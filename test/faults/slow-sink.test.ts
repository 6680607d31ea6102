import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { spawnCli, type CliProcess } from '../helpers/cli.js';
import { CONTENT_IDS } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';
import {
  createFaultHarness,
  mockControl,
  sleep,
  waitCaughtUp,
  type FaultHarness,
} from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';

/** Resident memory of a process in MiB, from /proc (what the OS charges it). */
function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(line?.match(/(\d+)/)?.[1] ?? NaN) / 1024;
}

describe('fault: a slow sink (backpressure keeps memory flat)', () => {
  let h: FaultHarness;
  let p: CliProcess | null = null;
  before(async () => {
    h = await createFaultHarness();
  });
  after(async () => {
    p?.child.kill('SIGKILL');
    await h.cleanup();
  });

  it('with the external system at 400 ms per request, a 30,000-event backlog waits in the slot, not in memory', async () => {
    p = spawnCli(
      ['run'],
      // A window of 4 x 500 rows: the backlog (30,000) is 12 times what may be held, so reading
      // it into memory would stand out (with the default 8 x 2,000 over half of it may be held,
      // and the peak varied by +36 to +89 MiB from run to run).
      h.env({
        EXTERNAL_POLICY: 'block',
        EXTERNAL_BATCH_SIZE: '1',
        EXTERNAL_CONCURRENCY: '8',
        BATCH_MAX_ROWS: '500',
        MAX_IN_FLIGHT_BATCHES: '4',
      }),
    );
    const child = p;
    await waitFor('streaming', () => /replication streaming/.test(child.output()), 30_000);
    await mockControl(h, { latencyMs: 400 });
    const baseline = rssMiB(child.child.pid!);
    for (let i = 0; i < 3; i++) {
      await h.sql(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
         SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), 'play', now() - make_interval(secs => g % 240), g % 100000, 'tv',
                jsonb_build_object('pad', repeat('p', 200))
         FROM generate_series(1, 10000) g`,
        [CONTENT_IDS],
      );
    }
    const samples: number[] = [];
    for (let i = 0; i < 40; i++) {
      samples.push(rssMiB(child.child.pid!));
      await sleep(300);
    }
    const delivered = ((await (await fetch(`${h.mock.url}_stats`)).json()) as { uniqueEventIds: number })
      .uniqueEventIds;
    await mockControl(h, { latencyMs: 0 });
    const cleared = Date.now();
    await waitCaughtUp(h, 180_000);
    const recoveryMs = Date.now() - cleared;
    assert.equal(child.child.exitCode, null, 'still running');
    child.child.kill('SIGINT');
    const exit = await child.exited;
    p = null;
    assert.equal(exit.code, 0, child.output());
    const r = await reconcile(h);
    const first = Math.max(...samples.slice(0, 10));
    const last = Math.max(...samples.slice(-10));
    const peak = Math.max(...samples);
    recordScenario({
      id: '10-slow-sink',
      scenario: 'slow sink (backpressure)',
      fault: `30,000 events committed at once while the external system took 400 ms per request (8 in flight) for 12 s; RSS sampled from /proc every 300 ms`,
      reconciliation: r,
      recoveryMs,
      notes: `RSS ${baseline.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB, first 3 s max ${first.toFixed(0)} MiB, last 3 s max ${last.toFixed(0)} MiB; ${delivered} events delivered while slow`,
    });
    assertExact(r);
    assert.ok(delivered < 2000, `the slow sink set the pace (${delivered} delivered while slow)`);
    // Flat: the backlog stays in Postgres. Reading 30,000 events (~10 MB of JSON) into memory would show.
    assert.ok(last - first < 25, `RSS grew ${first.toFixed(0)} -> ${last.toFixed(0)} MiB while stalled`);
    assert.ok(peak - baseline < 80, `RSS peak ${peak.toFixed(0)} MiB vs ${baseline.toFixed(0)} MiB baseline`);
  });
});
