import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { silentLogger } from '../../src/logger.js';
import { readRecent, readRowCount, readTimeline } from '../../src/server/analytics-queries.js';
import { ClickHouseSink, parseClickHouseUrl } from '../../src/sinks/analytics/clickhouse-sink.js';
import { DuckDbSink } from '../../src/sinks/analytics/duckdb-sink.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';

/** The dashboard's reads give the same answers on DuckDB and on ClickHouse (real engine, via chdb). */

const NOW = Date.UTC(2026, 11, 1, 12, 30, 20);
const TYPES = ['video', 'podcast', null] as const;

function events(): EnrichedEvent[] {
  return Array.from({ length: 90 }, (_, i) => {
    const id = i + 1;
    // One event every 40 s over the last hour; the first few fall before the 60-minute window.
    const ts = new Date(NOW - (90 - i) * 40_000).toISOString();
    const seconds = id % 5 === 0 ? null : id * 1.5;
    return {
      event_id: id,
      content_id: `00000000-0000-4000-8000-${String(id % 3).padStart(12, '0')}`,
      user_id: id % 2 === 0 ? '00000000-0000-4000-8000-0000000000aa' : null,
      event_type: 'play',
      event_ts: ts,
      duration_ms: seconds === null ? null : seconds * 1000,
      device: 'ios',
      raw_payload: id % 4 === 0 ? null : { n: id, nested: { ok: true, text: 'é"\\' } },
      content_type: TYPES[id % 3] ?? null,
      length_seconds: 300,
      engagement_seconds: seconds,
      engagement_pct: seconds === null ? null : Math.round((seconds / 300) * 100) / 100,
      committed_at: ts,
      processed_at: ts,
    } as EnrichedEvent;
  });
}

const batch = (): Batch => {
  const list = events();
  return { seq: 1, stream: 't', events: list, positions: list.map((e) => String(e.event_id)), ackLsn: null };
};

describe('dashboard reads on DuckDB and ClickHouse', () => {
  let front: ChdbHttp;
  let dir: string;
  let duck: DuckDbSink;
  let click: ClickHouseSink;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'engagement-aq-'));
    duck = new DuckDbSink({ path: path.join(dir, 'a.duckdb'), logger: silentLogger() });
    await duck.start();
    front = await startChdbHttp({ user: 'u', password: 'p' });
    click = new ClickHouseSink({
      target: parseClickHouseUrl(`clickhouse://u:p@127.0.0.1:${front.port}/aq`),
      logger: silentLogger(),
    });
    await click.start();
    const signal = new AbortController().signal;
    await duck.write(batch());
    await click.write(batch(), signal);
  });

  after(async () => {
    await duck?.stop();
    await click?.stop();
    await front?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('timeline: per UTC minute and content type, only the last N minutes', async () => {
    const expected = events().filter(
      (e) => Date.parse(e.event_ts) >= Math.floor(NOW / 60_000) * 60_000 - 59 * 60_000,
    );
    for (const store of [duck, click]) {
      const t = await readTimeline(store, 60, NOW);
      assert.equal(t.from, '2026-12-01T11:31:00.000Z', store.dialect);
      assert.equal(
        t.points.reduce((s, p) => s + p.events, 0),
        expected.length,
        store.dialect,
      );
      const seconds = expected.reduce((s, e) => s + (e.engagement_seconds ?? 0), 0);
      assert.ok(
        Math.abs(t.points.reduce((s, p) => s + p.engagement_seconds, 0) - seconds) < 0.001,
        store.dialect,
      );
      assert.deepEqual(
        new Set(t.points.map((p) => p.content_type)),
        new Set(['video', 'podcast', 'unknown']),
      );
    }
    assert.deepEqual(await readTimeline(click, 60, NOW), await readTimeline(duck, 60, NOW));
  });

  it('recent: newest event_id first (numeric order), same rows on both', async () => {
    const [d, c] = [await readRecent(duck, 12), await readRecent(click, 12)];
    assert.deepEqual(
      d.map((r) => r.event_id),
      Array.from({ length: 12 }, (_, i) => String(90 - i)),
    );
    assert.deepEqual(c, d);
    assert.equal(await readRowCount(duck), 90);
    assert.equal(await readRowCount(click), 90);
    assert.equal(d[0].event_ts, '2026-12-01T12:29:40.000000Z', "the pipeline's exact ISO form");
    // The whole enriched row, as written.
    const { title: _title, ...row } = d[0];
    assert.deepEqual(row, {
      event_id: '90',
      content_id: '00000000-0000-4000-8000-000000000000',
      user_id: '00000000-0000-4000-8000-0000000000aa',
      event_type: 'play',
      event_ts: '2026-12-01T12:29:40.000000Z',
      duration_ms: null,
      device: 'ios',
      raw_payload: { n: 90, nested: { ok: true, text: 'é"\\' } },
      content_type: 'video',
      length_seconds: 300,
      engagement_seconds: null,
      engagement_pct: null,
      committed_at: '2026-12-01T12:29:40.000000Z',
      processed_at: '2026-12-01T12:29:40.000000Z',
    });
    assert.equal(d[1].duration_ms, 133_500);
  });

  it('recent: a timestamp past a JavaScript Date (year 280000, DuckDB holds it) is shown exactly', async () => {
    const far = { ...events()[0], event_id: 1000, event_ts: '+280000-01-01T00:00:00.123456Z' };
    await duck.write({ seq: 2, stream: 't', events: [far], positions: ['1000'], ackLsn: null });
    const [top] = await readRecent(duck, 1);
    assert.deepEqual([top.event_id, top.event_ts], ['1000', '+280000-01-01T00:00:00.123456Z']);
  });
});
