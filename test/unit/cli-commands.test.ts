import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Command, Help } from 'commander';
import { commandNamed, commandTerm, COMMANDS } from '../../src/cli/commands.js';

describe('the CLI command table (commands are imported only when run)', () => {
  it('lists each command with the description its module registers', async () => {
    for (const [name, { summary, load }] of Object.entries(COMMANDS)) {
      const program = new Command('engagement');
      (await load())(program);
      const registered = program.commands.find((c) => c.name() === name);
      assert.ok(registered, `${name}: its module registers no such command`);
      assert.equal(summary, registered.description(), `${name}: summary differs from its module`);
      assert.equal(commandTerm(name), new Help().subcommandTerm(registered), `${name}: listed differently`);
    }
  });

  it('finds the command on the command line, `help <command>` included', () => {
    assert.equal(commandNamed(['top', '--limit', '3']), 'top');
    assert.equal(commandNamed(['--help']), null);
    assert.equal(commandNamed(['help', 'dlq']), 'dlq');
    assert.equal(commandNamed(['nosuch']), null);
    assert.equal(commandNamed([]), null);
  });
});
