import type { Command } from 'commander';
import { requireDatabaseUrl } from '../config.js';
import { createPool } from '../db/postgres.js';
import {
  isBackfillRunning,
  readBackfills,
  readDeadLetterDepth,
  readSinkProgress,
  readSlotStatus,
  type BackfillRow,
  type SinkProgressRow,
  type SlotStatus,
} from '../db/status-queries.js';
import { assertPostgresReachable } from '../runtime.js';
import { DeadLetterStore } from '../state/dead-letter.js';
import { action, configFrom, withConfigOptions } from './common.js';

export interface StatusReport {
  slot: SlotStatus;
  sinks: SinkProgressRow[];
  deadLetters: {
    total: number;
    bySink: Record<string, number>;
    /** Age of the oldest pending one, seconds since its first failure (null when none). */
    oldestPendingSeconds: number | null;
    /** Replayed so far: re-driven automatically or by `engagement dlq replay`. */
    replayed: number;
  };
  backfills: BackfillRow[];
  warnings: string[];
}

export function registerStatus(program: Command): void {
  withConfigOptions(
    program
      .command('status')
      .description('slot, confirmed LSN, lag, WAL retained, per-sink progress, dead letters, backfills')
      .option('--json', 'machine-readable output'),
    ['databaseUrl', 'slotName', 'slotLagWarnBytes', 'lagWarnSeconds'],
  ).action(
    action(async (options: Record<string, unknown>) => {
      const config = configFrom(options);
      const databaseUrl = requireDatabaseUrl(config);
      await assertPostgresReachable(databaseUrl);
      const pool = createPool(databaseUrl, 1, 'engagement-status');
      try {
        const [slot, sinks, bySink, backfills, dead] = await Promise.all([
          readSlotStatus(pool, config.slotName),
          readSinkProgress(pool, config.slotName),
          readDeadLetterDepth(pool),
          readBackfills(pool),
          new DeadLetterStore(pool).summary(),
        ]);
        const report: StatusReport = {
          slot,
          sinks,
          deadLetters: {
            total: Object.values(bySink).reduce((a, b) => a + b, 0),
            bySink,
            oldestPendingSeconds: dead.oldestPendingSeconds,
            replayed: dead.replayed,
          },
          backfills,
          warnings: [
            ...warnings(slot, config.slotLagWarnBytes),
            ...sinkWarnings(sinks, config.lagWarnSeconds),
          ],
        };
        if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        else process.stdout.write(render(report));
        // Scripts can alert on it: 1 when the slot is gone or invalidated (data was lost).
        return (!slot.exists && slot.known) || slot.walStatus === 'lost' ? 1 : 0;
      } finally {
        await pool.end().catch(() => undefined);
      }
    }),
  );
}

export function warnings(slot: SlotStatus, warnBytes: number): string[] {
  const out: string[] = [];
  if (!slot.exists && slot.known) {
    out.push(
      `EP_ERR_SLOT_MISSING: slot ${slot.slotName} does not exist; if it existed before, run \`engagement migrate --recreate-slot\` and backfill the gap from the sinks' last committed time below`,
    );
  } else if (slot.walStatus === 'lost') {
    out.push(
      `EP_ERR_SLOT_INVALIDATED: Postgres removed WAL the slot still needed (max_slot_wal_keep_size); run \`engagement migrate --recreate-slot\`, then \`engagement backfill --from <last committed time below> --to now\``,
    );
  } else if (slot.walStatus === 'unreserved') {
    out.push(
      `slot ${slot.slotName} is about to be invalidated (wal_status unreserved): start the pipeline now or it will lose changes`,
    );
  }
  if (slot.lagBytes !== null && slot.lagBytes > warnBytes) {
    const keep = slot.maxSlotWalKeepSize;
    out.push(
      `slot lag ${bytes(slot.lagBytes)} exceeds ${bytes(warnBytes)}: Postgres keeps every WAL segment since the slot's confirmed position. ` +
        (keep === '-1'
          ? 'max_slot_wal_keep_size is -1 (unlimited), so the server disk can fill up; set it to cap the WAL a slot may hold (past the cap the slot is invalidated and the gap must be backfilled).'
          : `max_slot_wal_keep_size is ${keep}: past it Postgres invalidates the slot (${slot.safeWalSizeBytes === null ? '?' : bytes(slot.safeWalSizeBytes)} left) and the gap must be backfilled.`),
    );
  }
  return out;
}

/** The running pipeline rewrites each sink's row every second; an older row means it is not running. */
function isLive(k: SinkProgressRow, now = Date.now()): boolean {
  return now - Date.parse(k.updatedAt) < 15_000;
}

/** A sink failing, down or behind, while the pipeline runs. */
export function sinkWarnings(sinks: SinkProgressRow[], lagWarnSeconds: number): string[] {
  const out: string[] = [];
  for (const k of sinks) {
    if (!isLive(k) || k.state === null) continue;
    const sink = sinkLabel(k);
    if (k.state === 'failed')
      out.push(`sink ${sink} FAILED and needs attention (its position is held): ${k.lastError ?? ''}`);
    else if (k.state === 'down') out.push(`sink ${sink} is down, retrying: ${k.lastError ?? ''}`);
    else if (k.state === 'behind' || (k.lagSeconds ?? 0) > lagWarnSeconds)
      out.push(
        `sink ${sink} is behind: lag ${(k.lagSeconds ?? 0).toFixed(1)} s > LAG_WARN_SECONDS ${lagWarnSeconds}`,
      );
  }
  return out;
}

/** A worker group's sink carries its group: `redis [kafka:engagement]`. */
function sinkLabel(k: SinkProgressRow): string {
  return k.stream.startsWith('kafka:') ? `${k.sink} [${k.stream}]` : k.sink;
}

function slotState(s: SlotStatus): string {
  if (s.exists) return s.active ? 'active' : 'inactive';
  // Never created here: Kafka workers fed by Debezium use none (`engagement migrate` makes it for run/capture).
  return s.known ? 'MISSING' : 'not created (run and capture need `engagement migrate`)';
}

function render(r: StatusReport): string {
  const s = r.slot;
  const lines: string[] = [];
  lines.push(`slot ${s.slotName}: ${slotState(s)}${s.walStatus ? ` (wal_status ${s.walStatus})` : ''}`);
  lines.push(`  confirmed LSN   ${s.confirmedLsn ?? '-'}   (server WAL at ${s.currentLsn})`);
  lines.push(
    `  lag             ${s.lagBytes === null ? '-' : bytes(s.lagBytes)}, ${s.lagSeconds === null ? '-' : `${s.lagSeconds.toFixed(1)} s`}`,
  );
  lines.push(
    `  WAL retained    ${s.retainedBytes === null ? '-' : bytes(s.retainedBytes)} (max_slot_wal_keep_size ${s.maxSlotWalKeepSize})`,
  );
  lines.push('sinks:');
  if (r.sinks.length === 0) lines.push('  (no deliveries recorded yet)');
  for (const k of r.sinks) {
    const live = isLive(k);
    const state = k.state === null ? '' : live ? k.state.padEnd(7) : 'stopped';
    const lastSuccess = Date.parse(k.lastSuccessAt) <= 0 ? 'never' : k.lastSuccessAt;
    lines.push(
      `  ${sinkLabel(k).padEnd(10)} ${state}  lag ${k.lagSeconds === null ? '-' : `${k.lagSeconds.toFixed(1)} s`}  last success ${lastSuccess}  last committed ${k.lastCommittedAt ?? '-'}  events ${k.eventsTotal}${live && k.lastError ? `\n             error: ${k.lastError}` : ''}`,
    );
  }
  const bySink = Object.entries(r.deadLetters.bySink)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const oldest = r.deadLetters.oldestPendingSeconds;
  lines.push(
    `dead letters: ${r.deadLetters.total} pending${bySink ? ` (${bySink})` : ''}` +
      `${oldest === null ? '' : `, oldest ${oldest} s`}, ${r.deadLetters.replayed} replayed (re-driven or dlq replay)`,
  );
  const running = r.backfills.filter(isBackfillRunning);
  const stopped = r.backfills.filter((b) => !isBackfillRunning(b));
  const range = (b: BackfillRow) =>
    `#${b.id} ${b.fromTs} .. ${b.toTs} -> ${b.sinks}: ${b.rowsDone}/${b.rowsTotal ?? '?'} rows`;
  lines.push(`backfills in progress: ${running.length}`);
  for (const b of running) lines.push(`  ${range(b)}, running`);
  if (stopped.length > 0) {
    lines.push(`backfills stopped before the end: ${stopped.length} (re-run the same command to resume)`);
    for (const b of stopped) {
      lines.push(
        `  ${range(b)}, ${b.status === 'failed' ? `failed: ${b.error ?? 'no reason recorded'}` : 'interrupted (its process stopped)'}`,
      );
    }
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return `${lines.join('\n')}\n`;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}
