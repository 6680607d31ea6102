import { spawn } from 'node:child_process';
import { Option, type Command } from 'commander';
import { runDemo } from '../demo/run-demo.js';
import { action, decimalFlag, integerFlag } from './common.js';
import { onLauncherExit } from './signals.js';
import { keepHeapSmall } from './heap.js';

/** Set in the environment of the demo's worker process (see below). */
const WORKER_ENV = 'ENGAGEMENT_DEMO_WORKER';
const STARTED_ENV = 'ENGAGEMENT_DEMO_STARTED_AT';

interface DemoFlags {
  fresh: boolean;
  rate: number;
  port?: number;
  dataDir: string;
  pgPort: number;
}

/** `engagement demo`: the whole system on one machine, with the dashboard. */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'run the whole system on this machine: embedded Postgres, Redis, generator, pipeline, mock external system, dashboard',
    )
    .option('--fresh', 'delete the data directory first (start over)', false)
    .addOption(
      new Option('--rate <n>', 'generated events per second')
        .argParser(decimalFlag('--rate', { min: 0, minExclusive: true }))
        .default(200),
    )
    .addOption(
      new Option('--port <n>', 'dashboard/API port, 0 = any free port [env PORT] (default: 8787)').argParser(
        integerFlag('--port', 0, 65535),
      ),
    )
    .option('--data-dir <dir>', 'where Postgres and DuckDB keep their data', './data')
    .addOption(
      new Option('--pg-port <n>', 'embedded Postgres port (a free one when busy)')
        .argParser(integerFlag('--pg-port', 0, 65535))
        .default(54329),
    )
    .addHelpText(
      'after',
      '\nDATABASE_URL set: uses that Postgres instead of the embedded one (it needs wal_level=logical).' +
        '\nREDIS_URL set: that Redis (a private redis-server when it does not answer). Unset: a private redis-server' +
        "\n  on a free port when installed, else the Redis at 127.0.0.1:6379 with keys under 'demo:'." +
        '\nWrites <data-dir>/demo.env (DATABASE_URL, REDIS_URL, ...): `source data/demo.env` for other commands.' +
        '\nANALYTICS_URL set: used instead of <data-dir>/engagement.duckdb. EXTERNAL_URL set: used instead of the mock.' +
        '\nCtrl-C stops everything in order; the next run resumes where this one stopped.',
    )
    .action(
      action(async (flags: DemoFlags) => {
        if (process.env[WORKER_ENV] !== '1') return supervise();
        keepHeapSmall();
        const controller = new AbortController();
        let signals = 0;
        const onSignal = () => {
          signals += 1;
          if (signals === 1) return controller.abort();
          process.stdout.write('\nsecond signal: exiting now (Postgres and Redis are told to stop)\n');
          process.exit(130);
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        process.on('SIGHUP', onSignal);
        try {
          return await runDemo({
            ...flags,
            startedAt: Number(process.env[STARTED_ENV]) || Date.now(),
            signal: controller.signal,
          });
        } finally {
          // Anything a library left open must not keep a stopped demo alive.
          setTimeout(() => process.exit(), 3000).unref();
        }
      }),
    );
}

/**
 * A terminal's Ctrl-C signals the whole foreground process group — Postgres and initdb
 * included, which would then shut down before the pipeline has drained. So the demo runs
 * in a worker in its own process group (and Postgres and redis-server with it); this
 * process only forwards SIGINT/SIGTERM/SIGHUP and exits with the worker's code. Signals
 * arriving within half a second of each other count once (npx forwards the terminal's
 * Ctrl-C that this process also received).
 */
function supervise(): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    detached: true,
    env: { ...process.env, [WORKER_ENV]: '1', [STARTED_ENV]: String(Date.now()) },
  });
  let lastForward = 0;
  const forward = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (now - lastForward < 500) return;
    lastForward = now;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, forward);
  // Under npx a signal to the npx pid only reaches this process as its launcher's exit.
  const stopWatching = onLauncherExit(() => forward('SIGTERM'));
  return new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      stopWatching();
      for (const s of signals) process.off(s, forward);
      resolve(code ?? (signal === 'SIGKILL' ? 137 : 130));
    });
  });
}
