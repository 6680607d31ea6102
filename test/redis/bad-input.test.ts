import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { duckdbQuery } from '../helpers/duckdb.js';
import { CONTENT_IDS, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

describe('bad input is delivered or dead-lettered, never a crash', () => {
  let h: Harness;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    // Users' tables may lack the foreign key; then events can name unknown content.
    await h.sql('ALTER TABLE engagement_events DROP CONSTRAINT IF EXISTS engagement_events_content_id_fkey');
  });
  after(async () => h.cleanup());

  it('handles negative durations, NULLs, unknown content, infinity timestamps, big payloads, control characters', async () => {
    const runtime = await h.start();
    const unknown = '00000000-0000-4000-8000-0000000000ff';
    try {
      await h.sql(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload) VALUES
         ($1, NULL, 'play', now(), -500, 'ios', '{"k":"neg"}'),
         (NULL, NULL, NULL, now(), NULL, NULL, NULL),
         ($2, NULL, 'click', now(), 1000, 'web', '{"k":"unknown"}'),
         ($1, NULL, 'play', 'infinity', 1000, 'tv', NULL),
         ($1, NULL, 'play', '1970-01-01T00:00:00Z', 2147483647, 'tv', jsonb_build_object('big', repeat('x', 250000))),
         ($1, NULL, 'play', '2999-12-31T23:59:59.999999Z', 0, E'dev\\u0001ice', '{"u":"ünï\\u0007 \\"q\\" 🎧"}'),
         ($3, NULL, 'play', now(), 1, 'tv', jsonb_build_object('huge', repeat('x', 1000000)))`,
        [CONTENT_IDS[0], unknown, CONTENT_IDS[1]],
      );
      await waitFor('the good rows in Redis and the bad row dead-lettered', async () => {
        const dead = await h.sql<{ n: string }>(
          `SELECT count(*) AS n FROM engagement_pipeline.dead_letters WHERE sink = 'source'`,
        );
        const count = await h.redis.client.get(`${h.redis.prefix}content:count:${CONTENT_IDS[0]}`);
        return dead[0].n === '1' && count === '3';
      });
      const issues = await runtime.metrics.enrichmentIssues.get();
      const byReason = Object.fromEntries(issues.values.map((v) => [v.labels.reason, v.value]));
      assert.deepEqual(byReason, { negative_duration: 1, null_content_id: 1, unknown_content: 1 });
    } finally {
      await runtime.stop();
    }
    const rows = await duckdbQuery(
      h.duckdbFile,
      `SELECT content_id::VARCHAR AS content_id, duration_ms, engagement_seconds::VARCHAR AS secs, engagement_pct::VARCHAR AS pct,
              content_type, length(raw_payload::VARCHAR) > 250000 AS big, event_ts::VARCHAR AS ts
       FROM engagement.events_enriched ORDER BY event_id`,
    );
    assert.equal(rows.length, 5, 'all but the undecodable row and the 1 MB payload');
    assert.deepEqual(rows[0], {
      content_id: CONTENT_IDS[0],
      duration_ms: -500,
      secs: null,
      pct: null,
      content_type: 'video',
      big: false,
      ts: rows[0].ts,
    });
    assert.equal(rows[1].content_id, null);
    assert.equal(rows[2].content_type, null, 'unknown content: NULL content fields');
    assert.equal(rows[2].secs, '1.000');
    assert.equal(rows[3].big, true, '250 kB payload kept whole');
    assert.equal(rows[3].secs, '2147483.647');
    assert.equal(rows[3].pct, '7158.28');
    assert.match(String(rows[4].ts), /^2999-12-31 23:59:59\.999999/);
    const dead = await h.sql<{ last_error: string }>(
      `SELECT last_error FROM engagement_pipeline.dead_letters WHERE sink = 'source'`,
    );
    assert.match(dead[0].last_error, /event_ts/);
    // Past DuckDB's text limit: dead-lettered for DuckDB alone, with the reason (Redis counted it).
    const analytics = await h.sql<{ last_error: string }>(
      `SELECT last_error FROM engagement_pipeline.dead_letters WHERE sink = 'analytics'`,
    );
    assert.equal(analytics.length, 1);
    assert.match(analytics[0].last_error, /raw_payload is 1,000,0\d\d bytes, more than the 262,000/);
    assert.equal(await h.redis.client.get(`${h.redis.prefix}content:count:${CONTENT_IDS[1]}`), '1');
  });
  it('keeps a leading byte-order mark in text and JSON values (nothing stripped on the way)', async () => {
    const runtime = await h.start();
    try {
      const [{ id }] = await h.sql<{ id: string }>(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
         VALUES ($1, NULL, 'play', now(), 1000, E'\\uFEFFios', jsonb_build_object('t', E'\\uFEFFx')) RETURNING id`,
        [CONTENT_IDS[1]],
      );
      // The content's last event is the previous test's until this one is applied: wait for this one.
      await waitFor('the event in Redis', async () => {
        const last = await h.redis.client.get(`${h.redis.prefix}content:last:${CONTENT_IDS[1]}`);
        return last !== null && String(JSON.parse(last).event_id) === String(id);
      });
      const last = JSON.parse((await h.redis.client.get(`${h.redis.prefix}content:last:${CONTENT_IDS[1]}`))!);
      assert.equal(last.device, '\ufeffios');
      assert.deepEqual(last.raw_payload, { t: '\ufeffx' });
    } finally {
      await runtime.stop();
    }
    // Asked in SQL: @duckdb/node-api's own string reader (a default TextDecoder) drops the mark.
    const rows = await duckdbQuery(
      h.duckdbFile,
      `SELECT unicode(device) AS first, length(device) AS len, raw_payload::VARCHAR AS payload
       FROM engagement.events_enriched WHERE content_id = '${CONTENT_IDS[1]}' AND device LIKE '%ios'`,
    );
    assert.deepEqual(rows, [{ first: 0xfeff, len: '4', payload: '{"t":"\ufeffx"}' }]);
  });
});
