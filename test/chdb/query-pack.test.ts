import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { silentLogger } from '../../src/logger.js';
import { ClickHouseSink, parseClickHouseUrl } from '../../src/sinks/analytics/clickhouse-sink.js';
import { DuckDbSink } from '../../src/sinks/analytics/duckdb-sink.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';
import { duckdbQuery } from '../helpers/duckdb.js';

/**
 * The query pack (queries/{duckdb,clickhouse}/*.sql, read from disk as users run them) on known
 * rows written through the sinks, checked against answers computed here from the seeds. The
 * ClickHouse copy is written with overlapping replays, so the queries must read through FINAL.
 */

const root = path.resolve(import.meta.dirname, '../..');
const CONTENT = [
  'aaaaaaaa-0000-4000-8000-000000000001',
  'bbbbbbbb-0000-4000-8000-000000000002',
  'cccccccc-0000-4000-8000-000000000003',
];
const TYPES = ['play', 'pause', 'finish', 'click'];
const DEVICES = ['ios', 'android', 'web', null];

/** 90 events over two UTC days and three hours each; deterministic. */
function seeds(): EnrichedEvent[] {
  const events: EnrichedEvent[] = [];
  for (let id = 1; id <= 90; id++) {
    const day = id <= 50 ? '2026-11-01' : '2026-11-02';
    const hour = String(10 + (id % 3)).padStart(2, '0');
    const ts = `${day}T${hour}:${String(id % 60).padStart(2, '0')}:00.000123Z`;
    const content = id % 10 === 0 ? null : CONTENT[(id * id) % 3];
    const length = content === null ? null : [300, 1200, 60][CONTENT.indexOf(content)];
    const durationMs = id % 9 === 0 ? null : id * 1000 + 250;
    const seconds = durationMs === null ? null : durationMs / 1000;
    const pct = seconds === null || length === null ? null : Math.round((seconds / length) * 100) / 100;
    events.push({
      event_id: id,
      content_id: content,
      user_id: null,
      event_type: TYPES[id % 4],
      event_ts: ts,
      duration_ms: durationMs,
      device: DEVICES[id % 4 === 3 ? 3 : id % 3],
      raw_payload: null,
      content_type: content === null ? null : ['video', 'podcast', 'newsletter'][CONTENT.indexOf(content)],
      length_seconds: length,
      engagement_seconds: seconds,
      engagement_pct: pct,
      committed_at: ts,
      processed_at: ts,
    });
  }
  return events;
}

function batchOf(events: EnrichedEvent[], seq: number): Batch {
  return { seq, stream: 'qp', events, positions: events.map((e) => String(e.event_id)), ackLsn: null };
}

type Row = Record<string, string | number | null>;
const round = (v: number, d: number) => Math.round(v * 10 ** d) / 10 ** d;

function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const item of items) m.set(key(item), [...(m.get(key(item)) ?? []), item]);
  return m;
}

const sum = (xs: (number | null)[]) =>
  round(
    xs.reduce<number>((s, x) => s + (x ?? 0), 0),
    3,
  );

/** The answers, computed from the seeds in plain TypeScript. */
function expected(events: EnrichedEvent[]): Record<string, Row[]> {
  const withContent = events.filter((e) => e.content_id !== null);
  const avg = [...groupBy(withContent, (e) => e.content_id!)].map(([id, es]) => {
    const pcts = es.map((e) => e.engagement_pct).filter((p): p is number => p !== null);
    return {
      content_id: id,
      content_type: es[0].content_type,
      events: es.length,
      events_with_pct: pcts.length,
      avg_engagement_pct: round(pcts.reduce((s, p) => s + p, 0) / pcts.length, 4),
    };
  });
  avg.sort((a, b) => b.avg_engagement_pct - a.avg_engagement_pct || a.content_id.localeCompare(b.content_id));

  const hourly = [
    ...groupBy(events, (e) => `${e.event_ts.slice(0, 10)} ${e.event_ts.slice(11, 13)}:00:00|${e.event_type}`),
  ]
    .map(([k, es]) => ({
      hour_utc: k.split('|')[0],
      event_type: k.split('|')[1],
      events: es.length,
      engagement_seconds: sum(es.map((e) => e.engagement_seconds)),
    }))
    .sort((a, b) => a.hour_utc.localeCompare(b.hour_utc) || a.event_type.localeCompare(b.event_type));

  const top: Row[] = [];
  for (const [day, es] of groupBy(withContent, (e) => e.event_ts.slice(0, 10))) {
    const ranked = [...groupBy(es, (e) => e.content_id!)]
      .map(([id, ce]) => ({ id, ce }))
      .sort((a, b) => b.ce.length - a.ce.length || a.id.localeCompare(b.id))
      .slice(0, 10);
    ranked.forEach(({ id, ce }, i) =>
      top.push({
        day_utc: day,
        rank: i + 1,
        content_id: id,
        content_type: ce[0].content_type,
        events: ce.length,
        engagement_seconds: sum(ce.map((e) => e.engagement_seconds)),
      }),
    );
  }
  top.sort((a, b) => String(a.day_utc).localeCompare(String(b.day_utc)) || Number(a.rank) - Number(b.rank));

  const devices = [...groupBy(events, (e) => e.device ?? 'unknown')]
    .map(([device, es]) => {
      const secs = es.map((e) => e.engagement_seconds).filter((s): s is number => s !== null);
      return {
        device,
        events: es.length,
        share: round(es.length / events.length, 4),
        avg_engagement_seconds: round(secs.reduce((s, x) => s + x, 0) / secs.length, 3),
      };
    })
    .sort((a, b) => b.events - a.events || a.device.localeCompare(b.device));

  return {
    avg_engagement_per_content: avg,
    engagement_by_type_per_hour: hourly,
    top_content_per_day: top,
    device_split: devices,
  };
}

/** Numbers as numbers whatever the engine's JSON gives (DECIMAL/BIGINT arrive as strings). */
function normalize(rows: Record<string, unknown>[], like: Row[]): Row[] {
  return rows.map((r, i) =>
    Object.fromEntries(
      Object.entries(r).map(([k, v]) => [
        k,
        typeof like[i]?.[k] === 'number' && v !== null ? Number(v) : (v as string | null),
      ]),
    ),
  );
}

const queryNames = (engine: string) =>
  readdirSync(path.join(root, 'queries', engine))
    .filter((f) => f.endsWith('.sql'))
    .map((f) => f.replace(/\.sql$/, ''))
    .sort();

const readQuery = (engine: string, name: string) =>
  readFileSync(path.join(root, 'queries', engine, `${name}.sql`), 'utf8')
    .trim()
    .replace(/;$/, '');

describe('query pack', () => {
  const events = seeds();
  const answers = expected(events);
  let duckFile: string;
  let front: ChdbHttp;

  before(async () => {
    duckFile = path.join(mkdtempSync(path.join(tmpdir(), 'query-pack-')), 'pack.duckdb');
    const duck = new DuckDbSink({ path: duckFile, logger: silentLogger() });
    await duck.start();
    await duck.write(batchOf(events, 1));
    await duck.stop();

    front = await startChdbHttp();
    const ch = new ClickHouseSink({
      target: parseClickHouseUrl(`clickhouse://default@127.0.0.1:${front.port}/engagement`),
      logger: silentLogger(),
    });
    await ch.start();
    const signal = new AbortController().signal;
    await ch.write(batchOf(events.slice(0, 60), 1), signal);
    await ch.write(batchOf(events.slice(40), 2), signal); // overlaps 41..60: FINAL must hide the copies
    await ch.stop();
  });
  after(async () => front?.close());

  it('ships the same four analyses for DuckDB, ClickHouse and BigQuery', () => {
    const names = Object.keys(answers).sort();
    for (const engine of ['duckdb', 'clickhouse', 'bigquery'])
      assert.deepEqual(queryNames(engine), names, engine);
  });

  for (const name of [
    'avg_engagement_per_content',
    'engagement_by_type_per_hour',
    'top_content_per_day',
    'device_split',
  ]) {
    it(`${name}: DuckDB gives the expected answer`, async () => {
      const rows = await duckdbQuery(duckFile, readQuery('duckdb', name));
      assert.deepEqual(normalize(rows, answers[name]), answers[name]);
    });
    it(`${name}: ClickHouse gives the expected answer (through FINAL)`, async () => {
      const rows = await front.rows(readQuery('clickhouse', name));
      assert.deepEqual(normalize(rows, answers[name]), answers[name]);
    });
  }

  it('the ClickHouse copy was written with overlapping replays (copies are merged away in the background)', async () => {
    const [row] = await front.rows<{ n: string; d: string }>(
      'SELECT count() AS n, uniqExact(event_id) AS d FROM engagement.events_enriched',
    );
    assert.equal(Number(row.d), events.length);
    assert.ok(Number(row.n) >= events.length, `physical rows ${row.n}`);
  });
});
