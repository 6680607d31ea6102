#!/usr/bin/env node
// Test entry point (`npm test`): starts one embedded Postgres 18 with wal_level=logical for
// the whole run (each test file then creates its own database), checks Redis, and runs
// node's test runner over the TypeScript tests through tsx.
// Usage: node scripts/test.mjs [unit|integration|faults|kafka|FILE...]
// The fault-injection suite (test/faults, `npm run test:faults`) is slow and runs only when
// asked for: `faults` mode, or its files named explicitly. It ends by regenerating RELIABILITY.md.
import { spawn } from 'node:child_process';
import { readdirSync, rmSync, statSync } from 'node:fs';
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
const faultsDir = path.join(root, 'test', 'faults');
if (args.length === 0)
  files = listTests(path.join(root, 'test')).filter((f) => !f.startsWith(faultsDir + path.sep));
// `kafka`: only the real-Kafka files (*.kafka.test.ts: KRaft clusters of 1 or 3 brokers, Kafka Connect + Debezium).
else if (args[0] === 'kafka')
  files = listTests(path.join(root, 'test')).filter((f) => f.endsWith('.kafka.test.ts'));
else if (args[0] === 'unit' || args[0] === 'integration' || args[0] === 'faults')
  files = listTests(path.join(root, 'test', args[0]));
else files = args.map((f) => path.resolve(f));
files.sort();
// A full fault run starts a fresh table: rows of scenarios that no longer run must not linger.
if (args[0] === 'faults')
  rmSync(path.join(root, 'test-results', 'reliability'), { recursive: true, force: true });

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
  [
    '--import',
    'tsx',
    '--test',
    '--test-concurrency=1',
    '--test-reporter=spec',
    // A failed test can leave a handle open (a child, a socket): the file's process must still
    // exit, and no single test may hang CI.
    '--test-force-exit',
    '--test-timeout=600000',
    ...files,
  ],
  { stdio: 'inherit', env, cwd: root },
);
const code = await new Promise((resolve) => child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))));
if (cluster) await cluster.stop().catch(() => undefined);
if (args[0] === 'faults') {
  // Regenerate the table from whatever scenarios recorded a row (failing ones included).
  const report = spawn(process.execPath, [path.join(root, 'scripts', 'reliability-report.mjs')], {
    stdio: 'inherit',
  });
  await new Promise((resolve) => report.on('exit', resolve));
}
process.exit(code);
