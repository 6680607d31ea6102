import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { assertSafeHttpExposure, loadConfig, type Config, type ConfigKey } from '../config.js';
import { migrate } from '../db/migrate.js';
import { configError, describeError, redactSecrets } from '../errors.js';
import { runGenerator, type GeneratorResult } from '../generator/writer.js';
import { createLogger, type Logger } from '../logger.js';
import { startMockExternal, type RunningMockExternal } from '../mock-external/server.js';
import { startHttpServer, startRuntime, type Runtime } from '../runtime.js';
import type { DemoPostgres } from './postgres.js';
import { isPortFree } from '../ports.js';
import { ensureRedis, SHARED_REDIS_PREFIX, type DemoRedis } from './redis.js';
import { formatStatus, StatusLine, StatusSampler } from './status.js';
import { pause } from '../retry/retry.js';
import { makeDirs } from '../make-dirs.js';

export interface DemoOptions {
  dataDir: string;
  fresh: boolean;
  rate: number;
  /** --port; undefined = PORT or 8787 (and any free port when 8787 is busy). */
  port?: number;
  /** Port for the embedded Postgres (a free one when busy). */
  pgPort: number;
  /** Epoch ms when the user's command started (for the time-to-first-content line). */
  startedAt: number;
  /** Aborts on Ctrl-C / SIGTERM. */
  signal: AbortSignal;
}

/** Entries `--fresh` may delete; anything else in the directory means it is not ours. */
const DATA_DIR_ENTRIES = /^(postgres|(analytics|engagement)\.duckdb(\.wal|\.tmp)?|\.tmp|demo\.env)$/;
/** The demo's DuckDB file: the default ANALYTICS_URL's, under --data-dir. */
const DUCKDB_FILE = 'engagement.duckdb';
/** The demo's settings for other commands (`source data/demo.env`). */
const DEMO_ENV_FILE = 'demo.env';

class Interrupted extends Error {}

/**
 * `engagement demo`: the whole system in one process tree — embedded Postgres (unless
 * DATABASE_URL), Redis (REDIS_URL, or a private redis-server), schema, the mock external
 * system (with a random HMAC secret, so signatures are checked end to end), the pipeline
 * with its HTTP server and dashboard, and the traffic generator. Stops in reverse order.
 * Resolves with the exit code.
 */
export async function runDemo(options: DemoOptions, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const out = new StatusLine(process.stdout);
  const say = (text: string) => out.message(text);
  const dataDir = path.resolve(options.dataDir);
  const since = () => ((Date.now() - options.startedAt) / 1000).toFixed(1);
  const checkpoint = () => {
    if (options.signal.aborted) throw new Interrupted();
  };

  // Parts, stopped in this order: generator, pipeline (drain), http, mock, redis, postgres.
  let generator: { abort: AbortController; done: Promise<GeneratorResult | null> } | null = null;
  let runtime: Runtime | null = null;
  let http: { url: string; close(): Promise<void> } | null = null;
  let mock: RunningMockExternal | null = null;
  let redis: DemoRedis | null = null;
  let pg: DemoPostgres | null = null;
  let logger: Logger = createLogger(env.LOG_LEVEL || 'warn');

  const shutdown = async (): Promise<boolean> => {
    let clean = true;
    const step = async (what: string, fn: () => Promise<unknown>, timeoutMs = 30_000) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          fn(),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`did not stop within ${timeoutMs / 1000} s`)),
              timeoutMs,
            );
          }),
        ]);
      } catch (err) {
        clean = false;
        say(`  ${what}: ${describeError(err)}`);
      } finally {
        clearTimeout(timer);
      }
    };
    if (generator) {
      const g = generator;
      g.abort.abort();
      await step('generator', () => g.done);
    }
    if (runtime) await step('pipeline', () => runtime!.stop());
    if (http) await step('http server', () => http!.close());
    if (mock) await step('mock external system', () => mock!.close());
    if (redis) await step('redis-server', () => redis!.stop());
    if (pg) await step('postgres', () => pg!.stop());
    return clean;
  };

  try {
    const base = loadConfig({}, env); // validates the user's environment first (one line, exit 2)
    assertSafeHttpExposure(base);
    const portGiven = options.port !== undefined || Boolean(env.PORT);
    // A port the user chose and another process holds: one line before anything is touched
    // (also before --fresh wipes the data).
    if (portGiven && !(await isPortFree(options.port ?? base.port, base.host)))
      throw configError(
        `port ${options.port ?? base.port} on ${base.host} is already in use`,
        'choose another --port (0: any free port)',
      );
    if (options.fresh) await wipeDataDir(dataDir);
    try {
      makeDirs(dataDir);
    } catch (err) {
      throw configError(`--data-dir: ${(err as Error).message}`);
    }
    logger = createLogger(env.LOG_LEVEL ? base.logLevel : 'warn');
    const useOwnPostgres = !base.databaseUrl;
    const useMock = !base.externalUrl;
    say(
      `engagement demo: starting ${[
        useOwnPostgres
          ? `embedded Postgres 18 (data in ${shortPath(path.join(dataDir, 'postgres'))})`
          : 'on DATABASE_URL',
        'Redis',
        useMock ? 'mock external system' : null,
      ]
        .filter(Boolean)
        .join(', ')}…`,
    );

    // Postgres (initdb takes a few seconds the first time), Redis and the mock start side by side.
    const externalSecret = useMock ? randomBytes(24).toString('hex') : undefined;
    const [pgResult, redisResult, mockResult] = await Promise.allSettled([
      useOwnPostgres
        ? import('./postgres.js').then(({ startDemoPostgres }) =>
            startDemoPostgres({
              dataDir: path.join(dataDir, 'postgres'),
              preferredPort: options.pgPort,
              onLog: (line) => logger.debug({ postgres: line.trim() }, 'postgres'),
            }),
          )
        : Promise.resolve(null),
      ensureRedis(env.REDIS_URL || undefined),
      useMock ? startMockExternal({ port: 0, secret: externalSecret }) : Promise.resolve(null),
    ]);
    if (pgResult.status === 'fulfilled' && pgResult.value) {
      pg = pgResult.value;
      if (pgResult.value.portNote) say(`  (${pgResult.value.portNote}; Postgres uses ${pg.port})`);
    }
    if (redisResult.status === 'fulfilled') redis = redisResult.value;
    if (mockResult.status === 'fulfilled') mock = mockResult.value;
    for (const r of [redisResult, pgResult, mockResult]) if (r.status === 'rejected') throw r.reason;
    if (redis && redis.pid !== null) {
      say(
        `  ${redisResult.status === 'fulfilled' ? redisResult.value.reason : ''}: started redis-server (pid ${redis.pid}) at ${redis.url}, in memory only`,
      );
    }
    // On a Redis the demo did not start (no REDIS_URL, no redis-server binary), its keys get a
    // prefix of their own unless the user chose one.
    const sharedPrefix =
      redisResult.status === 'fulfilled' && redisResult.value.shared && !env.REDIS_PREFIX
        ? SHARED_REDIS_PREFIX
        : null;
    if (sharedPrefix) {
      say(
        `  redis-server is not installed: using the Redis at ${redactSecrets(redis!.url)} with keys under '${sharedPrefix}' (set REDIS_URL / REDIS_PREFIX to choose)`,
      );
    }
    checkpoint();

    const databaseUrl = pg?.url ?? base.databaseUrl!;
    await migrate(databaseUrl, { slotName: base.slotName, publicationName: base.publicationName });
    checkpoint();

    let port = options.port ?? base.port;
    if (!portGiven && !(await isPortFree(port))) {
      say(`  (port ${port} is busy; the dashboard uses a free port)`);
      port = 0;
    }
    const overrides: Partial<Record<ConfigKey, unknown>> = {
      databaseUrl,
      redisUrl: redis!.url,
      ...(sharedPrefix ? { redisPrefix: sharedPrefix } : {}),
      port,
      logLevel: logger.level,
    };
    if (!env.ANALYTICS_URL) overrides.analyticsUrl = `duckdb:${path.join(dataDir, DUCKDB_FILE)}`;
    if (mock) {
      overrides.externalUrl = new URL('events', mock.url).toString();
      overrides.externalSecret = externalSecret;
    }
    const config: Config = loadConfig(overrides, env);

    runtime = await startRuntime(config, logger);
    checkpoint();
    http = await startHttpServer(runtime, config, logger);
    checkpoint();

    const abort = new AbortController();
    generator = {
      abort,
      // Into the tables the runtime streams (EVENTS_TABLE / CONTENT_TABLE / CONTENT_KEY).
      done: runGenerator({ databaseUrl, source: config, rate: options.rate, signal: abort.signal }).catch(
        (err: unknown) => {
          say(`generator stopped: ${describeError(err)}`);
          return null;
        },
      ),
    };

    const envFile = await writeDemoEnv(dataDir, http.url, {
      DATABASE_URL: pg ? databaseUrl : null,
      REDIS_URL: config.redisUrl,
      REDIS_PREFIX: config.redisPrefix || null,
      ANALYTICS_URL: config.analyticsUrl,
      EXTERNAL_URL: mock ? config.externalUrl : null,
      EXTERNAL_SECRET: mock ? (externalSecret ?? null) : null,
      SLOT_NAME: config.slotName,
      PUBLICATION_NAME: config.publicationName,
    });

    const api = new URL('api/top?window=10m', http.url).toString();
    say(
      [
        '',
        `engagement demo is running (${options.rate} events/s; Ctrl-C stops it)`,
        `  dashboard      ${http.url}`,
        `  API            ${api}  ·  ${new URL('api/stats', http.url)}`,
        `  metrics        ${new URL('metrics', http.url)}`,
        mock
          ? `  mock external  ${new URL('_stats', mock.url)}`
          : `  external       ${redactSecrets(config.externalUrl ?? '')}`,
        // The embedded cluster's URL is printed whole (a local demo password), so it works as is.
        `  postgres       ${pg ? `${databaseUrl} (embedded)` : redactSecrets(databaseUrl)}`,
        `  redis          ${redactSecrets(redis!.url)}`,
        `  analytics      ${redactSecrets(config.analyticsUrl)}`,
        `  settings       ${shortPath(envFile)}  (source it, then e.g. npx engagement status)`,
        `  started in ${since()} s`,
        '',
      ].join('\n'),
    );

    const sampler = new StatusSampler(runtime.metrics, () => runtime!.deadLetters.depth());
    let firstContentShown = false;
    while (!options.signal.aborted) {
      await pause(1000, options.signal);
      if (options.signal.aborted) break;
      const sample = await sampler.sample();
      if (!firstContentShown && sample.redisDelivered > 0) {
        firstContentShown = true;
        say(`first content on the leaderboard ${since()} s after start`);
      }
      out.update(formatStatus(sample, (Date.now() - options.startedAt) / 1000));
    }
    out.finish();
    say('stopping: generator, pipeline (draining), http, mock, redis, postgres…');
    const clean = await shutdown();
    say(
      clean
        ? 'stopped cleanly; run it again to resume (--fresh starts over)'
        : 'stopped, with the problems above',
    );
    return clean ? 0 : 1;
  } catch (err) {
    out.finish();
    const interrupted = err instanceof Interrupted;
    if (interrupted) say('interrupted during start-up; stopping what had started…');
    await shutdown();
    if (interrupted) return 0;
    throw err;
  }
}

/**
 * data/demo.env: the running demo's settings as shell exports, so `source data/demo.env &&
 * npx engagement status` (or backfill, dlq, top) talks to this demo. Mode 0600: it holds the
 * local Postgres password and the mock's HMAC secret. A DATABASE_URL the user gave is not
 * copied into a file (it is in their environment already).
 */
async function writeDemoEnv(
  dataDir: string,
  dashboardUrl: string,
  values: Record<string, string | null | undefined>,
): Promise<string> {
  const file = path.join(dataDir, DEMO_ENV_FILE);
  const quote = (v: string) => `'${v.replaceAll("'", "'\\''")}'`;
  const lines = [
    `# Written by \`engagement demo\` at ${new Date().toISOString()}; valid while it runs.`,
    '# source data/demo.env && npx engagement status',
    `# dashboard ${dashboardUrl}`,
    ...Object.entries(values)
      .filter((entry): entry is [string, string] => typeof entry[1] === 'string' && entry[1] !== '')
      .map(([k, v]) => `export ${k}=${quote(v)}`),
  ];
  if (!values.DATABASE_URL) lines.push('# DATABASE_URL: the one in your environment');
  await writeFile(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  return file;
}

function shortPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') ? `./${rel}` : p;
}

/** --fresh: deletes the data directory, but only when it holds nothing but the demo's own files. */
async function wipeDataDir(dataDir: string): Promise<void> {
  if (!existsSync(dataDir)) return;
  const foreign = (await readdir(dataDir)).filter((name) => !DATA_DIR_ENTRIES.test(name));
  if (foreign.length > 0) {
    throw configError(
      `--fresh would delete ${dataDir}, which holds files the demo did not create (${foreign.slice(0, 3).join(', ')})`,
      'point --data-dir at the demo data directory',
    );
  }
  await rm(dataDir, { recursive: true, force: true });
}
