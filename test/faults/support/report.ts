import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Reconciliation } from './reconcile.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..');
/** One JSON file per scenario; scripts/reliability-report.mjs turns them into RELIABILITY.md. */
export const RESULTS_DIR = path.join(ROOT, 'test-results', 'reliability');

export interface ScenarioRow {
  /** Stable id, also the file name; the table is sorted by it. */
  id: string;
  scenario: string;
  /** What was done, in one sentence. */
  fault: string;
  reconciliation: Reconciliation;
  /** From the fault cleared to every sink caught up (the slot confirmed past the last event). */
  recoveryMs: number | null;
  /** The log lines that reported the problem (pattern -> how many times). */
  logLines?: Record<string, number>;
  notes?: string;
}

/** Written before the test asserts, so a failing scenario shows up in the table as failing. */
export function recordScenario(row: ScenarioRow): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const passed =
    row.reconciliation.lost === 0 &&
    row.reconciliation.duplicated === 0 &&
    row.reconciliation.problems.length === 0;
  writeFileSync(
    path.join(RESULTS_DIR, `${row.id}.json`),
    `${JSON.stringify({ ...row, passed, recordedAt: new Date().toISOString() }, null, 2)}\n`,
  );
  process.stdout.write(
    `# ${row.id}: events ${row.reconciliation.events}, lost ${row.reconciliation.lost}, duplicated ${row.reconciliation.duplicated}, recovery ${row.recoveryMs ?? '-'} ms${row.reconciliation.problems.length ? `; problems: ${row.reconciliation.problems.join('; ')}` : ''}\n`,
  );
}
