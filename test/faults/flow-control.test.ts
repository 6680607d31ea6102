import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { after, describe, it } from 'node:test';
import { spawnCli, type CliProcess } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';
import {
  createFaultHarness,
  drainAndStop,
  mockControl,
  sleep,
  waitCaughtUp,
  type FaultHarness,
} from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';

/**
 * Flow control under OLTP-shaped traffic (transactions of 1-5 events): a stuck or slow
 * destination must pause the source with memory bounded by the batch settings, health must
 * say so, shutdown must be bounded, and nothing may be lost or applied twice.
 * The outages here last 35 s, under Postgres's default wal_sender_timeout (60 s): they show
 * the bound and the health, not the keepalive path of a paused stream.
 */

const MAX_ROWS = 2000;
const MAX_IN_FLIGHT = 4;
const BOUND = (MAX_IN_FLIGHT + 1) * MAX_ROWS;

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(line?.match(/(\d+)/)?.[1] ?? NaN) / 1024;
}

interface SinkStat {
  name: string;
  state: string;
  lagSeconds: number;
  received: number;
  delivered: number;
}

async function stats(url: string): Promise<{ totalEvents: number; sinks: SinkStat[] }> {
  return (await (await fetch(new URL('api/stats', url))).json()) as {
    totalEvents: number;
    sinks: SinkStat[];
  };
}

async function startRun(
  h: FaultHarness,
  env: Record<string, string>,
): Promise<{ p: CliProcess; url: string }> {
  const p = spawnCli(
    ['run'],
    h.env({ BATCH_MAX_ROWS: String(MAX_ROWS), MAX_IN_FLIGHT_BATCHES: String(MAX_IN_FLIGHT), ...env }),
  );
  let url = '';
  await waitFor(
    'pipeline running',
    () => {
      if (p.child.exitCode !== null) throw new Error(`exited ${p.child.exitCode}: ${p.output()}`);
      url = /dashboard and API at (\S+)/.exec(p.output())?.[1] ?? '';
      return url !== '' && /replication streaming/.test(p.output());
    },
    60_000,
  );
  return { p, url };
}

const summary = (xs: number[]) => `${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}`;

describe('fault: flow control with small transactions (bounded memory, truthful health, bounded shutdown)', () => {
  const harnesses: FaultHarness[] = [];
  const running: CliProcess[] = [];
  after(async () => {
    for (const p of running) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    for (const h of harnesses) await h.cleanup().catch(() => undefined);
  });

  for (const outage of [
    {
      id: '12-small-tx-external-down',
      title: 'small transactions, external down 35 s',
      fault: { mode: 'fail500' },
      clear: { mode: 'ok' },
      what: 'the mock answered 500 to every request for 35 s (policy block)',
      env: { EXTERNAL_BATCH_SIZE: '1', EXTERNAL_CONCURRENCY: '32' },
    },
    {
      id: '13-small-tx-external-3s',
      title: 'small transactions, external answering in 3 s',
      fault: { latencyMs: 3000 },
      clear: { latencyMs: 0 },
      what: 'the mock answered every request after 3 s for 35 s (policy block, 100 events per request, 2 in flight)',
      // Two requests in flight: at most ~67 events/s get through, below the traffic's rate. With
      // 32 in flight the fan-out's merged writes (up to the whole window per write) kept up, lag
      // ~5 s: a slow answer alone no longer puts the pipeline behind.
      env: { EXTERNAL_BATCH_SIZE: '100', EXTERNAL_CONCURRENCY: '2' },
    },
  ]) {
    it(`${outage.title}: the source pauses, RSS stays flat, health says so, then exact`, async () => {
      const h = await createFaultHarness();
      harnesses.push(h);
      const { p, url } = await startRun(h, {
        EXTERNAL_POLICY: 'block',
        LAG_WARN_SECONDS: '10',
        ...outage.env,
      });
      running.push(p);
      const pid = p.child.pid!;
      const traffic = startTraffic(h.databaseUrl, 2, [1, 5]);
      const trafficStarted = Date.now();
      let trafficSeconds = 0;
      let cleared = 0;
      const rss: number[] = [];
      const held: number[] = [];
      let worst: SinkStat | undefined;
      let readyDuring = 0;
      let notReadyDuring = 0;
      try {
        await sleep(3000);
        const baseline = rssMiB(pid);
        await mockControl(h, outage.fault);
        for (let i = 0; i < 35; i++) {
          await sleep(1000);
          rss.push(rssMiB(pid));
          const s = await stats(url);
          const external = s.sinks.find((k) => k.name === 'external')!;
          // Read from the source but not yet accepted by the external system: what memory holds.
          held.push(s.totalEvents - external.delivered);
          worst = external;
          if (i >= 12) {
            const ready = (await fetch(new URL('readyz', url))).status;
            if (ready === 200) readyDuring += 1;
            else notReadyDuring += 1;
          }
        }
        await mockControl(h, outage.clear);
        cleared = Date.now();
        await sleep(2000);
        await traffic.stop();
        trafficSeconds = (Date.now() - trafficStarted) / 1000;
        await waitCaughtUp(h, 180_000);
        const recoveryMs = Date.now() - cleared;
        const after = await stats(url);
        assert.equal(p.child.exitCode, null, 'still running');
        p.child.kill('SIGTERM');
        const exit = await p.exited;
        assert.equal(exit.code, 0, p.output());
        const r = await reconcile(h);
        const first = Math.max(...rss.slice(0, 5));
        const last = Math.max(...rss.slice(-5));
        const lost = (p.output().match(/replication stream lost/g) ?? []).length;
        recordScenario({
          id: outage.id,
          scenario: outage.title,
          fault: `${outage.what}, under ${traffic.committed.toLocaleString('en')} events in transactions of 1-5 events (~${Math.round(traffic.committed / trafficSeconds)} events/s); BATCH_MAX_ROWS ${MAX_ROWS}, MAX_IN_FLIGHT_BATCHES ${MAX_IN_FLIGHT}`,
          reconciliation: r,
          recoveryMs,
          logLines: { 'replication stream lost': lost },
          notes: `RSS ${baseline.toFixed(0)} MiB before, ${summary(rss)} MiB during (first 5 s max ${first.toFixed(0)}, last 5 s max ${last.toFixed(0)}); events read but not accepted by the external system at most ${Math.max(...held)} (bound (${MAX_IN_FLIGHT}+1) x ${MAX_ROWS} = ${BOUND}); external shown ${worst?.state} with lag ${worst?.lagSeconds.toFixed(0)} s at the end of the fault; /readyz 503 in ${notReadyDuring} of ${notReadyDuring + readyDuring} probes after 12 s; afterwards ${after.sinks.map((k) => `${k.name} ${k.state}`).join(', ')}`,
        });
        assertExact(r);
        assert.ok(Math.max(...held) <= BOUND + 1000, `held ${Math.max(...held)} events (bound ${BOUND})`);
        assert.ok(
          last - first < 40,
          `RSS grew ${first.toFixed(0)} -> ${last.toFixed(0)} MiB during the fault`,
        );
        // Behind means past LAG_WARN_SECONDS (10 here). How far past depends on the machine's
        // speed: a full window drained at the slow sink's rate (11-19 s seen for the 3 s answers).
        assert.ok(
          worst && worst.lagSeconds > 10,
          `external lag ${worst?.lagSeconds} s at the end of the fault (LAG_WARN_SECONDS 10)`,
        );
        assert.ok(worst && worst.state !== 'up', `external shown ${worst?.state}`);
        assert.equal(readyDuring, 0, '/readyz 503 while the external sink is down or behind');
        assert.ok(
          after.sinks.every((k) => k.state === 'up' && k.lagSeconds < 10),
          JSON.stringify(after.sinks),
        );
        assert.equal(lost, 0, 'the replication connection survived');
      } finally {
        await traffic.stop();
        if (p.child.exitCode === null) p.child.kill('SIGKILL');
      }
    });
  }

  it('best-effort, external answering in 3 s: its unsent events are set aside, Redis stays fresh, then every event arrives once', async () => {
    const h = await createFaultHarness();
    harnesses.push(h);
    // As '13-small-tx-external-3s' (at most ~67 events/s get through), under the default policy.
    const { p, url } = await startRun(h, {
      EXTERNAL_BATCH_SIZE: '100',
      EXTERNAL_CONCURRENCY: '2',
      EXTERNAL_SPILL_AFTER: '2s',
      EXTERNAL_REDRIVE_RATE: '2000',
      LAG_WARN_SECONDS: '10',
    });
    running.push(p);
    const traffic = startTraffic(h.databaseUrl, 2, [1, 5]);
    const trafficStarted = Date.now();
    const redisLag: number[] = [];
    const externalLag: number[] = [];
    try {
      await sleep(3000);
      await mockControl(h, { latencyMs: 3000 });
      for (let i = 0; i < 35; i++) {
        await sleep(1000);
        const s = await stats(url);
        redisLag.push(s.sinks.find((k) => k.name === 'redis')!.lagSeconds);
        externalLag.push(s.sinks.find((k) => k.name === 'external')!.lagSeconds);
      }
      await mockControl(h, { latencyMs: 0 });
      const cleared = Date.now();
      await sleep(2000);
      await traffic.stop();
      const trafficSeconds = (Date.now() - trafficStarted) / 1000;
      await waitCaughtUp(h, 180_000);
      await waitFor(
        'set-aside events re-sent',
        async () =>
          (
            await h.sql<{ n: number }>(
              `SELECT count(*)::int AS n FROM engagement_pipeline.dead_letters WHERE sink = 'external' AND replayed_at IS NULL`,
            )
          )[0].n === 0,
        120_000,
      );
      const recoveryMs = Date.now() - cleared;
      const setAside = (
        await h.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM engagement_pipeline.dead_letters WHERE sink = 'external' AND last_error LIKE 'set aside unsent%'`,
        )
      )[0].n;
      const spills = (p.output().match(/alone held the other sinks/g) ?? []).length;
      assert.equal(p.child.exitCode, null, 'still running');
      p.child.kill('SIGTERM');
      const exit = await p.exited;
      assert.equal(exit.code, 0, p.output().slice(-3000));
      const r = await reconcile(h, { externalBatchSize: 100 });
      recordScenario({
        id: '13b-small-tx-external-3s-best-effort',
        scenario: 'small transactions, external answering in 3 s (best-effort)',
        fault: `the mock answered every request after 3 s for 35 s (policy best-effort, EXTERNAL_SPILL_AFTER 2s, 100 events per request, 2 in flight), under ${traffic.committed.toLocaleString('en')} events in transactions of 1-5 events (~${Math.round(traffic.committed / trafficSeconds)} events/s)`,
        reconciliation: r,
        recoveryMs,
        logLines: { 'alone held the other sinks': spills },
        notes: `Redis lag ${summary(redisLag)} s during the fault, external ${summary(externalLag)} s; ${setAside.toLocaleString('en')} events set aside unsent, all re-sent after (recovery = until none is pending)`,
      });
      assertExact(r);
      assert.ok(setAside > 0, 'the slow receiver made the sink spill');
      // Without spilling Redis waited with the window: its lag grew with the fault (35 s).
      // Spilling bounds it by EXTERNAL_SPILL_AFTER + one request in flight (3 s) + the check.
      assert.ok(Math.max(...redisLag) < 10, `Redis lag ${summary(redisLag)} s while the receiver was slow`);
      assert.equal(r.externalDeadLettered, 0, 'every set-aside event was re-sent');
    } finally {
      await traffic.stop();
      if (p.child.exitCode === null) p.child.kill('SIGKILL');
    }
  });

  it('SIGTERM during an outage with the window full: stops within SHUTDOWN_TIMEOUT_MS, says what replays, exact after restart', async () => {
    const h = await createFaultHarness();
    harnesses.push(h);
    const timeoutMs = 6000;
    const { p } = await startRun(h, {
      EXTERNAL_POLICY: 'block',
      EXTERNAL_BATCH_SIZE: '1',
      SHUTDOWN_TIMEOUT_MS: String(timeoutMs),
    });
    running.push(p);
    const traffic = startTraffic(h.databaseUrl, 5, [1, 5]);
    await sleep(2000);
    await mockControl(h, { mode: 'fail500' });
    await sleep(8000);
    const sent = Date.now();
    p.child.kill('SIGTERM');
    const exit = await p.exited;
    const stopMs = Date.now() - sent;
    await traffic.stop();
    const line = /shutdown after [^\n"]*replay[^\n"]*/.exec(p.output())?.[0] ?? '';
    // Restart with the external system back: everything left unconfirmed replays.
    await mockControl(h, { mode: 'ok' });
    const cleared = Date.now();
    const runtime = await h.start({ externalPolicy: 'block', externalBatchSize: 1 });
    const recoveryMs = await drainAndStop(h, runtime, cleared, { timeoutMs: 180_000 });
    const r = await reconcile(h);
    recordScenario({
      id: '14-sigterm-during-outage',
      scenario: 'SIGTERM during an outage',
      fault: `SIGTERM to \`engagement run\` (SHUTDOWN_TIMEOUT_MS ${timeoutMs}) 8 s into an external outage (500s, policy block) with the in-flight window full; restarted with the external system back`,
      reconciliation: r,
      recoveryMs,
      logLines: { 'shutdown after ... replay from ...': line ? 1 : 0 },
      notes: `exited ${exit.code} after ${(stopMs / 1000).toFixed(1)} s: "${line.slice(0, 200)}"`,
    });
    assert.equal(exit.code, 0, p.output().slice(-3000));
    // The bound itself (plus the time to reap the process), not the bound plus a linger.
    assert.ok(stopMs < timeoutMs + 1000, `stopped after ${stopMs} ms`);
    assert.ok(line, `one line says what replays:\n${p.output().slice(-3000)}`);
    assertExact(r);
  });

  it('PORT in use: one clear line, non-zero exit, nothing left open; then runs exactly', async () => {
    const h = await createFaultHarness();
    harnesses.push(h);
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    const started = Date.now();
    const p = spawnCli(['run'], h.env({ PORT: String(port) }));
    running.push(p);
    const exit = await Promise.race([p.exited, sleep(30_000).then(() => null)]);
    const exitMs = Date.now() - started;
    blocker.close();
    const errorLines = p
      .output()
      .split('\n')
      .filter((l) => /already in use/.test(l));
    const active = await h.sql<{ active: boolean }>(
      'SELECT active FROM pg_replication_slots WHERE slot_name = $1',
      [h.slotName],
    );
    // The same database and sinks then work as usual.
    const traffic = startTraffic(h.databaseUrl, 5, [1, 5]);
    const runtime = await h.start();
    await sleep(3000);
    await traffic.stop();
    const cleared = Date.now();
    const recoveryMs = await drainAndStop(h, runtime, cleared);
    const r = await reconcile(h);
    recordScenario({
      id: '15-port-in-use',
      scenario: 'PORT in use',
      fault: `\`engagement run\` started with PORT set to a port another process listens on; then the pipeline started normally`,
      reconciliation: r,
      recoveryMs,
      logLines: { 'port ... already in use': errorLines.length },
      notes: `exited ${exit?.code ?? 'not at all'} after ${(exitMs / 1000).toFixed(1)} s: "${errorLines[0] ?? ''}"; slot active afterwards: ${active[0]?.active}`,
    });
    assert.ok(exit, `did not exit within 30 s:\n${p.output()}`);
    assert.notEqual(exit.code, 0);
    assert.equal(errorLines.length, 1, p.output());
    assert.equal(active[0]?.active, false, 'no replication connection left open');
    assertExact(r);
  });
});
