import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os, { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { startEmbeddedPostgres } from '../db/embedded.js';
import { migrate } from '../db/migrate.js';
import { createPool } from '../db/postgres.js';
import { buildCatalog, DEFAULT_CATALOG_SEED, DEFAULT_CATALOG_SIZE } from '../generator/catalog.js';
import { ensureCatalog, runGenerator } from '../generator/writer.js';
import { redisKeys } from '../sinks/redis/keys.js';
import { createRawSlot, measureRawDecode, PollingBaseline } from './baselines.js';
import { measureCliStartup } from './cli-startup.js';
import { freePort } from '../ports.js';
import { CliChild, cliCommand, ROOT, waitForHttp } from './children.js';
import { createMarkerContent, LatencyProbe, type MarkerResult } from './latency-probe.js';
import { COMPONENTS, hrtimeUs, readProfile, splitProfile, type Window } from './cpu-profile.js';
import { cpuSeconds, machineInfo, mainThreadCpu, memory, round1, RssSampler } from './proc.js';
import type {
  BenchReport,
  CatchupResult,
  ComponentCpu,
  Correctness,
  SoakResult,
  SteadyResult,
  SustainedResult,
} from './report.js';
import {
  counterBy,
  histogramBy,
  histogramDelta,
  parsePrometheus,
  summarize,
  summarizeHistogram,
  type HistogramBuckets,
  type PromSample,
} from './stats.js';
import { makeDirs } from '../make-dirs.js';

export interface BenchOptions {
  smoke: boolean;
  rates: number[];
  /** Steady rates written one event per transaction (after the rates above, without a hog). */
  singleRowRates: number[];
  /** Measured seconds per rate. */
  windowSeconds: number;
  /** The long run (RSS over time) at the first rate, seconds; 0 skips. */
  durationSeconds: number;
  warmupSeconds: number;
  /** Backlog sizes, each inserted while the pipeline is stopped, then timed. */
  catchupEvents: number[];
  /** Repeat every rate with a CPU hog on one core. */
  hog: boolean;
  /** Offered rate and seconds of the sustained run with all three sinks; 0 skips. */
  sustainedRate: number;
  sustainedSeconds: number;
  externalBatchSize: number;
  markersPerSecond: number;
  pollMs: number;
  redisUrl: string;
  cli: 'auto' | 'dist' | 'tsx';
  /**
   * Run the pipeline with V8's profiler to split its JS thread by component. Its 100 samples a
   * second wake the thread as often, which an idle or low-rate pipeline otherwise is not.
   */
  cpuSplit: boolean;
  cpuProfileDir: string | null;
  command: string;
  log: (line: string) => void;
  signal?: AbortSignal;
}

const SLOT = 'engagement_pipeline';
const HISTOGRAM = 'engagement_commit_to_sink_seconds';
const WRITE_SECONDS = 'engagement_sink_write_seconds';
const DELIVERED = 'engagement_events_delivered_total';
const RECEIVED = 'engagement_events_received_total';
const SINKS = ['analytics', 'redis', 'external'];

/** Runs the whole benchmark; every child process, temp dir and Redis key it made is gone when it returns. */
export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const startedAt = new Date().toISOString();
  const cleanups: (() => Promise<unknown>)[] = [];
  const cleanupAll = async () => {
    for (const fn of cleanups.reverse()) await fn().catch((err) => o.log(`cleanup: ${String(err)}`));
    cleanups.length = 0;
  };
  const checkAborted = () => {
    if (o.signal?.aborted) throw new Error('interrupted');
  };
  try {
    const tmp = mkdtempSync(path.join(tmpdir(), 'engagement-bench-'));
    chmodSync(tmp, 0o755); // embedded Postgres runs as the postgres user when we are root
    cleanups.push(() => rm(tmp, { recursive: true, force: true }));

    // --- Postgres (embedded, private) ---
    const pgPort = await freePort();
    o.log(`starting embedded Postgres on 127.0.0.1:${pgPort}`);
    const cluster = await startEmbeddedPostgres({ dataDir: path.join(tmp, 'pg'), port: pgPort, fresh: true });
    cleanups.push(() => cluster.stop());
    await cluster.createDatabase('bench');
    const databaseUrl = cluster.urlFor('bench');
    await migrate(databaseUrl, { slotName: SLOT, publicationName: SLOT });
    const pool = createPool(databaseUrl, 4, 'engagement-bench');
    cleanups.push(() => pool.end());
    const markerPool = createPool(databaseUrl, 2, 'engagement-bench-markers');
    cleanups.push(() => markerPool.end());
    const { catalog } = await ensureCatalog(
      pool,
      buildCatalog({ seed: DEFAULT_CATALOG_SEED, size: DEFAULT_CATALOG_SIZE }),
    );
    // Backlogs (catch-up) use the catalogue only; the steady phases add a content id per marker.
    const catalogIds = catalog.map((c) => c.id);
    const countedIds = [...catalogIds];

    // --- Redis (the machine's, random prefix) ---
    const prefix = `bench:${randomBytes(4).toString('hex')}:`;
    const redis = new Redis(o.redisUrl, { maxRetriesPerRequest: 2 });
    cleanups.push(async () => {
      await deleteKeys(redis, prefix);
      redis.disconnect();
    });
    await redis.ping();
    const keys = redisKeys(prefix);

    // --- the mock external system (a child, so it does not share the bench's event loop) ---
    const cli = cliCommand(o.cli);
    const mockPort = await freePort();
    const mock = new CliChild(cli, ['mock-external', '--port', String(mockPort)], {});
    cleanups.push(() => mock.stop(10_000));
    const mockUrl = `http://127.0.0.1:${mockPort}/`;
    await waitForHttp(`${mockUrl}healthz`, mock);
    const mockStats = async () =>
      (await (await fetch(`${mockUrl}_stats`)).json()) as {
        uniqueEventIds: number;
        duplicateEvents: number;
        duplicates: number;
      };

    // --- the pipeline (a child: measured on its own) ---
    const httpPort = await freePort();
    const duckdbFile = path.join(tmp, 'analytics.duckdb');
    const pipelineEnv: Record<string, string> = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: o.redisUrl,
      REDIS_PREFIX: prefix,
      ANALYTICS_URL: `duckdb:${duckdbFile}`,
      EXTERNAL_URL: `${mockUrl}events`,
      EXTERNAL_BATCH_SIZE: String(o.externalBatchSize),
      PORT: String(httpPort),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
    };
    let pipeline: CliChild | null = null;
    const pipelinePid = () => pipeline?.pid ?? null;
    const rss = new RssSampler(pipelinePid);
    rss.start();
    cleanups.push(async () => rss.stop());

    // Unless --no-cpu-split, every pipeline child runs with the V8 profiler (idle notifier on, so
    // waiting is `(idle)`): its JS thread's CPU is split into components per measured window once it exits.
    const preload = path.join(tmp, 'profile-idle.mjs');
    writeFileSync(preload, 'process._startProfilerIdleNotifier?.();\n');
    let childNo = 0;
    /** Windows of the running child, split when it exits and its profile is written. */
    let pendingSplits: { window: Window; row: ComponentCpu; mainCpuSeconds: number }[] = [];
    let profileDir = '';
    const startPipeline = async () => {
      profileDir = path.join(tmp, `profile-${++childNo}`);
      makeDirs(profileDir);
      const profiler = [
        '--import',
        pathToFileURL(preload).href,
        '--cpu-prof',
        `--cpu-prof-dir=${profileDir}`,
        // 100 samples/s: enough over a window of seconds, and the sampler's own cost stays small.
        '--cpu-prof-interval',
        '10000',
      ];
      const child = new CliChild(cli, ['run'], pipelineEnv, o.cpuSplit ? profiler : []);
      pipeline = child;
      cleanups.push(() => child.stop(10_000));
      return child;
    };
    const stopPipeline = async () => {
      const child = pipeline;
      if (!child) return;
      await child.stop();
      pipeline = null;
      const profile = readProfile(profileDir);
      if (profile && pendingSplits.length > 0) {
        const splits = splitProfile(
          profile,
          pendingSplits.map((p) => p.window),
        );
        pendingSplits.forEach((p, i) => fillFromProfile(p.row, splits[i], p.mainCpuSeconds));
      } else if (pendingSplits.length > 0 && o.cpuSplit) {
        report.notes.push(`No CPU profile from pipeline child ${childNo}: its JS thread is not split.`);
      }
      if (o.cpuProfileDir) {
        makeDirs(o.cpuProfileDir);
        cpSync(profileDir, path.join(o.cpuProfileDir, `child-${childNo}`), { recursive: true });
      }
      pendingSplits = [];
    };
    const scrape = async (): Promise<PromSample[]> =>
      parsePrometheus(await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text());
    const redisCountSum = async (ids: readonly string[] = countedIds): Promise<number> => {
      let sum = 0;
      for (let i = 0; i < ids.length; i += 1000) {
        const values = await redis.mget(...ids.slice(i, i + 1000).map(keys.contentCount));
        for (const v of values) sum += v === null ? 0 : Number(v);
      }
      return sum;
    };
    const redisPid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1] ?? 0) || null;
    const walsenderPid = async (applicationName: string): Promise<number | null> => {
      const { rows } = await pool.query<{ pid: number }>(
        'SELECT pid FROM pg_stat_replication WHERE application_name = $1',
        [applicationName],
      );
      return rows.length === 1 ? rows[0].pid : null;
    };

    /** CPU of everything the pipeline makes busy, at one moment. */
    interface Snap {
      atUs: number;
      main: number;
      /** Every thread but the profiler's. */
      total: number;
      profiler: number;
      walsender: number | null;
      redisServer: number | null;
      mock: number | null;
    }
    const snap = (walsender: number | null): Snap => {
      const pid = pipelinePid();
      const threads = pid === null ? null : mainThreadCpu(pid);
      return {
        atUs: hrtimeUs(),
        main: threads?.main ?? 0,
        // The profiler's own thread is the bench's measurement, not the pipeline's work (about
        // 7 µs per event at 1,000 events/s); reported on a row of its own.
        total: (threads?.total ?? 0) - (threads?.profiler ?? 0),
        profiler: threads?.profiler ?? 0,
        walsender: walsender === null ? null : cpuSeconds(walsender),
        redisServer: redisPid === null ? null : cpuSeconds(redisPid),
        mock: mock.pid === null ? null : cpuSeconds(mock.pid),
      };
    };
    /** A component row for the window a..b; the JS thread is split when the child exits. */
    const componentRow = (label: string, a: Snap, b: Snap, events: number): ComponentCpu => {
      const per = (s: number | null) => (s === null || events <= 0 ? null : round1((s * 1e6) / events));
      const diff = (x: number | null, y: number | null) => (x === null || y === null ? null : y - x);
      const wall = (b.atUs - a.atUs) / 1e6;
      const row: ComponentCpu = {
        label,
        events,
        wallSeconds: round3(wall),
        pipelineMicrosPerEvent: per(b.total - a.total),
        pipelineCores: wall > 0 ? round2((b.total - a.total) / wall) : 0,
        jsThreadMicrosPerEvent: per(b.main - a.main),
        otherThreadsMicrosPerEvent: per(b.total - b.main - (a.total - a.main)),
        profilerMicrosPerEvent: o.cpuSplit ? per(b.profiler - a.profiler) : null,
        jsThread: null,
        jsThreadIdleSharePct: null,
        walsenderMicrosPerEvent: per(diff(a.walsender, b.walsender)),
        redisServerMicrosPerEvent: per(diff(a.redisServer, b.redisServer)),
        mockExternalMicrosPerEvent: per(diff(a.mock, b.mock)),
      };
      pendingSplits.push({
        window: { startUs: a.atUs, endUs: b.atUs },
        row,
        mainCpuSeconds: b.main - a.main,
      });
      return row;
    };
    const fillFromProfile = (
      row: ComponentCpu,
      split: ReturnType<typeof splitProfile>[number],
      mainCpuSeconds: number,
    ) => {
      const busyMs = COMPONENTS.reduce((sum, c) => sum + split.ms[c], 0);
      if (busyMs <= 0 || row.events <= 0) return;
      // Sampled time is wall time on the thread; scaled to the thread's measured CPU.
      row.jsThread = Object.fromEntries(
        COMPONENTS.map((c) => [c, round1(((split.ms[c] / busyMs) * mainCpuSeconds * 1e6) / row.events)]),
      ) as ComponentCpu['jsThread'];
      row.jsThreadIdleSharePct = Math.round((split.idleMs / (split.idleMs + busyMs)) * 100);
    };

    let expected = 0; // events inserted into engagement_events so far
    let childBase = 0; // `expected` when the current pipeline child started
    let lastProgress = '';
    const allDelivered = async (): Promise<boolean> => {
      const delivered = counterBy(await scrape(), DELIVERED, 'sink');
      const redisSum = await redisCountSum();
      const external = (await mockStats()).uniqueEventIds;
      lastProgress = `expected ${expected} (this pipeline child: ${expected - childBase}); delivered per sink ${JSON.stringify(delivered)}; Redis count sum ${redisSum}; external unique ${external}`;
      if (SINKS.some((s) => (delivered[s] ?? 0) < expected - childBase)) return false;
      return redisSum >= expected && external >= expected;
    };
    const minDelivered = async (): Promise<number> => {
      const delivered = counterBy(await scrape(), DELIVERED, 'sink');
      return Math.min(...SINKS.map((s) => delivered[s] ?? 0));
    };

    const [pgVersion] = (await pool.query<{ v: string }>('SELECT version() AS v')).rows;
    const redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? 'unknown';
    const report: BenchReport = {
      schema: 'engagement-bench/2',
      mode: o.smoke ? 'smoke' : 'full',
      startedAt,
      finishedAt: '',
      command: o.command,
      machine: { ...machineInfo(), postgres: pgVersion.v, redis: redisVersion },
      loadAverage: { atStart: os.loadavg().map(round2), atEnd: [] },
      settings: {
        rates: o.rates,
        windowSeconds: o.windowSeconds,
        durationSeconds: o.durationSeconds,
        warmupSeconds: o.warmupSeconds,
        catchupEvents: o.catchupEvents,
        hog: o.hog,
        cpuSplit: o.cpuSplit,
        sustainedRate: o.sustainedRate,
        sustainedSeconds: o.sustainedSeconds,
        externalBatchSize: o.externalBatchSize,
        markersPerSecond: o.markersPerSecond,
        pollMs: o.pollMs,
        pipelineCommand: `node ${[...cli.argv.map((a) => path.relative(ROOT, a) || a), 'run'].join(' ')} (${cli.mode})`,
        pipelineEnv: { ...redactEnv(pipelineEnv), ...inheritedTuning() },
      },
      steady: [],
      soak: null,
      catchups: [],
      sustained: null,
      components: [],
      correctness: null,
      notes: [],
      cliStartup: measureCliStartup(cli),
    };

    let failure: Error | null = null;
    const waitReady = async (child: CliChild) => waitForHttp(`http://127.0.0.1:${httpPort}/readyz`, child);
    // A phase that fails ends the run, but the phases done so far are still reported.
    try {
      o.log(`starting the pipeline (${cli.mode})`);
      childBase = expected;
      await waitReady(await startPipeline());

      // --- steady latency, one rate at a time (then again with a CPU hog on one core) ---
      const phases: { rate: number; hog: boolean; rowsPerTransaction?: number }[] = [
        ...o.rates.map((rate) => ({ rate, hog: false })),
        // Most applications commit each event alone: a batch per commit would cost every sink a write.
        ...o.singleRowRates.map((rate) => ({ rate, hog: false, rowsPerTransaction: 1 })),
        ...(o.hog ? o.rates.map((rate) => ({ rate, hog: true })) : []),
      ];
      for (const { rate, hog, rowsPerTransaction } of phases) {
        checkAborted();
        const name = `${rate}/s${rowsPerTransaction === 1 ? ', 1 event/transaction' : ''}${hog ? ' + CPU hog' : ''}`;
        const markerIds = await createMarkerContent(
          pool,
          Math.ceil(o.markersPerSecond * o.windowSeconds * 1.2) + 10,
        );
        countedIds.push(...markerIds);
        const hogProcess = hog ? startHog() : null;
        try {
          o.log(`${name}: warm-up ${o.warmupSeconds} s`);
          const warm = await runGenerator({
            databaseUrl,
            rate,
            durationSeconds: o.warmupSeconds,
            rowsPerTransaction,
            signal: o.signal,
          });
          expected += warm.inserted;
          checkAborted();

          o.log(`${name}: measuring ${o.windowSeconds} s`);
          const before = await scrape();
          const walsender = await walsenderPid('engagement-replication');
          const s0 = snap(walsender);
          rss.take();
          const probe = new LatencyProbe(redis, prefix, o.pollMs);
          probe.start();
          const poller = new PollingBaseline(markerPool);
          await poller.start();
          const stopMarkers = new AbortController();
          let markersInserted = 0;
          const markerLoop = (async () => {
            const every = 1000 / o.markersPerSecond;
            const t0 = performance.now();
            for (let i = 0; i < markerIds.length && !stopMarkers.signal.aborted; i++) {
              const wait = t0 + i * every - performance.now();
              if (wait > 0) await new Promise((r) => setTimeout(r, wait));
              if (stopMarkers.signal.aborted) break;
              poller.watch(markerIds[i], await probe.mark(markerPool, markerIds[i]));
              markersInserted += 1;
            }
          })();
          const gen = await runGenerator({
            databaseUrl,
            rate,
            durationSeconds: o.windowSeconds,
            rowsPerTransaction,
            signal: o.signal,
          });
          stopMarkers.abort();
          await markerLoop;
          expected += gen.inserted + markersInserted;
          const genDone = performance.now();
          const markers = await probe.finish(30_000);
          await new Promise((r) => setTimeout(r, 1100)); // one more poll for the last markers
          await poller.stop();
          await waitUntil(allDelivered, 120_000).catch((err: Error) => {
            throw new Error(`${err.message}: ${lastProgress}`);
          });
          const drainSeconds = (performance.now() - genDone) / 1000;
          const after = await scrape();
          const s1 = snap(walsender);
          const windowSeconds = gen.seconds + drainSeconds;
          const events = counterBy(after, RECEIVED, '')[''] - (counterBy(before, RECEIVED, '')[''] ?? 0);
          const result: SteadyResult = {
            targetRate: rate,
            cpuHog: hog,
            ...(rowsPerTransaction === undefined ? {} : { rowsPerTransaction }),
            warmupSeconds: o.warmupSeconds,
            generated: {
              events: gen.inserted,
              seconds: round3(gen.seconds),
              achievedRate: round1(gen.achievedRate),
            },
            markers: {
              inserted: markersInserted,
              seen: markers.filter((m) => m.seenAt !== null).length,
              unseen: markers.filter((m) => m.seenAt === null).length,
              perSecond: o.markersPerSecond,
            },
            commitToRedisVisible: summarize(latencies(markers, 'committedAt')),
            ackToRedisVisible: summarize(latencies(markers, 'ackedAt')),
            commitToSinkAck: summarizeHistogram(histDelta(after, before)),
            drainSeconds: round3(drainSeconds),
            keptUp: gen.achievedRate >= rate * 0.98 && drainSeconds < 2,
            pipelineCpu: cpuSummary(s1.total - s0.total, events, windowSeconds),
            pipelinePeakRssMb: rss.take(),
            pollingBaselineAckToSeen: poller.latenciesMs.length > 0 ? summarize(poller.latenciesMs) : null,
          };
          report.steady.push(result);
          report.components.push(componentRow(`steady ${name}`, s0, s1, events));
          const v = result.commitToRedisVisible;
          o.log(
            `${name}: achieved ${result.generated.achievedRate}/s; commit->Redis-visible p50 ${v.p50Ms} ms, ` +
              `p99 ${v.p99Ms} ms (${v.samples} markers); drain ${result.drainSeconds} s; ` +
              `${result.pipelineCpu.microsPerEvent} µs CPU/event; peak RSS ${result.pipelinePeakRssMb} MB`,
          );
        } finally {
          hogProcess?.kill('SIGKILL');
        }
      }

      // --- the long run: RSS over time at the first rate ---
      if (o.durationSeconds > 0) {
        checkAborted();
        const rate = o.rates[0];
        o.log(`long run: ${o.durationSeconds} s at ${rate}/s, RSS sampled`);
        const walsender = await walsenderPid('engagement-replication');
        const delivered0 = await minDelivered();
        const s0 = snap(walsender);
        const t0 = performance.now();
        const samples: { seconds: number; rssMb: number }[] = [];
        const sampleEveryMs = Math.max(1000, Math.min(10_000, (o.durationSeconds * 1000) / 60));
        const sampler = setInterval(() => {
          const pid = pipelinePid();
          const m = pid === null ? null : memory(pid);
          if (m) samples.push({ seconds: round1((performance.now() - t0) / 1000), rssMb: m.rssMb });
        }, sampleEveryMs);
        let gen;
        try {
          gen = await runGenerator({
            databaseUrl,
            rate,
            durationSeconds: o.durationSeconds,
            signal: o.signal,
          });
        } finally {
          clearInterval(sampler);
        }
        expected += gen.inserted;
        await waitUntil(allDelivered, 120_000).catch((err: Error) => {
          throw new Error(`${err.message}: ${lastProgress}`);
        });
        const s1 = snap(walsender);
        const events = (await minDelivered()) - delivered0;
        const pid = pipelinePid();
        const mem = pid === null ? null : memory(pid);
        const half = samples.filter((x) => x.seconds >= o.durationSeconds / 2);
        const rssValues = samples.map((x) => x.rssMb);
        const soak: SoakResult = {
          rate,
          seconds: round3(gen.seconds),
          events,
          rssMb: {
            first: rssValues[0] ?? null,
            last: rssValues[rssValues.length - 1] ?? null,
            min: rssValues.length > 0 ? Math.min(...rssValues) : null,
            max: rssValues.length > 0 ? Math.max(...rssValues) : null,
            hwm: mem?.hwmMb ?? null,
            secondHalfSlopeMbPerMinute: half.length >= 2 ? round2(slope(half) * 60) : null,
          },
          samples,
        };
        report.soak = soak;
        report.components.push(componentRow(`long run ${rate}/s`, s0, s1, events));
        o.log(
          `long run: RSS first ${soak.rssMb.first} MB, last ${soak.rssMb.last} MB, max ${soak.rssMb.max} MB; ` +
            `second-half slope ${soak.rssMb.secondHalfSlopeMbPerMinute} MB/min`,
        );
      }
      await stopPipeline();

      // --- catch-up: a backlog in the slot, then the pipeline starts (each size in turn) ---
      for (const size of o.catchupEvents) {
        if (size <= 0) continue;
        checkAborted();
        await createRawSlot(pool);
        o.log(`catch-up ${size}: inserting ${size} events while the pipeline is stopped`);
        const ins = await runGenerator({ databaseUrl, rate: 1e9, count: size, signal: o.signal });
        expected += ins.inserted;
        checkAborted();
        o.log(`catch-up ${size}: a bare pgoutput consumer decodes the same backlog (its own slot)`);
        let rawWalsender: number | null = null;
        let rawWal0: number | null = null;
        const rawCpu0 = process.cpuUsage();
        const findRaw = setInterval(() => {
          if (rawWalsender !== null) return;
          void walsenderPid('engagement-bench-raw').then((pid) => {
            if (pid !== null && rawWalsender === null) {
              rawWalsender = pid;
              rawWal0 = cpuSeconds(pid);
            }
          });
        }, 20);
        let rawDecode;
        let rawWalSeconds: number | null = null;
        try {
          rawDecode = await measureRawDecode(databaseUrl, pool, SLOT, ins.inserted, () => {
            if (rawWalsender !== null && rawWal0 !== null) {
              const end = cpuSeconds(rawWalsender);
              rawWalSeconds = end === null ? null : end - rawWal0;
            }
          });
        } finally {
          clearInterval(findRaw);
        }
        const rawCpu = process.cpuUsage(rawCpu0);
        const rawMicros = round1((rawCpu.user + rawCpu.system) / ins.inserted);
        o.log(
          `catch-up ${size}: raw decode ${rawDecode.eventsPerSecond} events/s, ${rawMicros} µs CPU/event`,
        );
        checkAborted();
        // Polled every 20 ms below, so over the catalogue's 200 keys only: with the ~3,650 marker
        // ids of a full run's steady phases too, the poll alone took ~24 % of a core here and
        // redis-server ~9 % (measured in isolation), on the 2-core box the catch-up is timed on.
        const base = await redisCountSum(catalogIds);
        o.log(`catch-up ${size}: starting the pipeline`);
        rss.take();
        childBase = expected - ins.inserted;
        const spawnedAt = performance.now();
        const child = await startPipeline();
        // Poll the sinks themselves (Redis counts, the mock's unique ids); DuckDB via the pipeline's ack counter.
        let firstAt: number | null = null;
        let firstProgress = 0;
        let s0: Snap | null = null;
        let walsender: number | null = null;
        let metricsUp = false;
        /** The pipeline's write-time counters at the first delivered event (the window's start). */
        let writesAtFirst: PromSample[] | null = null;
        const deadline = Date.now() + Math.max(120_000, size * 2);
        for (;;) {
          checkAborted();
          if (!child.running)
            throw new Error(`pipeline exited during catch-up:\n${child.output().slice(-2000)}`);
          if (Date.now() > deadline) throw new Error('catch-up did not finish in time');
          const redisNow = (await redisCountSum(catalogIds)) - base;
          const extNow = (await mockStats()).uniqueEventIds - childBase;
          if (firstAt === null && (redisNow > 0 || extNow > 0)) {
            firstAt = performance.now();
            firstProgress = Math.max(0, Math.min(redisNow, extNow));
            walsender = await walsenderPid('engagement-replication');
            s0 = snap(walsender);
            writesAtFirst = await scrape().catch(() => null);
          }
          if (redisNow >= ins.inserted && extNow >= ins.inserted) {
            const delivered = await scrape()
              .then((s) => counterBy(s, DELIVERED, 'sink').analytics ?? 0)
              .catch(() => 0);
            metricsUp = true;
            if (delivered >= ins.inserted) break;
          }
          await new Promise((r) => setTimeout(r, 20));
        }
        const doneAt = performance.now();
        const s1 = snap(walsender);
        const writeStats = metricsUp ? await scrape().catch(() => null) : null;
        const mem = memory(child.pid!);
        const seconds = (doneAt - (firstAt ?? spawnedAt)) / 1000;
        const fromSpawn = (doneAt - spawnedAt) / 1000;
        const events = ins.inserted - firstProgress;
        const rate = events / seconds;
        const insertRate = ins.inserted / ins.seconds;
        const start = s0 ?? s1;
        const result: CatchupResult = {
          events: ins.inserted,
          insert: { seconds: round3(ins.seconds), eventsPerSecond: Math.round(insertRate) },
          pipeline: {
            seconds: round3(seconds),
            eventsPerSecond: Math.round(rate),
            secondsFromSpawn: round3(fromSpawn),
            eventsPerSecondFromSpawn: Math.round(ins.inserted / fromSpawn),
          },
          ratioToInsertRate: round2(rate / insertRate),
          rawDecode: {
            seconds: rawDecode.seconds,
            eventsPerSecond: rawDecode.eventsPerSecond,
            consumerMicrosPerEvent: rawMicros,
            walsenderMicrosPerEvent:
              rawWalSeconds === null ? null : round1((rawWalSeconds * 1e6) / ins.inserted),
          },
          ratioToRawDecode: round2(rate / rawDecode.eventsPerSecond),
          pipelineCpu: (({ seconds: s, microsPerEvent, coresUsed }) => ({
            seconds: s,
            microsPerEvent,
            coresUsed,
          }))(cpuSummary(s1.total - start.total, events, seconds)),
          pipelinePeakRssMb: rss.take(),
          pipelineHwmMb: mem?.hwmMb ?? null,
          commitToSinkAckIncludingBacklogWait: metricsUp
            ? summarizeHistogram(histDelta(await scrape(), null))
            : {},
          sinkWrites: writeStats ? sinkWrites(writeStats, writesAtFirst, seconds) : {},
          cpuProfile: o.cpuProfileDir
            ? path.relative(process.cwd(), o.cpuProfileDir) || o.cpuProfileDir
            : null,
        };
        report.catchups.push(result);
        report.components.push(componentRow(`catch-up ${size.toLocaleString('en-US')}`, start, s1, events));
        o.log(
          `catch-up ${size}: ${result.pipeline.eventsPerSecond} events/s through all sinks (${result.pipeline.seconds} s; ` +
            `${result.pipeline.secondsFromSpawn} s from spawn) = ${result.ratioToRawDecode}x the bare consumer; ` +
            `${result.pipelineCpu.microsPerEvent} µs CPU/event; peak RSS ${result.pipelinePeakRssMb} MB`,
        );
        // The last child stays up for the sustained run (one start-up less).
        if (size !== o.catchupEvents[o.catchupEvents.length - 1] || !(o.sustainedRate > 0))
          await stopPipeline();
      }

      // --- sustained: all three sinks live while the generator offers a high rate ---
      if (o.sustainedRate > 0 && o.sustainedSeconds > 0) {
        checkAborted();
        if (pipeline === null) {
          childBase = expected;
          await waitReady(await startPipeline());
        }
        o.log(`sustained: offering ${o.sustainedRate}/s for ${o.sustainedSeconds} s`);
        const walsender = await walsenderPid('engagement-replication');
        const d0 = await minDelivered();
        const s0 = snap(walsender);
        rss.take();
        const gen = await runGenerator({
          databaseUrl,
          rate: o.sustainedRate,
          durationSeconds: o.sustainedSeconds,
          signal: o.signal,
        });
        const genDone = performance.now();
        const dAtGenEnd = await minDelivered();
        const s1 = snap(walsender);
        expected += gen.inserted;
        await waitUntil(allDelivered, 600_000).catch((err: Error) => {
          throw new Error(`${err.message}: ${lastProgress}`);
        });
        const drainSeconds = (performance.now() - genDone) / 1000;
        const result: SustainedResult = {
          offeredRate: o.sustainedRate,
          inserted: gen.inserted,
          insertSeconds: round3(gen.seconds),
          achievedInsertRate: Math.round(gen.achievedRate),
          deliveredDuringInsert: dAtGenEnd - d0,
          deliveredRateDuringInsert: Math.round((dAtGenEnd - d0) / gen.seconds),
          drainSeconds: round3(drainSeconds),
          deliveredRateIncludingDrain: Math.round(gen.inserted / (gen.seconds + drainSeconds)),
          keptUp: drainSeconds < 2,
          pipelinePeakRssMb: rss.take(),
        };
        report.sustained = result;
        report.components.push(
          componentRow(`sustained (offered ${o.sustainedRate}/s)`, s0, s1, dAtGenEnd - d0),
        );
        o.log(
          `sustained: inserted ${result.achievedInsertRate}/s, delivered ${result.deliveredRateDuringInsert}/s ` +
            `while inserting; drain ${result.drainSeconds} s`,
        );
      }
    } catch (err) {
      if (o.signal?.aborted) throw err;
      failure = err as Error;
      o.log(`the run stopped early: ${failure.message}`);
      report.notes.push(`The run stopped early (what follows it was not measured): ${failure.message}`);
      await stopPipeline().catch(() => undefined);
    }

    // --- delivery check: every event in every sink exactly once ---
    if (failure === null) {
      o.log('checking delivery');
      await stopPipeline();
      report.correctness = await checkDelivery(
        duckdbFile,
        expected,
        await redisCountSum(),
        await mockStats(),
        pool,
      );
      if (!report.correctness.ok) report.notes.push('Delivery check failed: see `correctness`.');
    }
    report.incomplete = failure !== null;
    addNotes(report);
    report.loadAverage.atEnd = os.loadavg().map(round2);
    report.finishedAt = new Date().toISOString();
    return report;
  } finally {
    await cleanupAll();
  }
}

function latencies(markers: MarkerResult[], from: 'committedAt' | 'ackedAt'): number[] {
  const out: number[] = [];
  for (const m of markers) {
    const start = m[from];
    if (m.seenAt !== null && start !== null) out.push(Math.max(0, m.seenAt - start));
  }
  return out;
}

function histDelta(after: PromSample[], before: PromSample[] | null): HistogramBuckets {
  return histogramDelta(
    histogramBy(after, HISTOGRAM, 'sink'),
    before ? histogramBy(before, HISTOGRAM, 'sink') : null,
  );
}

/**
 * CatchupResult.sinkWrites: the writes that ended between two scrapes (the first delivered event,
 * the catch-up's end; `before` null: since the pipeline started), against that window's length.
 */
function sinkWrites(
  after: PromSample[],
  before: PromSample[] | null,
  wallSeconds: number,
): CatchupResult['sinkWrites'] {
  const delta = (name: string, label = 'sink') => {
    const a = counterBy(after, name, label);
    const b = before ? counterBy(before, name, label) : {};
    return (sink: string) => (a[sink] ?? 0) - (b[sink] ?? 0);
  };
  const seconds = delta(`${WRITE_SECONDS}_sum`);
  const writes = delta(`${WRITE_SECONDS}_count`);
  const rows = delta(DELIVERED);
  const out: NonNullable<CatchupResult['sinkWrites']> = {};
  for (const sink of Object.keys(counterBy(after, `${WRITE_SECONDS}_count`, 'sink')).sort()) {
    const n = writes(sink);
    out[sink] = {
      busyShare: wallSeconds > 0 ? round2(seconds(sink) / wallSeconds) : 0,
      writes: n,
      meanRows: n > 0 ? Math.round(rows(sink) / n) : 0,
    };
  }
  return out;
}

function cpuSummary(cpuSeconds: number, events: number, wallSeconds: number) {
  return {
    seconds: round3(cpuSeconds),
    events,
    microsPerEvent: events > 0 ? round1((cpuSeconds * 1e6) / events) : null,
    coresUsed: wallSeconds > 0 ? Math.round((cpuSeconds / wallSeconds) * 100) / 100 : 0,
  };
}

async function checkDelivery(
  duckdbFile: string,
  expected: number,
  redisCountSum: number,
  mock: { uniqueEventIds: number; duplicateEvents: number; duplicates: number },
  pool: pg.Pool,
): Promise<Correctness> {
  let duckdbRows: number | null = null;
  let duckdbDistinct: number | null = null;
  const instance = await DuckDBInstance.create(duckdbFile, { access_mode: 'READ_ONLY' });
  try {
    const connection = await instance.connect();
    const reader = await connection.runAndReadAll(
      'SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM engagement.events_enriched',
    );
    const row = reader.getRowObjectsJson()[0] as { n: string | number; d: string | number };
    duckdbRows = Number(row.n);
    duckdbDistinct = Number(row.d);
    connection.closeSync();
  } finally {
    instance.closeSync();
  }
  const dead = await pool.query<{ n: string }>('SELECT count(*) AS n FROM engagement_pipeline.dead_letters');
  const deadLetters = Number(dead.rows[0].n);
  return {
    expectedEvents: expected,
    duckdbRows,
    duckdbDistinctEventIds: duckdbDistinct,
    redisCountSum,
    externalUniqueEventIds: mock.uniqueEventIds,
    externalDuplicateEvents: mock.duplicateEvents,
    externalDuplicateRequests: mock.duplicates,
    deadLetters,
    ok:
      duckdbRows === expected &&
      duckdbDistinct === expected &&
      redisCountSum === expected &&
      mock.uniqueEventIds === expected &&
      deadLetters === 0,
  };
}

function addNotes(report: BenchReport): void {
  const n = report.notes;
  n.push(
    "Redis-visible latency is from a marker event's commit to its content in top:content:10m (the sink's batch " +
      'script adds to the 10-minute ZSETs in the same call that applies the batch), including the poll interval.',
    "Per-sink ack figures are per batch (the batch's oldest event), from histogram buckets " +
      '(5, 10, 20, 50, 100, 200, 500 ms, ...): values inside a bucket are interpolated.',
    'Pipeline CPU is utime+stime of the pipeline process from /proc (10 ms resolution) over the ' +
      'measured window including the drain, divided by the events it received in that window.',
  );
  if (report.mode === 'smoke')
    n.push('Smoke mode: tiny rates and counts to prove the harness works; the numbers mean little.');
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the sinks to catch up');
    // Each check scrapes the pipeline's /metrics: polled gently, so the probe costs it little.
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (found.length > 0) await redis.del(...found);
  } while (cursor !== '0');
}

function redactEnv(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k === 'DATABASE_URL') out[k] = v.replace(/\/\/[^@]*@/, '//***@');
    else if (k === 'ANALYTICS_URL') out[k] = 'duckdb:<temp dir>/analytics.duckdb';
    else out[k] = v;
  }
  return out;
}

/** Pipeline tuning the user passed through the environment (recorded: it changes the numbers). */
function inheritedTuning(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ['BATCH_MAX_ROWS', 'BATCH_MAX_WAIT_MS', 'MAX_IN_FLIGHT_BATCHES', 'EXTERNAL_CONCURRENCY']) {
    const v = process.env[k];
    if (v) out[k] = v;
  }
  return out;
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

/** Least-squares slope of rssMb over seconds (MB per second). */
function slope(points: { seconds: number; rssMb: number }[]): number {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.seconds, 0) / n;
  const my = points.reduce((s, p) => s + p.rssMb, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.seconds - mx) * (p.rssMb - my);
    den += (p.seconds - mx) ** 2;
  }
  return den > 0 ? num / den : 0;
}

/** A busy loop on one core (the scheduler places it; the machine has few). */
function startHog(): ChildProcess {
  return spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
