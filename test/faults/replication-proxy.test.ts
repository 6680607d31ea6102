import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Runtime } from '../../src/runtime.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { createFaultHarness, drainAndStop, type FaultHarness, sleep } from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';

/**
 * The network between the pipeline and Postgres fails while Postgres stays up: every one of
 * the pipeline's connections (replication and queries) goes through a TCP proxy that the
 * test resets, black-holes and closes to new connections. The traffic goes straight to
 * Postgres, so the slot keeps filling meanwhile.
 */
describe('fault: the replication connection cut and stalled', () => {
  let h: FaultHarness;
  let proxy: TcpProxy;
  let runtime: Runtime | null = null;
  before(async () => {
    h = await createFaultHarness();
    const target = new URL(h.databaseUrl);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
  });
  after(async () => {
    await runtime?.stop().catch(() => undefined);
    await proxy?.close();
    await h?.cleanup();
  });

  it('reconnects after resets, resumes after a stall, and loses or repeats nothing', async () => {
    const viaProxy = new URL(h.databaseUrl);
    viaProxy.port = String(proxy.port);
    runtime = await h.start({ databaseUrl: viaProxy.toString() });
    const traffic = startTraffic(h.databaseUrl, 15);
    let cleared = 0;
    try {
      await sleep(1500);
      // 1. Three resets a few seconds apart (each one: a reconnect and a replay from the slot).
      for (let i = 0; i < 3; i++) {
        proxy.dropAll();
        await sleep(2000);
      }
      // 2. A stall: nothing forwarded for 8 s, connections left open (a black hole).
      await proxy.stall(8000);
      await sleep(1500);
      // 3. A partition: connections reset and new ones refused for 4 s.
      proxy.refuse = true;
      proxy.dropAll();
      await sleep(4000);
      proxy.refuse = false;
      cleared = Date.now();
      await sleep(1500);
    } finally {
      await traffic.stop();
    }
    const recoveryMs = await drainAndStop(h, runtime, cleared);
    runtime = null;
    const r = await reconcile(h);
    const lost = h.logs.count(/replication stream lost/);
    recordScenario({
      id: '03-replication-cut',
      scenario: 'replication connection cut and stalled',
      fault:
        'a TCP proxy between the pipeline and Postgres: 3 resets of every connection, an 8 s stall (nothing forwarded, nothing closed), then a 4 s partition (reset + new connections refused)',
      reconciliation: r,
      recoveryMs,
      logLines: {
        'replication stream lost': lost,
        'replication stream resumed': h.logs.count(/replication stream resumed/),
      },
      notes: `${proxy.accepted} connections through the proxy`,
    });
    assertExact(r);
    // One line per cut the pipeline saw (cuts close together can be one outage to it).
    assert.ok(lost >= 1 && lost <= 4, `one line per cut, got ${lost}:\n${h.logs.problems()}`);
    assert.equal(h.logs.count(/replication stream resumed/), lost, 'one line per recovery');
  });
});
