import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { spawnCli } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { testRedis } from '../helpers/redis.js';
import { freePort } from '../../src/ports.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');

/** Processes whose command line mentions `needle` (the demo's data dir is unique to the test). */
function processesMentioning(needle: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((line) => line.includes(needle) && !line.includes('ps -eo'))
    .map((line) => line.trim());
}

describe('engagement demo as a child process', () => {
  it('serves content on /api/top; SIGINT leaves no process behind; a second run resumes', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'engagement-demo-'));
    chmodSync(dataDir, 0o755); // embedded Postgres runs as the postgres user when we are root
    const redis = testRedis();
    const env = {
      REDIS_PREFIX: redis.prefix,
      DATABASE_URL: undefined,
      PORT: undefined,
      LOG_LEVEL: undefined,
    };
    const args = ['demo', '--data-dir', dataDir, '--port', '0', '--pg-port', '0', '--rate', '300'];
    try {
      let rowsAfter = 0;
      let topTotal = 0;
      for (const run of [1, 2]) {
        // Run 2: nothing answers at REDIS_URL, so the demo starts (and stops) its own redis-server.
        const deadRedis = `redis://127.0.0.1:${await freePort()}`;
        if (run === 2) topTotal = 0;
        const demo = spawnCli(args, run === 1 ? env : { ...env, REDIS_URL: deadRedis });
        const url = await waitFor(
          `run ${run}: the dashboard URL`,
          () => /dashboard\s+(http:\/\/\S+)/.exec(demo.output())?.[1],
          // initdb and start-up take seconds alone and much longer on a busy machine; the demo
          // prints its own time to first content, so the test only bounds a hang.
          120_000,
        ).catch((err: Error) => {
          throw new Error(`${err.message}; demo output: ${demo.output().slice(-600)}`);
        });
        const top = await waitFor(
          `run ${run}: /api/top to return content`,
          async () => {
            const res = await fetch(new URL('api/top?window=10m&by=events&limit=100', url));
            const body = (await res.json()) as { items?: { content_id: string; events: number }[] };
            const total = (body.items ?? []).reduce((sum, item) => sum + item.events, 0);
            // Run 2 must add events of its own, on top of run 1's still in the window.
            return res.ok && total >= topTotal + 100 ? total : undefined;
          },
          90_000,
          250,
        );
        topTotal = top!;

        if (run === 1) {
          // No REDIS_URL: a private redis-server, never whatever answers on 6379.
          assert.match(demo.output(), /no REDIS_URL given: started redis-server \(pid \d+\)/);
          // The printed DATABASE_URL works as is, and data/demo.env works for other commands.
          assert.match(
            demo.output(),
            /postgres\s+postgres:\/\/postgres:postgres@127\.0\.0\.1:\d+\/engagement \(embedded\)/,
          );
          const envFile = path.join(dataDir, 'demo.env');
          assert.equal(statSync(envFile).mode & 0o777, 0o600);
          const status = spawnSync(
            'sh',
            ['-c', `. "$1" && "$2" --import tsx src/cli/main.ts status`, 'sh', envFile, process.execPath],
            { cwd: ROOT, encoding: 'utf8', env: { ...process.env, DATABASE_URL: '', REDIS_URL: '' } },
          );
          assert.equal(status.status, 0, `${status.stdout}${status.stderr}`);
          assert.match(status.stdout, /slot/);
        }

        demo.child.kill('SIGINT');
        const { code } = await demo.exited;
        assert.equal(code, 0, demo.output());
        assert.match(demo.output(), /stopped cleanly/);
        // Postgres (its data dir is on its command line), redis-server if one was started,
        // and the demo's worker process are all gone.
        await waitFor('every demo process to exit', () => processesMentioning(dataDir).length === 0, 5_000);
        if (run === 2) {
          assert.match(demo.output(), /started redis-server \(pid (\d+)\)/);
          const pid = Number(/started redis-server \(pid (\d+)\)/.exec(demo.output())![1]);
          assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the private redis-server is still running');
        }
        // Resumed, not restarted: DuckDB keeps run 1's rows and adds run 2's, each once.
        const [{ n, d }] = (await duckdbQuery(
          path.join(dataDir, 'engagement.duckdb'),
          'SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM engagement.events_enriched',
        )) as [{ n: string; d: string }];
        assert.equal(n, d);
        assert.ok(Number(n) > rowsAfter, `run ${run}: ${n} rows, not more than ${rowsAfter}`);
        rowsAfter = Number(n);
      }
    } finally {
      for (const line of processesMentioning(dataDir)) {
        try {
          process.kill(Number(line.split(' ')[0]), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await redis.cleanup();
    }
  });
});
