import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { configError, redactSecrets } from '../errors.js';
import { isRefusedDatabase, refuseUnselectedDatabase } from '../sinks/redis/connection.js';
import { freePort } from '../ports.js';

export interface DemoRedis {
  url: string;
  /** pid of the redis-server the demo started, or null when an existing Redis answered. */
  pid: number | null;
  stop(): Promise<void>;
}

/** Answers PING within `timeoutMs`? */
export async function redisAnswers(url: string, timeoutMs = 1500): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs, // a Redis that accepts connections but does not answer: not answering
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  client.on('error', () => undefined);
  refuseUnselectedDatabase(client, url);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch (err) {
    // It answered, but not with REDIS_URL's database: say so rather than start another Redis.
    if (isRefusedDatabase(err)) throw err;
    return false;
  } finally {
    client.disconnect();
  }
}

/** The first executable `name` on PATH, or null. */
export function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** The key prefix the demo uses on a Redis it did not start (so it cannot clash with real keys). */
export const SHARED_REDIS_PREFIX = 'demo:';

/**
 * Where the demo's Redis is. `url` is REDIS_URL, or undefined when the user set none:
 * - no REDIS_URL and `redis-server` installed: a private one on a free loopback port (no
 *   persistence, its own process group so a terminal Ctrl-C reaches only the demo, which
 *   stops it last-but-one), so the demo never writes into whatever Redis listens on 6379;
 * - no REDIS_URL and no binary: the Redis at 127.0.0.1:6379, under the `demo:` key prefix
 *   (`shared` is true; the caller says so);
 * - REDIS_URL set: that Redis when it answers, else a private redis-server as above.
 * Otherwise one line saying how to get Redis.
 */
export async function ensureRedis(
  url: string | undefined,
): Promise<DemoRedis & { shared: boolean; reason: string | null }> {
  const binary = findOnPath('redis-server');
  if (url === undefined && binary) {
    return { ...(await startRedisServer(binary)), shared: false, reason: 'no REDIS_URL given' };
  }
  const target = url ?? DEFAULT_REDIS_URL;
  if (await redisAnswers(target))
    return { url: target, pid: null, stop: async () => undefined, shared: url === undefined, reason: null };
  if (!binary) {
    throw configError(
      `no Redis answers at ${redactSecrets(target)} and redis-server is not installed`,
      'install Redis (apt-get install redis-server, brew install redis) or set REDIS_URL',
    );
  }
  return {
    ...(await startRedisServer(binary)),
    shared: false,
    reason: `no Redis answered at ${redactSecrets(target)}`,
  };
}

const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

async function startRedisServer(binary: string): Promise<DemoRedis> {
  const port = await freePort();
  const child = spawn(
    binary,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    { stdio: 'ignore', detached: true },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let alive = true;
  void exited.then(() => (alive = false));
  // If the demo dies abruptly, do not leave the server behind.
  const killOnExit = () => {
    if (alive) child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);
  const ownUrl = `redis://127.0.0.1:${port}`;
  const stop = async () => {
    process.off('exit', killOnExit);
    if (!alive) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (await redisAnswers(ownUrl, 500)) break;
    const failed = await Promise.race([spawnError, new Promise<null>((r) => setTimeout(() => r(null), 100))]);
    if (failed || !alive || Date.now() > deadline) {
      await stop();
      throw configError(
        `the demo's own ${binary} did not start on port ${port}${failed ? `: ${failed.message}` : ''}`,
        'start Redis yourself and set REDIS_URL',
      );
    }
  }
  return { url: ownUrl, pid: child.pid ?? null, stop };
}
