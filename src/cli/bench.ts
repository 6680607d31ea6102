import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { runBench, type BenchOptions } from '../bench/run-bench.js';
import { markdown, writeReport } from '../bench/report.js';
import { ROOT } from '../bench/children.js';
import { loadConfig } from '../config.js';
import { readDecimal, readInteger } from '../config-values.js';
import { configError } from '../errors.js';
import { action, decimalFlag, integerFlag } from './common.js';

interface Flags {
  smoke?: boolean;
  rates?: number[];
  singleRowRates?: number[];
  window?: number;
  duration?: number;
  warmup?: number;
  catchup?: number[];
  hog: boolean;
  sustainedRate?: number;
  sustainedSeconds?: number;
  externalBatchSize: number;
  markersPerSecond?: number;
  pollMs: number;
  out: string;
  pipelineFrom: 'auto' | 'dist' | 'tsx';
  cpuProf?: boolean;
  cpuSplit: boolean;
  redisUrl?: string;
}

/** `engagement bench`: end-to-end latency, throughput and cost on this machine, as a JSON report. */
export function registerBench(program: Command): void {
  program
    .command('bench')
    .description(
      'end-to-end benchmark: own embedded Postgres, the real pipeline as a child, all three sinks; JSON + markdown report',
    )
    .option('--smoke', 'tiny rates and counts, finishes in well under a minute (CI)')
    .option(
      '--rates <list>',
      'steady rates, events/s, comma-separated (default 1000,5000; smoke 200)',
      rateList,
    )
    .option(
      '--single-row-rates <list>',
      'steady rates written one event per transaction (as most applications commit), events/s, ' +
        'comma-separated; 0 skips (default 1000; smoke 100)',
      countList('--single-row-rates', 'e.g. 1000'),
    )
    .option(
      '--window <s>',
      'measured seconds per rate (default 60; smoke 2)',
      decimalFlag('--window', { min: 0, minExclusive: true }),
    )
    .option(
      '--duration <s>',
      'the long run at the first rate, RSS sampled over it; 0 skips (default 600; smoke 3)',
      decimalFlag('--duration', { min: 0 }),
    )
    .option(
      '--warmup <s>',
      'warm-up seconds before each rate (default 5; smoke 1)',
      decimalFlag('--warmup', { min: 0 }),
    )
    .option(
      '--catchup <list>',
      'backlogs, comma-separated: events inserted while the pipeline is stopped, then timed through all sinks ' +
        'against a bare consumer; 0 skips (default 200000,2000000; smoke 2000,4000)',
      countList('--catchup', 'e.g. 200000,2000000'),
    )
    .option('--no-hog', 'do not repeat the rates with a CPU hog on one core')
    .option(
      '--sustained-rate <n>',
      'offered events/s of the sustained run with all three sinks; 0 skips (default 20000; smoke 1000)',
      decimalFlag('--sustained-rate', { min: 0 }),
    )
    .option(
      '--sustained-seconds <s>',
      'seconds of the sustained run (default 60; smoke 2)',
      decimalFlag('--sustained-seconds', { min: 0, minExclusive: true }),
    )
    .option(
      '--external-batch-size <n>',
      'EXTERNAL_BATCH_SIZE of the pipeline',
      integerFlag('--external-batch-size', 1),
      100,
    )
    .option(
      '--markers-per-second <n>',
      'latency marker events per second (default 20; smoke 10)',
      decimalFlag('--markers-per-second', { min: 0, minExclusive: true }),
    )
    .option(
      '--poll-ms <n>',
      'Redis poll interval of the latency probe',
      decimalFlag('--poll-ms', { min: 0, minExclusive: true }),
      2,
    )
    .option('--out <dir>', 'report directory', 'bench/results')
    .addOption(
      new Option(
        '--pipeline-from <how>',
        'run the pipeline child from the build or the source (auto: dist unless stale)',
      )
        .choices(['auto', 'dist', 'tsx'])
        .default('auto'),
    )
    .option(
      '--cpu-prof',
      "keep the pipeline children's CPU profiles (taken unless --no-cpu-split) beside the report",
    )
    .option(
      '--no-cpu-split',
      "run the pipeline without V8's profiler: no split of its JS thread by component, but its CPU " +
        'at low rates as in production (the profiler wakes the thread 100 times a second)',
    )
    .option('--redis-url <url>', 'Redis to use [env REDIS_URL]')
    .addHelpText(
      'after',
      "\nStarts a private embedded Postgres (temp dir, free port), uses the machine's Redis under a random key prefix," +
        '\nruns the mock external system and `engagement run` as child processes, and removes all of it afterwards.' +
        '\nWrites <out>/<timestamp>-<mode>.json, <out>/latest.json and <out>/latest.md.',
    )
    .action(
      action(async (flags: Flags) => {
        const smoke = flags.smoke === true;
        if (flags.cpuProf && !flags.cpuSplit)
          throw configError(
            '--cpu-prof keeps the profiles that --no-cpu-split does not take: use one of them',
          );
        const t0 = performance.now();
        const redisUrl = loadConfig({ redisUrl: flags.redisUrl }).redisUrl;
        const controller = new AbortController();
        let interrupts = 0;
        const onSignal = () => {
          // The first Ctrl-C stops at the next step and cleans up; a second one gives up at once.
          if (++interrupts > 1) process.exit(130);
          controller.abort();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        const outDir = path.resolve(flags.out);
        const options: BenchOptions = {
          smoke,
          rates: flags.rates ?? (smoke ? [200] : [1000, 5000]),
          singleRowRates: (flags.singleRowRates ?? (smoke ? [100] : [1000])).filter((r) => r > 0),
          windowSeconds: flags.window ?? (smoke ? 2 : 60),
          durationSeconds: flags.duration ?? (smoke ? 3 : 600),
          warmupSeconds: flags.warmup ?? (smoke ? 1 : 5),
          catchupEvents: flags.catchup ?? (smoke ? [2000, 4000] : [200_000, 2_000_000]),
          // Smoke proves the harness; the hog repeat only doubles its time.
          hog: flags.hog && !smoke,
          sustainedRate: flags.sustainedRate ?? (smoke ? 1000 : 20_000),
          sustainedSeconds: flags.sustainedSeconds ?? (smoke ? 2 : 60),
          externalBatchSize: flags.externalBatchSize,
          markersPerSecond: flags.markersPerSecond ?? (smoke ? 10 : 20),
          pollMs: flags.pollMs,
          redisUrl,
          cli: flags.pipelineFrom,
          cpuSplit: flags.cpuSplit,
          cpuProfileDir: flags.cpuProf ? path.join(outDir, 'profiles') : null,
          command: `engagement ${process.argv.slice(process.argv.indexOf('bench')).join(' ')}`,
          log: (line) =>
            process.stderr.write(`bench: [${((performance.now() - t0) / 1000).toFixed(1)} s] ${line}\n`),
          signal: controller.signal,
        };
        try {
          const report = await runBench(options);
          const files = await writeReport(report, outDir);
          process.stdout.write(`${markdown(report)}\n`);
          process.stderr.write(`bench: wrote ${files.map((f) => path.relative(ROOT, f) || f).join(', ')}\n`);
          return report.correctness?.ok === false || report.incomplete ? 1 : 0;
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }),
    );
}

function rateList(value: string): number[] {
  try {
    return value.split(',').map((v) => readDecimal(v, { min: 0, minExclusive: true }));
  } catch {
    throw new InvalidArgumentError('--rates must be comma-separated positive numbers, e.g. 1000,5000');
  }
}

function countList(flag: string, example: string): (value: string) => number[] {
  return (value) => {
    try {
      return value.split(',').map((v) => readInteger(v, 0));
    } catch {
      throw new InvalidArgumentError(`${flag} must be comma-separated non-negative integers, ${example}`);
    }
  };
}
