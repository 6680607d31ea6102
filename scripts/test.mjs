#!/usr/bin/env node
// Test entry point (`npm test`): starts one embedded Postgres 18 with wal_level=logical for
// the whole run (each test file then creates its own database), and runs node's test runner
// over the TypeScript tests through tsx.
// Usage: node scripts/test.mjs [--list] [TIER|FILE...]
// Tests live in one folder per tier, named by the infrastructure the files need:
//   unit      no I/O at all (no Postgres is started)
//   postgres  the embedded Postgres at most (plus in-process DuckDB, local HTTP fakes, the CLI)
//   redis     Postgres + Redis (127.0.0.1:6379, or a redis-server the test starts)
//   chdb      the ClickHouse engine in-process (chdb), usually with Postgres + Redis
//   kafka     test/kafka-tier: librdkafka's mock cluster via kcat, and the real KRaft cluster
//             (*.kafka.test.ts; `kafka-cluster` runs only those)
//   browser   Chromium (playwright-core)
//   faults    test/faults, the fault-injection suite
// No argument runs every tier but faults. The fault suite (`npm run test:faults`) is slow and
// runs only when asked for: `faults` mode, or its files named explicitly. It ends by
// regenerating RELIABILITY.md. `--list` prints the files a run would take and exits.
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

const TIERS = {
  unit: 'unit',
  postgres: 'postgres',
  redis: 'redis',
  chdb: 'chdb',
  // test/kafka holds the Maven poms and jars of the real cluster, so the tier has its own folder.
  kafka: 'kafka-tier',
  browser: 'browser',
  faults: 'faults',
};
const testDir = path.join(root, 'test');
const faultsDir = path.join(testDir, 'faults');
const list = args[0] === '--list';
if (list) args.shift();

let files;
if (args.length === 0) {
  files = listTests(testDir).filter((f) => !f.startsWith(faultsDir + path.sep));
  // A file outside every tier folder still runs here, but no tier command would pick it up.
  const tierDirs = Object.values(TIERS).map((d) => path.join(testDir, d) + path.sep);
  for (const f of files)
    if (!tierDirs.some((d) => f.startsWith(d)))
      process.stdout.write(
        `# warning: ${path.relative(root, f)} is in no tier folder (${Object.values(TIERS).join(', ')})\n`,
      );
}
// `kafka-cluster`: only the real-Kafka files (*.kafka.test.ts: KRaft clusters of 1 or 3 brokers, Kafka Connect + Debezium).
else if (args[0] === 'kafka-cluster')
  files = listTests(path.join(testDir, TIERS.kafka)).filter((f) => f.endsWith('.kafka.test.ts'));
else if (Object.hasOwn(TIERS, args[0])) files = listTests(path.join(testDir, TIERS[args[0]]));
else files = args.map((f) => path.resolve(f));
files.sort();
if (list) {
  for (const f of files) process.stdout.write(`${path.relative(root, f)}\n`);
  process.exit(0);
}
// A full fault run starts a fresh table: rows of scenarios that no longer run must not linger.
if (args[0] === 'faults')
  rmSync(path.join(root, 'test-results', 'reliability'), { recursive: true, force: true });

const needsPostgres = files.some((f) => !f.startsWith(path.join(testDir, TIERS.unit) + path.sep));

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
    // The runner must count every test a file ran (see the file).
    '--import',
    path.join(root, 'test', 'helpers', 'flush-before-exit.ts'),
    // Unit tests do no I/O: run alone (the unit tier, or unit files named), connections,
    // listening and child processes fail there.
    ...(needsPostgres ? [] : ['--import', path.join(root, 'test', 'helpers', 'no-io.ts')]),
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
