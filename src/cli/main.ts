import { Command, CommanderError } from 'commander';
import { registerBackfill } from './backfill.js';
import { registerBench } from './bench.js';
import { registerCapture } from './capture.js';
import { registerDemo } from './demo.js';
import { registerDlq } from './dlq.js';
import { registerGenerate } from './generate.js';
import { registerMigrate } from './migrate.js';
import { registerMockExternal } from './mock-external.js';
import { registerRun } from './run.js';
import { registerStatus } from './status.js';
import { registerTop } from './top.js';
import { registerWork } from './work.js';

const program = new Command('engagement')
  .description('Real-time engagement pipeline: Postgres CDC -> enrichment -> analytics, Redis, external HTTP')
  .version('0.1.0')
  .exitOverride();

for (const register of [
  registerMigrate,
  registerRun,
  registerTop,
  registerMockExternal,
  registerGenerate,
  registerDemo,
  registerBench,
  registerCapture,
  registerWork,
  registerBackfill,
  registerDlq,
  registerStatus,
]) {
  register(program);
}
for (const command of program.commands) command.exitOverride();

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; every usage error exits 2 (commander already printed one line).
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    throw err;
  }
}
