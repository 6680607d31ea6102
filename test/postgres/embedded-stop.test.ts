import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../../src/db/embedded.js';
import { stopPostmaster } from '../helpers/postgres.js';
import { freePort } from '../../src/ports.js';

/**
 * A Ctrl-C in a terminal reaches the postmaster too (same process group): `demo` and `bench`
 * then stop a cluster that already shut itself down.
 */
describe('embedded Postgres', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ep-embedded-stop-'));
  chmodSync(dir, 0o755); // run as the postgres user when we are root
  let cluster: EmbeddedPostgresHandle | null = null;
  after(async () => {
    // Bounded: on a regression stop() never settles, and the test's assertion already said so.
    await Promise.race([
      cluster?.stop().catch(() => undefined),
      new Promise((r) => setTimeout(r, 5_000).unref()),
    ]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('stop() returns at once when the postmaster already shut down on its own (a Ctrl-C that reached it too)', async () => {
    const dataDir = path.join(dir, 'pg');
    cluster = await startEmbeddedPostgres({ dataDir, port: await freePort(), fresh: true });
    // What the terminal sends the whole foreground group; throws if it does not shut down.
    await stopPostmaster(dataDir, 'SIGINT', 15_000);
    const stopped = await Promise.race([
      cluster.stop().then(() => 'stopped'),
      new Promise((r) => setTimeout(r, 10_000)).then(() => 'still waiting after 10 s'),
    ]);
    assert.equal(stopped, 'stopped');
  });
});
