/**
 * What the Redis sink costs at a steady trickle, on a private redis-server (so other clients of
 * the machine's Redis do not count): redis-server CPU (utime + stime from /proc/<pid>/stat) and
 * this process's CPU (process.cpuUsage) per event while writing `--rate` batches/s of `--size`
 * events for `--seconds`, with the write latency; then the time from the start of a write to its
 * event being visible in top:content:10m (polled every millisecond from a second connection).
 * Usage: node --import tsx src/bench/redis-cost.ts [--rate 50] [--size 20] [--seconds 20] [--probes 200]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import type { Batch } from '../domain/types.js';
import { silentLogger } from '../logger.js';
import { RedisSink } from '../sinks/redis/redis-sink.js';
import { redisBenchBatch } from './redis-batches.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return Number(i >= 0 ? process.argv[i + 1] : fallback);
};
const rate = arg('rate', '50');
const size = arg('size', '20');
const seconds = arg('seconds', '20');
const probes = arg('probes', '200');
const prefix = '{bench}:';

const port = await new Promise<number>((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => {
    const address = server.address();
    server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
  });
});
const server = spawn(
  'redis-server',
  ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  { stdio: 'ignore' },
);
const url = `redis://127.0.0.1:${port}`;
const reader = new Redis(url, { retryStrategy: (n) => (n > 50 ? null : 50) });
reader.on('error', () => undefined); // refused until redis-server listens; ioredis retries
await reader.ping();

/** redis-server's CPU so far, in ms (clock ticks of 10 ms). */
function serverCpuMs(): number {
  const fields = readFileSync(`/proc/${server.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime (fields 14, 15)
}

let nextId = 1;
function makeBatch(seq: number, probe?: string): Batch {
  const batch = redisBenchBatch(seq, nextId, size, { spreadSeconds: 5, probe });
  nextId += size;
  return batch;
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return Number(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))].toFixed(2));
};
const sleepUntil = (t: number) => new Promise((r) => setTimeout(r, Math.max(0, t - performance.now())));

const sink = new RedisSink({ url, prefix, logger: silentLogger() });
await sink.start();
let seq = 1;
for (let i = 0; i < 20; i++) await sink.write(makeBatch(seq++)); // warm-up
await new Promise((r) => setTimeout(r, 1_500));

// redis-server's CPU while idle (its cron), to tell apart from the writes' share.
const idleBefore = serverCpuMs();
await new Promise((r) => setTimeout(r, 3_000));
const idleMsPerSecond = (serverCpuMs() - idleBefore) / 3;

// Phase 1: CPU per event at a steady rate.
await reader.config('RESETSTAT');
const count = rate * seconds;
const interval = 1000 / rate;
const writeMs: number[] = [];
const serverBefore = serverCpuMs();
const jsBefore = process.cpuUsage();
const started = performance.now();
for (let i = 0; i < count; i++) {
  await sleepUntil(started + i * interval);
  const batch = makeBatch(seq++);
  const t0 = performance.now();
  await sink.write(batch);
  writeMs.push(performance.now() - t0);
}
await sleepUntil(started + count * interval + 200); // let a trailing refresh (if any) run
const jsUsage = process.cpuUsage(jsBefore);
const serverMs = serverCpuMs() - serverBefore;
const elapsed = (performance.now() - started) / 1000;
// Time inside commands as Redis counts it (INFO commandstats; scripts include their calls).
const commands: Record<string, { calls: number; usecPerCall: number }> = {};
for (const m of (await reader.info('commandstats')).matchAll(/^cmdstat_(\S+):calls=(\d+),usec=(\d+),/gm))
  if (m[1] !== 'info' && m[1] !== 'config')
    commands[m[1]] = { calls: Number(m[2]), usecPerCall: Number((Number(m[3]) / Number(m[2])).toFixed(1)) };

// Phase 2: write start -> visible in top:content:10m.
const visibleMs: number[] = [];
for (let i = 0; i < probes; i++) {
  const probe = `probe-${i}`;
  const t0 = performance.now();
  const written = sink.write(makeBatch(seq++, probe));
  for (;;) {
    if ((await reader.zscore(`${prefix}top:content:10m`, probe)) !== null) break;
    await new Promise((r) => setTimeout(r, 1));
  }
  visibleMs.push(performance.now() - t0);
  await written;
  await new Promise((r) => setTimeout(r, 20));
}

await sink.stop();
reader.disconnect();
server.kill('SIGKILL');
const events = count * size;
process.stdout.write(
  `${JSON.stringify({
    batchesPerSecond: rate,
    batchSize: size,
    seconds: Number(elapsed.toFixed(2)),
    events,
    redisServerCpuMs: serverMs,
    redisServerUsPerEvent: Number(((serverMs * 1000) / events).toFixed(1)),
    redisServerIdleMsPerSecond: Number(idleMsPerSecond.toFixed(1)),
    commands,
    jsCpuMs: Math.round((jsUsage.user + jsUsage.system) / 1000),
    jsUsPerEvent: Number(((jsUsage.user + jsUsage.system) / events).toFixed(1)),
    writeMs: { p50: percentile(writeMs, 50), p99: percentile(writeMs, 99) },
    visibleMs: {
      p50: percentile(visibleMs, 50),
      p99: percentile(visibleMs, 99),
      max: percentile(visibleMs, 100),
    },
  })}\n`,
);
process.exit(0);
