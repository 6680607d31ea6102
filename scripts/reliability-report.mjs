#!/usr/bin/env node
// Writes RELIABILITY.md from docs/reliability-template.md and the rows the fault suite
// recorded under test-results/reliability/*.json (one per scenario; see
// test/faults/support/report.ts). Run by `npm run test:faults` at the end; can be re-run alone.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dir = path.join(root, 'test-results', 'reliability');
const rows = existsSync(dir)
  ? readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .sort()
      .map((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')))
  : [];

const cell = (text) =>
  String(text ?? '')
    .replace(/\|/g, '\\|')
    .replace(/\n/g, ' ');
const seconds = (ms) => (ms === null || ms === undefined ? '—' : `${(ms / 1000).toFixed(1)} s`);
const n = (x) => Number(x).toLocaleString('en-US');

const table = [
  '| scenario | what was done | events | lost | duplicated | recovery | log lines | result |',
  '|---|---|---:|---:|---:|---:|---|---|',
  ...rows.map((r) => {
    const c = r.reconciliation;
    const logs = Object.entries(r.logLines ?? {})
      .map(([k, v]) => `\`${k}\` ×${v}`)
      .join('<br>');
    const extra = [
      c.badRows ? `${n(c.badRows)} undecodable row(s) dead-lettered by the source` : '',
      c.externalDeadLettered
        ? `${n(c.externalDeadLettered)} dead-lettered by the external sink (best-effort)`
        : '',
      r.notes ?? '',
      c.problems.length ? `problems: ${c.problems.join('; ')}` : '',
    ]
      .filter(Boolean)
      .join('; ');
    return `| ${cell(r.scenario)} | ${cell(r.fault)}${extra ? `<br>_${cell(extra)}_` : ''} | ${n(c.events)} | ${c.lost} | ${c.duplicated} | ${seconds(r.recoveryMs)} | ${logs || '—'} | ${r.passed ? 'pass' : '**FAIL**'} |`;
  }),
].join('\n');

const total = rows.reduce((s, r) => s + r.reconciliation.events, 0);
const failing = rows.filter((r) => !r.passed).length;
const summary = rows.length
  ? `${rows.length} scenarios, ${n(total)} events in all, ${failing === 0 ? 'every one reconciled exactly: 0 lost, 0 duplicated' : `**${failing} failing**`}. Last run: ${rows
      .map((r) => r.recordedAt)
      .sort()
      .pop()}.`
  : 'No scenario results found: run `npm run test:faults`.';

const template = readFileSync(path.join(root, 'docs', 'reliability-template.md'), 'utf8');
const out = template.replace('{{SUMMARY}}', summary).replace('{{TABLE}}', table);
writeFileSync(path.join(root, 'RELIABILITY.md'), out);
process.stdout.write(`RELIABILITY.md: ${rows.length} scenarios${failing ? `, ${failing} failing` : ''}\n`);
