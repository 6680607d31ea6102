import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
import { CliChild, cliCommand, freePort, ROOT, waitForHttp } from './children.js';
import { createMarkerContent, LatencyProbe, type MarkerResult } from './latency-probe.js';
import { cpuSeconds, machineInfo, memory, round1, RssSampler } from './proc.js';
import type { BenchReport, CatchupResult, Correctness, SteadyResult } from './report.js';
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

export interface BenchOptions {
  smoke: boolean;
  rates: number[];
  durationSeconds: number;
  warmupSeconds: number;
  catchupEvents: number;
  externalBatchSize: number;
  markersPerSecond: number;
  pollMs: number;
  redisUrl: string;
  cli: 'auto' | 'dist' | 'tsx';
  cpuProfileDir: string | null;
  command: string;
  log: (line: string) => void;
  signal?: AbortSignal;
}

const SLOT = 'engagement_pipeline';
const HISTOGRAM = 'engagement_commit_to_sink_seconds';
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
    const catalog = await ensureCatalog(
      pool,
      buildCatalog({ seed: DEFAULT_CATALOG_SEED, size: DEFAULT_CATALOG_SIZE }),
    );
    const countedIds = catalog.map((c) => c.id);

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
    const startPipeline = async (extraNodeArgs: string[] = []) => {
      const child = new CliChild(cli, ['run'], pipelineEnv, extraNodeArgs);
      pipeline = child;
      cleanups.push(() => child.stop(10_000));
      await waitForHttp(`http://127.0.0.1:${httpPort}/readyz`, child);
      return child;
    };
    const scrape = async (): Promise<PromSample[]> =>
      parsePrometheus(await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text());
    const redisCountSum = async (): Promise<number> => {
      let sum = 0;
      for (let i = 0; i < countedIds.length; i += 1000) {
        const values = await redis.mget(...countedIds.slice(i, i + 1000).map(keys.contentCount));
        for (const v of values) sum += v === null ? 0 : Number(v);
      }
      return sum;
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

    const [pgVersion] = (await pool.query<{ v: string }>('SELECT version() AS v')).rows;
    const redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? 'unknown';
    const report: BenchReport = {
      schema: 'engagement-bench/1',
      mode: o.smoke ? 'smoke' : 'full',
      startedAt,
      finishedAt: '',
      command: o.command,
      machine: { ...machineInfo(), postgres: pgVersion.v, redis: redisVersion },
      settings: {
        rates: o.rates,
        durationSeconds: o.durationSeconds,
        warmupSeconds: o.warmupSeconds,
        catchupEvents: o.catchupEvents,
        externalBatchSize: o.externalBatchSize,
        markersPerSecond: o.markersPerSecond,
        pollMs: o.pollMs,
        pipelineCommand: `node ${[...cli.argv.map((a) => path.relative(ROOT, a) || a), 'run'].join(' ')} (${cli.mode})`,
        pipelineEnv: { ...redactEnv(pipelineEnv), ...inheritedTuning() },
      },
      steady: [],
      catchup: null,
      correctness: null,
      notes: [],
      cliStartup: measureCliStartup(cli),
    };

    o.log(`starting the pipeline (${cli.mode})`);
    await startPipeline();

    // --- steady latency, one rate at a time ---
    for (const rate of o.rates) {
      checkAborted();
      const markerIds = await createMarkerContent(
        pool,
        Math.ceil(o.markersPerSecond * o.durationSeconds * 1.2) + 10,
      );
      countedIds.push(...markerIds);
      o.log(`rate ${rate}/s: warm-up ${o.warmupSeconds} s`);
      const warm = await runGenerator({
        databaseUrl,
        rate,
        durationSeconds: o.warmupSeconds,
        signal: o.signal,
      });
      expected += warm.inserted;
      checkAborted();

      o.log(`rate ${rate}/s: measuring ${o.durationSeconds} s`);
      const before = await scrape();
      const cpu0 = cpuSeconds(pipelinePid()!) ?? 0;
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
        durationSeconds: o.durationSeconds,
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
      const cpu1 = cpuSeconds(pipelinePid()!) ?? cpu0;
      const windowSeconds = gen.seconds + drainSeconds;
      const events = counterBy(after, RECEIVED, '')[''] - (counterBy(before, RECEIVED, '')[''] ?? 0);
      const result: SteadyResult = {
        targetRate: rate,
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
        pipelineCpu: cpuSummary(cpu1 - cpu0, events, windowSeconds),
        pipelinePeakRssMb: rss.take(),
        pollingBaselineAckToSeen: poller.latenciesMs.length > 0 ? summarize(poller.latenciesMs) : null,
      };
      report.steady.push(result);
      const v = result.commitToRedisVisible;
      o.log(
        `rate ${rate}/s: achieved ${result.generated.achievedRate}/s; commit->Redis-visible p50 ${v.p50Ms} ms, ` +
          `p99 ${v.p99Ms} ms (${v.samples} markers); drain ${result.drainSeconds} s; ` +
          `${result.pipelineCpu.microsPerEvent} µs CPU/event; peak RSS ${result.pipelinePeakRssMb} MB`,
      );
    }

    // --- catch-up: a backlog in the slot, then the pipeline starts ---
    if (o.catchupEvents > 0) {
      checkAborted();
      o.log('catch-up: stopping the pipeline');
      await pipeline!.stop();
      await createRawSlot(pool);
      o.log(`catch-up: inserting ${o.catchupEvents} events while the pipeline is stopped`);
      const ins = await runGenerator({ databaseUrl, rate: 1e9, count: o.catchupEvents, signal: o.signal });
      expected += ins.inserted;
      checkAborted();
      o.log('catch-up: a bare pgoutput consumer decodes the same backlog (its own slot)');
      const rawDecode = await measureRawDecode(databaseUrl, pool, SLOT, ins.inserted);
      o.log(`catch-up: raw decode ${rawDecode.eventsPerSecond} events/s`);
      checkAborted();
      const base = await redisCountSum();
      let profileDir: string | null = null;
      const nodeArgs: string[] = [];
      if (o.cpuProfileDir) {
        profileDir = path.resolve(o.cpuProfileDir);
        await mkdir(profileDir, { recursive: true });
        nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${profileDir}`);
      }
      o.log('catch-up: starting the pipeline');
      rss.take();
      childBase = expected - ins.inserted;
      const spawnedAt = performance.now();
      const child = new CliChild(cli, ['run'], pipelineEnv, nodeArgs);
      pipeline = child;
      cleanups.push(() => child.stop(10_000));
      // Poll the sinks themselves (Redis counts, the mock's unique ids); DuckDB via the pipeline's ack counter.
      let firstAt: number | null = null;
      let firstProgress = 0;
      let cpuAtFirst = 0;
      let metricsUp = false;
      const deadline = Date.now() + Math.max(120_000, o.catchupEvents / 10);
      for (;;) {
        checkAborted();
        if (!child.running)
          throw new Error(`pipeline exited during catch-up:\n${child.output().slice(-2000)}`);
        if (Date.now() > deadline) throw new Error('catch-up did not finish in time');
        const redisNow = (await redisCountSum()) - base;
        const extNow = (await mockStats()).uniqueEventIds - childBase;
        if (firstAt === null && (redisNow > 0 || extNow > 0)) {
          firstAt = performance.now();
          firstProgress = Math.max(0, Math.min(redisNow, extNow));
          cpuAtFirst = cpuSeconds(child.pid!) ?? 0;
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
      const cpuEnd = cpuSeconds(child.pid!) ?? cpuAtFirst;
      const mem = memory(child.pid!);
      const seconds = (doneAt - (firstAt ?? spawnedAt)) / 1000;
      const fromSpawn = (doneAt - spawnedAt) / 1000;
      const rate = (ins.inserted - firstProgress) / seconds;
      const insertRate = ins.inserted / ins.seconds;
      const result: CatchupResult = {
        events: ins.inserted,
        insert: { seconds: round3(ins.seconds), eventsPerSecond: Math.round(insertRate) },
        pipeline: {
          seconds: round3(seconds),
          eventsPerSecond: Math.round(rate),
          secondsFromSpawn: round3(fromSpawn),
          eventsPerSecondFromSpawn: Math.round(ins.inserted / fromSpawn),
        },
        ratioToInsertRate: Math.round((rate / insertRate) * 100) / 100,
        rawDecode: { seconds: rawDecode.seconds, eventsPerSecond: rawDecode.eventsPerSecond },
        ratioToRawDecode: Math.round((rate / rawDecode.eventsPerSecond) * 100) / 100,
        pipelineCpu: (({ seconds: s, microsPerEvent, coresUsed }) => ({
          seconds: s,
          microsPerEvent,
          coresUsed,
        }))(cpuSummary(cpuEnd - cpuAtFirst, ins.inserted - firstProgress, seconds)),
        pipelinePeakRssMb: rss.take(),
        pipelineHwmMb: mem?.hwmMb ?? null,
        commitToSinkAckIncludingBacklogWait: metricsUp
          ? summarizeHistogram(histDelta(await scrape(), null))
          : {},
        cpuProfile: null,
      };
      report.catchup = result;
      o.log(
        `catch-up: ${result.pipeline.eventsPerSecond} events/s through all sinks (${result.pipeline.seconds} s; ` +
          `${result.pipeline.secondsFromSpawn} s from spawn); insert rate ${result.insert.eventsPerSecond}/s; ` +
          `${result.pipelineCpu.microsPerEvent} µs CPU/event; peak RSS ${result.pipelinePeakRssMb} MB`,
      );
      if (profileDir) {
        await child.stop();
        result.cpuProfile = path.relative(process.cwd(), profileDir) || profileDir;
        report.notes.push(
          'The catch-up child ran with --cpu-prof: its numbers include the profiler overhead.',
        );
      }
    }

    // --- delivery check: every event in every sink exactly once ---
    o.log('checking delivery');
    if (pipeline) await (pipeline as CliChild).stop();
    report.correctness = await checkDelivery(
      duckdbFile,
      expected,
      await redisCountSum(),
      await mockStats(),
      pool,
    );
    if (!report.correctness.ok) report.notes.push('Delivery check failed: see `correctness`.');
    addNotes(report);
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
    "Redis-visible latency includes the Redis sink's throttled refresh of the 10-minute ZSETs " +
      '(ZUNIONSTORE of minute buckets, at most every 10 ms after a write) and the poll interval.',
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
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
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

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
