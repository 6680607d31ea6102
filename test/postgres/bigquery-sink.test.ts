import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { loadConfig } from '../../src/config.js';
import { createPool } from '../../src/db/postgres.js';
import { STATE_SCHEMA_SQL } from '../../src/db/schema.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { PipelineError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { Fanout } from '../../src/pipeline/fanout.js';
import { BIGQUERY_FIELDS } from '../../src/sinks/analytics/bigquery-schema.js';
import { BigQuerySink, parseBigQueryUrl } from '../../src/sinks/analytics/bigquery-sink.js';
import { createAnalyticsSink } from '../../src/sinks/analytics/create-analytics-sink.js';
import { DeadLetterStore } from '../../src/state/dead-letter.js';
import { startBigQueryFake, type BigQueryFake } from '../helpers/bigquery-fake.js';
import { freshDatabase } from '../helpers/postgres.js';

/**
 * The BigQuery sink against a local server that checks BigQuery's REST shapes (there is no
 * BigQuery here; the README gives the one-command check against the real service).
 */

const signal = () => new AbortController().signal;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` (a CPU-starved run only takes longer), failing after `ms`. */
async function until(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function event(id: number, overrides: Partial<EnrichedEvent> = {}): EnrichedEvent {
  const ts = '2026-11-01T12:00:00.123456Z';
  return {
    event_id: id,
    content_id: '00000000-0000-4000-8000-00000000000a',
    user_id: null,
    event_type: 'play',
    event_ts: ts,
    duration_ms: 7000,
    device: 'ios',
    raw_payload: { id },
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: 7,
    engagement_pct: 0.02,
    committed_at: ts,
    processed_at: ts,
    ...overrides,
  };
}

function batch(events: EnrichedEvent[]): Batch {
  return { seq: 1, stream: 'test', events, positions: events.map((e) => `p${e.event_id}`), ackLsn: null };
}

function range(from: number, to: number): EnrichedEvent[] {
  return Array.from({ length: to - from }, (_, i) => event(from + i));
}

describe('BigQuery sink (REST shapes checked by a local server)', () => {
  let fake: BigQueryFake;
  let db: { url: string; drop(): Promise<void> };
  let pool: pg.Pool;
  let deadLetters: DeadLetterStore;
  let sink: BigQuerySink;
  const rows = () => fake.table('acme-analytics', 'media', 'events_enriched')!.rows;

  before(async () => {
    fake = await startBigQueryFake();
    db = await freshDatabase('bq');
    pool = createPool(db.url, 2);
    await pool.query(STATE_SCHEMA_SQL);
    deadLetters = new DeadLetterStore(pool);
    // Built the way `engagement run` builds it: from ANALYTICS_URL and the environment.
    sink = createAnalyticsSink('bigquery://acme-analytics/media?location=EU', silentLogger(), {
      deadLetters,
      settings: loadConfig({}, { BIGQUERY_API_ENDPOINT: fake.url, BIGQUERY_ACCESS_TOKEN: fake.token }),
    }) as BigQuerySink;
    await sink.start();
  });
  after(async () => {
    await sink.stop();
    await fake.close();
    await pool.end();
    await db.drop();
  });

  it('creates the dataset, a DAY-partitioned clustered table and the dedup view', () => {
    assert.equal(fake.datasets.get('acme-analytics:media')?.location, 'EU');
    const table = fake.table('acme-analytics', 'media', 'events_enriched')!;
    assert.deepEqual(table.timePartitioning, { type: 'DAY', field: 'event_ts' });
    assert.deepEqual(table.clustering, { fields: ['content_type', 'event_type'] });
    assert.deepEqual(
      table.schema!.fields.map((f) => [f.name, f.type, f.mode]),
      BIGQUERY_FIELDS.map((f) => [f.name, f.type, f.mode]),
    );
    const view = fake.table('acme-analytics', 'media', 'events_enriched_unique')!;
    assert.match(view.view!.query, /QUALIFY ROW_NUMBER\(\) OVER \(PARTITION BY event_id/);
  });

  it('a second start finds everything in place and creates nothing', async () => {
    const before = fake.requests.length;
    await sink.start();
    const made = fake.requests.slice(before).filter((r) => r.method === 'POST');
    assert.deepEqual(made, []);
  });

  it('streams rows with insertId = event_id and exact values; a re-send is dropped', async () => {
    await sink.write(batch(range(1, 1201)), signal());
    const inserts = fake.requests.filter((r) => r.path.endsWith('/insertAll'));
    assert.deepEqual(
      inserts.map((r) => r.rows),
      [500, 500, 200],
      'at most 500 rows per insertAll',
    );
    await sink.write(batch(range(1, 1201)), signal());
    assert.equal(rows().length, 1200);
    const first = rows()[0];
    assert.deepEqual(first, {
      event_id: '1',
      content_id: '00000000-0000-4000-8000-00000000000a',
      user_id: null,
      event_type: 'play',
      event_ts: '2026-11-01T12:00:00.123456Z',
      duration_ms: 7000,
      device: 'ios',
      raw_payload: '{"id":1}',
      content_type: 'video',
      length_seconds: 300,
      engagement_seconds: '7',
      engagement_pct: '0.02',
      committed_at: '2026-11-01T12:00:00.123456Z',
      processed_at: '2026-11-01T12:00:00.123456Z',
    });
  });

  it('a row BigQuery refuses goes to the dead-letter table with the reason; the rest is stored', async () => {
    // NUMERIC(12,3) cannot hold 10^12: BigQuery refuses that row alone (skipInvalidRows).
    const events = [event(5001), event(5002, { engagement_seconds: 1e12 }), event(5003)];
    await sink.write(batch(events), signal());
    assert.ok(rows().some((r) => r.event_id === '5001'));
    assert.ok(rows().some((r) => r.event_id === '5003'));
    assert.ok(!rows().some((r) => r.event_id === '5002'));
    const dead = await deadLetters.list({ sink: 'analytics', limit: 10 });
    assert.equal(dead.length, 1);
    assert.equal(dead[0].eventId, '5002');
    assert.equal(dead[0].source, 'test@p5002');
    assert.match(
      dead[0].lastError,
      /BigQuery refused the row \(invalid: .*engagement_seconds.*NUMERIC\(12, 3\)/,
    );
    // The replay of the same batch updates the pending dead letter instead of adding one.
    await sink.write(batch(events), signal());
    assert.equal((await deadLetters.list({ sink: 'analytics', limit: 10 })).length, 1);
  });

  /**
   * The table's columns drift under the running sink (here `device` is gone, so BigQuery answers
   * `no such field: device.` for every row) and are fixed later, through the fan-out as
   * `engagement run` drives it.
   */
  function whileDeviceIsMissing(events: EnrichedEvent[]): {
    fanout: Fanout;
    write: Promise<void>;
    restore: () => void;
    settled: () => boolean;
  } {
    const table = fake.table('acme-analytics', 'media', 'events_enriched')!;
    const fields = table.schema!.fields;
    table.schema = { fields: fields.filter((f) => f.name !== 'device') };
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: silentLogger(),
      deadLetters,
      failedRetryBaseMs: 20,
      failedRetryMaxMs: 50,
    });
    let settled = false;
    const write = fanout.write(batch(events)).finally(() => (settled = true));
    write.catch(() => undefined);
    return { fanout, write, restore: () => (table.schema = { fields }), settled: () => settled };
  }

  async function assertHeldThenDeliveredOnce(events: EnrichedEvent[]): Promise<void> {
    const ids = events.map((e) => String(e.event_id));
    const deadBefore = (await deadLetters.list({ sink: 'analytics', limit: 1000 })).length;
    const insertsBefore = fake.requests.filter((r) => r.path.endsWith('/insertAll')).length;
    const drift = whileDeviceIsMissing(events);
    try {
      await until('the sink marked failed', () => drift.fanout.health()[0].state === 'failed');
      const h = drift.fanout.health()[0];
      assert.match(
        h.error ?? '',
        /^EP_ERR_ANALYTICS_REFUSED: BigQuery refused every row of an insertAll into acme-analytics\.media\.events_enriched \(\d+ rows?\): invalid: no such field: device\..*nothing was dead-lettered \(fix: /,
      );
      await until(
        'a slow retry',
        () => fake.requests.filter((r) => r.path.endsWith('/insertAll')).length >= insertsBefore + 2,
      );
      assert.equal(drift.settled(), false, 'the position is held: the write is not accepted');
      assert.equal(drift.fanout.health()[0].state, 'failed');
      assert.equal(
        (await deadLetters.list({ sink: 'analytics', limit: 1000 })).length,
        deadBefore,
        'nothing dead-lettered',
      );
      assert.ok(!rows().some((r) => ids.includes(String(r.event_id))));
    } finally {
      drift.restore();
    }
    await drift.write;
    assert.equal(drift.fanout.health()[0].state, 'up');
    drift.fanout.cancel();
    for (const id of ids)
      assert.equal(rows().filter((r) => r.event_id === id).length, 1, `event ${id} stored exactly once`);
    assert.equal((await deadLetters.list({ sink: 'analytics', limit: 1000 })).length, deadBefore);
  }

  it('a table refusing every row of a batch fails the sink, not the rows: held, retried, then each event once', async () => {
    await assertHeldThenDeliveredOnce(range(4001, 4004));
  });

  it('a lone row refused for a column the table lacks is held the same way, not dead-lettered', async () => {
    await assertHeldThenDeliveredOnce([event(4101)]);
  });

  it('at start, refuses a table lacking a column the pipeline writes or requiring one it does not write', async () => {
    const sinkFor = (dataset: string) =>
      new BigQuerySink({
        target: parseBigQueryUrl(`bigquery://acme-analytics/${dataset}`),
        deadLetters,
        logger: silentLogger(),
        apiEndpoint: fake.url,
        accessToken: fake.token,
      });
    await sinkFor('drifted').start();
    const table = fake.table('acme-analytics', 'drifted', 'events_enriched')!;
    const fields = table.schema!.fields;
    // An extra NULLABLE column (an operator's own) is fine: insertAll leaves it null.
    table.schema = { fields: [...fields, { name: 'note', type: 'STRING', mode: 'NULLABLE' }] };
    await sinkFor('drifted').start();
    table.schema = {
      fields: [
        ...fields.filter((f) => f.name !== 'device'),
        { name: 'tenant', type: 'STRING', mode: 'REQUIRED' },
      ],
    };
    await assert.rejects(sinkFor('drifted').start(), (err: unknown) => {
      assert.ok(err instanceof PipelineError);
      assert.equal(err.kind, 'config');
      assert.match(
        err.oneLine(),
        /^EP_ERR_DESTINATION_SHAPE: BigQuery table acme-analytics\.drifted\.events_enriched does not have the columns the pipeline writes: device is \(missing\), expected STRING; tenant is STRING REQUIRED, expected NULLABLE \(the pipeline does not write it\); nothing was written \(fix: add the missing columns .*\)$/,
      );
      return true;
    });
  });

  it('503 and quota errors reject the write, so the pipeline retries it with backoff', async () => {
    fake.failNext(1, '503');
    await assert.rejects(sink.write(batch(range(6001, 6011)), signal()), (err: unknown) => {
      assert.ok(err instanceof PipelineError);
      assert.equal(err.kind, 'transient');
      assert.match(
        err.oneLine(),
        /^EP_ERR_SINK_WRITE: BigQuery insertAll of 10 rows .* HTTP 503 \(backendError\)/,
      );
      return true;
    });
    fake.failNext(1, 'quota');
    await assert.rejects(sink.write(batch(range(6001, 6011)), signal()), /HTTP 403 \(quotaExceeded\)/);
    // The retry succeeds and nothing is doubled.
    await sink.write(batch(range(6001, 6011)), signal());
    assert.equal(rows().filter((r) => Number(r.event_id) > 6000).length, 10);
  });

  it('without credentials for the endpoint, start-up fails with one line and a hint', async () => {
    const noAuth = new BigQuerySink({
      target: parseBigQueryUrl('bigquery://acme-analytics/media'),
      deadLetters,
      logger: silentLogger(),
      apiEndpoint: fake.url,
      accessToken: 'wrong-token',
    });
    await assert.rejects(noAuth.start(), (err: unknown) => {
      assert.ok(err instanceof PipelineError);
      assert.equal(err.kind, 'config');
      assert.match(err.oneLine(), /^EP_ERR_ANALYTICS_UNAVAILABLE: cannot prepare BigQuery table .* HTTP 401/);
      return true;
    });
  });

  it('rejects malformed bigquery:// URLs with a config error', () => {
    for (const bad of [
      'bigquery://',
      'bigquery://p',
      'bigquery://project/bad-dataset',
      'bigquery://project/ds/extra',
    ]) {
      assert.throws(() => parseBigQueryUrl(bad), /EP_ERR_CONFIG|not a valid bigquery/);
    }
    assert.deepEqual(parseBigQueryUrl('bigquery://my-proj/ds_1'), {
      projectId: 'my-proj',
      datasetId: 'ds_1',
      location: undefined,
    });
  });
});
