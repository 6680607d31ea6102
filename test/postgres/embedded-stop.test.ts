import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';
import { freePort } from '../helpers/redis-server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A Ctrl-C in a terminal reaches the postmaster too (same process group): `demo` and `bench`
 * then stop a cluster that already shut itself down.
 */
describe('embedded Postgres', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ep-embedded-stop-'));
  chmodSync(dir, 0o755); // run as the postgres user when we are root
  let pid = 0;
  after(() => {
    if (pid && alive(pid)) process.kill(pid, 'SIGQUIT');
    rmSync(dir, { recursive: true, force: true });
  });

  it('stop() returns at once when the postmaster already shut down on its own (a Ctrl-C that reached it too)', async () => {
    const dataDir = path.join(dir, 'pg');
    const cluster = await startEmbeddedPostgres({ dataDir, port: await freePort(), fresh: true });
    pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(pid, 'SIGINT'); // what the terminal sends the whole foreground group
    for (let waited = 0; alive(pid) && waited < 15_000; waited += 50) await sleep(50);
    assert.equal(alive(pid), false, 'the postmaster shut down');
    const stopped = await Promise.race([
      cluster.stop().then(() => 'stopped'),
      sleep(10_000).then(() => 'still waiting after 10 s'),
    ]);
    assert.equal(stopped, 'stopped');
  });
});
