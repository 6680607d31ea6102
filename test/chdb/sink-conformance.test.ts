import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { createPool } from '../../src/db/postgres.js';
import { STATE_SCHEMA_SQL } from '../../src/db/schema.js';
import { eventPosition } from '../../src/domain/position.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { silentLogger } from '../../src/logger.js';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { BigQuerySink, parseBigQueryUrl } from '../../src/sinks/analytics/bigquery-sink.js';
import { ClickHouseSink, parseClickHouseUrl } from '../../src/sinks/analytics/clickhouse-sink.js';
import { DuckDbSink } from '../../src/sinks/analytics/duckdb-sink.js';
import { DeadLetterStore } from '../../src/state/dead-letter.js';
import { ExternalSink } from '../../src/sinks/external/external-sink.js';
import { RedisSink } from '../../src/sinks/redis/redis-sink.js';
import type { Sink } from '../../src/sinks/sink.js';
import { startBigQueryFake } from '../helpers/bigquery-fake.js';
import { startChdbHttp } from '../helpers/chdb-http.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { freshDatabase } from '../helpers/postgres.js';
import { startRedisServer } from '../helpers/redis-server.js';

/**
 * The one suite every sink passes, a new one included: idempotent re-writes, replays split at other
 * boundaries, a clean stop, and a destination that restarts under it.
 */
interface SinkUnderTest {
  create(): Promise<Sink>;
  /** Distinct events durably in the destination (may stop/reopen what it needs). */
  delivered(sink: Sink): Promise<number>;
  /** Restart the destination's server; returns once it is back. */
  restart(sink: Sink): Promise<Sink>;
  cleanup(): Promise<void>;
}

const CONTENT = ['00000000-0000-4000-8000-00000000000a', '00000000-0000-4000-8000-00000000000b'];

function makeEvents(from: number, to: number): { events: EnrichedEvent[]; positions: string[] } {
  const events: EnrichedEvent[] = [];
  const positions: string[] = [];
  const now = new Date().toISOString().replace('Z', '000Z');
  for (let id = from; id < to; id++) {
    events.push({
      event_id: id,
      content_id: CONTENT[id % 2],
      user_id: null,
      event_type: 'play',
      event_ts: now,
      duration_ms: id * 10,
      device: id % 3 === 0 ? null : 'ios',
      raw_payload: { id, text: 'ünïcode \u0001 "quoted"' },
      content_type: 'video',
      length_seconds: 300,
      engagement_seconds: (id * 10) / 1000,
      engagement_pct: null,
      committed_at: now,
      processed_at: now,
    });
    // One transaction per 10 events, so positions look like the real stream's.
    positions.push(eventPosition(`0/${(1000 + Math.floor(id / 10)).toString(16)}`, id % 10));
  }
  return { events, positions };
}

let seq = 0;
function batch(from: number, to: number): Batch {
  return { seq: ++seq, stream: 'conformance', ackLsn: null, ...makeEvents(from, to) };
}

async function writeUntilAccepted(sink: Sink, b: Batch): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await sink.write(b, new AbortController().signal);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error('sink never accepted the batch');
}

function conformance(name: string, setup: () => Promise<SinkUnderTest>): void {
  describe(`sink conformance: ${name}`, () => {
    let t: SinkUnderTest;
    let sink: Sink;
    before(async () => {
      t = await setup();
      sink = await t.create();
      await sink.start();
    });
    after(async () => {
      await sink.stop().catch(() => undefined);
      await t.cleanup();
    });

    it('accepts a batch durably', async () => {
      await sink.write(batch(1, 101), new AbortController().signal);
      assert.equal(await t.delivered(sink), 100);
    });
    it('re-writing the same batch changes nothing', async () => {
      await sink.write(batch(1, 101), new AbortController().signal);
      assert.equal(await t.delivered(sink), 100);
    });
    it('a replay split at other boundaries adds only the new events', async () => {
      await sink.write(batch(51, 151), new AbortController().signal);
      await sink.write(batch(140, 160), new AbortController().signal);
      assert.equal(await t.delivered(sink), 159);
    });
    it('survives its destination restarting', async () => {
      sink = await t.restart(sink);
      await writeUntilAccepted(sink, batch(160, 200));
      assert.equal(await t.delivered(sink), 199);
    });
  });
}

function duckdbUnderTest(positioned: boolean): () => Promise<SinkUnderTest> {
  return async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'conformance-duck-'));
    const file = path.join(dir, 'a.duckdb');
    const make = () =>
      new DuckDbSink({
        path: file,
        logger: silentLogger(),
        positionedStream: positioned
          ? { stream: 'conformance', sourceId: async () => 'conformance-cluster' }
          : undefined,
      });
    // DuckDB admits one process-wide writer: count through a stop + read-only open + start.
    return {
      create: async () => make(),
      delivered: async (sink) => {
        await sink.stop();
        const rows = await duckdbQuery(
          file,
          'SELECT count(DISTINCT event_id) AS d, count(*) AS n FROM engagement.events_enriched',
        );
        await sink.start();
        assert.equal(rows[0].d, rows[0].n, 'one row per event_id');
        return Number(rows[0].n);
      },
      restart: async (sink) => {
        await sink.stop();
        const next = make();
        await next.start();
        return next;
      },
      cleanup: async () => undefined,
    };
  };
}

// Replays recognised by event_id (backfill, Kafka) and by the stream's stored position (direct mode).
conformance('duckdb', duckdbUnderTest(false));
conformance('duckdb (positions)', duckdbUnderTest(true));

conformance('redis', async () => {
  const server = await startRedisServer();
  let current = server;
  const prefix = 'conf:';
  const client = () => new Redis(current.url, { maxRetriesPerRequest: 1 });
  return {
    create: async () => new RedisSink({ url: server.url, prefix, logger: silentLogger() }),
    delivered: async () => {
      const c = client();
      try {
        const counts = await Promise.all(CONTENT.map((id) => c.get(`${prefix}content:count:${id}`)));
        const buckets = await c.keys(`${prefix}top:content:bucket:*`);
        let bucketSum = 0;
        for (const key of buckets) {
          const flat = await c.zrange(key, '0', '-1', 'WITHSCORES');
          for (let i = 1; i < flat.length; i += 2) bucketSum += Number(flat[i]);
        }
        const total = counts.reduce((s, v) => s + Number(v ?? 0), 0);
        assert.equal(bucketSum, total, 'minute buckets agree with counts');
        return total;
      } finally {
        c.disconnect();
      }
    },
    restart: async (sink) => {
      // A restart that keeps data (the watermark survives): stop the process, start it again on the same port.
      const c = client();
      const dumps: [string, Buffer][] = [];
      for (const key of await c.keys('*')) dumps.push([key, (await c.dumpBuffer(key))!]);
      c.disconnect();
      await current.stop();
      current = await startRedisServer(server.port);
      const r = client();
      for (const [key, value] of dumps) await r.restore(key, 0, value, 'REPLACE');
      r.disconnect();
      return sink;
    },
    cleanup: async () => current.stop(),
  };
});

conformance('external', async () => {
  let mock: RunningMockExternal = await startMockExternal({ port: 0 });
  const db = await freshDatabase('conf');
  const pool = createPool(db.url, 2);
  await pool.query(STATE_SCHEMA_SQL);
  const stats = async () => (await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number };
  const port = mock.port;
  return {
    create: async () =>
      new ExternalSink({
        url: mock.url,
        policy: 'block',
        batchSize: 10,
        concurrency: 4,
        maxAttempts: 3,
        timeoutMs: 2000,
        deadLetters: new DeadLetterStore(pool),
        metrics: createMetrics(),
        logger: silentLogger(),
        backoffBaseMs: 10,
        backoffMaxMs: 100,
      }),
    // The receiver dedupes array elements by event_id (the documented contract for arrays).
    delivered: async () => (await stats()).uniqueEventIds,
    restart: async (sink) => {
      // The mock keeps what it received in memory, so a restart forgets it. Restart it, then
      // replay everything sent so far through the same sink (its pooled connections are now
      // dead): the restarted receiver ends with the same distinct events as before.
      const before = await stats();
      await mock.close();
      mock = await startMockExternal({ port });
      await sink.write(batch(1, 160), new AbortController().signal);
      assert.equal((await stats()).uniqueEventIds, before.uniqueEventIds);
      return sink;
    },
    cleanup: async () => {
      await mock.close();
      await pool.end();
      await db.drop();
    },
  };
});

conformance('clickhouse (chdb behind a ClickHouse HTTP front)', async () => {
  const front = await startChdbHttp({ user: 'pipeline', password: 'p@ss:w/rd' });
  const url = `clickhouse://pipeline:${encodeURIComponent(front.password)}@127.0.0.1:${front.port}/engagement`;
  return {
    create: async () => new ClickHouseSink({ target: parseClickHouseUrl(url), logger: silentLogger() }),
    delivered: async () => {
      // FINAL reads one row per sorting key (i.e. per event_id), whatever merges have run.
      const [row] = await front.rows<{ n: string; d: string }>(
        'SELECT count() AS n, uniqExact(event_id) AS d FROM engagement.events_enriched FINAL',
      );
      assert.equal(Number(row.n), Number(row.d), 'one row per event_id after FINAL');
      return Number(row.n);
    },
    // The same data directory reopened on the same port; the sink's pooled sockets die with it.
    restart: async (sink) => {
      await front.restart();
      return sink;
    },
    cleanup: async () => front.close(),
  };
});

conformance('bigquery (a local server checking the REST API shapes)', async () => {
  const fake = await startBigQueryFake();
  const db = await freshDatabase('confbq');
  const pool = createPool(db.url, 2);
  await pool.query(STATE_SCHEMA_SQL);
  const table = () => fake.table('conformance-project', 'engagement', 'events_enriched')!;
  return {
    create: async () =>
      new BigQuerySink({
        target: parseBigQueryUrl('bigquery://conformance-project/engagement'),
        deadLetters: new DeadLetterStore(pool),
        logger: silentLogger(),
        apiEndpoint: fake.url,
        accessToken: fake.token,
      }),
    delivered: async () => {
      const ids = table().rows.map((r) => String(r.event_id));
      // insertId dedup is best-effort in BigQuery (about a minute); the fake keeps that window.
      assert.equal(new Set(ids).size, ids.length, 'one row per event_id');
      return ids.length;
    },
    restart: async (sink) => {
      // A managed service "restarting" from the client's view: connections drop and it answers 503 for a while.
      await fake.restart();
      fake.failNext(3);
      return sink;
    },
    cleanup: async () => {
      await fake.close();
      await pool.end();
      await db.drop();
    },
  };
});
