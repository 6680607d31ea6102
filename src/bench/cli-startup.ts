import { spawnSync } from 'node:child_process';
import type { CliCommand } from './children.js';

export interface CliStartup {
  /** Median wall time of `engagement --help`, process spawn to exit. */
  helpMs: number;
  /** Median wall time of `engagement top --help` (loads one command's modules). */
  commandHelpMs: number;
  runs: number;
}

/**
 * How long the CLI takes to answer `--help`: the first thing a new user runs, and what every
 * command pays before it does anything. Medians of a few runs, on the same (busy) machine as
 * the rest of the bench.
 */
export function measureCliStartup(cli: CliCommand, runs = 5): CliStartup {
  const median = (args: string[]): number => {
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const started = performance.now();
      const r = spawnSync(process.execPath, [...cli.argv, ...args], { stdio: 'ignore' });
      if (r.status !== 0) throw new Error(`engagement ${args.join(' ')} exited ${r.status}`);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return Math.round(times[Math.floor(times.length / 2)]!);
  };
  return { helpMs: median(['--help']), commandHelpMs: median(['top', '--help']), runs };
}
