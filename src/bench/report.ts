import type { CliStartup } from './cli-startup.js';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { MachineInfo } from './proc.js';
import type { HistogramSummary, LatencySummary } from './stats.js';

export interface SteadyResult {
  targetRate: number;
  warmupSeconds: number;
  /** Generator traffic during the measured window (markers not included). */
  generated: { events: number; seconds: number; achievedRate: number };
  markers: { inserted: number; seen: number; unseen: number; perSecond: number };
  /** Commit (replication commit message time) -> visible in top:content:10m, per marker event. */
  commitToRedisVisible: LatencySummary;
  /** Client's commit acknowledgement -> visible (a lower bound; cross-check of the above). */
  ackToRedisVisible: LatencySummary;
  /** From the pipeline's engagement_commit_to_sink_seconds histogram over the window (one observation per batch: its oldest event). */
  commitToSinkAck: Record<string, HistogramSummary>;
  /** After the generator stopped: seconds until every sink had every event. */
  drainSeconds: number;
  keptUp: boolean;
  pipelineCpu: { seconds: number; events: number; microsPerEvent: number | null; coresUsed: number };
  pipelinePeakRssMb: number;
  /**
   * The seeds' approach on the same markers: a reader polling `WHERE id > last` every second;
   * INSERT acknowledged -> row returned by a poll (no enrichment, no Redis: a lower bound).
   */
  pollingBaselineAckToSeen: LatencySummary | null;
}

export interface CatchupResult {
  events: number;
  /** The backlog written while the pipeline was stopped (generator at full speed, 4 connections). */
  insert: { seconds: number; eventsPerSecond: number };
  /** From the first event seen in a sink to every sink holding every event. */
  pipeline: {
    seconds: number;
    eventsPerSecond: number;
    /** Including process start-up (node, content snapshot, connections). */
    secondsFromSpawn: number;
    eventsPerSecondFromSpawn: number;
  };
  ratioToInsertRate: number;
  /** A bare pg-logical-replication consumer that only counts, over the same backlog (its own slot). */
  rawDecode: { seconds: number; eventsPerSecond: number } | null;
  ratioToRawDecode: number | null;
  pipelineCpu: { seconds: number; microsPerEvent: number | null; coresUsed: number };
  pipelinePeakRssMb: number;
  pipelineHwmMb: number | null;
  /** The histogram over the catch-up: includes the time the backlog waited in the slot, so only its shape means anything. */
  commitToSinkAckIncludingBacklogWait: Record<string, HistogramSummary>;
  cpuProfile: string | null;
}

export interface Correctness {
  expectedEvents: number;
  duckdbRows: number | null;
  duckdbDistinctEventIds: number | null;
  redisCountSum: number;
  externalUniqueEventIds: number;
  externalDuplicateEvents: number;
  externalDuplicateRequests: number;
  deadLetters: number;
  ok: boolean;
}

export interface BenchReport {
  schema: 'engagement-bench/1';
  mode: 'smoke' | 'full';
  startedAt: string;
  finishedAt: string;
  command: string;
  machine: MachineInfo & { postgres: string; redis: string };
  settings: {
    rates: number[];
    durationSeconds: number;
    warmupSeconds: number;
    catchupEvents: number;
    externalBatchSize: number;
    markersPerSecond: number;
    pollMs: number;
    pipelineCommand: string;
    pipelineEnv: Record<string, string>;
  };
  steady: SteadyResult[];
  catchup: CatchupResult | null;
  correctness: Correctness | null;
  notes: string[];
  /** Absent in reports written before it was measured. */
  cliStartup?: CliStartup;
}

/** Writes `<out>/<timestamp>-<mode>.json`, `<out>/latest.json` and `<out>/latest.md`. */
export async function writeReport(report: BenchReport, outDir: string): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const stamp = report.startedAt.replace(/[:.]/g, '-');
  const json = `${JSON.stringify(report, null, 2)}\n`;
  const files = [
    path.join(outDir, `${stamp}-${report.mode}.json`),
    path.join(outDir, 'latest.json'),
    path.join(outDir, 'latest.md'),
  ];
  await writeFile(files[0], json);
  await writeFile(files[1], json);
  await writeFile(files[2], markdown(report));
  return files;
}

const ms = (v: number | null | undefined) => (v === null || v === undefined ? '–' : `${v} ms`);

export function markdown(r: BenchReport): string {
  const m = r.machine;
  const lines = [
    `# engagement bench — ${r.mode} run, ${r.startedAt}`,
    '',
    `Machine: ${m.nproc} CPUs (${m.cpuModel}), ${Math.round(m.memTotalMb / 1024)} GiB RAM, ${m.os}, Node ${m.node}, ` +
      `${m.postgres.split(' on ')[0]} (embedded, fsync on), Redis ${m.redis}. Postgres, Redis, the mock external ` +
      'system, the traffic generator and the pipeline all share this machine.',
    '',
    `Command: \`${r.command}\``,
    '',
    `Pipeline: \`${r.settings.pipelineCommand}\` (a child process; its CPU and RSS are read from /proc). ` +
      `Sinks: DuckDB + Redis + external (mock, EXTERNAL_BATCH_SIZE=${r.settings.externalBatchSize}).`,
    '',
    '## Steady latency',
    '',
    `Commit -> visible in \`top:content:10m\`: ${r.settings.markersPerSecond} marker events/s (each its own transaction ` +
      `and content id) mixed into the traffic; an independent poller runs ZMSCORE every ${r.settings.pollMs} ms; ` +
      'commit time is the replication commit message time the pipeline stamped on the event. Per-sink columns ' +
      'come from the pipeline histogram `engagement_commit_to_sink_seconds` (one observation per batch: its oldest event; bucket-interpolated).',
    '',
    '| rate (target / achieved) | window | Redis-visible p50 / p95 / p99 / max | markers seen | sink ack p50 / p99 | drain | kept up | CPU µs/event | cores | peak RSS |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const s of r.steady) {
    const v = s.commitToRedisVisible;
    const sinks = Object.entries(s.commitToSinkAck)
      .map(([name, h]) => `${name} ${ms(h.p50Ms)} / ${ms(h.p99Ms)}`)
      .join('; ');
    lines.push(
      `| ${s.targetRate} / ${s.generated.achievedRate.toFixed(0)} | ${s.generated.seconds.toFixed(0)} s | ` +
        `${ms(v.p50Ms)} / ${ms(v.p95Ms)} / ${ms(v.p99Ms)} / ${ms(v.maxMs)} | ${s.markers.seen}/${s.markers.inserted} | ` +
        `${sinks} | ${s.drainSeconds.toFixed(2)} s | ${s.keptUp ? 'yes' : 'no'} | ` +
        `${s.pipelineCpu.microsPerEvent ?? '–'} | ${s.pipelineCpu.coresUsed} | ${s.pipelinePeakRssMb} MB |`,
    );
  }
  const polled = r.steady.filter((s) => s.pollingBaselineAckToSeen);
  if (polled.length > 0) {
    lines.push(
      '',
      "Baseline, the seeds' polling reader (`WHERE id > last` every second) on the same marker rows, INSERT acknowledged -> seen:",
      '',
      '| rate | pipeline: ack -> Redis-visible p50 / p99 | polling: ack -> row seen p50 / p99 | p50 ratio |',
      '|---|---|---|---|',
    );
    for (const s of polled) {
      const a = s.ackToRedisVisible;
      const b = s.pollingBaselineAckToSeen!;
      const ratio = a.p50Ms && b.p50Ms ? `${Math.round(b.p50Ms / a.p50Ms)}× faster` : '–';
      lines.push(
        `| ${s.targetRate} | ${ms(a.p50Ms)} / ${ms(a.p99Ms)} | ${ms(b.p50Ms)} / ${ms(b.p99Ms)} | ${ratio} |`,
      );
    }
  }
  const c = r.catchup;
  if (c) {
    lines.push(
      '',
      '## Catch-up throughput (all three sinks)',
      '',
      `${c.events.toLocaleString('en-US')} events inserted while the pipeline was stopped ` +
        `(raw insert rate ${c.insert.eventsPerSecond.toLocaleString('en-US')} events/s), then the pipeline started:`,
      '',
      `- **${c.pipeline.eventsPerSecond.toLocaleString('en-US')} events/s** from the first event delivered to every sink ` +
        `holding all of them (${c.pipeline.seconds} s); ${c.pipeline.eventsPerSecondFromSpawn.toLocaleString('en-US')} events/s ` +
        `counting process start-up (${c.pipeline.secondsFromSpawn} s)`,
      `- ${c.ratioToInsertRate}× the raw insert rate of the same backlog`,
      c.rawDecode
        ? `- ${c.ratioToRawDecode}× the raw decode rate: a bare pg-logical-replication consumer that only counts decoded the same backlog at ${c.rawDecode.eventsPerSecond.toLocaleString('en-US')} events/s`
        : '- raw decode rate not measured',
      `- pipeline CPU ${c.pipelineCpu.microsPerEvent ?? '–'} µs/event (${c.pipelineCpu.coresUsed} cores busy), ` +
        `peak RSS ${c.pipelinePeakRssMb} MB (VmHWM ${c.pipelineHwmMb ?? '–'} MB)`,
    );
    if (c.cpuProfile) lines.push(`- CPU profile: \`${c.cpuProfile}\``);
  }
  const k = r.correctness;
  if (k) {
    lines.push(
      '',
      '## Delivery check (after the run)',
      '',
      `Expected ${k.expectedEvents} events: DuckDB ${k.duckdbRows ?? '–'} rows (${k.duckdbDistinctEventIds ?? '–'} distinct), ` +
        `Redis counts sum ${k.redisCountSum}, external ${k.externalUniqueEventIds} unique ` +
        `(${k.externalDuplicateEvents} duplicate events), dead letters ${k.deadLetters}: **${k.ok ? 'OK' : 'MISMATCH'}**.`,
    );
  }
  if (r.cliStartup) {
    const s = r.cliStartup;
    lines.push(
      '',
      '## CLI start-up',
      '',
      `\`engagement --help\` ${s.helpMs} ms, \`engagement top --help\` ${s.commandHelpMs} ms (median of ${s.runs}; spawn to exit).`,
    );
  }
  if (r.notes.length > 0) lines.push('', '## Notes', '', ...r.notes.map((n) => `- ${n}`));
  lines.push('');
  return lines.join('\n');
}
