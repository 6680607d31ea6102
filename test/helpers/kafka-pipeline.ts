import { afterEach } from 'node:test';
import { spawnCli, type CliProcess } from './cli.js';
import { startKafkaMock, type KafkaMock } from './kafka-mock.js';
import { CONTENT_IDS, createHarness, type Harness } from './pipeline.js';
import { waitFor } from './wait.js';

/** Starts `engagement capture --to-kafka` and waits until it streams the slot. */
export async function startCapture(env: Record<string, string>): Promise<CliProcess> {
  return startAndWait(['capture', '--to-kafka'], env, 'capture streaming', /replication streaming/, 90_000);
}

/** Starts one `engagement work --from-kafka` and waits until it joined its group. */
export async function startWorker(env: Record<string, string>, args: string[] = []): Promise<CliProcess> {
  return startAndWait(['work', '--from-kafka', ...args], env, 'worker joined', /joined group/, 120_000);
}

/**
 * Spawns the CLI and waits for `ready` in its output. A process that never gets there is
 * killed -9 (and waited for) before the error is thrown, with its output: a failed start
 * must not leave a process behind that holds a DuckDB file or a group membership.
 */
async function startAndWait(
  args: string[],
  env: Record<string, string>,
  what: string,
  ready: RegExp,
  timeoutMs: number,
): Promise<CliProcess> {
  const p = spawnCli(args, env);
  try {
    await waitFor(what, () => ready.test(p.output()) || p.child.exitCode !== null, timeoutMs);
  } catch (err) {
    await killAll([p]);
    throw new Error(`${(err as Error).message}; output:\n${p.output().slice(-4000)}`);
  }
  if (!ready.test(p.output())) throw new Error(`${args[0]} exited: ${p.output()}`);
  return p;
}

/** kill -9 every process still running and wait until each is gone (its locks released). */
export async function killAll(procs: CliProcess[]): Promise<void> {
  await Promise.all(
    procs.map(async (p) => {
      if (p.child.exitCode !== null || p.child.signalCode !== null) return;
      p.child.kill('SIGKILL');
      await p.exited;
    }),
  );
}

/**
 * For a describe block whose cases each need their own mock cluster and harness (the cases'
 * topics must not mix, and each case's slot, named like every case's, must be gone before
 * the next case migrates): registers an afterEach that kills the case's processes (waiting
 * until they are gone), drops its harnesses and stops its clusters.
 */
export function kafkaCasesSetup(): {
  cluster(): Promise<KafkaMock>;
  harness(options?: Parameters<typeof createHarness>[0]): Promise<Harness>;
  /** Kept for the afterEach; returns `p`. */
  track(p: CliProcess): CliProcess;
} {
  let procs: CliProcess[] = [];
  let harnesses: Harness[] = [];
  let clusters: KafkaMock[] = [];
  afterEach(async () => {
    await killAll(procs);
    for (const h of harnesses) await h.cleanup();
    for (const k of clusters) await k.stop();
    procs = [];
    harnesses = [];
    clusters = [];
  });
  return {
    async cluster() {
      const kafka = await startKafkaMock(1);
      clusters.push(kafka);
      return kafka;
    },
    async harness(options) {
      const h = await createHarness(options);
      harnesses.push(h);
      return h;
    },
    track(p) {
      procs.push(p);
      return p;
    },
  };
}

/** Partitions a worker was given in its latest group generation. */
export function assignedPartitions(p: CliProcess): number[] {
  const all = [...p.output().matchAll(/partitions (none|[\d,]+)"/g)];
  const last = all.at(-1)?.[1];
  return !last || last === 'none' ? [] : last.split(',').map(Number);
}

/** Inserts `n` events in transactions of `perTx` rows with a short pause between them. */
export async function insertTraffic(h: Harness, n: number, perTx = 100, pauseMs = 10): Promise<void> {
  for (let done = 0; done < n; done += perTx) {
    const count = Math.min(perTx, n - done);
    await h.sql(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
       SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), 'play', now(), (g * 37) % 600000,
              (ARRAY['ios','android','web-chrome','tv'])[1 + (g % 4)], jsonb_build_object('n', g)
       FROM generate_series($2::int, $3::int) AS g`,
      [CONTENT_IDS, done + 1, done + count],
    );
    if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
  }
}

export async function redisTotal(h: Harness): Promise<number> {
  const counts = await Promise.all(
    CONTENT_IDS.map((id) => h.redis.client.get(`${h.redis.prefix}content:count:${id}`)),
  );
  return counts.reduce((sum, c) => sum + Number(c ?? 0), 0);
}

export async function redisTopSum(h: Harness): Promise<number> {
  const top = await h.redis.client.zrange(`${h.redis.prefix}top:content:10m`, '0', '-1', 'WITHSCORES');
  let sum = 0;
  for (let i = 1; i < top.length; i += 2) sum += Number(top[i]);
  return sum;
}

export async function externalStats(
  url: string,
): Promise<{ uniqueEventIds: number; duplicates: number; events: number }> {
  return (await (await fetch(`${url}_stats`)).json()) as {
    uniqueEventIds: number;
    duplicates: number;
    events: number;
  };
}

/** SIGINT and wait; returns the exit code. */
export async function stopCli(p: CliProcess): Promise<number | null> {
  if (p.child.exitCode !== null) return p.child.exitCode;
  p.child.kill('SIGINT');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
  const { code } = await p.exited;
  clearTimeout(timer);
  return code;
}
