import { Command, CommanderError } from 'commander';
import { commandNamed, commandTerm, COMMANDS } from './commands.js';

// A reader that stops early (`engagement top | head -1`, a status line piped into a log that
// died) closes the pipe: what is still printed has no reader, so it is dropped, and the command
// finishes its work and exits with its own code (an unhandled EPIPE ended it with a stack trace
// and exit 1, wherever it was: half-way through a backfill, a pipeline without its drain).
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
});

const program = new Command('engagement')
  .description('Real-time engagement pipeline: Postgres CDC -> enrichment -> analytics, Redis, external HTTP')
  .version('0.1.0')
  .exitOverride();

const name = commandNamed(process.argv.slice(2));
if (name) {
  (await COMMANDS[name].load())(program);
} else {
  // Top-level help, or an unknown command: the list is all commander needs.
  for (const [command, { summary }] of Object.entries(COMMANDS))
    program.command(command).description(summary).allowUnknownOption();
  program.configureHelp({
    subcommandTerm: (cmd) => (cmd.name() === 'help' ? 'help [command]' : commandTerm(cmd.name())),
  });
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
