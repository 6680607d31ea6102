/**
 * The DuckDB sink alone, without Postgres or the other sinks: rows/s, CPU µs per row (the
 * whole process: JS and DuckDB's threads) and RSS per segment as the table grows, for
 *  - `position`: the sink as the direct pipeline runs it (replays recognised by position);
 *  - `id-check`: the sink for streams without trusted positions (backfill, Kafka);
 *  - `keyed-merge`: the previous path, kept here as the baseline (Appender into a temp staging
 *    table, then INSERT ... SELECT DISTINCT ON (event_id) ... ON CONFLICT DO NOTHING).
 * Each mode runs in its own child process (its own file and RSS); the modes take turns
 * segment by segment, so each segment of each mode meets about the same machine load.
 * CPU is counted twice: the whole process (process.cpuUsage(): JS, GC helpers and DuckDB's
 * threads) and the JS thread alone (its schedstat, in ns); the time spent making the bench's
 * own events is measured on the JS thread and left out of both.
 *
 *   node --import tsx src/bench/duckdb-sink.ts [--rows 400000] [--batch 2000] [--modes a,b,c] [--out file.json]
 * Writes bench/results/duckdb-sink.json unless --out says otherwise.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DuckDBInstance, type DuckDBAppender, type DuckDBConnection } from '@duckdb/node-api';
import { eventPosition } from '../domain/position.js';
import type { Batch, EnrichedEvent } from '../domain/types.js';
import { silentLogger } from '../logger.js';
import { DuckDbSink } from '../sinks/analytics/duckdb-sink.js';
import { createEventsTableSql } from '../sinks/analytics/duckdb/schema.js';
import { ROOT } from './children.js';

const MODES = ['position', 'id-check', 'keyed-merge'] as const;
type Mode = (typeof MODES)[number];

interface Segment {
  rowsInTable: number;
  rowsPerSecond: number;
  /** The whole process: JS thread, V8's helper threads and DuckDB's threads. */
  cpuMicrosPerRow: number;
  /** The JS (main) thread alone. */
  jsCpuMicrosPerRow: number;
  rssMb: number;
  /** Last segment only: the sink's stop() (its final CHECKPOINT), per row in the table. */
  stopCpuMicrosPerRow?: number;
  stopJsCpuMicrosPerRow?: number;
}

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '400000' },
    batch: { type: 'string', default: '2000' },
    segment: { type: 'string', default: '100000' },
    modes: { type: 'string', default: MODES.join(',') },
    child: { type: 'string' },
    'memory-limit': { type: 'string', default: '64MB' },
    /** The previous path's shipped default; at 64MB its merge failed near 800k rows here. */
    'baseline-memory-limit': { type: 'string', default: '256MB' },
    out: { type: 'string' },
  },
});
const rows = Number(values.rows);
const batchSize = Number(values.batch);
const segment = Number(values.segment);

/** A child: one DuckDB file, one segment of rows per line read from stdin, each reported as a JSON line. */
async function runMode(mode: Mode): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-duckdb-sink-'));
  const file = path.join(dir, 'analytics.duckdb');
  const write = await writer(mode, file);
  let seq = 0;
  let next = 1;
  let stopped = false;
  try {
    process.stdout.write('ready\n');
    for await (const _line of createInterface({ input: process.stdin })) {
      const wall = performance.now();
      const cpu = process.cpuUsage();
      const js = jsThreadNs();
      let makingNs = 0;
      const end = Math.min(rows, next + segment - 1);
      const n = end - next + 1;
      for (; next <= end; next += batchSize) {
        const making = jsThreadNs();
        const b = batch(++seq, next, Math.min(batchSize, end - next + 1));
        makingNs += jsThreadNs() - making;
        await write.write(b);
      }
      next = end + 1;
      const used = process.cpuUsage(cpu);
      const jsNs = jsThreadNs() - js;
      const perRow = (ns: number) => Math.round((ns / 1000 / n) * 10) / 10;
      const result: Segment = {
        rowsInTable: end,
        rowsPerSecond: Math.round(n / ((performance.now() - wall) / 1000)),
        cpuMicrosPerRow: perRow((used.user + used.system) * 1000 - makingNs),
        jsCpuMicrosPerRow: perRow(jsNs - makingNs),
        rssMb: Math.round(process.memoryUsage().rss / 1e6),
      };
      if (end >= rows) {
        // The final CHECKPOINT compresses what the automatic ones left: a larger checkpoint
        // threshold only moves work here, so it is counted (per row of the whole table).
        const cpuAtStop = process.cpuUsage();
        const jsAtStop = jsThreadNs();
        stopped = true;
        await write.stop();
        const usedAtStop = process.cpuUsage(cpuAtStop);
        result.stopCpuMicrosPerRow = Math.round(((usedAtStop.user + usedAtStop.system) / end) * 100) / 100;
        result.stopJsCpuMicrosPerRow = Math.round(((jsThreadNs() - jsAtStop) / 1000 / end) * 100) / 100;
      }
      process.stdout.write(`${JSON.stringify(result)}\n`);
      if (end >= rows) break;
    }
  } finally {
    if (!stopped) await write.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  // Leaving the loop does not release stdin: a pipe the parent still holds would keep this
  // process (and so the parent, which waits for it) alive.
  process.stdin.destroy();
}

/** CPU time of this process's JS thread (the main thread: its tid is the pid), ns. */
function jsThreadNs(): number {
  return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
}

/**
 * Events shaped like the generator's after enrichment: UUID keys (a logged-out click without a
 * user now and then), a payload of six or seven fields, microsecond event times, a source
 * transaction of about 50 events (committed_at), one processed_at per batch, and NULL derived
 * fields where the generator makes them (negative durations, clicks without a duration).
 */
function batch(seq: number, from: number, n: number): Batch {
  const events: EnrichedEvent[] = [];
  const positions: string[] = [];
  const start = Date.UTC(2026, 11, 1, 8);
  const processed = new Date(start + seq * 1000 + 500).toISOString();
  for (let id = from; id < from + n; id++) {
    const type = EVENT_TYPES[id % 4];
    const duration = type === 'click' ? null : id % 53 === 0 ? -(id % 600_000) : id % 600_000;
    const payload: Record<string, unknown> = {
      app_version: `5.${id % 7}.${id % 3}`,
      os: OSES[id % 3],
      locale: LOCALES[id % 4],
      referrer: REFERRERS[id % 5],
      session_id: `s-${(id % 9_973).toString(36)}-${(id >> 7).toString(36)}`,
      network: id % 5 < 3 ? 'wifi' : 'cellular',
    };
    if (type === 'play' || type === 'pause') payload.position_ms = (id * 7919) % 270_000;
    if (type === 'click') payload.target = 'share';
    const seconds = duration === null || duration < 0 ? null : duration / 1000;
    const committed = new Date(start + Math.floor(id / 50) * 20).toISOString().replace('Z', '417Z');
    events.push({
      event_id: id,
      content_id: `00000000-0000-4000-8000-${String(id % 500).padStart(12, '0')}`,
      user_id:
        type === 'click' && id % 8 === 3
          ? null
          : `10000000-0000-4000-8000-${String(id % 100_000).padStart(12, '0')}`,
      event_type: type,
      event_ts: new Date(start + id * 3).toISOString().replace('Z', `${id % 1000}`.padStart(3, '0') + 'Z'),
      duration_ms: duration,
      device: DEVICES[id % 3],
      raw_payload: payload,
      content_type: 'video',
      length_seconds: 300,
      engagement_seconds: seconds,
      engagement_pct: seconds === null ? null : Math.round((seconds / 300) * 100) / 100,
      committed_at: committed,
      processed_at: processed,
    });
    positions.push(eventPosition(`0/${(0x10000 + Math.floor(id / 10)).toString(16)}`, id % 10));
  }
  return { seq, stream: 'slot', events, positions, ackLsn: null };
}

const EVENT_TYPES = ['play', 'pause', 'finish', 'click'];
const DEVICES = ['ios', 'android', 'web'];
const OSES = ['iOS 18.1', 'Android 15', 'macOS 15'];
const LOCALES = ['en-US', 'de-DE', 'fr-FR', 'ja-JP'];
const REFERRERS = ['direct', 'search', 'social', 'newsletter', 'partner'];

async function writer(
  mode: Mode,
  file: string,
): Promise<{ write(b: Batch): Promise<void>; stop(): Promise<void> }> {
  if (mode === 'keyed-merge') return KeyedMerge.open(file, values['baseline-memory-limit']!);
  const sink = new DuckDbSink({
    path: file,
    logger: silentLogger(),
    memoryLimit: values['memory-limit'],
    positionedStream: mode === 'position' ? { stream: 'slot', sourceId: async () => 'bench' } : undefined,
  });
  await sink.start();
  return { write: (b) => sink.write(b), stop: () => sink.stop() };
}

/** The previous write path, for comparison only. */
class KeyedMerge {
  private constructor(
    private readonly instance: DuckDBInstance,
    private readonly connection: DuckDBConnection,
    private readonly staging: DuckDBAppender,
  ) {}

  static async open(file: string, memoryLimit: string): Promise<KeyedMerge> {
    const instance = await DuckDBInstance.create(file, { memory_limit: memoryLimit });
    const connection = await instance.connect();
    await connection.run(createEventsTableSql('engagement', 'engagement.events_enriched'));
    await connection.run(`CREATE TEMP TABLE events_staging (
      event_id BIGINT, content_id VARCHAR, user_id VARCHAR, event_type VARCHAR, event_ts VARCHAR,
      duration_ms INTEGER, device VARCHAR, raw_payload VARCHAR, content_type VARCHAR,
      length_seconds INTEGER, engagement_seconds VARCHAR, engagement_pct VARCHAR,
      committed_at VARCHAR, processed_at VARCHAR)`);
    const staging = await connection.createAppender('events_staging', 'main', 'temp');
    return new KeyedMerge(instance, connection, staging);
  }

  async write(b: Batch): Promise<void> {
    const a = this.staging;
    const text = (v: string | null) => (v === null ? a.appendNull() : a.appendVarchar(v));
    const int = (v: number | null) => (v === null ? a.appendNull() : a.appendInteger(v));
    for (const e of b.events) {
      a.appendBigInt(BigInt(e.event_id));
      text(e.content_id);
      text(e.user_id);
      text(e.event_type);
      a.appendVarchar(e.event_ts);
      int(e.duration_ms);
      text(e.device);
      text(e.raw_payload === null ? null : JSON.stringify(e.raw_payload));
      text(e.content_type);
      int(e.length_seconds);
      text(e.engagement_seconds === null ? null : String(e.engagement_seconds));
      text(e.engagement_pct === null ? null : String(e.engagement_pct));
      a.appendVarchar(e.committed_at);
      a.appendVarchar(e.processed_at);
      a.endRow();
    }
    a.flushSync();
    await this.connection.run('BEGIN TRANSACTION');
    await this.connection.run(`INSERT INTO engagement.events_enriched
      SELECT DISTINCT ON (event_id) event_id, content_id::UUID, user_id::UUID, event_type, event_ts::TIMESTAMPTZ,
        duration_ms, device, raw_payload::JSON, content_type, length_seconds, engagement_seconds::DECIMAL(12,3),
        engagement_pct::DECIMAL(12,2), committed_at::TIMESTAMPTZ, processed_at::TIMESTAMPTZ
      FROM temp.main.events_staging ON CONFLICT DO NOTHING`);
    await this.connection.run('COMMIT');
    await this.connection.run('DELETE FROM temp.main.events_staging');
  }

  async stop(): Promise<void> {
    this.staging.closeSync();
    await this.connection.run('CHECKPOINT');
    this.connection.closeSync();
    this.instance.closeSync();
  }
}

// Last, so that the classes above are initialised before the top-level await uses them.
if (values.child) {
  await runMode(values.child as Mode);
} else {
  const modes = values.modes!.split(',') as Mode[];
  const children = new Map<
    Mode,
    { send(): Promise<Segment>; close(): Promise<void>; lines: AsyncIterator<string> }
  >();
  for (const mode of modes) {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        path.join(ROOT, 'src', 'bench', 'duckdb-sink.ts'),
        ...process.argv.slice(2),
        '--child',
        mode,
      ],
      { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    if ((await lines.next()).value !== 'ready') throw new Error(`${mode} did not start`);
    const exited = once(child, 'exit');
    children.set(mode, {
      lines,
      close: async () => {
        child.stdin!.end();
        const [code] = (await exited) as [number | null];
        if (code !== 0) throw new Error(`${mode} exited with ${code}`);
      },
      send: async () => {
        child.stdin!.write('next\n');
        const line = await lines.next();
        if (line.done) throw new Error(`${mode} ended early`);
        return JSON.parse(line.value) as Segment;
      },
    });
  }
  // Segment by segment, the modes in turn: each segment of each mode meets about the same load.
  const results: Record<string, Segment[]> = Object.fromEntries(modes.map((m) => [m, []]));
  for (let done = 0; done < rows; done += segment) {
    for (const mode of modes) {
      const s = await children.get(mode)!.send();
      results[mode].push(s);
      process.stdout.write(
        `${mode.padEnd(12)} ${String(s.rowsInTable).padStart(8)} rows: ${s.rowsPerSecond} rows/s, ` +
          `${s.cpuMicrosPerRow} µs CPU/row (JS thread ${s.jsCpuMicrosPerRow}), RSS ${s.rssMb} MB\n`,
      );
      if (s.stopCpuMicrosPerRow !== undefined)
        process.stdout.write(
          `${mode.padEnd(12)} stop (final CHECKPOINT): ${s.stopCpuMicrosPerRow} µs CPU per row in the table ` +
            `(JS thread ${s.stopJsCpuMicrosPerRow})\n`,
        );
    }
  }
  // Each child closes its file and exits once its stdin ends.
  await Promise.all([...children.values()].map((c) => c.close()));
  const report = {
    schema: 'engagement-bench-duckdb-sink/1',
    at: new Date().toISOString(),
    command: `node --import tsx src/bench/duckdb-sink.ts ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { nproc: cpus().length, loadAverage: loadavg() },
    settings: {
      rows,
      batchSize,
      segment,
      memoryLimit: values['memory-limit'],
      baselineMemoryLimit: values['baseline-memory-limit'],
    },
    note: 'each mode in its own process with its own file, segments interleaved mode by mode; cpuMicrosPerRow is the whole process (JS + V8 helpers + DuckDB threads, process.cpuUsage()), jsCpuMicrosPerRow the JS thread alone (/proc schedstat), both without the bench making its events; rows/s is wall time on a shared machine',
    results,
  };
  const file = values.out ?? path.join(ROOT, 'bench', 'results', 'duckdb-sink.json');
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`);
}
