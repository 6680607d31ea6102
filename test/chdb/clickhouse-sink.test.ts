import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { PipelineError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { ClickHouseSink, parseClickHouseUrl } from '../../src/sinks/analytics/clickhouse-sink.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';

/**
 * The ClickHouse sink against the real ClickHouse engine (chdb 26.x behind a test HTTP front):
 * the exact DDL, exact values, crash-and-replay dedup, and server errors with their code.
 */

const signal = () => new AbortController().signal;

function event(id: number, processedAt: string): EnrichedEvent {
  // Spread over two months so replays cross partitions.
  const ts = new Date(Date.UTC(2026, 9, 31, 23, 0, 0) + id * 1000).toISOString().replace('Z', '456Z');
  return {
    event_id: id,
    content_id: `00000000-0000-4000-8000-${String(id % 7).padStart(12, '0')}`,
    user_id: id % 5 === 0 ? null : '11111111-1111-4111-8111-111111111111',
    event_type: ['play', 'pause', 'finish', 'click'][id % 4],
    event_ts: ts,
    duration_ms: id % 11 === 0 ? null : id * 7,
    device: id % 3 === 0 ? null : 'ios',
    raw_payload: { id, note: 'ünïcode "q" \\ \n' },
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: id % 11 === 0 ? null : (id * 7) / 1000,
    engagement_pct: id % 11 === 0 ? null : Math.round((id * 7) / 3000) / 100,
    committed_at: ts,
    processed_at: processedAt,
  };
}

let seq = 0;
function batch(from: number, to: number, processedAt = '2026-11-01T00:00:00.000000Z'): Batch {
  const events: EnrichedEvent[] = [];
  for (let id = from; id < to; id++) events.push(event(id, processedAt));
  return {
    seq: ++seq,
    stream: 'test',
    events,
    positions: events.map((e) => String(e.event_id)),
    ackLsn: null,
  };
}

describe('ClickHouse sink on the real engine', () => {
  let front: ChdbHttp;
  let url: string;
  const sinks: ClickHouseSink[] = [];
  const newSink = async () => {
    const sink = new ClickHouseSink({ target: parseClickHouseUrl(url), logger: silentLogger() });
    await sink.start();
    sinks.push(sink);
    return sink;
  };
  const count = async (sql: string) => Number((await front.rows<{ n: string }>(sql))[0].n);

  before(async () => {
    front = await startChdbHttp({ user: 'writer', password: 'secret' });
    url = `clickhouse://writer:secret@127.0.0.1:${front.port}/analytics_db`;
  });
  after(async () => {
    for (const s of sinks) await s.stop().catch(() => undefined);
    await front.close();
  });

  it('creates the table with precise types, ReplacingMergeTree on event_id, monthly partitions', async () => {
    await newSink();
    const columns = await front.rows<{ name: string; type: string }>(
      "SELECT name, type FROM system.columns WHERE database = 'analytics_db' AND table = 'events_enriched' ORDER BY position",
    );
    assert.deepEqual(Object.fromEntries(columns.map((c) => [c.name, c.type])), {
      event_id: 'UInt64',
      content_id: 'Nullable(UUID)',
      user_id: 'Nullable(UUID)',
      event_type: 'LowCardinality(Nullable(String))',
      event_ts: "DateTime64(6, 'UTC')",
      duration_ms: 'Nullable(Int32)',
      device: 'LowCardinality(Nullable(String))',
      raw_payload: 'Nullable(String)',
      content_type: 'LowCardinality(Nullable(String))',
      length_seconds: 'Nullable(Int32)',
      engagement_seconds: 'Nullable(Decimal(12, 3))',
      engagement_pct: 'Nullable(Decimal(12, 2))',
      committed_at: "DateTime64(6, 'UTC')",
      processed_at: "DateTime64(6, 'UTC')",
    });
    const [table] = await front.rows<{ engine: string; partition_key: string; sorting_key: string }>(
      "SELECT engine, partition_key, sorting_key FROM system.tables WHERE database = 'analytics_db' AND name = 'events_enriched'",
    );
    assert.deepEqual(table, {
      engine: 'ReplacingMergeTree',
      partition_key: 'toYYYYMM(event_ts)',
      sorting_key: 'toDate(event_ts), event_id',
    });
    // A second start (another worker, a restart) is a no-op.
    await newSink();
  });

  it('stores exact values: decimals, microseconds, NULLs, JSON text', async () => {
    const sink = await newSink();
    await sink.write(batch(1, 34), signal());
    const rows = await front.rows<Record<string, unknown>>(
      `SELECT event_id, toString(event_ts) AS ts, toString(engagement_seconds) AS secs, toString(engagement_pct) AS pct,
              device, raw_payload, toString(content_id) AS cid
         FROM analytics_db.events_enriched FINAL WHERE event_id IN (22, 23) ORDER BY event_id`,
    );
    const e23 = event(23, '');
    assert.equal(rows[0].secs, null, 'NULL duration stays NULL');
    assert.equal(rows[1].ts, e23.event_ts.replace('T', ' ').replace('Z', ''), 'microseconds kept');
    assert.equal(rows[1].secs, '0.161');
    assert.equal(rows[1].pct, String(e23.engagement_pct));
    assert.equal(rows[1].device, 'ios');
    assert.deepEqual(JSON.parse(String(rows[1].raw_payload)), e23.raw_payload);
    assert.equal(rows[1].cid, e23.content_id);
  });

  it('after a crash and replay, FINAL has one row per event_id (dedup evidence)', async () => {
    await front.rows('TRUNCATE TABLE analytics_db.events_enriched');
    const total = 6000;
    let sink = await newSink();
    for (let from = 1; from <= total; from += 500) await sink.write(batch(from, from + 500), signal());
    const afterFirstPass = await count('SELECT count() AS n FROM analytics_db.events_enriched');

    // "Crash": a new sink (new connections), the stream replays the last 4000 events re-enriched
    // (processed_at differs) in the same batches, then again cut at other boundaries.
    sink = await newSink();
    const replayedAt = '2026-11-02T00:00:00.000000Z';
    for (let from = 2001; from <= total; from += 500)
      await sink.write(batch(from, from + 500, replayedAt), signal());
    const afterIdenticalReplay = await count('SELECT count() AS n FROM analytics_db.events_enriched');
    for (let from = 2251; from <= total; from += 700) {
      await sink.write(batch(from, Math.min(from + 700, total + 1), replayedAt), signal());
    }
    const physical = await count('SELECT count() AS n FROM analytics_db.events_enriched');
    const final = await count('SELECT count() AS n FROM analytics_db.events_enriched FINAL');
    await front.rows('OPTIMIZE TABLE analytics_db.events_enriched FINAL');
    const afterMerge = await count('SELECT count() AS n FROM analytics_db.events_enriched');
    const evidence = { inserted: total, afterFirstPass, afterIdenticalReplay, physical, final, afterMerge };
    console.log(`clickhouse dedup evidence: ${JSON.stringify(evidence)}`);

    assert.equal(afterFirstPass, total);
    assert.equal(
      afterIdenticalReplay,
      total,
      'identical replayed batches dropped at insert (deduplication token)',
    );
    assert.ok(physical > total, 'batches cut at other boundaries were stored as extra physical rows');
    assert.equal(final, total, 'FINAL: one row per event_id');
    assert.equal(afterMerge, total, 'merges collapse the copies');
    assert.equal(await count('SELECT uniqExact(event_id) AS n FROM analytics_db.events_enriched'), total);
  });

  it('surfaces server errors with their ClickHouse code, in one line', async () => {
    const sink = await newSink();
    await front.rows('DROP TABLE analytics_db.events_enriched');
    await assert.rejects(sink.write(batch(1, 3), signal()), (err: unknown) => {
      assert.ok(err instanceof PipelineError);
      assert.match(
        err.oneLine(),
        /^EP_ERR_SINK_WRITE: ClickHouse insert of 2 rows .* ClickHouse error 60 \(UNKNOWN_TABLE\): /,
      );
      assert.ok(!err.oneLine().includes('\n'));
      return true;
    });
    await newSink(); // recreates the table
  });

  it('a wrong password stops start-up with a config error and no secret in the message', async () => {
    const bad = new ClickHouseSink({
      target: parseClickHouseUrl(`clickhouse://writer:WRONG@127.0.0.1:${front.port}/analytics_db`),
      logger: silentLogger(),
    });
    await assert.rejects(bad.start(), (err: unknown) => {
      assert.ok(err instanceof PipelineError);
      assert.equal(err.kind, 'config');
      assert.match(
        err.oneLine(),
        /EP_ERR_ANALYTICS_UNAVAILABLE: .*ClickHouse error 516 \(AUTHENTICATION_FAILED\)/,
      );
      assert.ok(!err.oneLine().includes('WRONG'));
      return true;
    });
  });

  it('an unreachable server rejects the write (the pipeline retries)', async () => {
    const sink = await newSink();
    const port = front.port;
    await front.close();
    // A pooled keep-alive socket sees the close as a reset; a new connection is refused.
    await assert.rejects(sink.write(batch(1, 3), signal()), /EP_ERR_SINK_WRITE|ECONNREFUSED|ECONNRESET/);
    front = await startChdbHttp({ user: 'writer', password: 'secret', port });
  });
});
