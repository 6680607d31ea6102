import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { Runtime } from '../../src/runtime.js';
import { runCli } from '../helpers/cli.js';
import { startRedisServer } from '../helpers/redis-server.js';
import { createFaultHarness, drainAndStop, type FaultHarness, sleep } from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';

type RedisServer = Awaited<ReturnType<typeof startRedisServer>>;

/** A private redis-server with an fsync-always AOF, so a crash-restart keeps what it acknowledged. */
async function persistentRedis(dir: string, port?: number): Promise<RedisServer> {
  return startRedisServer(port, ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir]);
}

describe('fault: Redis restarted, and Redis flushed in the middle', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'engagement-fault-redis-'));
  let server: RedisServer | null = null;
  let runtime: Runtime | null = null;
  const harnesses: FaultHarness[] = [];
  before(async () => {
    server = await persistentRedis(dir);
  });
  after(async () => {
    await runtime?.stop().catch(() => undefined);
    for (const h of harnesses) await h.cleanup().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('Redis killed and restarted: holds the position, catches up, counts stay exact', async () => {
    const h = await createFaultHarness({ redisUrl: server!.url });
    harnesses.push(h);
    runtime = await h.start();
    const traffic = startTraffic(h.databaseUrl, 15);
    let cleared = 0;
    try {
      await sleep(2000);
      const port = server!.port;
      await server!.stop(); // SIGKILL: a crash, not a clean shutdown
      server = null;
      await sleep(5000);
      server = await persistentRedis(dir, port);
      cleared = Date.now();
      await sleep(1500);
    } finally {
      await traffic.stop();
    }
    const recoveryMs = await drainAndStop(h, runtime, cleared);
    runtime = null;
    const r = await reconcile(h);
    const failing = h.logs.count(/sink redis write failed/);
    const recovered = h.logs.count(/sink redis recovered/);
    const lostState = h.logs.count(/EP_ERR_REDIS_STATE_LOST/);
    recordScenario({
      id: '04-redis-restart',
      scenario: 'Redis killed and restarted',
      fault: 'redis-server (AOF, fsync always) SIGKILLed mid-stream, back on the same port 5 s later',
      reconciliation: r,
      recoveryMs,
      logLines: { 'sink redis write failed': failing, 'sink redis recovered': recovered },
    });
    assertExact(r);
    assert.equal(failing, 1, h.logs.problems());
    assert.equal(recovered, 1);
    assert.equal(lostState, 0, 'a restart that kept its data is not a state loss');
  });

  it('FLUSHALL mid-stream: detected with one error line; a backfill restores the windows', async () => {
    const h = await createFaultHarness({ redisUrl: server!.url });
    harnesses.push(h);
    runtime = await h.start();
    const traffic = startTraffic(h.databaseUrl, 15);
    const flushedAt = new Date();
    let cleared = 0;
    const admin = new Redis(server!.url);
    try {
      await sleep(2500);
      await admin.flushall();
      cleared = Date.now();
      await sleep(2500);
    } finally {
      await traffic.stop();
      admin.disconnect();
    }
    await drainAndStop(h, runtime, Date.now());
    runtime = null;
    const detected = h.logs.count(/EP_ERR_REDIS_STATE_LOST/, 50);
    // What the error line tells the operator to do, for the window the 10-minute boards cover.
    const from = new Date(flushedAt.getTime() - 15 * 60_000).toISOString();
    const backfill = await runCli(['backfill', '--from', from, '--to', 'now', '--sinks', 'redis'], h.env());
    assert.equal(backfill.code, 0, backfill.output);
    const recoveryMs = Date.now() - cleared;
    // content:count (all-time totals) is the stream's alone: a backfill does not rebuild it.
    const r = await reconcile(h, { redisCounts: false });
    const counted = await countsAfterFlush(h);
    recordScenario({
      id: '05-redis-flushall',
      scenario: 'Redis FLUSHALL mid-stream',
      fault:
        'FLUSHALL while events stream; then `engagement backfill --sinks redis` over the last 15 min as the error line says',
      reconciliation: r,
      recoveryMs,
      logLines: { EP_ERR_REDIS_STATE_LOST: detected },
      notes: `windows exact after the backfill; all-time content:count after the flush holds ${counted.redis} of ${counted.source} events (the ones applied after the flush): totals cannot be rebuilt, see Limits`,
    });
    assertExact(r);
    assert.equal(detected, 1, `one error line for the flush:\n${h.logs.problems()}`);
    assert.ok(counted.redis > 0 && counted.redis < counted.source, 'counts restarted at the flush');
  });
});

async function countsAfterFlush(h: FaultHarness): Promise<{ redis: number; source: number }> {
  const redis = new Redis(h.redisUrl);
  try {
    const rows = await h.sql<{ content_id: string; n: string }>(
      'SELECT content_id::text AS content_id, count(*)::text AS n FROM engagement_events GROUP BY 1',
    );
    let total = 0;
    for (const row of rows)
      total += Number((await redis.get(`${h.redisPrefix}content:count:${row.content_id}`)) ?? 0);
    return { redis: total, source: rows.reduce((s, r) => s + Number(r.n), 0) };
  } finally {
    redis.disconnect();
  }
}
