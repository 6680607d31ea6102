/**
 * Paired A/B of two builds: both pipelines consume the same traffic at the same time, each on
 * its own replication slot, Redis prefix, DuckDB file and mock external system, and each one's
 * CPU is read from /proc over the same consecutive windows. Whatever else loads the machine
 * (other tenants of the host, a CI run) loads both at once, so the per-window ratio B / A holds
 * still where two `engagement bench` runs taken minutes apart differ by ±15 %.
 *
 * Traffic: the bench's shape at `--rate` (multi-row INSERTs every 50 ms) plus `--markers`
 * one-row transactions a second, as `engagement bench` mixes in its latency markers.
 *
 * Usage (each tree built with `npm run build`):
 *   node --import tsx src/bench/paired.ts --a /path/to/treeA --b /path/to/treeB \
 *     [--rate 1000] [--markers 20] [--warmup 60] [--window 30] [--windows 8] [--out file.json]
 *     [--env-a K=V,K=V] [--env-b K=V,...]   (settings of one side only: one build, two configurations)
 * Also reports each pipeline's largest RSS, sampled every second, and its VmHWM.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { startEmbeddedPostgres } from '../db/embedded.js';
import { migrate } from '../db/migrate.js';
import { runGenerator } from '../generator/writer.js';
import { deleteKeys } from './run-bench.js';
import { freePort } from '../ports.js';
import { CliChild, waitForHttp } from './children.js';
import { cpuSeconds, memory } from './proc.js';

const flag = (name: string, fallback?: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? process.argv[i + 1] : fallback;
  if (value === undefined) throw new Error(`--${name} is required`);
  return value;
};
const trees = { a: path.resolve(flag('a')), b: path.resolve(flag('b')) };
const rate = Number(flag('rate', '1000'));
const markers = Number(flag('markers', '20'));
const warmup = Number(flag('warmup', '60'));
const windowSeconds = Number(flag('window', '30'));
const windows = Number(flag('windows', '8'));
const out = process.argv.includes('--out') ? flag('out') : null;
const envOf = (side: 'a' | 'b'): Record<string, string> =>
  Object.fromEntries(
    flag(`env-${side}`, '')
      .split(',')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
const extraEnv = { a: envOf('a'), b: envOf('b') };
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Voluntary context switches of a process's main thread: how often it slept and was woken. */
function mainThreadWakeups(pid: number): number {
  const status = readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8');
  return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
}

const cleanups: (() => Promise<unknown>)[] = [];
const tmp = mkdtempSync(path.join(tmpdir(), 'engagement-paired-'));
chmodSync(tmp, 0o755); // embedded Postgres runs as the postgres user when we are root
cleanups.push(() => rm(tmp, { recursive: true, force: true }));
const stop = new AbortController();
// Ctrl-C (or a kill) ends the next wait, so the cleanups below stop Postgres, the pipelines and
// the mocks instead of leaving them running.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => stop.abort());
try {
  const cluster = await startEmbeddedPostgres({
    dataDir: path.join(tmp, 'pg'),
    port: await freePort(),
    fresh: true,
  });
  cleanups.push(() => cluster.stop());
  await cluster.createDatabase('paired');
  const databaseUrl = cluster.urlFor('paired');
  const redis = new Redis(redisUrl);
  cleanups.push(async () => redis.disconnect()); // last: the key deletions below run before it

  const pipelines: { name: 'a' | 'b'; child: CliChild; pid: number }[] = [];
  for (const name of ['a', 'b'] as const) {
    const slot = `engagement_paired_${name}`;
    await migrate(databaseUrl, { slotName: slot, publicationName: 'engagement_paired' });
    const cli = { argv: [path.join(trees[name], 'bin', 'engagement.js')], mode: 'dist' as const };
    const mockPort = await freePort();
    const mock = new CliChild(cli, ['mock-external', '--port', String(mockPort)], {});
    cleanups.push(() => mock.stop(10_000));
    await waitForHttp(`http://127.0.0.1:${mockPort}/healthz`, mock);
    const prefix = `paired:${randomBytes(4).toString('hex')}:`;
    cleanups.push(() => deleteKeys(redis, prefix));
    const port = await freePort();
    const env: Record<string, string> = {
      DATABASE_URL: databaseUrl,
      SLOT_NAME: slot,
      PUBLICATION_NAME: 'engagement_paired',
      REDIS_URL: redisUrl,
      REDIS_PREFIX: prefix,
      ANALYTICS_URL: `duckdb:${path.join(tmp, `${name}.duckdb`)}`,
      EXTERNAL_URL: `http://127.0.0.1:${mockPort}/events`,
      EXTERNAL_BATCH_SIZE: '100',
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      ...extraEnv[name],
    };
    // K= (empty) unsets K: e.g. EXTERNAL_URL= runs that side without its external sink.
    for (const [k, v] of Object.entries(extraEnv[name])) if (v === '') delete env[k];
    const child = new CliChild(cli, ['run'], env);
    cleanups.push(() => child.stop(10_000));
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, child);
    pipelines.push({ name, child, pid: child.pid! });
  }

  // Settled on their own: after a signal the run leaves through `finally` without awaiting them,
  // and an INSERT cut off by Postgres's own shutdown must not end the clean-ups as an unhandled rejection.
  const traffic = [
    runGenerator({ databaseUrl, rate, signal: stop.signal }),
    runGenerator({ databaseUrl, rate: markers, rowsPerTransaction: 1, signal: stop.signal }),
  ].map((run) => run.catch((err: unknown) => (stop.signal.aborted ? undefined : Promise.reject(err))));
  const sleep = (s: number) => delay(s * 1000, undefined, { signal: stop.signal });
  console.error(`paired: warm-up ${warmup} s at ${rate}/s + ${markers} one-row transactions/s`);
  await sleep(warmup);

  const peakRss = { a: 0, b: 0 };
  const rssSampler = setInterval(() => {
    for (const p of pipelines)
      if (p.child.running) peakRss[p.name] = Math.max(peakRss[p.name], Math.round(memory(p.pid)?.rssMb ?? 0));
  }, 1000);
  cleanups.push(async () => clearInterval(rssSampler));
  const rows: { a: number; b: number; ratio: number; wakeA: number; wakeB: number }[] = [];
  const events = (rate + markers) * windowSeconds;
  for (let w = 0; w < windows; w++) {
    const cpu0 = pipelines.map((p) => cpuSeconds(p.pid)!);
    const wake0 = pipelines.map((p) => mainThreadWakeups(p.pid));
    await sleep(windowSeconds);
    for (const p of pipelines)
      if (!p.child.running) throw new Error(`${p.name} exited:\n${p.child.output()}`);
    const [a, b] = pipelines.map((p, i) => ((cpuSeconds(p.pid)! - cpu0[i]) * 1e6) / events);
    const [wakeA, wakeB] = pipelines.map((p, i) => (mainThreadWakeups(p.pid) - wake0[i]) / windowSeconds);
    const row = { a: +a.toFixed(1), b: +b.toFixed(1), ratio: +(b / a).toFixed(3), wakeA, wakeB };
    rows.push(row);
    console.error(`window ${w + 1}: ${JSON.stringify(row)}`);
  }
  stop.abort();
  await Promise.allSettled(traffic);

  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const summary = {
    trees,
    rate,
    markers,
    warmupSeconds: warmup,
    windowSeconds,
    cpuUsPerEvent: { a: median(rows.map((r) => r.a)), b: median(rows.map((r) => r.b)) },
    ratioBtoA: {
      median: median(rows.map((r) => r.ratio)),
      min: Math.min(...rows.map((r) => r.ratio)),
      max: Math.max(...rows.map((r) => r.ratio)),
    },
    peakRssMb: peakRss,
    vmHwmMb: {
      a: Math.round(memory(pipelines[0].pid)?.hwmMb ?? NaN),
      b: Math.round(memory(pipelines[1].pid)?.hwmMb ?? NaN),
    },
    env: extraEnv,
    mainThreadWakeupsPerSecond: { a: median(rows.map((r) => r.wakeA)), b: median(rows.map((r) => r.wakeB)) },
    windows: rows,
  };
  console.log(JSON.stringify(summary, null, 2));
  if (out) writeFileSync(out, `${JSON.stringify(summary, null, 2)}\n`);
} finally {
  stop.abort();
  for (const fn of cleanups.reverse()) await fn().catch((err) => console.error(`cleanup: ${String(err)}`));
}
