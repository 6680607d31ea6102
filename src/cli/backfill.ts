import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import {
  BACKFILL_SINKS,
  planBackfill,
  runBackfill,
  unfinishedNowRunEnd,
  type BackfillSinkName,
} from '../backfill/backfill.js';
import { requireDatabaseUrl, type Config, type FlagConfigKey } from '../config.js';
import { configError } from '../errors.js';
import { createLogger } from '../logger.js';
import { assertPostgresReachable } from '../runtime.js';
import { createMetrics } from '../observability/metrics.js';
import { DeadLetterStore } from '../state/dead-letter.js';
import { createSinks } from '../sinks/factory.js';
import { createPool, withClient } from '../db/postgres.js';
import {
  action,
  configFrom,
  integerOption,
  parseInstant,
  TIME_HELP,
  KAFKA_CONFIG_KEYS,
  SINK_CONFIG_KEYS,
  SOURCE_CONFIG_KEYS,
  withConfigOptions,
} from './common.js';
import { discoverShape } from '../db/catalog.js';
import type { KeyTypes } from '../domain/source-shape.js';
import { ProgressReporter } from './progress-bar.js';
import { destinationsKey } from '../backfill/destinations.js';

// The sinks' settings but the external policy: a backfill always dead-letters (best-effort).
const KEYS = [
  'databaseUrl',
  ...SOURCE_CONFIG_KEYS,
  ...SINK_CONFIG_KEYS.filter((key) => key !== 'externalPolicy'),
  ...KAFKA_CONFIG_KEYS,
  'logLevel',
] as const satisfies readonly FlagConfigKey[];

export function registerBackfill(program: Command): void {
  withConfigOptions(
    program
      .command('backfill')
      .description(
        're-process engagement_events history (by event_ts) through the same enrichment, idempotently',
      )
      .requiredOption('--from <iso>', `first event_ts included (${TIME_HELP}, or -infinity: all history)`)
      .requiredOption('--to <iso>', `end of the range, excluded (${TIME_HELP}, "now", or infinity)`)
      .option('--sinks <list>', 'comma-separated: analytics, redis, external', 'analytics,redis')
      .option('--rate <n>', 'at most n rows per second (default: as fast as the sinks take them)')
      .option('--chunk-size <n>', 'rows per chunk (progress is stored after each)', '50000')
      .option('--dry-run', 'print what would be done and exit'),
    KEYS,
  ).action(
    action(async (options: Record<string, unknown>) => {
      const config = configFrom(options);
      const fromTs = parseInstant(String(options.from), '--from', { allowNow: true, allowInfinity: true });
      const toTs = parseInstant(String(options.to), '--to', { allowNow: true, allowInfinity: true });
      // Canonical texts (microseconds kept, four-digit years) order as the instants do.
      if (fromTs >= toTs) throw configError(`--from (${fromTs}) must be before --to (${toTs})`);
      const sinks = parseSinks(String(options.sinks));
      const rate = integerOption(options.rate ?? '0', '--rate', 0);
      const chunkSize = integerOption(options.chunkSize, '--chunk-size', 1);
      if (sinks.includes('external') && !config.externalUrl)
        throw configError('--sinks external needs EXTERNAL_URL', 'export EXTERNAL_URL=https://…');
      const destinations = destinationsKey(config, sinks);
      const databaseUrl = requireDatabaseUrl(config);
      await assertPostgresReachable(databaseUrl);
      const shape = await withClient(databaseUrl, (client) => discoverShape(client, config));
      if (options.dryRun) {
        const plan = await planBackfill({ databaseUrl, fromTs, toTs, sinks, destinations, shape });
        const resume = plan.resumable
          ? `; would resume backfill #${plan.resumable.id} after ${plan.resumable.rowsDone} rows (id > ${plan.resumable.lastId})`
          : '';
        const locked = sinks.includes('analytics') ? await duckDbLockProblem(config.analyticsUrl) : null;
        if (locked) process.stdout.write(`warning: ${locked}\n`);
        process.stdout.write(
          `dry run: ${plan.rowsTotal} rows with event_ts in [${fromTs}, ${toTs}) (ids <= ${plan.maxId}, event_ts ${plan.minTs ?? '-'} .. ${plan.maxTs ?? '-'}) -> ${sinks.join(', ')}${resume}; redis: content:count and content:last for all, minute buckets only inside retention; nothing written\n`,
        );
        return;
      }
      const logger = createLogger(config.logLevel);
      const reporter = new ProgressReporter();
      const abort = new AbortController();
      let stoppedBy: NodeJS.Signals | null = null;
      const onSignal = (signal: NodeJS.Signals) => {
        stoppedBy = signal;
        abort.abort();
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const pool = createPool(databaseUrl, 2, 'engagement-backfill-dlq');
      // A `--to now` killed earlier stored its own "now": resume that range, then do the rest.
      const earlierEnd =
        options.to === 'now'
          ? await unfinishedNowRunEnd({ databaseUrl, fromTs, toTs, sinks, destinations })
          : null;
      const ranges = earlierEnd
        ? [
            [fromTs, earlierEnd],
            [earlierEnd, toTs],
          ]
        : [[fromTs, toTs]];
      try {
        for (const [rangeFrom, rangeTo] of ranges) await backfillRange(rangeFrom, rangeTo);
      } catch (err) {
        if (stoppedBy === null) throw err;
        // Asked to stop: progress up to the last chunk every sink accepted is kept, the run stays
        // resumable (`status`: interrupted), and the exit code says which signal, as a shell does.
        process.stderr.write(
          `engagement: backfill stopped by ${stoppedBy}; run the same command again to resume\n`,
        );
        return stoppedBy === 'SIGINT' ? 130 : 143;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        await pool.end().catch(() => undefined);
      }

      async function backfillRange(rangeFrom: string, rangeTo: string): Promise<void> {
        const result = await runBackfill({
          databaseUrl,
          fromTs: rangeFrom,
          toTs: rangeTo,
          sinks,
          destinations,
          shape,
          chunkSize,
          rate,
          logger,
          signal: abort.signal,
          createSinks: () => backfillSinks(config, sinks, logger, pool, shape.keyTypes),
          onProgress: (p) => reporter.update(p),
        });
        const seconds = result.elapsedMs / 1000;
        const rows = result.rowsDone - result.resumedFrom;
        process.stdout.write(
          `backfill #${result.runId} done: ${result.rowsDone} rows${result.resumedFrom ? ` (resumed after ${result.resumedFrom})` : ''} into ${sinks.join(', ')} in ${seconds.toFixed(1)} s (${Math.round(rows / Math.max(seconds, 0.001))} rows/s)` +
            (sinks.includes('redis')
              ? `; redis: ${result.redisApplied} events newly counted (the rest were counted already)`
              : '') +
            (result.badRows ? `; ${result.badRows} undecodable rows skipped` : '') +
            (result.deadLettered
              ? `; ${result.deadLettered} events dead-lettered by a sink (engagement dlq list)`
              : '') +
            (ranges.length > 1 ? ` [${rangeFrom} .. ${rangeTo})` : '') +
            '\n',
        );
      }
    }),
  );
}

/**
 * A dry run writes nothing, but the real run would fail at once if another process (usually
 * the running pipeline) holds the DuckDB file: say so now. Opens the file read-only and
 * closes it; null when it is not a DuckDB file, does not exist yet, or opens fine.
 */
async function duckDbLockProblem(analyticsUrl: string): Promise<string | null> {
  if (!analyticsUrl.startsWith('duckdb:')) return null;
  const file = analyticsUrl.slice('duckdb:'.length).replace(/^\/\//, '') || './data/engagement.duckdb';
  if (file === ':memory:' || !existsSync(file)) return null;
  const { DuckDBInstance } = await import('@duckdb/node-api');
  try {
    const instance = await DuckDBInstance.create(file, { access_mode: 'READ_ONLY' });
    instance.closeSync();
    return null;
  } catch (err) {
    if (!/lock/i.test((err as Error).message ?? '')) return null;
    return (
      `DuckDB file ${file} is locked by another process (probably the running pipeline): the backfill ` +
      'would fail with EP_ERR_ANALYTICS_LOCKED. Stop `engagement run` first, or backfill --sinks redis now ' +
      'and analytics later'
    );
  }
}

/** The sinks a backfill writes to, built as `run` builds them (see createSinks). */
function backfillSinks(
  config: Config,
  sinks: BackfillSinkName[],
  logger: ReturnType<typeof createLogger>,
  pool: ReturnType<typeof createPool>,
  keyTypes: KeyTypes,
) {
  // Best-effort: an event the external system refuses goes to the dead-letter table (same
  // Idempotency-Key for `engagement dlq replay`) instead of stalling the backfill. A locked
  // DuckDB file fails at once (EP_ERR_ANALYTICS_LOCKED) rather than waiting on `run`.
  return createSinks(
    { ...config, externalPolicy: 'best-effort' },
    { logger, metrics: createMetrics(), deadLetters: new DeadLetterStore(pool) },
    { only: sinks, keyTypes },
  );
}

function parseSinks(text: string): BackfillSinkName[] {
  const names = [
    ...new Set(
      text
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
  const bad = names.filter((n) => !(BACKFILL_SINKS as readonly string[]).includes(n));
  if (names.length === 0 || bad.length > 0)
    throw configError(
      `--sinks: unknown sink ${JSON.stringify(bad[0] ?? text)}`,
      'use analytics, redis, external',
    );
  // A stable order, so the same set always finds the same stored progress.
  return BACKFILL_SINKS.filter((n) => names.includes(n));
}
