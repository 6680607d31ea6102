import type { Command } from 'commander';
import { requireDatabaseUrl } from '../config.js';
import { createPool } from '../db/postgres.js';
import { STATE_SCHEMA } from '../db/schema.js';
import type { KeyTypes } from '../domain/source-shape.js';
import { appendJsonMember, recordJson } from '../domain/json-text.js';
import type { EnrichedEvent } from '../domain/types.js';
import { configError } from '../errors.js';
import { createLogger } from '../logger.js';
import { assertPostgresReachable } from '../runtime.js';
import { createMetrics } from '../observability/metrics.js';
import { DeadLetterStore, type DeadLetterEntry, type DeadLetterRow } from '../state/dead-letter.js';
import { externalSinkFromConfig, SINK_NAMES } from '../sinks/factory.js';
import {
  action,
  configFrom,
  integerOption,
  parseInstant,
  TIME_HELP,
  SOURCE_CONFIG_KEYS,
  withConfigOptions,
} from './common.js';
import { discoverShape } from '../db/catalog.js';

/** Dead-letter ids are BIGINT. */
const MAX_BIGINT = 9223372036854775807n;

const EXTERNAL_KEYS = [
  'databaseUrl',
  ...SOURCE_CONFIG_KEYS,
  'externalUrl',
  'externalSecret',
  'externalConcurrency',
  'externalMaxAttempts',
  'externalTimeoutMs',
  'logLevel',
] as const;

export function registerDlq(program: Command): void {
  const dlq = program.command('dlq').description('dead letters: events a sink gave up on');

  withConfigOptions(
    dlq
      .command('list')
      .description('list pending dead letters, oldest first')
      .option('--since <iso>', `only rows that last failed at or after this time (${TIME_HELP})`)
      .option('--reason <text>', 'only rows whose last error contains this text')
      .option('--sink <name>', `only this sink (${DEAD_LETTER_SINKS.join(', ')})`)
      .option('--limit <n>', 'rows at most', '100')
      .option('--include-replayed', 'also rows already replayed')
      .option('--json', 'JSON lines instead of a table'),
    ['databaseUrl'],
  ).action(
    action(async (options: Record<string, unknown>) => {
      const config = configFrom(options);
      const since = options.since ? parseInstant(String(options.since), '--since') : undefined;
      const limit = integerOption(options.limit, '--limit', 1);
      const sink = sinkOption(options.sink);
      await withStore(requireDatabaseUrl(config), async (store) => {
        const rows = await store.list({
          since,
          reason: options.reason as string | undefined,
          sink,
          limit,
          includeReplayed: options.includeReplayed === true,
        });
        if (options.json) {
          for (const row of rows) process.stdout.write(`${rowJson(row)}\n`);
          return;
        }
        process.stdout.write(formatTable(rows));
        process.stdout.write(`${rows.length} row(s)${rows.length === limit ? ` (limit ${limit})` : ''}\n`);
      });
    }),
  );

  withConfigOptions(
    dlq
      .command('replay')
      .description('re-send external dead letters with the Idempotency-Key of the first attempt')
      .option('--id <ids>', 'comma-separated dead-letter ids')
      .option('--all', 'every pending external dead letter'),
    EXTERNAL_KEYS,
  ).action(
    action(async (options: Record<string, unknown>) => {
      const config = configFrom(options);
      if (!options.id === !options.all) throw configError('dlq replay needs exactly one of --id or --all');
      if (!config.externalUrl) throw configError('EXTERNAL_URL is not set', 'export EXTERNAL_URL=https://…');
      const ids = options.id
        ? String(options.id)
            .split(',')
            .map((s) => s.trim())
        : null;
      if (ids?.some((id) => !/^\d+$/.test(id) || BigInt(id) > MAX_BIGINT))
        throw configError(`--id must be numeric ids, got ${String(options.id)}`);
      // As Postgres prints them (007 is 7), to compare with the stored ids.
      ids?.forEach((id, i) => (ids[i] = BigInt(id).toString()));
      const logger = createLogger(config.logLevel);
      // The callback's exit code (1 when some fail again) is the command's: returned, not dropped.
      return await withStore(requireDatabaseUrl(config), async (store, pool) => {
        if (ids) {
          // A mistyped id replays nothing: one line and exit 2, not a quiet success.
          const known = await store.existing(ids);
          const unknown = ids.filter((id) => !known.has(id));
          if (unknown.length > 0)
            throw configError(
              `no dead letter with id ${unknown.join(', ')}; nothing replayed`,
              'engagement dlq list --include-replayed shows the ids',
            );
        }
        const pending = (await store.list({ sink: 'external', limit: 1_000_000 })).filter(
          (r) => ids === null || ids.includes(r.id),
        );
        if (ids) {
          const missing = ids.filter((id) => !pending.some((r) => r.id === id));
          if (missing.length > 0)
            process.stderr.write(
              `engagement: skipped ${missing.join(', ')}: already replayed, or not the external sink's\n`,
            );
        }
        // Keys go out typed as in the source, like the first attempt (integer keys as numbers).
        const { keyTypes } = await discoverShape(pool, config);
        const result = await replay(pending, store, config, logger, keyTypes);
        process.stdout.write(
          `replayed ${result.delivered} of ${pending.length} dead letter(s)` +
            (result.failed > 0
              ? `; ${result.failed} failed again and stay pending (engagement dlq list)`
              : '') +
            '\n',
        );
        return result.failed > 0 ? 1 : 0;
      });
    }),
  );

  withConfigOptions(
    dlq
      .command('purge')
      .description('delete dead letters (pending and replayed) that last failed before a time')
      .requiredOption('--before <iso>', `delete rows whose last failure is before this time (${TIME_HELP})`)
      .option('--sink <name>', `only this sink (${DEAD_LETTER_SINKS.join(', ')})`),
    ['databaseUrl'],
  ).action(
    action(async (options: Record<string, unknown>) => {
      const config = configFrom(options);
      const before = parseInstant(String(options.before), '--before');
      const sink = sinkOption(options.sink);
      await withStore(requireDatabaseUrl(config), async (_store, pool) => {
        const result = await pool.query(
          `DELETE FROM ${STATE_SCHEMA}.dead_letters WHERE last_failed_at < $1 AND ($2::text IS NULL OR sink = $2)`,
          [before, sink ?? null],
        );
        process.stdout.write(
          `purged ${result.rowCount ?? 0} dead letter(s) that last failed before ${before}\n`,
        );
      });
    }),
  );
  // Usage errors of the subcommands exit 2 like every other command (see main.ts).
  for (const command of dlq.commands) command.exitOverride();
}

/**
 * Re-sends through the external sink itself (same signing, retries, breaker), one event per
 * request so the Idempotency-Key is the event_id, exactly the key the dead letter was recorded
 * under and the key of the first attempt (with EXTERNAL_BATCH_SIZE 1, the default). An event
 * that fails again is recorded again by the sink (the pending row gains attempts and the new
 * error); the others are marked replayed.
 */
async function replay(
  rows: DeadLetterRow[],
  store: DeadLetterStore,
  config: ReturnType<typeof configFrom>,
  logger: ReturnType<typeof createLogger>,
  keyTypes: KeyTypes,
): Promise<{ delivered: number; failed: number }> {
  if (rows.length === 0) return { delivered: 0, failed: 0 };
  const failedKeys = new Set<string>();
  const recorder = {
    record: async (entries: readonly DeadLetterEntry[]) => {
      for (const e of entries) failedKeys.add(e.idempotencyKey);
      return store.record(entries);
    },
  };
  const sink = externalSinkFromConfig(
    // Manual replay reports what fails now instead of riding out an outage (EXTERNAL_RETRY_FOR),
    // and does not start the pipeline's background re-drive (the recorder is not the table).
    { ...config, externalBatchSize: 1, externalPolicy: 'best-effort', externalRetryFor: 0 },
    { deadLetters: recorder, metrics: createMetrics(), logger, keyTypes },
  )!;
  await sink.start();
  try {
    const signal = new AbortController().signal;
    for (let i = 0; i < rows.length; i += 500) {
      const slice = rows.slice(i, i + 500);
      await sink.write(
        {
          seq: i,
          stream: 'dlq-replay',
          events: slice.map((r) => r.event as EnrichedEvent),
          positions: slice.map((r) => `dlq:${r.id}`),
          ackLsn: null,
        },
        signal,
      );
      await store.markReplayed(slice.filter((r) => !failedKeys.has(r.idempotencyKey)).map((r) => r.id));
    }
  } finally {
    await sink.stop();
  }
  return { delivered: rows.length - failedKeys.size, failed: failedKeys.size };
}

async function withStore<T>(
  databaseUrl: string,
  fn: (store: DeadLetterStore, pool: ReturnType<typeof createPool>) => Promise<T>,
): Promise<T> {
  await assertPostgresReachable(databaseUrl);
  const pool = createPool(databaseUrl, 2, 'engagement-dlq');
  try {
    return await fn(new DeadLetterStore(pool), pool);
  } finally {
    await pool.end().catch(() => undefined);
  }
}

function formatTable(rows: DeadLetterRow[]): string {
  const header = ['id', 'sink', 'event_id', 'attempts', 'last_failed_at', 'replayed', 'last_error'];
  const body = rows.map((r) => [
    r.id,
    r.sink,
    r.eventId ?? '-',
    String(r.attempts),
    // In full (ISO, Z, microseconds): pasted back into --since it selects this row.
    r.lastFailedAt,
    r.replayedAt ?? '-',
    r.lastError.replace(/\s+/g, ' ').slice(0, 60),
  ]);
  // A fold, not Math.max(...): `dlq list --limit 200000` has more rows than a call takes arguments.
  const widths = header.map((h, i) => body.reduce((w, row) => Math.max(w, row[i].length), h.length));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd() + '\n';
  return line(header) + body.map(line).join('');
}

/** A dead letter as one JSON line, its event's payload exact (recordJson), the event last. */
function rowJson(row: DeadLetterRow): string {
  const { event, ...rest } = row;
  return appendJsonMember(JSON.stringify(rest), 'event', recordJson(event));
}

/** What a dead letter's `sink` can be: each destination, and `source` (rows that could not be decoded). */
const DEAD_LETTER_SINKS: readonly string[] = [...SINK_NAMES, 'source'];

/** `--sink`, checked: a misspelt name would otherwise match nothing (purge: "purged 0", exit 0). */
function sinkOption(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  const name = String(value);
  if (!DEAD_LETTER_SINKS.includes(name)) {
    throw configError(`--sink must be one of ${DEAD_LETTER_SINKS.join(', ')} (got "${name}")`);
  }
  return name;
}
