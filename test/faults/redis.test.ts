import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { Runtime } from '../../src/runtime.js';
import { runCli } from '../helpers/cli.js';
import { startRedisCluster, startRedisServer } from '../helpers/redis-server.js';
import { REDIS_REBUILD_COMMAND } from '../../src/sinks/redis/redis-sink.js';
import { CONTENT_IDS } from '../helpers/pipeline.js';
import {
  createFaultHarness,
  drainAndStop,
  type FaultHarness,
  sleep,
  waitCaughtUp,
} from './support/harness.js';
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

  it('a content:count key turned into a hash mid-stream: one error naming it, nothing half-applied, exact once fixed', async () => {
    const h = await createFaultHarness({ redisUrl: server!.url });
    harnesses.push(h);
    runtime = await h.start();
    const traffic = startTraffic(h.databaseUrl, 15);
    // The second content's counter: in a batch its INCRBY follows the first content's.
    const key = `${h.redisPrefix}content:count:${CONTENT_IDS[1]}`;
    const admin = new Redis(server!.url);
    let cleared = 0;
    let held = false;
    try {
      await sleep(2000);
      // Another application overwrites the key (kept aside here, so the truth stays checkable).
      const saved = (await admin.eval(
        "local v = redis.call('GET', KEYS[1]); redis.call('DEL', KEYS[1]); redis.call('HSET', KEYS[1], 'owner', 'someone else'); return v",
        1,
        key,
      )) as string | null;
      await sleep(3000);
      const slot = await h.sql<{ lsn: string }>(
        'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
        [h.slotName],
      );
      await sleep(1500);
      const later = await h.sql<{ lsn: string }>(
        'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
        [h.slotName],
      );
      held = slot[0].lsn === later[0].lsn;
      // The operator fixes the key.
      await admin
        .multi()
        .del(key)
        .set(key, saved ?? '0')
        .exec();
      cleared = Date.now();
      await sleep(1500);
    } finally {
      await traffic.stop();
      admin.disconnect();
    }
    const recoveryMs = await drainAndStop(h, runtime, cleared);
    runtime = null;
    const r = await reconcile(h);
    const lines = h.logs.lines.filter((l) => /EP_ERR_REDIS_KEY_TYPE/.test(l.msg));
    recordScenario({
      id: '05c-redis-wrong-type',
      scenario: 'Redis key of the wrong type mid-stream',
      fault:
        'content:count of one content replaced by a hash while events stream (3 s), then restored; every batch touching it is refused whole',
      reconciliation: r,
      recoveryMs,
      logLines: { EP_ERR_REDIS_KEY_TYPE: lines.length },
      notes: `position held while refused: ${held}; content:count exact after the fix (no increment kept from a refused batch)`,
    });
    assertExact(r);
    // One line when the sink starts failing (another only if a batch without the key got through).
    assert.ok(lines.length >= 1, h.logs.problems());
    assert.ok(
      lines.every((l) => l.msg.includes(key)),
      lines.map((l) => l.msg).join('\n'),
    );
    assert.ok(held, 'the slot position did not advance while batches were refused');
  });

  it('stream + overlapping backfills twice, then FLUSHALL mid-stream: detected, the command it prints rebuilds Redis exactly', async () => {
    const h = await createFaultHarness({ redisUrl: server!.url });
    harnesses.push(h);
    await overlapFlushRebuild(h, {
      id: '05-redis-flushall',
      scenario: 'Redis FLUSHALL mid-stream',
      flushAll: async () => {
        const admin = new Redis(server!.url);
        await admin.flushall().finally(() => admin.disconnect());
      },
      checkUrl: server!.url,
    });
  });

  it('the same on a real Redis Cluster (3 masters): keys share one hash tag, every figure exact', async () => {
    const clusterDir = mkdtempSync(path.join(tmpdir(), 'engagement-fault-redis-cluster-'));
    const cluster = await startRedisCluster(clusterDir, 3);
    try {
      const prefix = `{fault${Math.floor(Math.random() * 1e9)}}:`;
      // The nodes answer for their own slots: the one owning the tag is where every key lives.
      const checkUrl = await slotOwnerUrl(cluster.ports, prefix);
      const h = await createFaultHarness({ redisUrl: cluster.url, redisPrefix: prefix });
      harnesses.push(h);
      await overlapFlushRebuild(h, {
        id: '05b-redis-cluster-flushall',
        scenario: 'Redis Cluster: FLUSHALL mid-stream',
        flushAll: async () => {
          for (const port of cluster.ports) {
            const node = new Redis(port, '127.0.0.1');
            await node.flushall().finally(() => node.disconnect());
          }
        },
        checkUrl,
      });
    } finally {
      await cluster.stop();
      rmSync(clusterDir, { recursive: true, force: true });
    }
  });
});

/**
 * Streams, backfills overlapping ranges twice while streaming (checks totals), FLUSHALLs
 * mid-stream, then runs the rebuild command the loss line prints, twice: every Redis figure
 * equals SQL (content:count, content:last, the 10-minute window).
 */
async function overlapFlushRebuild(
  h: FaultHarness,
  options: { id: string; scenario: string; flushAll: () => Promise<void>; checkUrl: string },
): Promise<void> {
  const check = { ...h, redisUrl: options.checkUrl };
  const runtime = await h.start();
  let running = true;
  try {
    const backfill = async (from: string, to: string) => {
      const run = await runCli(['backfill', '--from', from, '--to', to, '--sinks', 'redis'], h.env());
      assert.equal(run.code, 0, run.output);
    };
    const ago = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();
    // 1. Backfills overlapping the live stream (and each other) while traffic flows.
    let traffic = startTraffic(h.databaseUrl, 15);
    try {
      await sleep(2000);
      await backfill(ago(15), 'now');
      await sleep(500);
      await backfill(ago(60 * 24), ago(-1));
    } finally {
      await traffic.stop();
    }
    await waitCaughtUp(h);
    assert.deepEqual(await redisTotals(check), await sqlTotals(h), 'exact after stream + 2 backfills');
    // 2. FLUSHALL while events stream.
    traffic = startTraffic(h.databaseUrl, 15);
    let cleared = 0;
    try {
      await sleep(2000);
      await options.flushAll();
      cleared = Date.now();
      await sleep(2500);
    } finally {
      await traffic.stop();
    }
    await drainAndStop(h, runtime, Date.now());
    running = false;
    const lossLines = h.logs.lines.filter((l) => /EP_ERR_REDIS_STATE_LOST/.test(l.msg));
    const lossLine = lossLines[0]?.msg ?? '';
    const truncated = await redisTotals(check);
    // 3. The command the error line names, run as printed (twice: the second changes nothing).
    const command = /`engagement (backfill [^`]+)`/.exec(lossLine)?.[1].split(' ') ?? [];
    assert.deepEqual(command, REDIS_REBUILD_COMMAND.split(' ').slice(1), lossLine);
    const rebuildStarted = Date.now();
    const rebuild = await runCli(command, h.env());
    assert.equal(rebuild.code, 0, rebuild.output);
    const recoveryMs = Date.now() - cleared;
    const rebuildMs = Date.now() - rebuildStarted;
    const again = await runCli(command, h.env());
    assert.equal(again.code, 0, again.output);
    assert.match(again.output, /redis: 0 events newly counted/);
    const r = await reconcile(check);
    const totals = await redisTotals(check);
    const truth = await sqlTotals(h);
    if (JSON.stringify([...totals]) !== JSON.stringify([...truth]))
      r.problems.push('content:count / content:last differ from SQL after the rebuild');
    recordScenario({
      id: options.id,
      scenario: options.scenario,
      fault:
        'stream + `backfill --sinks redis` over overlapping ranges twice; then FLUSHALL while events stream; then the rebuild command the error line prints (run twice)',
      reconciliation: r,
      recoveryMs,
      logLines: { EP_ERR_REDIS_STATE_LOST: lossLines.length },
      notes: `exact after the backfills, and after the rebuild: content:count, content:last, windows (before the rebuild the totals held ${sum(truncated)} of ${sum(truth)} events); full rebuild of ${r.events} events took ${rebuildMs} ms`,
    });
    assertExact(r);
    assert.deepEqual(totals, truth);
    assert.equal(lossLines.length, 1, `one error line for the flush:\n${h.logs.problems()}`);
    assert.ok(sum(truncated) < sum(truth), 'the flush lost counts before the rebuild');
  } finally {
    if (running) await runtime.stop().catch(() => undefined);
  }
}

/** redis://… of the cluster node that owns the slot of `key` (its hash tag). */
async function slotOwnerUrl(ports: number[], key: string): Promise<string> {
  const node = new Redis(ports[0], '127.0.0.1');
  try {
    const slot = Number(await node.cluster('KEYSLOT', key));
    const slots = (await node.cluster('SLOTS')) as unknown as [number, number, [string, number]][];
    const owner = slots.find(([from, to]) => slot >= from && slot <= to);
    if (!owner) throw new Error(`no node owns slot ${slot}`);
    return `redis://${owner[2][0]}:${owner[2][1]}`;
  } finally {
    node.disconnect();
  }
}

/** Per content: "<content:count> events, last <content:last's event_id>" from Redis. */
async function redisTotals(h: FaultHarness): Promise<Map<string, string>> {
  const redis = new Redis(h.redisUrl);
  try {
    const out = new Map<string, string>();
    for (const id of CONTENT_IDS) {
      const count = await redis.get(`${h.redisPrefix}content:count:${id}`);
      const last = await redis.get(`${h.redisPrefix}content:last:${id}`);
      if (count !== null || last !== null)
        out.set(id, `${count} events, last ${last === null ? null : JSON.parse(last).event_id}`);
    }
    return out;
  } finally {
    redis.disconnect();
  }
}

/** The same from SQL: the truth (content:last = highest event_ts, ties: highest id). */
async function sqlTotals(h: FaultHarness): Promise<Map<string, string>> {
  const rows = await h.sql<{ c: string; n: string; last: string }>(
    `SELECT content_id::text AS c, count(*)::text AS n,
            (array_agg(id ORDER BY event_ts DESC, id DESC))[1]::text AS last
       FROM engagement_events WHERE content_id IS NOT NULL GROUP BY 1 ORDER BY 1`,
  );
  const want = new Map(rows.map((r) => [r.c, `${r.n} events, last ${r.last}`]));
  return new Map(CONTENT_IDS.filter((id) => want.has(id)).map((id) => [id, want.get(id)!]));
}

const sum = (totals: Map<string, string>) =>
  [...totals.values()].reduce((s, v) => s + (v.startsWith('null') ? 0 : parseInt(v, 10)), 0);
