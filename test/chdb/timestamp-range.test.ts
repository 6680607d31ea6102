import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { microsToIso } from '../../src/domain/timestamps.js';
import type { EnrichedEvent } from '../../src/domain/types.js';
import { startBigQueryFake, type BigQueryFake } from '../helpers/bigquery-fake.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { closeServer, listen, readBody } from '../helpers/http-server.js';
import { CONTENT_IDS, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Postgres's whole timestamptz range through the real pipeline, between ordinary events: the
 * stream keeps flowing, every ordinary event arrives exactly once everywhere, and each edge row
 * is delivered exactly (to the microsecond) where the destination can hold it, or is a dead
 * letter of that destination with the reason. Only ±infinity (no instant at all) is refused by
 * the source for every destination.
 */

const ORDINARY = CONTENT_IDS[0];
const EDGE = CONTENT_IDS[1];

/** Edge timestamps as Postgres input text; which analytics destination can hold each. */
const EDGES: { ts: string; duckdb: boolean; clickhouse: boolean; bigquery: boolean }[] = [
  { ts: '4714-11-24 00:00:00+00 BC', duckdb: true, clickhouse: false, bigquery: false },
  { ts: '0044-03-15 12:00:00.000001+00 BC', duckdb: true, clickhouse: false, bigquery: false },
  { ts: '0001-12-31 23:59:59.999999+00 BC', duckdb: true, clickhouse: false, bigquery: false },
  { ts: '0001-01-01 00:00:00+00', duckdb: true, clickhouse: false, bigquery: true },
  { ts: '0099-12-31 23:59:59.999999+00', duckdb: true, clickhouse: false, bigquery: true },
  { ts: '1899-12-31 23:59:59.999999+00', duckdb: true, clickhouse: false, bigquery: true },
  { ts: '1900-01-01 00:00:00+00', duckdb: true, clickhouse: true, bigquery: true },
  { ts: '1969-12-31 23:59:59.999999+00', duckdb: true, clickhouse: true, bigquery: true },
  { ts: '2299-12-31 23:59:59.999999+00', duckdb: true, clickhouse: true, bigquery: true },
  { ts: '9999-12-31 23:59:59.999999+00', duckdb: true, clickhouse: false, bigquery: true },
  { ts: '10000-01-01 00:00:00+00', duckdb: true, clickhouse: false, bigquery: false },
  { ts: '294247-01-10 04:00:54.775806+00', duckdb: true, clickhouse: false, bigquery: false },
  { ts: '294247-01-10 04:00:54.775807+00', duckdb: false, clickhouse: false, bigquery: false },
  { ts: '294276-12-31 23:59:59.999999+00', duckdb: false, clickhouse: false, bigquery: false },
];
const NO_INSTANT = ['infinity', '-infinity'];
/**
 * Postgres's own µs since the Unix epoch of event_ts, exactly: whole days (date arithmetic)
 * plus the time of day. extract(epoch) rounds near the end of the range, and the largest values
 * do not fit a bigint (Postgres counts from 2000).
 */
const PG_MICROS = `((utc::date - date '1970-01-01')::numeric * 86400000000 + extract(epoch FROM utc::time) * 1000000)::numeric(40, 0)::text`;

/** A stand-in external system that keeps every event it is sent. */
async function startRecorder(): Promise<{ url: string; events: EnrichedEvent[]; close(): Promise<void> }> {
  const events: EnrichedEvent[] = [];
  const server: Server = createServer((req, res) => {
    void readBody(req).then((body) => {
      const parsed = JSON.parse(body.toString('utf8')) as EnrichedEvent | EnrichedEvent[];
      events.push(...(Array.isArray(parsed) ? parsed : [parsed]));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const port = await listen(server, 0);
  return { url: `http://127.0.0.1:${port}/events`, events, close: () => closeServer(server) };
}

interface Run {
  /** Source rows by id: the edge timestamp (null for ordinary rows). */
  rows: Map<string, string | null>;
  /** Postgres's own µs since the epoch of every row that has an instant. */
  micros: Map<string, bigint>;
  ordinary: number;
}

/** Ordinary events with edge rows between them, in several transactions (one with only an edge row). */
async function insertMix(h: Harness): Promise<Run> {
  const values: [string, string | null][] = [];
  for (const ts of [...EDGES.map((e) => e.ts), ...NO_INSTANT]) {
    values.push([ORDINARY, null], [ORDINARY, null], [EDGE, ts]);
  }
  values.push([ORDINARY, null]);
  const insert = (chunk: [string, string | null][]) =>
    h.sql(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
       SELECT c::uuid, NULL, 'play', coalesce(t::timestamptz, now()), 1000, 'tv', jsonb_build_object('edge', t)
       FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(c, t, i) ORDER BY i`,
      [chunk.map((v) => v[0]), chunk.map((v) => v[1])],
    );
  await insert(values.slice(0, 20));
  await insert([[EDGE, '294276-12-31 23:59:59.999999+00']]); // a transaction of one row no analytics store holds
  await insert(values.slice(20));
  await insert(values.slice(0, 6).map(([c, t]) => [c, t === null ? null : '0001-01-01 00:00:00+00']));
  const rows = await h.sql<{ id: string; edge: string | null; us: string | null }>(
    `SELECT id::text AS id, raw_payload->>'edge' AS edge,
            CASE WHEN isfinite(event_ts) THEN ${PG_MICROS} END AS us
       FROM engagement_events, LATERAL (SELECT event_ts AT TIME ZONE 'UTC' AS utc) AS x ORDER BY id`,
  );
  return {
    rows: new Map(rows.map((r) => [r.id, r.edge])),
    micros: new Map(rows.filter((r) => r.us !== null).map((r) => [r.id, BigInt(r.us!)])),
    ordinary: rows.filter((r) => r.edge === null).length,
  };
}

async function deadLetters(h: Harness, sink: string): Promise<Map<string, string>> {
  const rows = await h.sql<{ id: string; last_error: string }>(
    `SELECT event_id::text AS id, last_error FROM engagement_pipeline.dead_letters WHERE sink = $1`,
    [sink],
  );
  return new Map(rows.map((r) => [r.id, r.last_error]));
}

type Analytics = 'duckdb' | 'clickhouse' | 'bigquery';

/** Whether the analytics destination can hold a row with this edge timestamp. */
const fits = (ts: string, analytics: Analytics) => EDGES.find((e) => e.ts === ts)![analytics];

/** Ids of the rows an analytics destination must hold. */
function expectedIn(run: Run, analytics: Analytics): string[] {
  return [...run.rows]
    .filter(([, ts]) => ts === null || (!NO_INSTANT.includes(ts) && fits(ts, analytics)))
    .map(([id]) => id);
}

/** Ids of the rows with an instant that an analytics destination must refuse (its dead letters). */
function refusedBy(run: Run, analytics: Analytics): string[] {
  return [...run.rows]
    .filter(([, ts]) => ts !== null && !NO_INSTANT.includes(ts) && !fits(ts, analytics))
    .map(([id]) => id);
}

/** Waits until the analytics store dead-lettered `refused` and Redis and the external system have the rest. */
async function waitSettled(
  h: Harness,
  run: Run,
  refused: string[],
  external: EnrichedEvent[],
): Promise<void> {
  await waitFor(
    'every row delivered or dead-lettered',
    async () => {
      const analytics = await deadLetters(h, 'analytics');
      const count = await h.redis.client.get(`${h.redis.prefix}content:count:${ORDINARY}`);
      return (
        analytics.size === refused.length &&
        count === String(run.ordinary) &&
        external.length >= run.rows.size - 2
      );
    },
    60_000,
  );
}

/** The analytics store's dead letters are exactly `refused`, each with a reason matching `reason`. */
async function assertRefused(h: Harness, refused: string[], reason: RegExp): Promise<void> {
  const analytics = await deadLetters(h, 'analytics');
  assert.deepEqual([...analytics.keys()].sort(), [...refused].sort());
  for (const text of analytics.values()) assert.match(text, reason);
}

/** Everything but the analytics store: Redis counts and windows, the external system, the source's dead letters. */
async function assertOtherSinks(h: Harness, run: Run, external: EnrichedEvent[]): Promise<void> {
  const withInstant = [...run.rows].filter(([, ts]) => ts === null || !NO_INSTANT.includes(ts));
  const edgeCount = withInstant.filter(([, ts]) => ts !== null).length;
  const redis = h.redis.client;
  assert.equal(await redis.get(`${h.redis.prefix}content:count:${ORDINARY}`), String(run.ordinary));
  assert.equal(await redis.get(`${h.redis.prefix}content:count:${EDGE}`), String(edgeCount));
  // Far events have their own minute buckets, none of them in the last 10 minutes.
  const top = await redis.zrange(`${h.redis.prefix}top:content:10m`, '0', '-1', 'WITHSCORES');
  assert.deepEqual(top, [ORDINARY, String(run.ordinary)]);

  const byId = new Map<string, EnrichedEvent[]>();
  for (const e of external) byId.set(String(e.event_id), [...(byId.get(String(e.event_id)) ?? []), e]);
  assert.deepEqual(
    [...byId.keys()].sort(),
    withInstant.map(([id]) => id).sort(),
    'external: every row with an instant',
  );
  for (const [id, copies] of byId) {
    assert.equal(copies.length, 1, `external got event ${id} once`);
    assert.equal(
      copies[0].event_ts,
      microsToIso(run.micros.get(id)!),
      `external event ${id}: exact event_ts`,
    );
  }
  const source = await deadLetters(h, 'source');
  assert.equal(source.size, NO_INSTANT.length);
  for (const reason of source.values())
    assert.match(reason, /event_ts: timestamp -?infinity is not supported/);
}

describe('Postgres timestamp range end to end', () => {
  let h: Harness;
  let recorder: Awaited<ReturnType<typeof startRecorder>>;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    recorder = await startRecorder();
  });
  after(async () => {
    await recorder.close();
    await h.cleanup();
  });

  it('DuckDB, Redis and external: delivered exactly where representable, dead-lettered with the reason elsewhere', async () => {
    const runtime = await h.start({ externalUrl: recorder.url });
    let run: Run;
    try {
      run = await insertMix(h);
      const refused = refusedBy(run, 'duckdb');
      await waitSettled(h, run, refused, recorder.events);
      // The stream still flows after them (the last event: jsonb written with \u escapes).
      await h.sql(
        `INSERT INTO engagement_events (content_id, event_type, event_ts, duration_ms, device, raw_payload)
         SELECT $1::uuid, 'click', now(), 5, 'web', CASE WHEN g = 10 THEN $2::jsonb END FROM generate_series(1, 10) g`,
        [ORDINARY, String.raw`{"u":"\u00e9\ud83c\udfa7\u2028\u001b\"\\"}`],
      );
      run.ordinary += 10;
      for (const r of await h.sql<{ id: string; us: string }>(
        `SELECT id::text AS id, ${PG_MICROS} AS us FROM engagement_events, LATERAL (SELECT event_ts AT TIME ZONE 'UTC' AS utc) AS x WHERE id > $1`,
        [Math.max(...[...run.rows.keys()].map(Number))],
      )) {
        run.rows.set(r.id, null);
        run.micros.set(r.id, BigInt(r.us));
      }
      await waitFor('the later events', async () => {
        const count = await h.redis.client.get(`${h.redis.prefix}content:count:${ORDINARY}`);
        return count === String(run.ordinary) && recorder.events.length >= run.rows.size - 2;
      });
      const escaped = recorder.events.find((e) => e.raw_payload !== null && 'u' in (e.raw_payload as object));
      assert.deepEqual(escaped?.raw_payload, { u: 'é🎧\u2028\u001b"\\' });
      await assertRefused(
        h,
        refused,
        /^DuckDB cannot hold this row: event_ts \+2942\d\d-.* is outside DuckDB TIMESTAMPTZ's range/,
      );
      await assertOtherSinks(h, run, recorder.events);
    } finally {
      await runtime.stop();
    }
    const duck = await duckdbQuery(
      h.duckdbFile,
      'SELECT event_id::VARCHAR AS id, epoch_us(event_ts)::VARCHAR AS us FROM engagement.events_enriched',
    );
    const want = expectedIn(run, 'duckdb');
    assert.deepEqual(
      duck.map((r) => String(r.id)).sort(),
      want.sort(),
      'DuckDB: one row per representable event',
    );
    for (const r of duck)
      assert.equal(BigInt(String(r.us)), run.micros.get(String(r.id)), `DuckDB event ${r.id}: exact µs`);
  });
});

describe('Postgres timestamp range end to end (ClickHouse)', () => {
  let h: Harness;
  let front: ChdbHttp;
  let recorder: Awaited<ReturnType<typeof startRecorder>>;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    front = await startChdbHttp();
    recorder = await startRecorder();
  });
  after(async () => {
    await recorder.close();
    await front.close();
    await h.cleanup();
  });

  it('keeps DateTime64 rows to 1900..2299 and dead-letters the rest for ClickHouse only', async () => {
    const runtime = await h.start({
      externalUrl: recorder.url,
      analyticsUrl: `clickhouse://default@127.0.0.1:${front.port}/edges`,
    });
    let run: Run;
    try {
      run = await insertMix(h);
      const refused = refusedBy(run, 'clickhouse');
      await waitSettled(h, run, refused, recorder.events);
      await assertRefused(
        h,
        refused,
        /^ClickHouse cannot hold this row: event_ts .* is outside ClickHouse DateTime64\(6, 'UTC'\)'s range/,
      );
      await assertOtherSinks(h, run, recorder.events);
      const rows = await front.rows<{ id: string; us: string }>(
        'SELECT toString(event_id) AS id, toString(toUnixTimestamp64Micro(event_ts)) AS us FROM edges.events_enriched FINAL',
      );
      const want = expectedIn(run, 'clickhouse');
      assert.deepEqual(
        rows.map((r) => r.id).sort(),
        want.sort(),
        'ClickHouse: one row per representable event',
      );
      for (const r of rows)
        assert.equal(BigInt(r.us), run.micros.get(r.id), `ClickHouse event ${r.id}: exact µs`);
    } finally {
      await runtime.stop();
    }
  });
});

describe('Postgres timestamp range end to end (BigQuery)', () => {
  let h: Harness;
  let fake: BigQueryFake;
  let recorder: Awaited<ReturnType<typeof startRecorder>>;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    fake = await startBigQueryFake();
    recorder = await startRecorder();
  });
  after(async () => {
    await recorder.close();
    await fake.close();
    await h.cleanup();
  });

  it('keeps TIMESTAMP rows to 0001..9999 and dead-letters the rest for BigQuery only', async () => {
    // BIGQUERY_API_ENDPOINT and BIGQUERY_ACCESS_TOKEN, as `engagement run` reads them.
    const runtime = await h.start({
      externalUrl: recorder.url,
      analyticsUrl: 'bigquery://acme-edges/edges',
      bigqueryApiEndpoint: fake.url,
      bigqueryAccessToken: fake.token,
    });
    let run: Run;
    try {
      run = await insertMix(h);
      const refused = refusedBy(run, 'bigquery');
      await waitSettled(h, run, refused, recorder.events);
      await assertRefused(
        h,
        refused,
        /^BigQuery cannot hold this row: event_ts .* is outside BigQuery TIMESTAMP's range/,
      );
      await assertOtherSinks(h, run, recorder.events);
      const rows = fake.table('acme-edges', 'edges', 'events_enriched')!.rows as {
        event_id: string;
        event_ts: string;
      }[];
      const want = expectedIn(run, 'bigquery');
      assert.deepEqual(
        rows.map((r) => r.event_id).sort(),
        want.sort(),
        'BigQuery: one row per representable event',
      );
      for (const r of rows)
        assert.equal(
          r.event_ts,
          microsToIso(run.micros.get(r.event_id)!),
          `BigQuery event ${r.event_id}: exact`,
        );
    } finally {
      await runtime.stop();
    }
  });
});
