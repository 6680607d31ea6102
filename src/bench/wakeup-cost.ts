import { Redis } from 'ioredis';

/**
 * What one wake-up of a Node process costs on this machine, paced the way a pipeline at a low
 * rate is woken (every 25 ms: 40 transactions/s) and back to back. At low rates the pipeline's
 * CPU per event is mostly such wake-ups (a replication read, a Redis reply, an HTTP reply, a
 * timer), so this is the floor under `engagement bench`'s 1,000/s figure.
 * Measured: an empty timer callback, a Redis PING, and an EVALSHA of a no-op script with
 * `--args` arguments (the Redis sink's call for a 50-row transaction passes about 440-500).
 * CPU is this process's (process.cpuUsage, all threads) per iteration.
 * Usage: node --import tsx src/bench/wakeup-cost.ts [--rates 40,1000] [--seconds 5] [--args 480]
 */

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const rates = arg('rates', '40,1000').split(',').map(Number);
const seconds = Number(arg('seconds', '5'));
const argCount = Number(arg('args', '480'));
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

const redis = new Redis(url) as Redis & { noop(numKeys: number, ...args: string[]): Promise<number> };
redis.defineCommand('noop', { lua: 'return 1' });
const args = Array.from({ length: argCount }, (_, i) => `engagement:bench:wakeup:argument:${i}`);

const kinds: Record<string, () => Promise<unknown>> = {
  timer: async () => undefined,
  ping: () => redis.ping(),
  evalsha: () => redis.noop(0, ...args),
};

/** CPU µs per iteration of `work`, `rate` times a second (0: back to back) for `seconds`. */
async function measure(work: () => Promise<unknown>, rate: number): Promise<number> {
  const n = Math.max(50, Math.round((rate || 1000) * seconds));
  for (let i = 0; i < 50; i++) await work(); // warm-up: compiled, connection hot
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await work();
    if (rate === 0) continue;
    const wait = t0 + ((i + 1) * 1000) / rate - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
  const cpu = process.cpuUsage(cpu0);
  return Math.round((cpu.user + cpu.system) / n);
}

const results: Record<string, Record<string, number>> = {};
for (const [kind, work] of Object.entries(kinds)) {
  results[kind] = {};
  for (const rate of [...rates, ...(kind === 'timer' ? [] : [0])]) {
    results[kind][rate === 0 ? 'back-to-back' : `${rate}/s`] = await measure(work, rate);
  }
}
redis.disconnect();
console.log(JSON.stringify({ cpuMicrosPerIteration: results, evalshaArgs: argCount }, null, 1));
