import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { duckdbQuery } from '../helpers/duckdb.js';
import { recordScenario } from './support/report.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const CHILD = path.join(ROOT, 'test', 'faults', 'support', 'duckdb-crash-child.ts');
const CYCLES = Number(process.env.FAULT_DUCKDB_CYCLES ?? 6);
const TOTAL = 6000;

/** Runs the child to completion (or to its own SIGKILL); resolves with how it ended. */
function runChild(args: (string | number)[]): Promise<{ signal: NodeJS.Signals | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args.map(String)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code !== null && code !== 0) reject(new Error(`child exited ${code}: ${out}`));
      else resolve({ signal, out });
    });
  });
}

async function stored(file: string): Promise<{ rows: number; distinct: number; max: number }> {
  const [r] = await duckdbQuery(
    file,
    'SELECT count(*) AS n, count(DISTINCT event_id) AS d, coalesce(max(event_id), 0) AS m FROM engagement.events_enriched',
  );
  return { rows: Number(r.n), distinct: Number(r.d), max: Number(r.m) };
}

describe('fault: kill -9 of the DuckDB sink between the appended rows and COMMIT', () => {
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  for (const mode of ['positions', 'event_id check'] as const) {
    it(`${mode}: every kill leaves whole batches; replays from behind add each event once`, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'duckdb-crash-'));
      dirs.push(dir);
      const file = path.join(dir, 'a.duckdb');
      const problems: string[] = [];
      let kills = 0;
      for (let i = 0; i < CYCLES; i++) {
        const before = i === 0 ? { rows: 0, distinct: 0, max: 0 } : await stored(file);
        const size = 50 + Math.floor(Math.random() * 400);
        // Replay from behind what was committed, as a slot replays from its confirmed position.
        const from = Math.max(1, before.max + 1 - Math.floor(Math.random() * 3 * size));
        const killAt = Math.floor(Math.random() * 4);
        const ended = await runChild([file, from, killAt, size, TOTAL, mode === 'positions' ? 'yes' : 'no']);
        if (ended.signal === 'SIGKILL') kills++;
        const now = await stored(file);
        // Whole batches only: the stored ids are exactly 1..max, one row each.
        if (now.rows !== now.distinct || now.rows !== now.max)
          problems.push(`cycle ${i}: ${now.rows} rows, ${now.distinct} distinct, max id ${now.max}`);
        if (now.max < before.max)
          problems.push(`cycle ${i}: committed rows vanished (${before.max} -> ${now.max})`);
      }
      const final = await runChild([file, 1, -1, 500, TOTAL, mode === 'positions' ? 'yes' : 'no']);
      assert.match(final.out, /done/);
      const end = await stored(file);
      const lost = TOTAL - end.distinct;
      const duplicated = end.rows - end.distinct;
      recordScenario({
        id: mode === 'positions' ? '18-duckdb-crash-positions' : '19-duckdb-crash-id-check',
        scenario: `kill -9 of the DuckDB sink between append and COMMIT ×${CYCLES} (${mode})`,
        fault: `a process writing ${TOTAL} events into DuckDB SIGKILLs itself after the Appender flush and the position upsert, before COMMIT; restarted ${CYCLES} times from up to three batches behind what was committed, with a different batch size each run`,
        reconciliation: {
          events: TOTAL,
          badRows: 0,
          lost,
          duplicated,
          analyticsDeadLettered: 0,
          externalDeadLettered: 0,
          externalRedelivered: 0,
          problems,
        },
        recoveryMs: null,
        notes: `${kills} kills landed between flush and COMMIT; replays recognised by ${mode}`,
      });
      assert.deepEqual({ lost, duplicated, problems }, { lost: 0, duplicated: 0, problems: [] });
      assert.ok(kills >= CYCLES / 2, `most runs were killed mid-transaction (${kills})`);
    });
  }
});
