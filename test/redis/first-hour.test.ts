import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DuckDBInstance } from '@duckdb/node-api';
import { migrate } from '../../src/db/migrate.js';
import { freePort } from '../../src/ports.js';
import { ensureRedis, SHARED_REDIS_PREFIX } from '../../src/demo/redis.js';
import { runCli, spawnCli } from '../helpers/cli.js';
import { freshDatabase, query } from '../helpers/postgres.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');

describe('the first commands a new user runs', () => {
  it('`top` with an unreachable Redis prints one line and exits 2 within 5 s', async () => {
    const port = await freePort(); // nothing listens there
    const top = spawnCli(['top'], { REDIS_URL: `redis://127.0.0.1:${port}` });
    // The limit covers process start-up through tsx on a busy machine; the bug was "never".
    const timer = setTimeout(() => top.child.kill('SIGKILL'), 30_000);
    let errorAt = Date.now();
    const onOutput = () => {
      if (/cannot reach Redis/.test(top.output())) errorAt = Date.now();
    };
    top.child.stdout!.once('data', onOutput);
    top.child.stderr!.once('data', onOutput);
    const { code } = await top.exited;
    clearTimeout(timer);
    assert.equal(code, 2, top.output());
    assert.equal(top.output().trim().split('\n').length, 1, top.output());
    assert.match(top.output(), /EP_ERR_CONFIG: cannot reach Redis at 127\.0\.0\.1:\d+/);
    // From the error line to exit: nothing may keep the process alive (ioredis reconnecting).
    // (the bug was "never"; the bound leaves room for a busy machine)
    assert.ok(Date.now() - errorAt < 15_000, `exited ${Date.now() - errorAt} ms after the error`);
  });

  it(
    '`demo` from a directory the postgres OS user cannot enter (as root): one clear line, exit 2',
    {
      skip: process.getuid?.() !== 0 ? 'only root runs Postgres as another user' : false,
    },
    async () => {
      const home = mkdtempSync(path.join(tmpdir(), 'engagement-0700-')); // mode 0700, owned by root
      try {
        // Run from inside it, as a user who cloned into root's home would.
        const demo = spawn(
          process.execPath,
          [
            '--import',
            import.meta.resolve('tsx'),
            path.join(ROOT, 'src/cli/main.ts'),
            'demo',
            '--port',
            '0',
            '--pg-port',
            '0',
          ],
          {
            cwd: home,
            env: { ...process.env, DATABASE_URL: '', REDIS_URL: '', LOG_LEVEL: '' },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        let out = '';
        demo.stdout.on('data', (d) => (out += d));
        demo.stderr.on('data', (d) => (out += d));
        const killer = setTimeout(() => demo.kill('SIGKILL'), 60_000);
        const code = await new Promise<number | null>((resolve) => demo.on('exit', resolve));
        clearTimeout(killer);
        assert.equal(code, 2, out);
        const errors = out.split('\n').filter((l) => l.startsWith('engagement:'));
        assert.equal(errors.length, 1, out);
        assert.match(errors[0]!, /'postgres' OS user .* cannot enter .*engagement-0700-\w+ \(mode 0700\)/);
        assert.match(errors[0]!, /chmod o\+x/);
        assert.doesNotMatch(out, /\n\s+at /, 'a stack trace');
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    },
  );

  it("demo's Redis: a private redis-server without REDIS_URL; the shared one (under 'demo:') only without the binary", async () => {
    const own = await ensureRedis(undefined);
    try {
      assert.equal(own.shared, false);
      assert.ok(own.pid !== null && !own.url.endsWith(':6379'), own.url);
    } finally {
      await own.stop();
    }
    const savedPath = process.env.PATH;
    process.env.PATH = '/nonexistent'; // no redis-server binary
    try {
      const shared = await ensureRedis(undefined);
      assert.equal(shared.shared, true);
      assert.equal(shared.pid, null);
      assert.equal(SHARED_REDIS_PREFIX, 'demo:');
    } finally {
      process.env.PATH = savedPath;
    }
  });

  describe('with a database', () => {
    let db: Awaited<ReturnType<typeof freshDatabase>>;
    before(async () => {
      db = await freshDatabase('firsthour');
      await migrate(db.url, { slotName: `s_${db.name}`, publicationName: `p_${db.name}` });
    });
    after(async () => {
      await db?.drop();
    });

    it('`status` lists a failed backfill as failed (with its reason), not as in progress', async () => {
      await query(
        db.url,
        `INSERT INTO engagement_pipeline.backfill_progress (from_ts, to_ts, sinks, rows_done, rows_total, status, error)
         VALUES ('2026-01-01Z', '2026-01-02Z', 'analytics', 10, 100, 'failed', 'EP_ERR_ANALYTICS_LOCKED: DuckDB file x is in use')`,
      );
      const { code, output } = await runCli(['status'], { DATABASE_URL: db.url, SLOT_NAME: `s_${db.name}` });
      assert.equal(code, 0, output);
      assert.match(output, /backfills in progress: 0/);
      assert.match(output, /backfills stopped before the end: 1/);
      assert.match(output, /10\/100 rows, failed: EP_ERR_ANALYTICS_LOCKED/);
    });

    it('`backfill --dry-run` warns when the DuckDB file is locked by another process', async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'engagement-dry-'));
      const file = path.join(dir, 'a.duckdb');
      const holder = await DuckDBInstance.create(file); // this process holds the write lock
      try {
        const { code, output } = await runCli(
          ['backfill', '--dry-run', '--from', '2026-01-01T00:00:00Z', '--to', 'now'],
          { DATABASE_URL: db.url, ANALYTICS_URL: `duckdb:${file}` },
        );
        assert.equal(code, 0, output);
        assert.match(output, /warning: DuckDB file .*a\.duckdb is locked by another process/);
        assert.match(output, /dry run: 0 rows/);
      } finally {
        holder.closeSync();
        rmSync(dir, { recursive: true, force: true });
      }
      // Unlocked: no warning.
      const { output } = await runCli(
        ['backfill', '--dry-run', '--from', '2026-01-01T00:00:00Z', '--to', 'now'],
        {
          DATABASE_URL: db.url,
          ANALYTICS_URL: `duckdb:${file}`,
        },
      );
      assert.doesNotMatch(output, /warning/);
    });
  });
});
