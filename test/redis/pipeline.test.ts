import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { windowBuckets } from '../../src/domain/windows.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { CONTENT_IDS, createHarness, insertEvents, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

describe('pipeline end to end (Postgres logical replication -> DuckDB + Redis)', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
  });
  after(async () => h.cleanup());

  it('delivers every inserted row exactly once with the enriched fields', async () => {
    const runtime = await h.start();
    const n = 2000;
    try {
      await insertEvents(h, n);
      await waitFor('redis counts to reach N', async () => {
        const counts = await Promise.all(
          CONTENT_IDS.map((id) => h.redis.client.get(`${h.redis.prefix}content:count:${id}`)),
        );
        return counts.reduce((sum, c) => sum + Number(c ?? 0), 0) === n;
      });
      // The 10-minute leaderboard equals the same aggregate computed in SQL over the same minutes.
      await runtime.redisSink.refreshWindows();
      const meta = await h.redis.client.hgetall(`${h.redis.prefix}top:meta:10m`);
      const buckets = windowBuckets(Date.parse(meta.refreshed_at), 10);
      const expected = await h.sql<{ content_id: string; n: string }>(
        `SELECT content_id::text, count(*) AS n FROM engagement_events
         WHERE to_char(event_ts AT TIME ZONE 'UTC', 'YYYYMMDDHH24MI') BETWEEN $1 AND $2 GROUP BY 1`,
        [buckets[0], buckets[buckets.length - 1]],
      );
      const top = await h.redis.client.zrange(`${h.redis.prefix}top:content:10m`, '0', '-1', 'WITHSCORES');
      const actual = new Map<string, number>();
      for (let i = 0; i < top.length; i += 2) actual.set(top[i], Number(top[i + 1]));
      assert.equal(actual.size, expected.length);
      for (const row of expected)
        assert.equal(actual.get(row.content_id), Number(row.n), `content ${row.content_id}`);
    } finally {
      await runtime.stop();
    }
    const rows = await duckdbQuery(
      h.duckdbFile,
      'SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM engagement.events_enriched',
    );
    assert.deepEqual(rows[0], { n: String(n), d: String(n) });
    // Enriched fields equal the same rule computed by Postgres itself.
    const pgRows = await h.sql<{
      id: string;
      secs: string | null;
      pct: string | null;
      content_type: string | null;
    }>(
      `SELECT e.id::text, round(e.duration_ms / 1000.0, 3)::text AS secs,
              CASE WHEN c.length_seconds IS NULL OR c.length_seconds = 0 OR e.duration_ms < 0 THEN NULL
                   ELSE round((e.duration_ms / 1000.0) / c.length_seconds, 2)::text END AS pct, c.content_type
       FROM engagement_events e LEFT JOIN content c ON c.id = e.content_id ORDER BY e.id`,
    );
    const duck = await duckdbQuery(
      h.duckdbFile,
      `SELECT event_id::VARCHAR AS id, engagement_seconds::VARCHAR AS secs, engagement_pct::VARCHAR AS pct, content_type
       FROM engagement.events_enriched ORDER BY event_id`,
    );
    assert.equal(duck.length, pgRows.length);
    for (let i = 0; i < pgRows.length; i++) {
      assert.deepEqual(duck[i], {
        id: pgRows[i].id,
        secs: pgRows[i].secs,
        pct: pgRows[i].pct,
        content_type: pgRows[i].content_type,
      });
    }
  });

  it('enriches an event whose content commits in the same transaction, and uses updated content afterwards', async () => {
    const runtime = await h.start();
    const id = '00000000-0000-4000-8000-0000000000aa';
    try {
      await h.sql(
        `WITH c AS (INSERT INTO content VALUES ($1, 'same-tx', 'Same tx', 'video', 100, now()) RETURNING id)
         INSERT INTO engagement_events (content_id, event_type, event_ts, duration_ms, device) SELECT id, 'play', now(), 5000, 'ios' FROM c`,
        [id],
      );
      await h.sql(`UPDATE content SET length_seconds = 1000, content_type = 'podcast' WHERE id = $1`, [id]);
      await h.sql(
        `INSERT INTO engagement_events (content_id, event_type, event_ts, duration_ms, device) VALUES ($1, 'play', now(), 5000, 'ios')`,
        [id],
      );
      await waitFor(
        'both events in redis',
        async () => (await h.redis.client.get(`${h.redis.prefix}content:count:${id}`)) === '2',
      );
    } finally {
      await runtime.stop();
    }
    const rows = await duckdbQuery(
      h.duckdbFile,
      `SELECT content_type, length_seconds, engagement_pct::VARCHAR AS pct FROM engagement.events_enriched WHERE content_id = '${id}' ORDER BY event_id`,
    );
    assert.deepEqual(rows, [
      { content_type: 'video', length_seconds: 100, pct: '0.05' },
      { content_type: 'podcast', length_seconds: 1000, pct: '0.01' },
    ]);
  });

  it('resumes after a restart without duplicates, and ignores updates/deletes of events', async () => {
    const before = Number((await h.sql<{ n: string }>('SELECT count(*) AS n FROM engagement_events'))[0].n);
    await insertEvents(h, 300, 100_000); // while stopped: waits in the slot
    await h.sql(
      `UPDATE engagement_events SET device = 'changed' WHERE id IN (SELECT id FROM engagement_events LIMIT 5)`,
    );
    const runtime = await h.start();
    try {
      await waitFor('backlog delivered', async () => {
        const counts = await Promise.all(
          [...CONTENT_IDS, '00000000-0000-4000-8000-0000000000aa'].map((id) =>
            h.redis.client.get(`${h.redis.prefix}content:count:${id}`),
          ),
        );
        return counts.reduce((sum, c) => sum + Number(c ?? 0), 0) === before + 300;
      });
      assert.equal(
        await runtime.metrics.ignoredChanges.get().then((m) => m.values.reduce((s, v) => s + v.value, 0)),
        5,
      );
    } finally {
      await runtime.stop();
    }
    const rows = await duckdbQuery(h.duckdbFile, 'SELECT count(*) AS n FROM engagement.events_enriched');
    assert.equal(rows[0].n, String(before + 300));
  });
});
