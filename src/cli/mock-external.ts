import type { Command } from 'commander';
import { startMockExternal } from '../mock-external/server.js';
import { action, decimalFlag, integerFlag } from './common.js';

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
    .option('--port <n>', 'port to listen on (0 = any free port)', integerFlag('--port', 0, 65535), 8788)
    .option('--host <addr>', 'bind address', '127.0.0.1')
    .option(
      '--fail-rate <r>',
      'fraction of requests answered 503, 0..1',
      decimalFlag('--fail-rate', { min: 0, max: 1 }),
      0,
    )
    .option('--latency-ms <m>', 'delay before each answer', integerFlag('--latency-ms', 0, 3_600_000), 0)
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
