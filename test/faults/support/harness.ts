import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { loadConfig, type Config, type ConfigKey } from '../../../src/config.js';
import { migrate } from '../../../src/db/migrate.js';
import { lsnToBigInt } from '../../../src/domain/position.js';
import { startMockExternal, type RunningMockExternal } from '../../../src/mock-external/server.js';
import { startRuntime, type Runtime } from '../../../src/runtime.js';
import { query } from '../../helpers/postgres.js';
import { spawnCli, type CliProcess } from '../../helpers/cli.js';
import { CONTENT_IDS } from '../../helpers/pipeline.js';
import { waitFor } from '../../helpers/wait.js';

/**
 * What every fault scenario needs: a fresh database (on the shared test cluster or on a
 * cluster the scenario controls), a random Redis prefix, a DuckDB file, the mock external
 * system, and a logger whose lines the test can count ("one clear log line per problem").
 */
export interface FaultHarness {
  /** The database the test itself uses (never through a fault proxy). */
  databaseUrl: string;
  /** Admin URL of the cluster, to drop the database at the end. */
  adminUrl: string;
  dbName: string;
  /** Slot names are cluster-wide: one per harness, so several can share a cluster. */
  slotName: string;
  redisUrl: string;
  redisPrefix: string;
  duckdbFile: string;
  mock: RunningMockExternal;
  logs: LogCapture;
  config(overrides?: Partial<Record<ConfigKey, unknown>>): Config;
  /** Starts the pipeline in this process with the capturing logger. */
  start(overrides?: Partial<Record<ConfigKey, unknown>>): Promise<Runtime>;
  /** Environment for `engagement run` as a child process. */
  env(extra?: Record<string, string>): Record<string, string>;
  sql<T extends Record<string, unknown> = Record<string, unknown>>(
    text: string,
    params?: unknown[],
  ): Promise<T[]>;
  cleanup(): Promise<void>;
}

export interface LogCapture {
  logger: Logger;
  lines: { level: number; msg: string; [k: string]: unknown }[];
  /** Lines whose message matches. */
  count(pattern: RegExp, minLevel?: number): number;
  /** Lines at warn or above, as text, for assertion messages. */
  problems(): string;
}

export function captureLogs(): LogCapture {
  const lines: LogCapture['lines'] = [];
  const logger = pino(
    { level: process.env.FAULT_LOG_LEVEL ?? 'info', base: undefined },
    {
      write(line: string) {
        try {
          lines.push(JSON.parse(line));
        } catch {
          lines.push({ level: 50, msg: line });
        }
        if (process.env.FAULT_LOG_ECHO) process.stderr.write(line);
      },
    },
  );
  return {
    logger,
    lines,
    count: (pattern, minLevel = 0) => lines.filter((l) => l.level >= minLevel && pattern.test(l.msg)).length,
    problems: () =>
      lines
        .filter((l) => l.level >= 40)
        .map((l) => l.msg)
        .join('\n'),
  };
}

export const DEFAULT_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export async function createFaultHarness(
  options: { adminUrl?: string; redisUrl?: string; redisPrefix?: string; mockLatencyMs?: number } = {},
): Promise<FaultHarness> {
  const adminUrl = options.adminUrl ?? process.env.TEST_PG_URL;
  if (!adminUrl) throw new Error('TEST_PG_URL is not set: run through `npm run test:faults`');
  const dbName = `fault_${randomBytes(5).toString('hex')}`;
  await query(adminUrl, `CREATE DATABASE ${dbName}`);
  const url = new URL(adminUrl);
  url.pathname = `/${dbName}`;
  const databaseUrl = url.toString();
  const slotName = `slot_${dbName}`;
  await migrate(databaseUrl, { slotName, publicationName: 'engagement_pipeline' });
  const dir = mkdtempSync(path.join(tmpdir(), 'engagement-fault-'));
  const duckdbFile = path.join(dir, 'analytics.duckdb');
  const redisUrl = options.redisUrl ?? DEFAULT_REDIS_URL;
  const redisPrefix = options.redisPrefix ?? `fault:${randomBytes(4).toString('hex')}:`;
  const mock = await startMockExternal({ port: 0, latencyMs: options.mockLatencyMs });
  const logs = captureLogs();
  const sql = <T extends Record<string, unknown>>(text: string, params?: unknown[]) =>
    query<T>(databaseUrl, text, params);
  await sql(
    `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts) VALUES
     ($1, 'video-1', 'Video 1', 'video', 300, now()),
     ($2, 'podcast-1', 'Podcast 1', 'podcast', NULL, now()),
     ($3, 'newsletter-1', 'Newsletter 1', 'newsletter', 0, now())`,
    CONTENT_IDS,
  );
  const base = {
    databaseUrl,
    redisUrl,
    redisPrefix,
    analyticsUrl: `duckdb:${duckdbFile}`,
    externalUrl: mock.url,
    slotName,
    port: 0,
    // Frequent heartbeats let the slot's confirmed position pass the last event quickly,
    // which is how a test knows every sink has everything (see waitCaughtUp).
    heartbeatIntervalMs: 300,
  };
  const config = (overrides: Partial<Record<ConfigKey, unknown>> = {}) =>
    loadConfig({ ...base, ...overrides }, {});
  return {
    databaseUrl,
    adminUrl,
    dbName,
    slotName,
    redisUrl,
    redisPrefix,
    duckdbFile,
    mock,
    logs,
    config,
    start: (overrides) => startRuntime(config(overrides), logs.logger),
    env: (extra = {}) => ({
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      REDIS_PREFIX: redisPrefix,
      ANALYTICS_URL: `duckdb:${duckdbFile}`,
      EXTERNAL_URL: mock.url,
      PORT: '0',
      SLOT_NAME: slotName,
      HEARTBEAT_INTERVAL_MS: '300',
      ...extra,
    }),
    sql,
    cleanup: async () => {
      await mock.close().catch(() => undefined);
      await query(
        adminUrl,
        `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '${dbName}' AND NOT active`,
      ).catch(() => undefined);
      await query(adminUrl, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Waits until the slot's confirmed position passes everything written so far: the pipeline
 * confirms a position only after every sink durably accepted everything before it, so this
 * is "all sinks caught up". Returns the milliseconds waited (the report records it). The
 * bound is for liveness, not speed: on a loaded 2-core machine a 20-cycle kill -9 backlog
 * took 116 s to clear where an idle one takes 13 s.
 */
export async function waitCaughtUp(h: FaultHarness, timeoutMs = 300_000): Promise<number> {
  const started = Date.now();
  const target = (await h.sql<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn'))[0].lsn;
  await waitFor(
    `slot confirmed past ${target}`,
    async () => {
      const rows = await h.sql<{ lsn: string | null }>(
        `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
        [h.slotName],
      );
      return rows[0]?.lsn ? lsnToBigInt(rows[0].lsn) >= lsnToBigInt(target) : false;
    },
    timeoutMs,
    100,
  );
  return Date.now() - started;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function mockControl(h: FaultHarness, body: object): Promise<void> {
  const res = await fetch(`${h.mock.url}_control`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`mock _control ${res.status}: ${await res.text()}`);
}

/**
 * The end of a scenario: waits until every sink caught up, checks the pipeline survived the
 * fault (no crash), stops it. Returns the ms since `since` (the fault cleared, or the start).
 */
export async function drainAndStop(
  h: FaultHarness,
  runtime: Runtime,
  since: number,
  options: { timeoutMs?: number; runningMessage?: string } = {},
): Promise<number> {
  await waitCaughtUp(h, options.timeoutMs);
  const elapsedMs = Date.now() - since;
  assert.equal(runtime.pipeline.isRunning, true, options.runningMessage);
  await runtime.stop();
  return elapsedMs;
}

/**
 * Spawns `engagement run` with `env` and waits until it streams from the slot. A process that
 * exits first fails at once with its output (no crash loop goes unnoticed); one that does not
 * stream within `timeoutMs` is killed and fails the wait.
 */
export async function startRun(
  env: Record<string, string>,
  label: string,
  timeoutMs = 120_000,
): Promise<CliProcess> {
  const p = spawnCli(['run'], env);
  const streaming = () => /replication streaming/.test(p.output());
  try {
    await waitFor(`${label}: streaming`, () => streaming() || p.child.exitCode !== null, timeoutMs);
  } catch (err) {
    p.child.kill('SIGKILL');
    throw err;
  }
  if (!streaming()) throw new Error(`${label}: \`engagement run\` exited ${p.child.exitCode}: ${p.output()}`);
  return p;
}

/** Stops a `run` started by startRun with SIGINT and asserts a clean exit (code 0). */
export async function stopRun(p: CliProcess): Promise<void> {
  p.child.kill('SIGINT');
  const exit = await p.exited;
  assert.equal(exit.code, 0, p.output());
}
