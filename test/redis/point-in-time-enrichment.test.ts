import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { clientConfig } from '../../src/db/postgres.js';
import { startRuntime, type Runtime } from '../../src/runtime.js';
import { ContentDimension } from '../../src/enrichment/content-dimension.js';
import { ContentHistory } from '../../src/enrichment/content-history.js';
import { captureLogs } from '../faults/support/harness.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { CONTENT_IDS, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const [VIDEO, PODCAST] = CONTENT_IDS;

/** Enrichment of the given events in DuckDB (read after the pipeline stopped). */
async function enriched(h: Harness): Promise<Map<string, { type: unknown; length: unknown }>> {
  const rows = await duckdbQuery(
    h.duckdbFile,
    'SELECT event_id::VARCHAR AS id, content_type, length_seconds FROM engagement.events_enriched',
  );
  return new Map(rows.map((r) => [String(r.id), { type: r.content_type, length: r.length_seconds }]));
}

/** Inserts one event, after `first` (a statement run in the same transaction) when given. */
async function insertEvent(h: Harness, contentId: string, label: string, first?: string): Promise<string> {
  const client = new pg.Client(clientConfig(h.databaseUrl));
  await client.connect();
  try {
    await client.query('BEGIN');
    if (first) await client.query(first);
    const { rows } = await client.query<{ id: string }>(
      `INSERT INTO engagement_events (content_id, event_type, event_ts, duration_ms, device, raw_payload)
       VALUES ($1, 'play', now(), 1000, 'ios', jsonb_build_object('label', $2::text)) RETURNING id::text AS id`,
      [contentId, label],
    );
    await client.query('COMMIT');
    return rows[0].id;
  } finally {
    await client.end();
  }
}

async function redisCount(h: Harness, contentId: string): Promise<number> {
  return Number((await h.redis.client.get(`${h.redis.prefix}content:count:${contentId}`)) ?? 0);
}

describe('point-in-time enrichment: every event carries the content as of its own commit', () => {
  let h: Harness;
  let runtime: Runtime | null = null;
  before(async () => {
    h = await createHarness();
    // Users' tables need not have the foreign key; without it, events can name deleted content.
    await h.sql('ALTER TABLE engagement_events DROP CONSTRAINT IF EXISTS engagement_events_content_id_fkey');
    await seedContent(h);
  });
  after(async () => {
    await runtime?.stop().catch(() => undefined);
    await h.cleanup();
  });

  it('replays events written before a content update and delete with the content they were written against', async () => {
    runtime = await h.start();
    const first = await insertEvent(h, VIDEO, 'while running');
    await waitFor('the first event in Redis', async () => (await redisCount(h, VIDEO)) === 1, 30_000);
    await runtime.stop();
    runtime = null;

    // The pipeline is down: events, then the content changes, then more events. None confirmed.
    const e1 = await insertEvent(h, VIDEO, 'video at 300 s');
    const e2 = await insertEvent(h, PODCAST, 'podcast before its delete');
    await h.sql(`UPDATE content SET length_seconds = 600 WHERE id = $1`, [VIDEO]);
    const e3 = await insertEvent(h, VIDEO, 'video at 600 s');
    await h.sql(`DELETE FROM content WHERE id = $1`, [PODCAST]);
    const e4 = await insertEvent(h, PODCAST, 'podcast deleted');
    // An update and an event in one transaction: the event comes after the update.
    const e5 = await insertEvent(
      h,
      VIDEO,
      'video at 900 s',
      `UPDATE content SET length_seconds = 900, content_type = 'podcast' WHERE id = '${VIDEO}'`,
    );

    runtime = await h.start();
    await waitFor('all events in Redis', async () => (await redisCount(h, VIDEO)) === 4, 30_000);
    await waitFor('all events in Redis', async () => (await redisCount(h, PODCAST)) === 2, 30_000);
    await runtime.stop();
    runtime = null;

    const got = await enriched(h);
    assert.deepEqual(got.get(first), { type: 'video', length: 300 });
    assert.deepEqual(got.get(e1), { type: 'video', length: 300 }, 'written when the video was 300 s long');
    assert.deepEqual(
      got.get(e2),
      { type: 'podcast', length: null },
      'written before the podcast was deleted',
    );
    assert.deepEqual(got.get(e3), { type: 'video', length: 600 });
    assert.deepEqual(got.get(e4), { type: null, length: null }, 'written after the delete');
    assert.deepEqual(got.get(e5), { type: 'podcast', length: 900 });

    // A restart confirmed everything above: the history below the slot's position shrinks
    // to one version per key.
    runtime = await h.start();
    await runtime.stop();
    runtime = null;
  });

  it('a failing content lookup (lock_timeout while content is locked) holds the stream and loses nothing', async () => {
    const logs = captureLogs();
    const db = new URL(h.databaseUrl).pathname.slice(1);
    await h.sql(`ALTER DATABASE ${db} SET lock_timeout = '150ms'`);
    const unseen = '00000000-0000-4000-8000-0000000000f1';
    runtime = await startRuntime(h.config(), logs.logger);
    // Content outside the publication is unknown to the stream: its events need a lookup.
    // Dropped once running (the start refuses a publication without the content table).
    await h.sql('ALTER PUBLICATION engagement_pipeline DROP TABLE content');
    // Inserted after the start: in neither the loaded dimension nor the stream.
    await h.sql(
      `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
       VALUES ($1, 'unseen', 'Unseen', 'video', 42, now())`,
      [unseen],
    );
    const before = await redisCount(h, VIDEO);
    const locker = new pg.Client(clientConfig(h.databaseUrl));
    await locker.connect();
    let e1: string;
    let e2: string;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE content IN ACCESS EXCLUSIVE MODE');
      e1 = await insertEvent(h, unseen, 'needs a lookup');
      e2 = await insertEvent(h, VIDEO, 'behind the lookup');
      // Held until a lookup failed with lock_timeout (a pipeline that never retries never logs
      // it: then the lock is released after the wait and the event must still arrive), and
      // a little longer, for repeated failures.
      await waitFor('a failed lookup', () => logs.count(/content lookup failed/) > 0, 20_000).catch(
        () => undefined,
      );
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal(await redisCount(h, unseen), 0, 'nothing passes the event while its lookup fails');
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
    }
    await waitFor('the looked-up event in Redis', async () => (await redisCount(h, unseen)) === 1, 30_000);
    await waitFor('the next event in Redis', async () => (await redisCount(h, VIDEO)) === before + 1, 30_000);
    await runtime.stop();
    runtime = null;
    await h.sql(`ALTER DATABASE ${db} RESET lock_timeout`);
    await h.sql('ALTER PUBLICATION engagement_pipeline ADD TABLE content');
    assert.ok(logs.count(/content lookup failed, retrying/) > 0, 'the failed lookups were logged');

    const got = await enriched(h);
    assert.deepEqual(got.get(e1), { type: 'video', length: 42 });
    assert.deepEqual(got.get(e2), { type: 'podcast', length: 900 });
  });

  it('a failing history write (its table locked) holds the stream and loses nothing', async () => {
    const logs = captureLogs();
    const db = new URL(h.databaseUrl).pathname.slice(1);
    await h.sql(`ALTER DATABASE ${db} SET lock_timeout = '150ms'`);
    runtime = await startRuntime(h.config(), logs.logger);
    const locker = new pg.Client(clientConfig(h.databaseUrl));
    await locker.connect();
    let e1: string;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE engagement_pipeline.content_versions IN ACCESS EXCLUSIVE MODE');
      await h.sql(`UPDATE content SET length_seconds = 1200 WHERE id = $1`, [VIDEO]);
      e1 = await insertEvent(h, VIDEO, 'after the update');
      await waitFor(
        'the history write to fail and be retried',
        () => logs.count(/recording \d+ content change\(s\) failed, retrying/) > 0,
        30_000,
      );
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
    }
    await waitFor('the event in Redis', async () => (await redisCount(h, VIDEO)) === 6, 30_000);
    await runtime.stop();
    runtime = null;
    await h.sql(`ALTER DATABASE ${db} RESET lock_timeout`);
    const got = await enriched(h);
    assert.deepEqual(got.get(e1), { type: 'podcast', length: 1200 });
    const versions = await h.sql<{ n: string }>(
      `SELECT count(*)::text AS n FROM engagement_pipeline.content_versions
        WHERE content_key = $1 AND (row_data->>'length_seconds')::int = 1200`,
      [VIDEO],
    );
    assert.equal(versions[0].n, '1', 'the change reached the history');
  });

  it('records a change only when the row changes; a truncate records every known row as deleted', async () => {
    const pool = new pg.Pool(clientConfig(h.databaseUrl));
    try {
      const stream = 'direct_api_test';
      const dimension = new ContentDimension(pool, { slotName: stream, retry: true });
      const history = new ContentHistory(pool, stream);
      const row = { id: VIDEO, slug: 's', title: 'T', content_type: 'video', length_seconds: 10 };
      dimension.apply({ kind: 'content-upsert', content: row }, '1/10');
      dimension.apply({ kind: 'content-upsert', content: { ...row } }, '1/20'); // same values
      dimension.apply({ kind: 'content-upsert', content: { id: VIDEO, title: 'T2' } }, '1/30');
      dimension.apply({ kind: 'content-delete', id: PODCAST }, '1/40'); // never seen: recorded
      dimension.apply({ kind: 'content-delete', id: PODCAST }, '1/50'); // absent already
      assert.equal(dimension.recording, true);
      await dimension.recorded();
      assert.equal(dimension.recording, false);
      const lsns = await h.sql<{ key: string; lsn: string }>(
        `SELECT content_key AS key, valid_from_lsn::text AS lsn FROM engagement_pipeline.content_versions
          WHERE stream = $1 ORDER BY valid_from_lsn`,
        [stream],
      );
      assert.deepEqual(
        lsns.map((r) => `${r.key === VIDEO ? 'video' : 'podcast'}@${r.lsn}`),
        ['video@1/10', 'video@1/30', 'podcast@1/40'],
      );
      assert.equal(
        (await history.asOf('1/31')).get(VIDEO)?.title,
        'T2',
        'a partial change keeps the other columns',
      );
      assert.equal((await history.asOf('1/31')).get(VIDEO)?.length_seconds, 10);
      dimension.apply({ kind: 'content-truncate' }, '1/60');
      await dimension.recorded();
      assert.deepEqual([...(await history.asOf('1/61')).values()], [null, null]);
      assert.equal(dimension.peek(VIDEO), null);
      dimension.close();
    } finally {
      await pool.end();
    }
  });

  it('pruning keeps, per key, the latest version below the position and everything above it', async () => {
    const pool = new pg.Pool(clientConfig(h.databaseUrl));
    try {
      const history = new ContentHistory(pool, 'engagement_pipeline');
      const key = '00000000-0000-4000-8000-0000000000e1';
      const row = (length: number) => ({
        id: key,
        slug: 'e1',
        title: 'E1',
        content_type: 'video',
        length_seconds: length,
      });
      await history.record(key, '0/10', row(1));
      await history.record(key, '0/20', row(2));
      await history.record(key, '0/30', null);
      await history.record(key, '0/40', row(4));
      await history.record(key, '0/40', row(5)); // the same transaction again: the last one stays
      assert.equal((await history.asOf('0/25')).get(key)?.length_seconds, 2);
      assert.equal((await history.asOf('0/35')).get(key), null, 'deleted');
      assert.equal((await history.asOf('0/41')).get(key)?.length_seconds, 5);
      assert.equal(await history.prune('0/35'), 2);
      assert.equal((await history.asOf('0/35')).get(key), null, 'the latest version below stays');
      assert.equal((await history.asOf('0/41')).get(key)?.length_seconds, 5);
      assert.equal(await history.prune('0/35'), 0, 'idempotent');
    } finally {
      await pool.end();
    }
  });
});
