#!/usr/bin/env node
// Test entry point (`npm test`): starts one embedded Postgres 18 with wal_level=logical for
// the whole run (each test file then creates its own database), checks Redis, and runs
// node's test runner over the TypeScript tests through tsx.
// Usage: node scripts/test.mjs [unit|integration|FILE...]
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

const args = process.argv.slice(2);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

function listTests(dir) {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return listTests(full);
    return name.endsWith('.test.ts') ? [full] : [];
  });
}

let files;
if (args.length === 0) files = listTests(path.join(root, 'test'));
else if (args[0] === 'unit' || args[0] === 'integration') files = listTests(path.join(root, 'test', args[0]));
else files = args.map((f) => path.resolve(f));
files.sort();

const needsPostgres = files.some((f) => !f.includes(`${path.sep}unit${path.sep}`));

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

let cluster;
const env = { ...process.env };
if (needsPostgres && !env.TEST_PG_URL) {
  // Load the TypeScript source through tsx: dist/ may be stale in a dev checkout.
  const { register } = await import('tsx/esm/api');
  register();
  const { startEmbeddedPostgres } = await import('../src/db/embedded.ts');
  const port = await freePort();
  const dataDir = path.join(tmpdir(), `engagement-test-pg-${process.pid}`);
  process.stdout.write(`starting embedded Postgres on 127.0.0.1:${port} (${dataDir})\n`);
  cluster = await startEmbeddedPostgres({ dataDir, port, fresh: true });
  env.TEST_PG_URL = cluster.url;
}

const child = spawn(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...files],
  { stdio: 'inherit', env, cwd: root },
);
const code = await new Promise((resolve) => child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))));
if (cluster) await cluster.stop().catch(() => undefined);
process.exit(code);
