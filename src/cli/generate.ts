import { Option, type Command } from 'commander';
import { requireDatabaseUrl } from '../config.js';
import { redactSecrets } from '../errors.js';
import { runGenerator, type GeneratorProgress } from '../generator/writer.js';
import {
  action,
  configFrom,
  decimalFlag,
  integerFlag,
  SOURCE_CONFIG_KEYS,
  withConfigOptions,
} from './common.js';

/** `engagement generate`: realistic synthetic traffic into the source tables. */
export function registerGenerate(program: Command): void {
  const command = program
    .command('generate')
    .description('insert realistic synthetic engagement events into Postgres at a steady rate')
    .addOption(
      new Option('--rate <n>', 'events per second')
        .argParser(decimalFlag('--rate', { min: 0, minExclusive: true }))
        .makeOptionMandatory(),
    )
    .addOption(
      new Option('--duration <s>', 'stop after S seconds')
        .argParser(decimalFlag('--duration', { min: 0, minExclusive: true }))
        .conflicts('count'),
    )
    .addOption(new Option('--count <n>', 'stop after N events').argParser(integerFlag('--count', 1)))
    .addOption(
      new Option('--seed <n>', 'traffic seed, for a reproducible run (default: random)').argParser(
        integerFlag('--seed', 0, 2 ** 32 - 1),
      ),
    )
    .addOption(
      new Option(
        '--rows-per-transaction <n>',
        'events per INSERT (each its own transaction) at most; 1: one event per transaction, as most applications write (default 2000)',
      ).argParser(integerFlag('--rows-per-transaction', 1, 2000)),
    )
    .addHelpText(
      'after',
      '\nWithout --duration or --count it runs until Ctrl-C. The tables must exist: run `engagement migrate` first.' +
        ' Rows go into EVENTS_TABLE / CONTENT_TABLE as their columns and key types are found in the catalog.',
    );
  withConfigOptions(command, ['databaseUrl', ...SOURCE_CONFIG_KEYS]).action(
    action(
      async (
        opts: {
          rate: number;
          duration?: number;
          count?: number;
          seed?: number;
          rowsPerTransaction?: number;
        } & Record<string, unknown>,
      ) => {
        const config = configFrom(opts);
        const databaseUrl = requireDatabaseUrl(config);
        const controller = new AbortController();
        let interrupts = 0;
        const onSignal = () => {
          // First Ctrl-C finishes the current insert and prints the summary; a second one gives up.
          if (++interrupts > 1) process.exit(130);
          controller.abort();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        const progress = progressPrinter();
        try {
          let postgresGone = false;
          const result = await runGenerator({
            databaseUrl,
            source: config,
            rate: opts.rate,
            durationSeconds: opts.duration,
            count: opts.count,
            seed: opts.seed,
            rowsPerTransaction: opts.rowsPerTransaction,
            signal: controller.signal,
            // Printed once the tables are known good, so a setup error stays a single line.
            onStart: ({ contentItems, eventsTable }) =>
              process.stderr.write(
                `generating ${opts.rate} events/s over ${contentItems} content items into ${redactSecrets(databaseUrl)} (${eventsTable})` +
                  `${opts.duration || opts.count ? '' : ' (Ctrl-C to stop)'}\n`,
              ),
            onProgress: progress.update,
            // Several INSERTs run at once: one line per outage, not one per INSERT.
            onPostgresGone: (error) => {
              if (postgresGone) return;
              postgresGone = true;
              process.stderr.write(`Postgres unavailable (${error}): waiting for it\n`);
            },
            onPostgresBack: () => {
              if (!postgresGone) return;
              postgresGone = false;
              process.stderr.write('Postgres is back: generating again\n');
            },
          });
          progress.finish();
          process.stdout.write(
            `inserted ${result.inserted} events in ${result.seconds.toFixed(2)} s: ${result.achievedRate.toFixed(1)} events/s (target ${opts.rate}/s)\n`,
          );
        } finally {
          progress.finish();
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      },
    ),
  );
}

/** One status line on stderr: rewritten in place on a terminal, a new line every 5 s otherwise. */
function progressPrinter() {
  const tty = process.stderr.isTTY === true;
  const everyMs = tty ? 250 : 5000;
  // Off a terminal the first line waits a full interval (no "0 events" line in CI logs).
  let last = tty ? 0 : Date.now();
  let open = false;
  return {
    update(p: GeneratorProgress): void {
      const now = Date.now();
      if (now - last < everyMs) return;
      last = now;
      const pct = p.target ? ` ${Math.floor((100 * p.inserted) / p.target)}%` : '';
      const line = `${p.inserted} events in ${p.elapsedSeconds.toFixed(1)} s (${p.achievedRate.toFixed(1)}/s)${pct}`;
      if (tty) {
        process.stderr.write(`\r\x1b[2K${line}`);
        open = true;
      } else {
        process.stderr.write(`${line}\n`);
      }
    },
    finish(): void {
      if (open) process.stderr.write('\n');
      open = false;
    },
  };
}
