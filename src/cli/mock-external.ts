import { InvalidArgumentError, type Command } from 'commander';
import { startMockExternal } from '../mock-external/server.js';
import { action } from './common.js';

interface Flags {
  port: number;
  host: string;
  failRate: number;
  latencyMs: number;
  secret?: string;
}

/** `engagement mock-external`: the stand-in external system, until SIGINT/SIGTERM. */
export function registerMockExternal(program: Command): void {
  program
    .command('mock-external')
    .description('run the stand-in external HTTP system (counts deliveries and duplicates; injects failures)')
    .option('--port <n>', 'port to listen on (0 = any free port)', numberIn('port', 0, 65535, true), 8788)
    .option('--host <addr>', 'bind address', '127.0.0.1')
    .option(
      '--fail-rate <r>',
      'fraction of requests answered 503, 0..1',
      numberIn('fail-rate', 0, 1, false),
      0,
    )
    .option('--latency-ms <m>', 'delay before each answer', numberIn('latency-ms', 0, 3_600_000, true), 0)
    .option('--secret <s>', 'verify X-Signature with this HMAC key [env EXTERNAL_SECRET]')
    .addHelpText(
      'after',
      '\nAt runtime: POST /_control {"mode":"ok|fail500|fail503|rate429|reject400","count":N,' +
        '"retryAfterSeconds":S,"failRate":R,"latencyMs":M}' +
        '\nInspect: GET /_stats, GET /_events?limit=N, GET /_requests?limit=N; POST /_reset',
    )
    .action(
      action(async (flags: Flags) => {
        const secret = flags.secret ?? (process.env.EXTERNAL_SECRET || undefined);
        const mock = await startMockExternal({ ...flags, secret });
        process.stdout.write(`mock external system listening on ${mock.url}\n`);
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        const stats = (await mock.app.inject({ method: 'GET', url: '/_stats' })).body;
        await mock.close();
        process.stderr.write(`mock external system stopped: ${stats}\n`);
      }),
    );
}

/**
 * A flag parser: commander turns InvalidArgumentError into its one-line usage error
 * (exit 2 via main.ts); any other error type would escape as a stack trace.
 */
function numberIn(name: string, min: number, max: number, integer: boolean) {
  return (value: string): number => {
    const n = Number(value);
    if (
      value.trim() === '' ||
      !Number.isFinite(n) ||
      n < min ||
      n > max ||
      (integer && !Number.isInteger(n))
    ) {
      throw new InvalidArgumentError(
        `--${name} must be ${integer ? 'an integer' : 'a number'} in ${min}..${max}`,
      );
    }
    return n;
  };
}
