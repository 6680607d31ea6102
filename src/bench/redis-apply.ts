/**
 * Micro-benchmark of the Redis sink's per-batch Lua script (the stream's fast path): writes
 * `--batches` batches of `--size` enriched events over 500 content ids through RedisSink.write
 * and reports events/s. Used to compare the script before and after a change.
 * Usage: node --import tsx src/bench/redis-apply.ts [--batches 200] [--size 1000] [--out FILE]
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import type { Batch } from '../domain/types.js';
import { silentLogger } from '../logger.js';
import { RedisSink } from '../sinks/redis/redis-sink.js';
import { redisBenchBatch } from './redis-batches.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const batches = Number(arg('batches', '200'));
const size = Number(arg('size', '1000'));
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `bench:${randomBytes(4).toString('hex')}:`;

function makeBatch(seq: number, firstId: number): Batch {
  return redisBenchBatch(seq, firstId, size, { spreadSeconds: 600 });
}

const sink = new RedisSink({ url, prefix, logger: silentLogger() });
await sink.start();
const prepared = Array.from({ length: batches }, (_, b) => makeBatch(b + 1, 1 + b * size));
for (let b = 0; b < 5; b++) await sink.write(makeBatch(100_000 + b, 10_000_000 + b * size)); // warm-up
const cleanup = new Redis(url);
const luaBefore = await scriptStats(cleanup);
const started = performance.now();
for (const batch of prepared) await sink.write(batch);
const seconds = (performance.now() - started) / 1000;
const luaAfter = await scriptStats(cleanup);
await sink.stop();
const result = {
  batches,
  batchSize: size,
  events: batches * size,
  seconds: Number(seconds.toFixed(3)),
  eventsPerSecond: Math.round((batches * size) / seconds),
  msPerBatch: Number(((seconds * 1000) / batches).toFixed(3)),
  // Time Redis itself spent in the script (INFO commandstats; shared server, so other clients' scripts add noise).
  luaMsPerBatch: Number(
    ((luaAfter.usec - luaBefore.usec) / 1000 / Math.max(1, luaAfter.calls - luaBefore.calls)).toFixed(3),
  ),
  luaCalls: luaAfter.calls - luaBefore.calls,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
const out = arg('out', '');
if (out) writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
const keys = await cleanup.keys(`${prefix}*`);
for (let i = 0; i < keys.length; i += 500) await cleanup.del(...keys.slice(i, i + 500));
cleanup.disconnect();

/** Calls and microseconds Redis spent in EVALSHA/EVAL so far (INFO commandstats). */
async function scriptStats(redis: Redis): Promise<{ calls: number; usec: number }> {
  const info = await redis.info('commandstats');
  let calls = 0;
  let usec = 0;
  for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+),usec=(\d+)/gm)) {
    calls += Number(m[1]);
    usec += Number(m[2]);
  }
  return { calls, usec };
}
