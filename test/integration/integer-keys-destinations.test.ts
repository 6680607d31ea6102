import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventPosition } from '../../src/domain/position.js';
import type { KeyTypes } from '../../src/domain/source-shape.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { ErrorCodes, PipelineError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { BigQuerySink, parseBigQueryUrl } from '../../src/sinks/analytics/bigquery-sink.js';
import { ClickHouseSink, parseClickHouseUrl } from '../../src/sinks/analytics/clickhouse-sink.js';
import { createAnalyticsSink } from '../../src/sinks/analytics/create-analytics-sink.js';
import { DuckDbSink } from '../../src/sinks/analytics/duckdb-sink.js';
import { ExternalSink } from '../../src/sinks/external/external-sink.js';
import { RedisSink } from '../../src/sinks/redis/redis-sink.js';
import type { Sink } from '../../src/sinks/sink.js';
import { startBigQueryFake, type BigQueryFake } from '../helpers/bigquery-fake.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { runCli } from '../helpers/cli.js';
import { closeServer, listen, readBody } from '../helpers/http-server.js';
import { cliEnv, createHarness } from '../helpers/pipeline.js';
import { testRedis } from '../helpers/redis.js';

/**
 * Integer keys (seed 003's shape: content.content_id BIGINT, user_id BIGINT) reach every
 * destination with their own types: the seed's example event (content 1 of 350 s, user 777,
 * 7,000 ms -> 7.0 s, 0.02) is stored in DuckDB, ClickHouse (chdb) and BigQuery (the fake) with
 * integer key columns and read back exactly; Redis and the external payload carry it too. A
 * table created earlier for UUID keys is refused at start with one line, and nothing is written.
 */

const BIGINTS: KeyTypes = { content_id: 'bigint', user_id: 'bigint' };
const INTEGERS: KeyTypes = { content_id: 'integer', user_id: 'integer' };
const signal = () => new AbortController().signal;
const NOW = new Date().toISOString().replace('Z', '000Z');

function seedEvent(id: number, overrides: Partial<EnrichedEvent> = {}): EnrichedEvent {
  return {
    event_id: id,
    content_id: '1',
    user_id: '777',
    event_type: 'play',
    event_ts: NOW,
    duration_ms: 7000,
    device: 'web',
    raw_payload: null,
    content_type: 'article',
    length_seconds: 350,
    engagement_seconds: 7,
    engagement_pct: 0.02,
    committed_at: NOW,
    processed_at: NOW,
    ...overrides,
  };
}

let seq = 0;
function batch(events: EnrichedEvent[]): Batch {
  return {
    seq: ++seq,
    stream: 'integer-keys',
    events,
    positions: events.map((e) => eventPosition('0/1000', e.event_id)),
    ackLsn: null,
  };
}

/** Event 1 is the seed's example; event 2 has no user and a key past 2^53. */
const EVENTS = () => [seedEvent(1), seedEvent(2, { content_id: '9007199254740993', user_id: null })];

async function rejectsWithShapeLine(start: Promise<void>, pattern: RegExp): Promise<void> {
  await assert.rejects(start, (err: unknown) => {
    assert.ok(err instanceof PipelineError, String(err));
    assert.equal(err.code, ErrorCodes.DESTINATION_SHAPE);
    assert.equal(err.kind, 'config');
    assert.ok(!err.oneLine().includes('\n'), 'one line');
    assert.match(err.oneLine(), pattern);
    return true;
  });
}

describe('integer keys in DuckDB', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ep-int-keys-'));

  for (const [keyTypes, column] of [
    [BIGINTS, 'BIGINT'],
    [INTEGERS, 'INTEGER'],
  ] as const) {
    it(`stores ${keyTypes.content_id} keys in ${column} columns, with the seed's values`, async () => {
      const file = path.join(dir, `${keyTypes.content_id}.duckdb`);
      // Built as `engagement run` builds it, with the shape's key types.
      const sink = createAnalyticsSink(`duckdb:${file}`, silentLogger(), { keyTypes });
      await sink.start();
      const events = keyTypes === INTEGERS ? [seedEvent(1), seedEvent(2, { user_id: null })] : EVENTS();
      await sink.write(batch(events), signal());
      await sink.write(batch(events), signal()); // a replay changes nothing
      await sink.stop();
      const types = await duckdbQuery(
        file,
        `SELECT column_name AS c, data_type AS t FROM information_schema.columns
          WHERE table_name = 'events_enriched' AND column_name IN ('content_id', 'user_id') ORDER BY c`,
      );
      assert.deepEqual(types, [
        { c: 'content_id', t: column },
        { c: 'user_id', t: column },
      ]);
      const rows = await duckdbQuery(
        file,
        `SELECT event_id, content_id, user_id, typeof(content_id) AS ct, content_id + 1 AS next_id,
                engagement_seconds::VARCHAR AS secs, engagement_pct::VARCHAR AS pct, length_seconds
           FROM engagement.events_enriched ORDER BY event_id`,
      );
      assert.equal(rows.length, 2);
      assert.deepEqual(
        { ...rows[0], content_id: String(rows[0].content_id), user_id: String(rows[0].user_id) },
        {
          event_id: '1',
          content_id: '1',
          user_id: '777',
          ct: column,
          next_id: rows[0].next_id, // checked below: arithmetic works on the key (it is a number)
          secs: '7.000',
          pct: '0.02',
          length_seconds: 350,
        },
      );
      assert.equal(String(rows[0].next_id), '2');
      assert.equal(rows[1].user_id, null);
      if (keyTypes === BIGINTS)
        assert.equal(String(rows[1].content_id), '9007199254740993', 'exact past 2^53');
    });
  }

  it('refuses, at start, a table created earlier with UUID keys: one line, nothing written', async () => {
    const file = path.join(dir, 'uuid-first.duckdb');
    const uuidSink = createAnalyticsSink(`duckdb:${file}`, silentLogger());
    await uuidSink.start();
    await uuidSink.write(
      batch([seedEvent(1, { content_id: '00000000-0000-4000-8000-00000000000a', user_id: null })]),
      signal(),
    );
    await uuidSink.stop();

    const sink = createAnalyticsSink(`duckdb:${file}`, silentLogger(), { keyTypes: BIGINTS });
    await rejectsWithShapeLine(
      sink.start(),
      /^EP_ERR_DESTINATION_SHAPE: DuckDB table "uuid-first"\.engagement\.events_enriched in .*uuid-first\.duckdb was created for other key types than the source's \(content_id bigint, user_id bigint\): content_id is UUID, expected BIGINT; user_id is UUID, expected BIGINT; nothing was written \(fix: .*ANALYTICS_URL.*RENAME TO events_enriched_old.*\)$/,
    );
    // A write (the pipeline would never get there) is refused the same way, never cast.
    await assert.rejects(
      sink.write(batch(EVENTS()), signal()),
      (err: unknown) => err instanceof PipelineError && err.code === ErrorCodes.DESTINATION_SHAPE,
    );
    await sink.stop();
    const rows = await duckdbQuery(
      file,
      'SELECT event_id, content_id::VARCHAR AS c FROM engagement.events_enriched ORDER BY event_id',
    );
    assert.deepEqual(rows, [{ event_id: '1', c: '00000000-0000-4000-8000-00000000000a' }]);
  });
});

describe('integer keys in ClickHouse (chdb)', () => {
  let front: ChdbHttp;
  const sinks: Sink[] = [];
  const sinkFor = async (database: string, keyTypes?: KeyTypes, start = true) => {
    const sink = new ClickHouseSink({
      target: parseClickHouseUrl(`clickhouse://writer:secret@127.0.0.1:${front.port}/${database}`),
      logger: silentLogger(),
      keyTypes,
    });
    sinks.push(sink);
    if (start) await sink.start();
    return sink;
  };

  before(async () => {
    front = await startChdbHttp({ user: 'writer', password: 'secret' });
  });
  after(async () => {
    for (const s of sinks) await s.stop().catch(() => undefined);
    await front.close();
  });

  for (const [keyTypes, column] of [
    [BIGINTS, 'Int64'],
    [INTEGERS, 'Int32'],
  ] as const) {
    it(`stores ${keyTypes.content_id} keys in Nullable(${column}) columns, with the seed's values`, async () => {
      const database = `keys_${keyTypes.content_id}`;
      const sink = await sinkFor(database, keyTypes);
      const events = keyTypes === INTEGERS ? [seedEvent(1), seedEvent(2, { user_id: null })] : EVENTS();
      await sink.write(batch(events), signal());
      const columns = await front.rows<{ name: string; type: string }>(
        `SELECT name, type FROM system.columns WHERE database = '${database}' AND table = 'events_enriched'
            AND name IN ('content_id', 'user_id') ORDER BY name`,
      );
      assert.deepEqual(columns, [
        { name: 'content_id', type: `Nullable(${column})` },
        { name: 'user_id', type: `Nullable(${column})` },
      ]);
      const rows = await front.rows<Record<string, unknown>>(
        `SELECT event_id, toString(content_id) AS c, toString(user_id) AS u, toTypeName(content_id) AS ct,
                toString(content_id + 1) AS next_id, toString(engagement_seconds) AS secs,
                toString(engagement_pct) AS pct, length_seconds
           FROM ${database}.events_enriched FINAL ORDER BY event_id`,
      );
      assert.equal(rows.length, 2);
      assert.deepEqual(
        { ...rows[0], event_id: String(rows[0].event_id) },
        {
          event_id: '1',
          c: '1',
          u: '777',
          ct: `Nullable(${column})`,
          next_id: '2',
          secs: '7',
          pct: '0.02',
          length_seconds: 350,
        },
      );
      assert.equal(rows[1].u, null);
      if (keyTypes === BIGINTS) assert.equal(rows[1].c, '9007199254740993', 'exact past 2^53');
    });
  }

  it('refuses, at start, a table created earlier with UUID keys: one line, nothing written', async () => {
    await sinkFor('keys_uuid_first'); // the default: UUID keys
    const sink = await sinkFor('keys_uuid_first', BIGINTS, false);
    await rejectsWithShapeLine(
      sink.start(),
      /^EP_ERR_DESTINATION_SHAPE: ClickHouse table `keys_uuid_first`\.events_enriched at http:\/\/127\.0\.0\.1:\d+\/keys_uuid_first was created for other key types than the source's \(content_id bigint, user_id bigint\): content_id is Nullable\(UUID\), expected Nullable\(Int64\); user_id is Nullable\(UUID\), expected Nullable\(Int64\); nothing was written \(fix: .*RENAME TABLE.*ANALYTICS_URL.*\)$/,
    );
    await assert.rejects(sink.write(batch(EVENTS()), signal()), /not started/);
    const [{ n }] = await front.rows<{ n: string }>(
      'SELECT count() AS n FROM keys_uuid_first.events_enriched',
    );
    assert.equal(Number(n), 0);
  });
});

describe('integer keys in BigQuery (the fake)', () => {
  let fake: BigQueryFake;
  const sinkFor = (dataset: string, keyTypes?: KeyTypes) =>
    new BigQuerySink({
      target: parseBigQueryUrl(`bigquery://acme-analytics/${dataset}`),
      deadLetters: {
        record: async (entries) => assert.fail(`unexpected dead letters: ${JSON.stringify(entries)}`),
      },
      logger: silentLogger(),
      apiEndpoint: fake.url,
      accessToken: fake.token,
      keyTypes,
    });

  before(async () => {
    fake = await startBigQueryFake();
  });
  after(async () => {
    await fake.close();
  });

  it('types integer keys INT64 and stores the seed example exactly', async () => {
    const sink = sinkFor('int_keys', BIGINTS);
    await sink.start();
    await sink.write(batch(EVENTS()), signal());
    const table = fake.table('acme-analytics', 'int_keys', 'events_enriched')!;
    const key = (name: string) => table.schema!.fields.find((f) => f.name === name);
    assert.deepEqual([key('content_id')?.type, key('user_id')?.type], ['INT64', 'INT64']);
    assert.equal(table.rows.length, 2);
    const [first, second] = table.rows;
    assert.equal(first.content_id, '1');
    assert.equal(first.user_id, '777');
    assert.equal(first.engagement_seconds, '7');
    assert.equal(first.engagement_pct, '0.02');
    assert.equal(first.length_seconds, 350);
    assert.equal(second.content_id, '9007199254740993', 'INT64 as exact text');
    assert.equal(second.user_id, null);
    // A second start finds the table with the right types and goes on.
    await sinkFor('int_keys', BIGINTS).start();
  });

  it('refuses, at start, a table created earlier with UUID keys: one line, nothing written', async () => {
    await sinkFor('uuid_first').start();
    const sink = sinkFor('uuid_first', INTEGERS);
    await rejectsWithShapeLine(
      sink.start(),
      /^EP_ERR_DESTINATION_SHAPE: BigQuery table acme-analytics\.uuid_first\.events_enriched was created for other key types than the source's \(content_id integer, user_id integer\): content_id is STRING, expected INT64; user_id is STRING, expected INT64; nothing was written \(fix: point ANALYTICS_URL at another dataset .*\)$/,
    );
    assert.deepEqual(fake.table('acme-analytics', 'uuid_first', 'events_enriched')!.rows, []);
    assert.equal(
      fake.requests.filter((r) => r.path.includes('/uuid_first/') && r.path.endsWith('/insertAll')).length,
      0,
    );
  });
});

describe('integer keys in Redis and the external payload', () => {
  const redis = testRedis();
  let server: Server;
  let url: string;
  const bodies: unknown[] = [];

  before(async () => {
    server = createServer((req, res) => {
      void readBody(req).then((body) => {
        bodies.push(JSON.parse(body.toString('utf8')));
        res.writeHead(200).end();
      });
    });
    url = `http://127.0.0.1:${await listen(server, 0)}/events`;
  });
  after(async () => {
    await closeServer(server);
    await redis.cleanup();
  });

  it('Redis keys are the text form; content:last types the keys as the source does', async () => {
    const sink = new RedisSink({
      url: redis.url,
      prefix: redis.prefix,
      logger: silentLogger(),
      keyTypes: BIGINTS,
    });
    await sink.start();
    try {
      await sink.write(batch(EVENTS()));
    } finally {
      await sink.stop();
    }
    assert.equal(await redis.client.get(`${redis.prefix}content:count:1`), '1');
    const last = JSON.parse((await redis.client.get(`${redis.prefix}content:last:1`))!) as Record<
      string,
      unknown
    >;
    assert.deepEqual(
      [last.event_id, last.content_id, last.user_id, last.engagement_seconds, last.engagement_pct],
      [1, 1, 777, 7, 0.02],
    );
    const far = JSON.parse(
      (await redis.client.get(`${redis.prefix}content:last:9007199254740993`))!,
    ) as Record<string, unknown>;
    assert.equal(far.content_id, '9007199254740993', 'past 2^53: a string, never a rounded number');
  });

  it('the external payload carries integer keys as JSON numbers (safe integers) and the seed values', async () => {
    const sink = new ExternalSink({
      url,
      policy: 'block',
      batchSize: 1,
      concurrency: 1,
      maxAttempts: 3,
      timeoutMs: 10_000,
      deadLetters: { record: async () => assert.fail('nothing should be dead-lettered') },
      metrics: createMetrics(),
      logger: silentLogger(),
      keyTypes: BIGINTS,
    });
    await sink.start();
    try {
      await sink.write(batch(EVENTS()), signal());
    } finally {
      await sink.stop();
    }
    const byId = new Map(
      bodies.map((b) => [(b as { event_id: number }).event_id, b as Record<string, unknown>]),
    );
    const first = byId.get(1)!;
    assert.deepEqual(
      [first.content_id, first.user_id, first.engagement_seconds, first.engagement_pct, first.length_seconds],
      [1, 777, 7, 0.02, 350],
    );
    assert.equal(byId.get(2)!.content_id, '9007199254740993');
    assert.equal(byId.get(2)!.user_id, null);
  });
});

describe('engagement run on an analytics table of other key types', () => {
  it('exits 2 with the one line, before streaming anything', async () => {
    // The default (UUID-keyed) source, and a DuckDB file whose table was made for BIGINT keys.
    const h = await createHarness();
    try {
      const other = new DuckDbSink({ path: h.duckdbFile, logger: silentLogger(), keyTypes: BIGINTS });
      await other.start();
      await other.stop();
      const { code, output } = await runCli(['run'], cliEnv(h, { PORT: '0' }));
      assert.equal(code, 2, output);
      const lines = output.split('\n').filter((l) => l.includes('EP_ERR_DESTINATION_SHAPE'));
      assert.equal(lines.length, 1, output);
      assert.match(
        lines[0],
        /content_id is BIGINT, expected UUID; user_id is BIGINT, expected UUID; nothing was written \(fix: .*ANALYTICS_URL/,
      );
      assert.doesNotMatch(output, /replication streaming/);
      const [{ n }] = await duckdbQuery(h.duckdbFile, 'SELECT count(*) AS n FROM engagement.events_enriched');
      assert.equal(Number(n), 0);
    } finally {
      await h.cleanup();
    }
  });
});
