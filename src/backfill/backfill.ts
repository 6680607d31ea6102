import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { clientConfig, createPool } from '../db/postgres.js';
import { enrich } from '../domain/enrich.js';
import type { SourceShape } from '../domain/source-shape.js';
import { dateToIso } from '../domain/timestamps.js';
import type { Batch, EnrichedEvent } from '../domain/types.js';
import { configError, describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Sink, WriteResult } from '../sinks/sink.js';
import type { RedisSink } from '../sinks/redis/redis-sink.js';
import { ContentDimension } from '../enrichment/content-dimension.js';
import { BackfillProgressStore, type BackfillRun } from './progress-store.js';
import { HistoryReader } from './reader.js';

export const BACKFILL_SINKS = ['analytics', 'redis', 'external'] as const;
export type BackfillSinkName = (typeof BACKFILL_SINKS)[number];

export interface BackfillOptions {
  databaseUrl: string;
  fromTs: string;
  toTs: string;
  sinks: BackfillSinkName[];
  /** Where the sinks write (destinationsKey): a run resumes only into the same destinations. */
  destinations: string;
  /** The user's tables (discovered at start); default: the tables `engagement migrate` creates. */
  shape?: SourceShape;
  chunkSize: number;
  /** Rows per second at most (0 = unthrottled). */
  rate: number;
  logger: Logger;
  /** Builds the named sinks (the same classes the stream uses). */
  createSinks: () => { analytics?: Sink; redis?: RedisSink; external?: Sink };
  onProgress?: (p: BackfillProgress) => void;
  signal?: AbortSignal;
}

export interface BackfillProgress {
  runId: string;
  rowsDone: number;
  rowsTotal: number;
  redisApplied: number;
  resumedFrom: number;
  elapsedMs: number;
  done: boolean;
}

export interface BackfillPlan {
  rowsTotal: number;
  maxId: string;
  minTs: string | null;
  maxTs: string | null;
  resumable: { id: string; rowsDone: number; lastId: string } | null;
}

export interface BackfillResult extends BackfillProgress {
  badRows: number;
  /** Events a sink recorded in the dead-letter table instead of taking (this process). */
  deadLettered: number;
}

/** What a run would do (`--dry-run`): rows in range and any stored progress it would resume. */
export async function planBackfill(
  options: Pick<BackfillOptions, 'databaseUrl' | 'fromTs' | 'toTs' | 'sinks' | 'destinations' | 'shape'>,
): Promise<BackfillPlan> {
  const client = await connect(options.databaseUrl);
  try {
    const plan = await HistoryReader.plan(client, options.fromTs, options.toTs, options.shape);
    const run = await new BackfillProgressStore(client).findResumable(
      options.fromTs,
      options.toTs,
      options.sinks.join(','),
      options.destinations,
    );
    return {
      rowsTotal: plan.total,
      maxId: plan.maxId,
      minTs: plan.minTs,
      maxTs: plan.maxTs,
      resumable: run ? { id: run.id, rowsDone: run.rowsDone, lastId: run.lastId } : null,
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * For `--to now`: the end of an earlier `--to now` run with the same start and sinks that was
 * stopped before it finished (null if none). The caller resumes that range first, then covers
 * the rest up to the new now, so a killed `--to now` resumes like any other range.
 */
export async function unfinishedNowRunEnd(
  options: Pick<BackfillOptions, 'databaseUrl' | 'fromTs' | 'toTs' | 'sinks' | 'destinations'>,
): Promise<string | null> {
  const client = await connect(options.databaseUrl);
  try {
    return await new BackfillProgressStore(client).unfinishedEndBefore(
      options.fromTs,
      options.toTs,
      options.sinks.join(','),
      options.destinations,
    );
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Re-processes history through the stream's own enrichment into the chosen sinks.
 *
 * - Idempotent per sink, like the stream: analytics keys on event_id, Redis counts an event
 *   at most once (seen bitmaps shared with the stream, so running concurrently with
 *   `engagement run`, or again over an overlapping range, double-counts nothing), external
 *   re-sends carry Idempotency-Key = event_id.
 * - Redis: content:count and content:last for every event in range; minute buckets only
 *   while still inside retention (older buckets have expired; writing them would
 *   resurrect keys nobody reads).
 * - committed_at: the source commit time when track_commit_timestamp is on, else the time
 *   the backfill read the row (the original commit time is not recoverable then).
 * - Progress is stored after every chunk all sinks accepted: a killed run resumes there.
 * - Reading chunk n+1 overlaps writing chunk n.
 */
export async function runBackfill(options: BackfillOptions): Promise<BackfillResult> {
  const client = await connect(options.databaseUrl);
  const readClient = await connect(options.databaseUrl); // reads ahead while `client` records progress
  const pool = createPool(options.databaseUrl, 2, 'engagement-backfill');
  const store = new BackfillProgressStore(client);
  const sinkSet = options.createSinks();
  const started: Sink[] = [];
  // Set once this process holds the run's lock: only then may a failure be written onto it.
  let owned: BackfillRun | null = null;
  try {
    const sinksKey = options.sinks.join(',');
    let run = await store.findResumable(options.fromTs, options.toTs, sinksKey, options.destinations);
    if (!run) {
      const plan = await HistoryReader.plan(client, options.fromTs, options.toTs, options.shape);
      run = await store.create(
        options.fromTs,
        options.toTs,
        sinksKey,
        options.destinations,
        plan.maxId,
        plan.total,
      );
    }
    if (!(await store.lock(run.id))) {
      throw configError(
        `backfill #${run.id} (${options.fromTs} .. ${options.toTs}, ${sinksKey}) is already running in another process`,
        'wait for it, or stop it first',
      );
    }
    owned = run;
    await store.stampDestinations(run, options.destinations);
    for (const sink of [sinkSet.analytics, sinkSet.redis, sinkSet.external]) {
      if (!sink) continue;
      await sink.start();
      started.push(sink);
    }
    const dimension = new ContentDimension(pool, { shape: options.shape });
    await dimension.loadSnapshot();
    const reader = new HistoryReader(readClient, options.fromTs, options.toTs, run.maxId, options.shape);
    const result = await loop(run, reader, dimension, store, sinkSet, options);
    await store.finish(run, 'done');
    return result;
  } catch (err) {
    // Stopped on request: left as it was (not failed), so `status` lists it as interrupted.
    if (owned && !options.signal?.aborted)
      await store.finish(owned, 'failed', describeError(err)).catch(() => undefined);
    throw err;
  } finally {
    for (const sink of started.reverse()) {
      await sink.stop().catch((err) => options.logger.warn(`stopping ${sink.name}: ${describeError(err)}`));
    }
    await pool.end().catch(() => undefined);
    await readClient.end().catch(() => undefined);
    await client.end().catch(() => undefined);
  }
}

async function loop(
  run: BackfillRun,
  reader: HistoryReader,
  dimension: ContentDimension,
  store: BackfillProgressStore,
  sinks: ReturnType<BackfillOptions['createSinks']>,
  options: BackfillOptions,
): Promise<BackfillResult> {
  const startedAt = Date.now();
  const resumedFrom = run.rowsDone;
  const total = run.rowsTotal ?? 0;
  let bad = 0;
  let deadLettered = 0;
  const countDeadLettered = (result: WriteResult | void): number => {
    deadLettered += result?.deadLettered.size ?? 0;
    return 0;
  };
  /** Events whose duration_ms was negative (counted, derived fields NULL), and the first one's id. */
  let negative = 0;
  let firstNegative: string | null = null;
  const chunkSize =
    options.rate > 0 ? Math.max(1, Math.min(options.chunkSize, options.rate)) : options.chunkSize;
  const progress = (done: boolean) => ({
    runId: run.id,
    rowsDone: run.rowsDone,
    rowsTotal: Math.max(total, run.rowsDone),
    redisApplied: run.redisApplied,
    resumedFrom,
    elapsedMs: Date.now() - startedAt,
    done,
  });
  const report = (done: boolean) => options.onProgress?.(progress(done));
  report(false);
  let seq = 0;
  let pending = reader.next(run.lastId, chunkSize);
  for (;;) {
    if (options.signal?.aborted)
      throw new Error('backfill interrupted; run the same command again to resume');
    const chunk = await pending;
    if (chunk.lastId === null) break;
    pending = reader.next(chunk.lastId, chunkSize); // read ahead while this chunk is written
    pending.catch(() => undefined);
    bad += chunk.bad;
    const unknown = chunk.rows.flatMap((r) =>
      r.content_id && dimension.peek(r.content_id) === undefined ? [r.content_id] : [],
    );
    if (unknown.length > 0) await dimension.lookup(unknown);
    const processedAt = dateToIso(new Date());
    const events: EnrichedEvent[] = chunk.rows.map((row, i) => {
      const { event, issues } = enrich(
        row,
        row.content_id === null ? undefined : (dimension.peek(row.content_id) ?? undefined),
        chunk.committedAt[i] ?? processedAt,
        processedAt,
      );
      if (issues.includes('negative_duration')) {
        negative += 1;
        firstNegative ??= String(row.id);
      }
      return event;
    });
    const batch: Batch = {
      seq: ++seq,
      stream: 'backfill',
      events,
      positions: events.map((e) => `backfill:${e.event_id}`),
      ackLsn: null,
    };
    const writes: Promise<number>[] = [];
    const signal = options.signal ?? new AbortController().signal;
    if (sinks.analytics) writes.push(sinks.analytics.write(batch, signal).then(countDeadLettered));
    if (sinks.external) writes.push(sinks.external.write(batch, signal).then(countDeadLettered));
    if (sinks.redis) writes.push(sinks.redis.writeBackfill(events));
    const applied = (await Promise.all(writes)).reduce((a, b) => a + b, 0);
    await store.advance(run, chunk.lastId, chunk.rows.length + chunk.bad, applied);
    report(false);
    if (options.rate > 0) {
      const dueMs = ((run.rowsDone - resumedFrom) / options.rate) * 1000;
      const ahead = dueMs - (Date.now() - startedAt);
      if (ahead > 0) await sleep(ahead);
    }
  }
  report(true);
  if (bad > 0)
    options.logger.warn(`${bad} rows could not be decoded and were skipped (e.g. event_ts infinity)`);
  // The stream logs each such event (enrich-counted.ts); a backfill says it once, with a count.
  if (negative > 0)
    options.logger.warn(
      { first_event_id: firstNegative },
      `${negative} events had a negative duration_ms: they were counted, with engagement_seconds and engagement_pct NULL`,
    );
  return { ...progress(true), badRows: bad, deadLettered };
}

async function connect(databaseUrl: string): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(databaseUrl, 'engagement-backfill'));
  client.on('error', () => undefined);
  await client.connect();
  return client;
}
