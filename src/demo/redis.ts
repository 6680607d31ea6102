import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { configError, redactSecrets } from '../errors.js';
import { freePort } from './ports.js';

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
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
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

/**
 * `url` when a Redis answers there; otherwise a private `redis-server` on a free loopback
 * port (no persistence, its own process group so a terminal Ctrl-C reaches only the demo,
 * which stops it last-but-one); otherwise one line saying how to get Redis.
 */
export async function ensureRedis(url: string): Promise<DemoRedis> {
  if (await redisAnswers(url)) return { url, pid: null, stop: async () => undefined };
  const binary = findOnPath('redis-server');
  if (!binary) {
    throw configError(
      `no Redis answers at ${redactSecrets(url)} and redis-server is not installed`,
      'install Redis (apt-get install redis-server, brew install redis) or set REDIS_URL',
    );
  }
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
        `no Redis answers at ${redactSecrets(url)} and ${binary} did not start on port ${port}${failed ? `: ${failed.message}` : ''}`,
        'start Redis yourself and set REDIS_URL',
      );
    }
  }
  return { url: ownUrl, pid: child.pid ?? null, stop };
}
