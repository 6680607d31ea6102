import type { CliStartup } from './cli-startup.js';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Component } from './cpu-profile.js';
import type { MachineInfo } from './proc.js';
import type { HistogramSummary, LatencySummary } from './stats.js';
import { makeDirs } from '../make-dirs.js';

export interface SteadyResult {
  targetRate: number;
  /** A busy loop ran on one core during the window. */
  cpuHog?: boolean;
  /** Events per generator transaction at most (unset: multi-row INSERTs of a 50 ms tick). */
  rowsPerTransaction?: number;
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
  rawDecode: {
    seconds: number;
    eventsPerSecond: number;
    /** CPU of the consumer's process (the bench, otherwise idle then) per event. */
    consumerMicrosPerEvent?: number;
    /** CPU of the walsender serving it per event. */
    walsenderMicrosPerEvent?: number | null;
  } | null;
  ratioToRawDecode: number | null;
  pipelineCpu: { seconds: number; microsPerEvent: number | null; coresUsed: number };
  pipelinePeakRssMb: number;
  pipelineHwmMb: number | null;
  /** The histogram over the catch-up: includes the time the backlog waited in the slot, so only its shape means anything. */
  commitToSinkAckIncludingBacklogWait: Record<string, HistogramSummary>;
  /**
   * Per sink, from engagement_sink_write_seconds between the first delivered event and the end:
   * the share of that time it spent writing (a sink writes one merged batch at a time, so one
   * near 1 is the stage the others wait for; a write that began before the window counts whole),
   * its writes and their mean rows.
   */
  sinkWrites?: Record<string, { busyShare: number; writes: number; meanRows: number }>;
  cpuProfile: string | null;
}

/** CPU per event of every process and component the pipeline keeps busy, over one window. */
export interface ComponentCpu {
  label: string;
  events: number;
  wallSeconds: number;
  /** The pipeline process, all threads. */
  pipelineMicrosPerEvent: number | null;
  pipelineCores: number;
  /** Its JS thread, and its other threads (DuckDB's workers, the libuv pool, V8 background GC). */
  jsThreadMicrosPerEvent: number | null;
  otherThreadsMicrosPerEvent: number | null;
  /** V8's profiler thread (the bench's own measurement): excluded from the pipeline's figures. */
  profilerMicrosPerEvent?: number | null;
  /** The JS thread split by component (CPU profile, scaled to the thread's measured CPU). */
  jsThread: Record<Component, number> | null;
  /** Share of the window the JS thread sat idle in the event loop. */
  jsThreadIdleSharePct: number | null;
  walsenderMicrosPerEvent: number | null;
  /** The machine's redis-server (shared with other users of this Redis). */
  redisServerMicrosPerEvent: number | null;
  mockExternalMicrosPerEvent: number | null;
}

export interface SoakResult {
  rate: number;
  seconds: number;
  events: number;
  rssMb: {
    first: number | null;
    last: number | null;
    min: number | null;
    max: number | null;
    hwm: number | null;
    secondHalfSlopeMbPerMinute: number | null;
  };
  samples: { seconds: number; rssMb: number }[];
}

export interface SustainedResult {
  offeredRate: number;
  inserted: number;
  insertSeconds: number;
  achievedInsertRate: number;
  /** Events every sink accepted while the generator ran. */
  deliveredDuringInsert: number;
  deliveredRateDuringInsert: number;
  drainSeconds: number;
  deliveredRateIncludingDrain: number;
  keptUp: boolean;
  pipelinePeakRssMb: number;
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
  schema: 'engagement-bench/2';
  mode: 'smoke' | 'full';
  startedAt: string;
  finishedAt: string;
  command: string;
  machine: MachineInfo & { postgres: string; redis: string };
  /** 1/5/15-minute load averages: the machine is shared, this says how busy it was. */
  loadAverage: { atStart: number[]; atEnd: number[] };
  settings: {
    rates: number[];
    windowSeconds: number;
    durationSeconds: number;
    warmupSeconds: number;
    catchupEvents: number[];
    hog: boolean;
    /** False: run with --no-cpu-split (no V8 profiler, no split of the JS thread). Absent in older reports. */
    cpuSplit?: boolean;
    sustainedRate: number;
    sustainedSeconds: number;
    externalBatchSize: number;
    markersPerSecond: number;
    pollMs: number;
    pipelineCommand: string;
    pipelineEnv: Record<string, string>;
  };
  steady: SteadyResult[];
  soak: SoakResult | null;
  catchups: CatchupResult[];
  sustained: SustainedResult | null;
  components: ComponentCpu[];
  correctness: Correctness | null;
  /** A phase failed: the report holds the phases before it (see notes). */
  incomplete?: boolean;
  notes: string[];
  /** Absent in reports written before it was measured. */
  cliStartup?: CliStartup;
}

/** Writes `<out>/<timestamp>-<mode>.json`, `<out>/latest.json` and `<out>/latest.md`. */
export async function writeReport(report: BenchReport, outDir: string): Promise<string[]> {
  makeDirs(outDir);
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

const COMPONENT_NAMES: [Component, string][] = [
  ['decode', 'decode (pgoutput parse, row decode)'],
  ['enrich', 'enrich'],
  ['pipeline core', 'batching, fan-out, checkpoint'],
  ['duckdb', 'DuckDB sink (JS side, appender calls)'],
  ['redis', 'Redis sink (ioredis, Lua args)'],
  ['external', 'external sink (JSON, HTTP client)'],
  ['metrics+logging', 'metrics, logging, HTTP server'],
  ['gc', 'garbage collection (on the JS thread)'],
  ['native/event loop', 'native / event loop (socket I/O, timers)'],
  ['other js', 'other JS'],
];

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
    `Load average (1/5/15 min) at start ${r.loadAverage.atStart.join(' / ')}, at end ${r.loadAverage.atEnd.join(' / ')} ` +
      '(the machine is shared with other work; everything below ran beside it).',
    '',
    `Pipeline: \`${r.settings.pipelineCommand}\` (a child process; its CPU and RSS are read from /proc). ` +
      `Sinks: DuckDB + Redis + external (mock, EXTERNAL_BATCH_SIZE=${r.settings.externalBatchSize}).`,
    '',
    '## Steady latency',
    '',
    'Traffic: the generator inserts the events owed every 50 ms as multi-row INSERTs (about 20 transactions/s ' +
      'at any rate); rows marked "1 event/tx" insert each event in a transaction of its own, from 4 connections, as ' +
      'most applications commit.',
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
      `| ${steadyLabel(s)} / ${s.generated.achievedRate.toFixed(0)} | ${s.generated.seconds.toFixed(0)} s | ` +
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
        `| ${steadyLabel(s)} | ${ms(a.p50Ms)} / ${ms(a.p99Ms)} | ${ms(b.p50Ms)} / ${ms(b.p99Ms)} | ${ratio} |`,
      );
    }
  }
  if (r.catchups.length > 0) {
    lines.push(
      '',
      '## Catch-up throughput (all three sinks) against a bare pgoutput consumer',
      '',
      'Each backlog is inserted while the pipeline is stopped; a bare pg-logical-replication consumer that only counts ' +
        'decodes the same backlog from its own slot first; then the pipeline starts. Rate = from the first event delivered ' +
        'to every sink holding all of them.',
      '',
      '| backlog | insert rate | bare consumer | pipeline | ratio | incl. start-up | pipeline CPU µs/event | cores | peak RSS (HWM) |',
      '|---|---|---|---|---|---|---|---|---|',
    );
    for (const c of r.catchups) {
      lines.push(
        `| ${c.events.toLocaleString('en-US')} | ${c.insert.eventsPerSecond.toLocaleString('en-US')}/s | ` +
          `${c.rawDecode ? `${c.rawDecode.eventsPerSecond.toLocaleString('en-US')}/s` : '–'} | ` +
          `**${c.pipeline.eventsPerSecond.toLocaleString('en-US')}/s** | **${c.ratioToRawDecode ?? '–'}×** | ` +
          `${c.pipeline.eventsPerSecondFromSpawn.toLocaleString('en-US')}/s | ${c.pipelineCpu.microsPerEvent ?? '–'} | ` +
          `${c.pipelineCpu.coresUsed} | ${c.pipelinePeakRssMb} MB (${c.pipelineHwmMb ?? '–'} MB) |`,
      );
    }
    const busy = r.catchups.filter((c) => c.sinkWrites && Object.keys(c.sinkWrites).length > 0);
    const sinks = [...new Set(busy.flatMap((c) => Object.keys(c.sinkWrites!)))].sort();
    if (busy.length > 0) {
      lines.push(
        '',
        "Each sink's writes during the catch-up (from `engagement_sink_write_seconds`): the share of the time it was " +
          'writing (one merged write at a time per sink; the busiest is the stage the others wait for), the number of writes and their mean rows.',
        '',
        '| backlog | ' + sinks.join(' | ') + ' |',
        '|---|' + sinks.map(() => '---|').join(''),
      );
      for (const c of busy) {
        const cells = sinks.map((name) => {
          const w = c.sinkWrites![name];
          return w ? `${Math.round(w.busyShare * 100)} % busy, ${w.writes} writes of ${w.meanRows}` : '–';
        });
        lines.push(`| ${c.events.toLocaleString('en-US')} | ${cells.join(' | ')} |`);
      }
    }
  }
  const u = r.sustained;
  if (u) {
    lines.push(
      '',
      '## Sustained rate (all three sinks, external batched)',
      '',
      `Offered ${u.offeredRate.toLocaleString('en-US')} events/s for ${u.insertSeconds} s; the generator achieved ` +
        `${u.achievedInsertRate.toLocaleString('en-US')}/s. Every sink accepted **${u.deliveredRateDuringInsert.toLocaleString('en-US')} events/s** ` +
        `while it ran; drain after it stopped ${u.drainSeconds} s (${u.deliveredRateIncludingDrain.toLocaleString('en-US')}/s ` +
        `including the drain); kept up: ${u.keptUp ? 'yes' : 'no'}; peak RSS ${u.pipelinePeakRssMb} MB.`,
    );
  }
  const soak = r.soak;
  if (soak) {
    const every = Math.max(1, Math.floor(soak.samples.length / 10));
    const points = soak.samples.filter((_, i) => i % every === 0 || i === soak.samples.length - 1);
    lines.push(
      '',
      `## Long run: RSS over ${soak.seconds} s at ${soak.rate} events/s`,
      '',
      `RSS first ${soak.rssMb.first ?? '–'} MB, last ${soak.rssMb.last ?? '–'} MB, min ${soak.rssMb.min ?? '–'} MB, ` +
        `max ${soak.rssMb.max ?? '–'} MB (VmHWM ${soak.rssMb.hwm ?? '–'} MB); least-squares slope over the second half ` +
        `${soak.rssMb.secondHalfSlopeMbPerMinute ?? '–'} MB/min. Samples: ` +
        points.map((p) => `${Math.round(p.seconds)} s ${p.rssMb} MB`).join(', ') +
        '.',
    );
  }
  if (r.components.length > 0) {
    const cols = r.components;
    const cell = (v: number | null | undefined) => (v === null || v === undefined ? '–' : String(v));
    const baselines = r.catchups.filter((c) => c.rawDecode?.consumerMicrosPerEvent !== undefined);
    lines.push(
      '',
      '## CPU µs per event, by component',
      '',
      'One column per measured window. The pipeline process is read from /proc (all threads but the V8 profiler that ' +
        'splits the JS thread, which is the bench measuring; its JS thread alone); ' +
        "the JS thread is split by component with V8's sampling profiler (each sample goes to the innermost frame of a " +
        "component's code or client library; shared helpers count for their caller), scaled to the thread's measured CPU. " +
        'Walsender and redis-server are their processes from /proc; redis-server is shared with other users of this Redis.' +
        (r.settings.cpuSplit === false
          ? ' This run used --no-cpu-split: the pipeline ran without the profiler, so its JS thread is not split (–).'
          : ''),
      '',
      `| component | ${cols.map((c) => c.label).join(' | ')} |`,
      `|---|${cols.map(() => '---').join('|')}|`,
      `| events | ${cols.map((c) => c.events.toLocaleString('en-US')).join(' | ')} |`,
      `| **pipeline process, all threads** | ${cols.map((c) => `**${cell(c.pipelineMicrosPerEvent)}**`).join(' | ')} |`,
      `| pipeline cores busy | ${cols.map((c) => cell(c.pipelineCores)).join(' | ')} |`,
      `| JS thread | ${cols.map((c) => cell(c.jsThreadMicrosPerEvent)).join(' | ')} |`,
      ...COMPONENT_NAMES.map(
        ([key, name]) => `| &nbsp;&nbsp;${name} | ${cols.map((c) => cell(c.jsThread?.[key])).join(' | ')} |`,
      ),
      `| &nbsp;&nbsp;(JS thread idle, % of window) | ${cols.map((c) => cell(c.jsThreadIdleSharePct)).join(' | ')} |`,
      `| other threads (DuckDB workers, libuv pool, V8 background GC) | ${cols.map((c) => cell(c.otherThreadsMicrosPerEvent)).join(' | ')} |`,
      `| V8 profiler thread (the bench's measurement; not counted above) | ${cols.map((c) => cell(c.profilerMicrosPerEvent)).join(' | ')} |`,
      `| Postgres walsender | ${cols.map((c) => cell(c.walsenderMicrosPerEvent)).join(' | ')} |`,
      `| redis-server | ${cols.map((c) => cell(c.redisServerMicrosPerEvent)).join(' | ')} |`,
      `| mock external system | ${cols.map((c) => cell(c.mockExternalMicrosPerEvent)).join(' | ')} |`,
    );
    if (baselines.length > 0) {
      lines.push(
        '',
        'Bare-consumer baseline on the same backlogs (pg-logical-replication decoding and counting only): ' +
          baselines
            .map(
              (c) =>
                `${c.events.toLocaleString('en-US')} events: consumer ${c.rawDecode!.consumerMicrosPerEvent} µs/event, ` +
                `its walsender ${c.rawDecode!.walsenderMicrosPerEvent ?? '–'} µs/event, ${c.rawDecode!.eventsPerSecond.toLocaleString('en-US')} events/s`,
            )
            .join('; ') +
          '.',
      );
    }
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

/** A steady phase's rate as the tables show it: `1000`, `1000 + hog`, `1000, 1 event/tx`. */
function steadyLabel(s: SteadyResult): string {
  return `${s.targetRate}${s.rowsPerTransaction === 1 ? ', 1 event/tx' : ''}${s.cpuHog ? ' + hog' : ''}`;
}
