/**
 * Loaded (`--import`) into every file of the unit tier by scripts/test.mjs: a unit test that
 * opens a connection, listens on a port or starts a process fails at once, so the tier stays
 * runnable without Postgres, Redis or anything else (and a test needing them moves to its tier).
 * Reading files stays allowed: loading modules is reading files.
 */
import childProcess from 'node:child_process';
import net from 'node:net';
import { syncBuiltinESMExports } from 'node:module';

function refuse(what: string): never {
  throw new Error(
    `unit tests do no I/O: ${what} (move this test to the tier of what it needs, see scripts/test.mjs)`,
  );
}

net.Socket.prototype.connect = function connect() {
  refuse('a network connection');
};
net.Server.prototype.listen = function listen() {
  refuse('listening on a port');
};
for (const name of ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork'] as const) {
  Object.defineProperty(childProcess, name, {
    value: () => refuse(`child_process.${name}`),
    configurable: true,
    writable: true,
  });
}
// `import { spawn } from 'node:child_process'` reads the patched functions too.
syncBuiltinESMExports();
