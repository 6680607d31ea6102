import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../../src/db/embedded.js';
import type { Runtime } from '../../src/runtime.js';
import { freePort } from '../../src/ports.js';
import { createFaultHarness, drainAndStop, type FaultHarness, sleep } from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';
import { waitFor } from '../helpers/wait.js';
import { stopPostmaster } from '../helpers/postgres.js';

const crash = (dataDir: string) => stopPostmaster(dataDir, 'SIGQUIT', 10_000);
const fastShutdown = (dataDir: string, limitMs: number) => stopPostmaster(dataDir, 'SIGINT', limitMs);

/**
 * Postgres itself goes away mid-stream: a second embedded cluster this file owns (the shared
 * test cluster stays up for the other files), crashed and started again on the same port and data dir.
 */
describe('fault: Postgres restarted mid-stream', () => {
  let cluster: EmbeddedPostgresHandle | null = null;
  let h: FaultHarness;
  let runtime: Runtime | null = null;
  const dataDir = path.join(tmpdir(), `engagement-fault-pg-${process.pid}`);
  let port = 0;
  before(async () => {
    port = await freePort();
    cluster = await startEmbeddedPostgres({ dataDir, port, fresh: true });
    h = await createFaultHarness({ adminUrl: cluster.url });
  });
  after(async () => {
    await runtime?.stop().catch(() => undefined);
    await h?.cleanup().catch(() => undefined);
    await cluster?.stop().catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('reconnects, resumes from the confirmed position, loses nothing, applies nothing twice', async () => {
    runtime = await h.start();
    const traffic = startTraffic(h.databaseUrl, 15);
    let downMs = 0;
    let cleared = 0;
    try {
      await sleep(2000);
      for (let i = 0; i < 2; i++) {
        const down = Date.now();
        await crash(dataDir);
        cluster = null;
        await sleep(2500);
        // What /readyz reports after STREAM_LOST_UNREADY_MS (runtime.ts).
        assert.ok(runtime.pipeline.source.lostSince !== null, 'the source knows its stream is lost');
        cluster = await startEmbeddedPostgres({ dataDir, port });
        downMs = Date.now() - down;
        cleared = Date.now();
        await sleep(2500);
      }
    } finally {
      await traffic.stop();
    }
    await waitFor('stream resumed', () => runtime!.pipeline.source.lostSince === null, 60_000, 100);
    const recoveryMs = await drainAndStop(h, runtime, cleared, {
      runningMessage: 'the pipeline kept running (no crash)',
    });
    runtime = null;
    const r = await reconcile(h);
    const lost = h.logs.count(/replication stream lost/);
    const resumed = h.logs.count(/replication stream resumed/);
    recordScenario({
      id: '02-postgres-restart',
      scenario: 'Postgres restarted mid-stream ×2',
      fault: `the source cluster crashed (immediate shutdown: SIGQUIT to the postmaster) and started again twice, down ~${(downMs / 1000).toFixed(1)} s each, traffic retrying throughout (${traffic.failures} transactions failed while it was down)`,
      reconciliation: r,
      recoveryMs,
      logLines: { 'replication stream lost': lost, 'replication stream resumed': resumed },
    });
    assertExact(r);
    // One line per outage seen by the pipeline (two crashes can fall into one reconnect
    // backoff and be one outage to it), never one per reconnect attempt.
    assert.ok(lost >= 1 && lost <= 2, `one line per outage, got ${lost}:\n${h.logs.problems()}`);
    assert.equal(resumed, lost, 'one line per recovery');
  });

  it('completes a fast shutdown in seconds while connected, idle and under traffic, and loses nothing', async () => {
    runtime = await h.start();
    const resumedBefore = h.logs.count(/replication stream resumed/);
    // Idle: the walsender exits only once the pipeline confirms exactly its sent position.
    await sleep(2000);
    const idleMs = await fastShutdown(dataDir, 30_000);
    cluster = await startEmbeddedPostgres({ dataDir, port });
    await waitFor(
      'stream resumed',
      () => h.logs.count(/replication stream resumed/) > resumedBefore,
      60_000,
      100,
    );
    const traffic = startTraffic(h.databaseUrl, 15);
    let busyMs = 0;
    let cleared = 0;
    try {
      await sleep(3000);
      busyMs = await fastShutdown(dataDir, 30_000);
      cluster = await startEmbeddedPostgres({ dataDir, port });
      cleared = Date.now();
      await sleep(2500);
    } finally {
      await traffic.stop();
    }
    const recoveryMs = await drainAndStop(h, runtime, cleared, {
      runningMessage: 'the pipeline kept running (no crash)',
    });
    runtime = null;
    const r = await reconcile(h);
    recordScenario({
      id: '02b-postgres-fast-shutdown',
      scenario: 'Postgres fast shutdown while connected',
      fault: `pg_ctl-style fast shutdown (SIGINT to the postmaster) with the pipeline connected: idle (stopped in ${(idleMs / 1000).toFixed(1)} s) and under traffic (stopped in ${(busyMs / 1000).toFixed(1)} s), then started again`,
      reconciliation: r,
      recoveryMs,
      logLines: { 'replication stream lost': h.logs.count(/replication stream lost/) },
    });
    assertExact(r);
  });

  it('completes a fast shutdown while the stream waits to record a content change, and loses nothing', async () => {
    runtime = await h.start();
    await sleep(1000);
    // The commit's content change is recorded (over a normal connection) before the commit can
    // be confirmed; a shutting-down Postgres refuses that connection, so the stream is held and
    // the walsender never sees its sent position confirmed. The pipeline must let go of it.
    await h.sql(
      `BEGIN;
       INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device)
       SELECT (SELECT id FROM content ORDER BY slug LIMIT 1), gen_random_uuid(), 'play', now(), 1000, 'web'
         FROM generate_series(1, 100000);
       UPDATE content SET length_seconds = length_seconds + 1 WHERE slug = 'video-1';
       COMMIT`,
    );
    const stoppedMs = await fastShutdown(dataDir, 45_000);
    // Lost (and so /readyz 503 after 5 s) although the handler still waits for Postgres.
    await waitFor(
      'the source sees its stream lost',
      () => runtime!.pipeline.source.lostSince !== null,
      10_000,
      50,
    );
    cluster = await startEmbeddedPostgres({ dataDir, port });
    const cleared = Date.now();
    const recoveryMs = await drainAndStop(h, runtime, cleared, {
      runningMessage: 'the pipeline kept running (no crash)',
    });
    runtime = null;
    const r = await reconcile(h);
    recordScenario({
      id: '02c-postgres-fast-shutdown-held',
      scenario: 'Postgres fast shutdown while a content change waits to be recorded',
      fault: `one 100,000-event transaction ending in a content UPDATE, then at once a fast shutdown (SIGINT to the postmaster): stopped in ${(stoppedMs / 1000).toFixed(1)} s, then started again`,
      reconciliation: r,
      recoveryMs,
      logLines: {
        'closing the replication connection': h.logs.count(
          /Postgres is shutting down: closing the replication/,
        ),
      },
    });
    assertExact(r);
  });
});
