import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { silentLogger } from '../../src/logger.js';
import { startHttpServer, type Runtime } from '../../src/runtime.js';
import { CONTENT_IDS, createHarness, insertEvents, seedContent, type Harness } from '../helpers/pipeline.js';
import { spawnCli } from '../helpers/cli.js';
import { startRedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';

// A Redis that accepts connections but does not answer (SIGSTOPped): the kernel completes TCP
// handshakes from its backlog, so no connect timeout or refusal ever fires. It must take the
// path of a refusing Redis: start-up goes on, the sink shows down (/readyz 503 "Redis
// unreachable", engagement_sink_up 0, state down), writes are retried, and once Redis answers
// again everything is applied exactly once. LAG_WARN_SECONDS is the default 30 s, so "down"
// within 15 s cannot come from the sink merely falling behind.

type Server = { url: string; close(): Promise<void> };

async function sinkUp(server: Server, sink: string): Promise<number> {
  const text = await (await fetch(new URL('metrics', server.url))).text();
  const line = text.split('\n').find((l) => l.startsWith(`engagement_sink_up{sink="${sink}"}`));
  return line ? Number(line.split(' ').pop()) : NaN;
}

async function readyz(server: Server): Promise<{ status: number; body: string }> {
  const res = await fetch(new URL('readyz', server.url));
  return { status: res.status, body: await res.text() };
}

async function redisSinkStats(server: Server): Promise<{ up: boolean; state: string }> {
  const stats = (await (await fetch(new URL('api/stats', server.url))).json()) as {
    sinks: { name: string; up: boolean; state: string }[];
  };
  const redis = stats.sinks.find((s) => s.name === 'redis');
  assert.ok(redis, 'redis in /api/stats');
  return redis;
}

async function countedInRedis(url: string, prefix: string): Promise<number> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    const counts = await Promise.all(CONTENT_IDS.map((id) => client.get(`${prefix}content:count:${id}`)));
    return counts.reduce((sum, c) => sum + Number(c ?? 0), 0);
  } finally {
    client.disconnect();
  }
}

/** Rejects when `promise` has not settled within `ms` (the old code waited for ever). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

describe('a hung Redis (SIGSTOPped: connections accepted, nothing answered)', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
  });
  after(async () => {
    await h.cleanup();
  });

  it('while running: the Redis sink turns down within seconds, then applies everything once when Redis answers', async () => {
    const redisServer = await startRedisServer();
    let runtime: Runtime | null = null;
    let server: Server | null = null;
    try {
      runtime = await h.start({ redisUrl: redisServer.url });
      server = await startHttpServer(runtime, h.config({ redisUrl: redisServer.url }), silentLogger());
      const s = server;
      await insertEvents(h, 100);
      await waitFor(
        'first events in Redis',
        async () => (await countedInRedis(redisServer.url, h.redis.prefix)) === 100,
      );
      await waitFor('ready before the hang', async () => (await readyz(s)).status === 200);
      assert.equal(await sinkUp(s, 'redis'), 1);

      redisServer.pause();
      const hungAt = Date.now();
      await insertEvents(h, 300, 1000);
      await waitFor(
        'redis reported down',
        async () => {
          const r = await readyz(s);
          return (
            r.status === 503 &&
            /Redis unreachable/.test(r.body) &&
            (await sinkUp(s, 'redis')) === 0 &&
            (await redisSinkStats(s)).state === 'down'
          );
        },
        15_000,
        200,
      );
      const detectedAfter = Date.now() - hungAt;
      assert.deepEqual(await redisSinkStats(s), { ...(await redisSinkStats(s)), up: false, state: 'down' });
      // Still held while hung: nothing lost, nothing half-applied.
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal(await sinkUp(s, 'redis'), 0);

      redisServer.resume();
      await waitFor(
        'every event in Redis once after Redis answers again',
        async () => (await countedInRedis(redisServer.url, h.redis.prefix)) === 400,
        30_000,
      );
      await waitFor('redis up again', async () => (await sinkUp(s, 'redis')) === 1, 20_000);
      await waitFor('ready again', async () => (await readyz(s)).status === 200, 20_000);
      // Timed-out batches that Redis ran when it woke up, and their retries: counted once.
      await new Promise((r) => setTimeout(r, 2_000));
      assert.equal(await countedInRedis(redisServer.url, h.redis.prefix), 400);
      assert.ok(detectedAfter < 15_000, `down after ${detectedAfter} ms`);
    } finally {
      redisServer.resume();
      await server?.close();
      await runtime?.stop();
      await redisServer.stop();
    }
  });

  it('`engagement top`: one line and exit 2 within seconds, not a wait for ever', async () => {
    const redisServer = await startRedisServer();
    redisServer.pause();
    const top = spawnCli(['top'], { REDIS_URL: redisServer.url, REDIS_PREFIX: h.redis.prefix });
    try {
      const { code } = await within(top.exited, 15_000, 'engagement top against a hung Redis');
      assert.equal(code, 2, top.output());
      assert.match(top.output(), /cannot reach Redis at 127\.0\.0\.1:\d+/);
    } finally {
      top.child.kill('SIGKILL');
      redisServer.resume();
      await redisServer.stop();
    }
  });

  it('at start-up: `run` starts (HTTP server up, /readyz 503 "Redis unreachable"), and delivers once Redis answers', async () => {
    const redisServer = await startRedisServer();
    const config = h.config({ redisUrl: redisServer.url });
    redisServer.pause();
    let runtime: Runtime | null = null;
    let server: Server | null = null;
    const starting = h.start({ redisUrl: redisServer.url }).then((r) => (runtime = r));
    try {
      await within(starting, 30_000, 'start-up with a hung Redis');
      assert.ok(runtime);
      server = await within(startHttpServer(runtime, config, silentLogger()), 15_000, 'HTTP server start');
      const s = server;
      await waitFor(
        'redis reported down',
        async () => {
          const r = await readyz(s);
          return r.status === 503 && /Redis unreachable/.test(r.body) && (await sinkUp(s, 'redis')) === 0;
        },
        10_000,
        200,
      );
      await insertEvents(h, 50, 5000);
      redisServer.resume();
      // 400 from the first test (same database and prefix, another Redis: this one starts empty,
      // and the slot replays nothing it confirmed), so only the 50 new ones land here.
      await waitFor(
        'events in Redis once it answers',
        async () => (await countedInRedis(redisServer.url, h.redis.prefix)) === 50,
        30_000,
      );
      await waitFor('ready once Redis answers', async () => (await readyz(s)).status === 200, 30_000);
    } finally {
      redisServer.resume();
      await starting.catch(() => undefined);
      await server?.close();
      await (runtime as Runtime | null)?.stop();
      await redisServer.stop();
    }
  });
});
