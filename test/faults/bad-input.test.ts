import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Runtime } from '../../src/runtime.js';
import { CONTENT_IDS } from '../helpers/pipeline.js';
import { createFaultHarness, drainAndStop, type FaultHarness, sleep } from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';

const DOOMED = '00000000-0000-4000-8000-0000000000dd';
const UNKNOWN = '00000000-0000-4000-8000-0000000000ff';

/**
 * Everything the source tables admit, while normal traffic flows: the stream must deliver
 * each row (or dead-letter what a destination cannot represent: event_ts = ±infinity for all
 * of them, an event_ts past DuckDB's TIMESTAMPTZ range for the analytics sink only) and go on.
 */
describe('fault: bad input while traffic flows', () => {
  let h: FaultHarness;
  let runtime: Runtime | null = null;
  before(async () => {
    h = await createFaultHarness();
    // Users' tables may lack the foreign key; then events can name unknown or deleted content.
    await h.sql('ALTER TABLE engagement_events DROP CONSTRAINT IF EXISTS engagement_events_content_id_fkey');
    await h.sql(
      `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
       VALUES ($1, 'doomed', 'Doomed', 'video', 60, now())`,
      [DOOMED],
    );
  });
  after(async () => {
    await runtime?.stop().catch(() => undefined);
    await h.cleanup();
  });

  it('delivers every representable row exactly once, dead-letters the rest, never stops', async () => {
    runtime = await h.start({ externalBatchSize: 50 });
    const traffic = startTraffic(h.databaseUrl, 20);
    const started = Date.now();
    try {
      await sleep(1000);
      const [video, podcast, newsletter] = CONTENT_IDS;
      // NULL in every nullable column, unknown content, negative and maximal durations, far
      // past and future and infinite timestamps (the first and last instants Postgres has; the
      // last is beyond DuckDB's TIMESTAMPTZ), a 1 MB payload, unicode and control characters.
      await h.sql(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload) VALUES
         (NULL, NULL, NULL, now(), NULL, NULL, NULL),
         ($1, NULL, NULL, now(), NULL, NULL, 'null'::jsonb),
         ($4, gen_random_uuid(), 'click', now(), 1000, 'web', '{"k":"unknown content"}'),
         ($1, NULL, 'play', now(), -1, 'ios', '{"k":"negative"}'),
         ($1, NULL, 'play', now(), -2147483648, 'ios', '{"k":"most negative"}'),
         ($1, NULL, 'play', now(), 2147483647, 'tv', '{"k":"max int"}'),
         ($3, NULL, 'play', now(), 2147483647, 'tv', '{"k":"max int, zero length"}'),
         ($2, NULL, 'finish', '1970-01-01T00:00:00Z', 1, 'tv', '{"k":"epoch"}'),
         ($2, NULL, 'finish', '0001-01-01T00:00:00Z', 1, 'tv', '{"k":"year 1"}'),
         ($2, NULL, 'finish', '2200-06-01T12:00:00Z', 1, 'tv', '{"k":"2200"}'),
         ($2, NULL, 'finish', '4714-11-24 00:00:00+00 BC', 1, 'tv', '{"k":"first instant"}'),
         ($2, NULL, 'finish', '0044-03-15 12:00:00.000001+00 BC', 1, 'tv', '{"k":"44 BC"}'),
         ($2, NULL, 'finish', '10000-01-01 00:00:00+00', 1, 'tv', '{"k":"year 10000"}'),
         ($2, NULL, 'finish', '294276-12-31 23:59:59.999999+00', 1, 'tv', '{"k":"last instant"}'),
         ($2, NULL, 'finish', 'infinity', 1, 'tv', '{"k":"infinity"}'),
         ($2, NULL, 'finish', '-infinity', 1, 'tv', '{"k":"-infinity"}'),
         ($1, NULL, 'play', now(), 5000, 'tv', jsonb_build_object('big', repeat('x', 1048576))),
         ($1, NULL, 'play', now(), 5000, E'dev\\u0001\\t\\n\\r\\b\\u001fice', jsonb_build_object('u', E'ünïcødé \\u0007 \\u001b[31m "quoted" \\\\ 🎧 \\u2028 \\ufeff 中文 עברית')),
         ($1, NULL, 'play', now(), 5000, repeat('d', 10000), '{"deep":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}')`,
        [video, podcast, newsletter, UNKNOWN],
      );
      // A content row deleted while its events stream in.
      for (let i = 0; i < 10; i++) {
        await h.sql(
          `INSERT INTO engagement_events (content_id, event_type, event_ts, duration_ms, device)
           SELECT $1, 'play', now(), 30000, 'web' FROM generate_series(1, 20)`,
          [DOOMED],
        );
        if (i === 4) await h.sql('DELETE FROM content WHERE id = $1', [DOOMED]);
        await sleep(100);
      }
      // A schema change on both source tables mid-stream (pgoutput sends new relation messages).
      await h.sql(`ALTER TABLE engagement_events ADD COLUMN campaign TEXT DEFAULT 'spring'`);
      await h.sql(`ALTER TABLE content ADD COLUMN author TEXT`);
      await h.sql(
        `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts, author)
         VALUES (gen_random_uuid(), 'after-alter', 'After alter', 'podcast', 100, now(), 'me')`,
      );
      await sleep(1000);
      // One transaction of 100,000 rows.
      await h.sql(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, campaign)
         SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), 'click', now() - make_interval(secs => g % 300), g, 'web', 'bulk'
         FROM generate_series(1, 100000) g`,
        [CONTENT_IDS],
      );
      await sleep(1000);
    } finally {
      await traffic.stop();
    }
    const elapsedMs = await drainAndStop(h, runtime, started, { timeoutMs: 180_000 });
    runtime = null;
    const r = await reconcile(h, { externalBatchSize: 50, analyticsDeadLetters: true });
    const logLines = {
      'bad source row dead-lettered': h.logs.count(/bad source row dead-lettered/),
      'negative duration_ms': h.logs.count(/negative duration_ms/),
      'DuckDB cannot hold': h.logs.count(/DuckDB cannot hold/),
    };
    recordScenario({
      id: '11-bad-input',
      scenario: 'bad input',
      fault:
        'NULLs in every nullable column, unknown content_id, duration_ms −1 / −2^31 / 2^31−1, event_ts 4714 BC, 44 BC, 0001, 1970, 2200, 10000, 294276 (Postgres’s first and last instants), ±infinity, a 1 MiB raw_payload, control and non-BMP characters, a 10 kB device, a content row deleted while its events stream, ALTER TABLE ADD COLUMN on both tables mid-stream, one 100,000-row transaction; traffic throughout',
      reconciliation: r,
      recoveryMs: null,
      logLines,
      notes: `all sinks caught up ${(elapsedMs / 1000).toFixed(1)} s after the first bad row; ${r.analyticsDeadLettered} row(s) DuckDB cannot hold (beyond its TIMESTAMPTZ range, a 1 MiB payload) dead-lettered for analytics only`,
    });
    assertExact(r);
    assert.equal(r.badRows, 2, 'exactly the ±infinity rows were dead-lettered by the source');
    assert.equal(
      r.analyticsDeadLettered,
      2,
      'exactly the 294276 row and the 1 MiB payload were dead-lettered for DuckDB',
    );
    // One "refused" line per write the fan-out had to split: the two rows DuckDB cannot hold
    // make one line when they were merged into the same write, two when they were not.
    const { 'DuckDB cannot hold': refusals, ...exact } = logLines;
    assert.deepEqual(
      exact,
      { 'bad source row dead-lettered': 2, 'negative duration_ms': 2 },
      h.logs.problems(),
    );
    assert.ok(refusals >= 1 && refusals <= 2, `${refusals} refusal lines\n${h.logs.problems()}`);
    assert.ok(r.events > 100_000);
  });
});
