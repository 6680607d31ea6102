import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli.js';
import { freshDatabase } from '../helpers/postgres.js';

/** Exit 2 and exactly one line, which matches `pattern`. */
function oneLineExit2(result: { code: number | null; output: string }, pattern: RegExp): void {
  assert.equal(result.code, 2, result.output);
  assert.equal(result.output.trim().split('\n').length, 1, result.output);
  assert.match(result.output, pattern);
}

describe('CLI input: secrets never printed, bad values one line and exit 2', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let busy: Server;
  let busyPort = 0;
  before(async () => {
    db = await freshDatabase('cli_input');
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    busyPort = (busy.address() as { port: number }).port;
  });
  after(async () => {
    await new Promise((resolve) => busy.close(resolve));
    await db.drop();
  });

  it('a libpq keyword string in DATABASE_URL: its password is not printed', async () => {
    const status = await runCli(['status'], { DATABASE_URL: 'host=127.0.0.1 user=u password=hunter2' });
    oneLineExit2(status, /EP_ERR_CONFIG: DATABASE_URL/);
    assert.doesNotMatch(status.output, /hunter2/);
    assert.match(status.output, /password=\*\*\*/);
  });

  it('a ?password= URL: generate names the database without it', async () => {
    const url = new URL(db.url);
    const password = decodeURIComponent(url.password);
    assert.ok(password, 'the test cluster has a password');
    url.password = '';
    url.searchParams.set('password', password);
    const migrated = await runCli(['migrate'], { DATABASE_URL: db.url });
    assert.equal(migrated.code, 0, migrated.output);
    const generated = await runCli(['generate', '--rate', '5', '--count', '1'], {
      DATABASE_URL: url.toString(),
    });
    assert.equal(generated.code, 0, generated.output);
    assert.match(generated.output, /generating 5 events\/s .* into postgres:\/\/.*\?password=\*\*\*/);
    assert.ok(!generated.output.includes(`password=${password}`), generated.output);
  });

  it('numbers: only an optional sign and decimal digits, in settings and flags', async () => {
    const [hex, blank, flag, mock] = await Promise.all([
      runCli(['run'], { PORT: '0x7073' }),
      runCli(['run'], { PORT: ' ' }),
      runCli(['run', '--duckdb-threads', '2e0']),
      runCli(['mock-external', '--port', '0x7073']),
    ]);
    oneLineExit2(hex, /PORT \/ --port: must be an integer from 0 to 65535/);
    oneLineExit2(blank, /PORT/);
    oneLineExit2(flag, /DUCKDB_THREADS \/ --duckdb-threads/);
    oneLineExit2(mock, /--port must be an integer from 0 to 65535/);
  });

  it('EXTERNAL_URL must be http(s); HOST must really be loopback to go without API_TOKEN', async () => {
    const [ftp, host] = await Promise.all([
      runCli(['run'], { DATABASE_URL: db.url, EXTERNAL_URL: 'ftp://files.example/in' }),
      runCli(['run'], { DATABASE_URL: db.url, HOST: '127.0.0.1.example', API_TOKEN: '' }),
    ]);
    oneLineExit2(ftp, /EXTERNAL_URL.*http:\/\/ or https:\/\//);
    oneLineExit2(host, /HOST=127\.0\.0\.1\.example is not loopback and API_TOKEN is not set/);
  });

  it('mock-external on a port in use: one line, exit 2 (as run)', async () => {
    const mock = await runCli(['mock-external', '--port', String(busyPort)]);
    oneLineExit2(mock, new RegExp(`EP_ERR_CONFIG: port ${busyPort} on 127.0.0.1 is already in use`));
  });

  it('demo --port in use: one line, exit 2, before it starts Postgres or Redis', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'engagement-demo-port-'));
    const demo = await runCli(['demo', '--port', String(busyPort), '--data-dir', dataDir]);
    oneLineExit2(demo, new RegExp(`EP_ERR_CONFIG: port ${busyPort} on 127.0.0.1 is already in use`));
    assert.doesNotMatch(demo.output, /starting/, 'nothing was started');
    assert.equal(existsSync(path.join(dataDir, 'postgres')), false);
  });

  it('status and dlq against a database never migrated: one line saying to run migrate, exit 2', async () => {
    const bare = await freshDatabase('cli_bare');
    try {
      for (const args of [
        ['status'],
        ['status', '--json'],
        ['dlq', 'list'],
        ['dlq', 'purge', '--before', '2000-01-01'],
      ]) {
        oneLineExit2(
          await runCli(args, { DATABASE_URL: bare.url }),
          /^engagement: EP_ERR_CONFIG: this database has no pipeline state .*run `engagement migrate`/,
        );
      }
    } finally {
      await bare.drop();
    }
  });

  it('a misspelt dlq --sink, a window out of range: one line, exit 2', async () => {
    const [purge, list, top] = await Promise.all([
      runCli(['dlq', 'purge', '--before', '2030-01-01', '--sink', 'extrenal'], { DATABASE_URL: db.url }),
      runCli(['dlq', 'list', '--sink', 'Redis'], { DATABASE_URL: db.url }),
      runCli(['top', '--window', '1h']),
    ]);
    const sinks = /--sink must be one of analytics, redis, external, kafka, source/;
    oneLineExit2(purge, sinks);
    oneLineExit2(list, sinks);
    oneLineExit2(top, /--window: window must be from 1m to 10m \(got "1h"\)/);
  });

  it('--help lists every setting the README gives a flag, and every sink dlq can filter by', async () => {
    const [run, list, backfill] = await Promise.all([
      runCli(['run', '--help']),
      runCli(['dlq', 'list', '--help']),
      runCli(['backfill', '--help']),
    ]);
    // The enriched-topic sink's connection is settable wherever the sink is (run, backfill).
    for (const help of [run.output, backfill.output])
      for (const flag of [
        '--kafka-brokers',
        '--kafka-ssl',
        '--kafka-sasl-mechanism',
        '--kafka-enriched-topic',
      ])
        assert.ok(help.includes(flag), flag);
    for (const env of [
      'ANALYTICS_WRITE_INTERVAL_MS',
      'EXTERNAL_WRITE_INTERVAL_MS',
      'DUCKDB_MEMORY_LIMIT',
      'DUCKDB_THREADS',
    ])
      assert.match(run.output, new RegExp(`\\[env ${env}\\]`), env);
    assert.match(
      list.output.replace(/\s+/g, ' '),
      /only this sink \(analytics, redis, external, kafka, source\)/,
    );
  });
});
