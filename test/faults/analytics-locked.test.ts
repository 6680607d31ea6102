import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Runtime } from '../../src/runtime.js';
import { waitFor } from '../helpers/wait.js';
import { createFaultHarness, drainAndStop, type FaultHarness, sleep } from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');

/** Another process that opens the DuckDB file read-write and keeps its lock until killed. */
async function holdDuckDbLock(file: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { DuckDBInstance } from '@duckdb/node-api';
       const db = await DuckDBInstance.create(${JSON.stringify(file)});
       await db.connect();
       process.stdout.write('locked\\n');
       setInterval(() => {}, 1000);`,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  await waitFor('lock holder ready', () => out.includes('locked'), 20_000);
  return child;
}

async function slotConfirmed(h: FaultHarness): Promise<string> {
  const rows = await h.sql<{ lsn: string }>(
    `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
    [h.slotName],
  );
  return rows[0].lsn;
}

describe('fault: the analytics store unavailable (DuckDB file locked by another process)', () => {
  let h: FaultHarness;
  let runtime: Runtime | null = null;
  let locker: ChildProcess | null = null;
  before(async () => {
    h = await createFaultHarness();
  });
  after(async () => {
    locker?.kill('SIGKILL');
    await runtime?.stop().catch(() => undefined);
    await h.cleanup();
  });

  it('starts anyway, holds the position while locked, and catches up when the lock goes', async () => {
    runtime = await h.start();
    const traffic = startTraffic(h.databaseUrl, 15);
    let cleared = 0;
    let heldAt = '';
    try {
      await sleep(2000);
      // A restart finds the file locked (an old instance still draining, an analyst's session).
      await runtime.stop();
      runtime = null;
      locker = await holdDuckDbLock(h.duckdbFile);
      runtime = await h.start(); // before the fix: EP_ERR_ANALYTICS_LOCKED, exit 2, a restart loop
      heldAt = await slotConfirmed(h);
      await sleep(5000);
      assert.equal(await slotConfirmed(h), heldAt, 'the position is held while DuckDB is locked');
      locker.kill('SIGKILL');
      await new Promise((r) => locker!.once('exit', r));
      locker = null;
      cleared = Date.now();
      await sleep(1500);
    } finally {
      await traffic.stop();
    }
    const recoveryMs = await drainAndStop(h, runtime, cleared);
    runtime = null;
    const r = await reconcile(h);
    const locked = h.logs.count(/EP_ERR_ANALYTICS_LOCKED/);
    const recovered = h.logs.count(/sink analytics recovered/);
    recordScenario({
      id: '06-analytics-locked',
      scenario: 'analytics store unavailable (DuckDB locked)',
      fault:
        'pipeline restarted while another process held the DuckDB file read-write for 5 s; traffic flowing',
      reconciliation: r,
      recoveryMs,
      logLines: { EP_ERR_ANALYTICS_LOCKED: locked, 'sink analytics recovered': recovered },
      notes:
        'slot position held (unchanged) while locked; Redis and external kept receiving up to the in-flight bound',
    });
    assertExact(r);
    assert.equal(locked, 1, `one line for the lock:\n${h.logs.problems()}`);
    assert.equal(recovered, 1);
  });
});
