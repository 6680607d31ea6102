import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { duckdbQuery } from '../../helpers/duckdb.js';
import type { FaultHarness } from './harness.js';

/**
 * The exact reconciliation every scenario ends with, run after the pipeline stopped (DuckDB
 * admits a reader only without its writer). The source table is the truth:
 * - DuckDB: one row per decodable source row (total = distinct = source), nothing else;
 * - Redis: content:count:{id} = source rows per content; top:content:10m = a SQL count over
 *   exactly the minute buckets the ZSET covers (top:meta:10m);
 * - external: the mock's set of received event ids plus the external dead letters cover the
 *   source, nothing outside it, and nothing arrived under two different keys.
 * Rows the source itself dead-lettered (undecodable, e.g. event_ts = 'infinity') are expected
 * nowhere else, and must be in the dead-letter table. Rows the analytics sink dead-lettered
 * (a value outside its range, e.g. event_ts in 294276 for DuckDB) are expected everywhere but
 * DuckDB, and only when the scenario allows them.
 */
export interface Reconciliation {
  /** Source rows (engagement_events). */
  events: number;
  /** Source rows dead-lettered as undecodable (sink 'source'). */
  badRows: number;
  /** Worst per-sink count of source events missing from a sink. */
  lost: number;
  /** Events applied twice anywhere (DuckDB rows, Redis increments, external effects). */
  duplicated: number;
  /** Events the external system never got but the dead-letter table holds (best-effort). */
  externalDeadLettered: number;
  /** Events DuckDB cannot hold (out of its range), dead-lettered for the analytics sink only. */
  analyticsDeadLettered: number;
  /** Re-sends of an already accepted Idempotency-Key (at-least-once; absorbed by the key). */
  externalRedelivered: number;
  problems: string[];
}

export interface ReconcileOptions {
  /** Skip Redis content:count (e.g. after FLUSHALL, which only a backfill can restore). */
  redisCounts?: boolean;
  /** Skip the 10-minute window check. */
  redisWindow?: boolean;
  /** Skip the external system (the scenario ran without it). */
  external?: boolean;
  /**
   * EXTERNAL_BATCH_SIZE of the run. With 1, a re-sent event under a key already accepted is
   * a redelivery the key absorbs; with arrays a re-send cannot be told from a duplicate, so
   * every event received twice counts as duplicated (strict: use arrays only without crashes).
   */
  externalBatchSize?: number;
  /** The scenario inserts values DuckDB cannot hold: analytics dead letters are expected, not a problem. */
  analyticsDeadLetters?: boolean;
}

export async function reconcile(h: FaultHarness, options: ReconcileOptions = {}): Promise<Reconciliation> {
  const problems: string[] = [];
  const source = await h.sql<{ id: string }>('SELECT id::text AS id FROM engagement_events');
  const bad = new Set(
    (
      await h.sql<{ id: string }>(
        `SELECT event_id::text AS id FROM engagement_pipeline.dead_letters WHERE sink = 'source'`,
      )
    ).map((r) => r.id),
  );
  const all = new Set(source.map((r) => r.id));
  const expected = new Set([...all].filter((id) => !bad.has(id)));
  const analyticsDead = new Set(
    (
      await h.sql<{ id: string }>(
        `SELECT event_id::text AS id FROM engagement_pipeline.dead_letters WHERE sink = 'analytics'`,
      )
    ).map((r) => r.id),
  );
  const duckExpected = new Set([...expected].filter((id) => !analyticsDead.has(id)));
  let lost = 0;
  let duplicated = 0;

  // DuckDB
  const duck = await duckdbQuery(
    h.duckdbFile,
    'SELECT event_id::VARCHAR AS id FROM engagement.events_enriched',
  );
  const duckIds = new Set(duck.map((r) => String(r.id)));
  const duckMissing = [...duckExpected].filter((id) => !duckIds.has(id));
  const duckExtra = [...duckIds].filter((id) => !duckExpected.has(id));
  const duckDup = duck.length - duckIds.size;
  if (duckMissing.length) problems.push(`duckdb missing ${duckMissing.length}: ${ranges(duckMissing)}`);
  if (duckExtra.length)
    problems.push(`duckdb has ${duckExtra.length} rows not expected (e.g. ${duckExtra.slice(0, 5)})`);
  if (duckDup) problems.push(`duckdb has ${duckDup} duplicate rows`);
  lost = Math.max(lost, duckMissing.length);
  duplicated += duckDup + duckExtra.length;

  // Redis
  const redis = new Redis(h.redisUrl, { maxRetriesPerRequest: 2 });
  try {
    if (options.redisCounts !== false) {
      const perContent = await h.sql<{ content_id: string; n: string }>(
        `SELECT content_id::text AS content_id, count(*)::text AS n FROM engagement_events
         WHERE content_id IS NOT NULL AND NOT (id::text = ANY($1::text[])) GROUP BY 1`,
        [[...bad]],
      );
      const keys = await scanKeys(redis, `${h.redisPrefix}content:count:*`);
      const want = new Map(
        perContent.map((r) => [`${h.redisPrefix}content:count:${r.content_id}`, Number(r.n)]),
      );
      for (const key of new Set([...keys, ...want.keys()])) {
        const got = Number((await redis.get(key)) ?? 0);
        const exp = want.get(key) ?? 0;
        if (got < exp) lost = Math.max(lost, exp - got);
        if (got > exp) duplicated += got - exp;
        if (got !== exp) problems.push(`redis ${key}: ${got}, source ${exp}`);
      }
    }
    if (options.redisWindow !== false) {
      const meta = await redis.hgetall(`${h.redisPrefix}top:meta:10m`);
      const zset = await redis.zrange(`${h.redisPrefix}top:content:10m`, '0', '-1', 'WITHSCORES');
      const got = new Map<string, number>();
      for (let i = 0; i < zset.length; i += 2)
        if (Number(zset[i + 1]) !== 0) got.set(zset[i], Number(zset[i + 1]));
      const rows = meta.from
        ? await h.sql<{ content_id: string; n: string }>(
            `SELECT content_id::text AS content_id, count(*)::text AS n FROM engagement_events
             WHERE content_id IS NOT NULL AND NOT (id::text = ANY($3::text[]))
               AND event_ts >= to_timestamp($1, 'YYYYMMDDHH24MI')
               AND event_ts < to_timestamp($2, 'YYYYMMDDHH24MI') + interval '1 minute'
             GROUP BY 1`,
            [meta.from, meta.to, [...bad]],
          )
        : [];
      if (!meta.from) problems.push('redis top:meta:10m missing');
      const want = new Map(rows.map((r) => [r.content_id, Number(r.n)]));
      for (const id of new Set([...got.keys(), ...want.keys()])) {
        const g = got.get(id) ?? 0;
        const w = want.get(id) ?? 0;
        if (g < w) lost = Math.max(lost, w - g);
        if (g > w) duplicated += g - w;
        if (g !== w)
          problems.push(`redis top:content:10m[${id}] ${g}, SQL over ${meta.from}..${meta.to} ${w}`);
      }
    }
  } finally {
    redis.disconnect();
  }

  // External
  let externalDeadLettered = 0;
  let externalRedelivered = 0;
  if (options.external !== false) {
    const events = (await (await fetch(`${h.mock.url}_events?limit=100000000`)).json()) as { ids: number[] };
    const stats = (await (await fetch(`${h.mock.url}_stats`)).json()) as {
      duplicates: number;
      duplicateEvents: number;
      trackingTruncated: boolean;
    };
    const got = new Set(events.ids.map(String));
    const dead = new Set(
      (
        await h.sql<{ id: string }>(
          `SELECT event_id::text AS id FROM engagement_pipeline.dead_letters WHERE sink = 'external'`,
        )
      ).map((r) => r.id),
    );
    const missing = [...expected].filter((id) => !got.has(id) && !dead.has(id));
    externalDeadLettered = [...expected].filter((id) => !got.has(id) && dead.has(id)).length;
    const phantom = [...got].filter((id) => !expected.has(id));
    // One event per request (EXTERNAL_BATCH_SIZE=1): a re-sent event with a key already
    // accepted is a redelivery the key absorbs; one under a new key would be a real duplicate.
    const single = (options.externalBatchSize ?? 1) === 1;
    const effectDuplicates = single ? stats.duplicateEvents - stats.duplicates : stats.duplicateEvents;
    externalRedelivered = single ? stats.duplicates : 0;
    if (missing.length) problems.push(`external missing ${missing.length} (e.g. ${missing.slice(0, 5)})`);
    if (phantom.length) problems.push(`external got ${phantom.length} ids not in the source`);
    if (effectDuplicates) problems.push(`external: ${effectDuplicates} events re-sent under a new key`);
    if (stats.trackingTruncated) problems.push('external mock id tracking truncated');
    lost = Math.max(lost, missing.length);
    duplicated += Math.max(0, effectDuplicates) + phantom.length;
  }

  // Only the external sink may dead-letter (best-effort) and the source (undecodable rows),
  // and the analytics sink where the scenario inserts values DuckDB cannot hold.
  const allowed = ['external', 'source', ...(options.analyticsDeadLetters ? ['analytics'] : [])];
  const otherDead = await h.sql<{ sink: string; n: string }>(
    `SELECT sink, count(*)::text AS n FROM engagement_pipeline.dead_letters WHERE NOT (sink = ANY($1::text[])) GROUP BY 1`,
    [allowed],
  );
  for (const r of otherDead) problems.push(`dead letters of sink ${r.sink}: ${r.n}`);

  return {
    events: all.size,
    badRows: bad.size,
    lost,
    duplicated,
    externalDeadLettered,
    analyticsDeadLettered: analyticsDead.size,
    externalRedelivered,
    problems,
  };
}

/** Ids as compact ranges ("10120-10180, 20001"), for a readable failure message. */
function ranges(ids: string[]): string {
  const sorted = ids.map(Number).sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    out.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return out.slice(0, 20).join(', ') + (out.length > 20 ? `, … (${out.length} runs)` : '');
}

async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

/** Asserts a reconciliation is exact, with every discrepancy in the message. */
export function assertExact(r: Reconciliation): void {
  assert.deepEqual(
    { lost: r.lost, duplicated: r.duplicated, problems: r.problems },
    { lost: 0, duplicated: 0, problems: [] },
    `reconciliation of ${r.events} source events`,
  );
}
