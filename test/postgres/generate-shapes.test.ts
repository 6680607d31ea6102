import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { SOURCE_TABLES_SQL } from '../../src/db/schema.js';
import { DEFAULT_CATALOG_SIZE } from '../../src/generator/catalog.js';
import { SHAPES } from '../fixtures/source-shapes.js';
import { runCli } from '../helpers/cli.js';
import { freshDatabase, query } from '../helpers/postgres.js';

/**
 * `engagement generate` from the outside (the CLI) on each source shape the pipeline accepts:
 * the rows land in the tables EVENTS_TABLE / CONTENT_TABLE name (not the default ones), keyed
 * with the key columns' types, and the user's own rows are left as they were.
 */
describe('generate on the source shapes', () => {
  const dbs: { drop(): Promise<void> }[] = [];
  after(async () => {
    for (const db of dbs) await db.drop();
  });

  for (const shape of SHAPES) {
    it(`fills ${shape.name}`, async () => {
      const db = await freshDatabase('gshape');
      dbs.push(db);
      // With EVENTS_TABLE set the default tables exist beside the user's: generate must not write there instead.
      const elsewhere = shape.env.EVENTS_TABLE !== undefined;
      await query(
        db.url,
        elsewhere ? `${SOURCE_TABLES_SQL};${shape.tables}` : (shape.tables ?? SOURCE_TABLES_SQL),
      );
      await query(db.url, shape.content);
      const env = { DATABASE_URL: db.url, LOG_LEVEL: 'warn', ...shape.env };
      const events = shape.env.EVENTS_TABLE ?? 'engagement_events';
      const content = shape.env.CONTENT_TABLE ?? 'content';
      const key = shape.tables ? 'content_id' : 'id';
      const userRow = await query(db.url, `SELECT * FROM ${content} WHERE ${key}::text = $1`, [
        shape.contentKey,
      ]);

      for (let run = 1; run <= 2; run++) {
        const generated = await runCli(['generate', '--count', '200', '--rate', '1000', '--seed', '7'], env);
        assert.equal(generated.code, 0, generated.output);
        assert.match(generated.output, /inserted 200 events/);
        assert.ok(generated.output.includes(`(${events.includes('.') ? events : `public.${events}`})`));

        const [counts] = await query<{ events: string; content: string; orphans: string }>(
          db.url,
          `SELECT (SELECT count(*) FROM ${events}) AS events,
                  (SELECT count(*) FROM ${content}) AS content,
                  (SELECT count(*) FROM ${events} e
                    WHERE NOT EXISTS (SELECT 1 FROM ${content} c WHERE c.${key} = e.content_id)) AS orphans`,
        );
        assert.equal(Number(counts.events), 200 * run);
        // The user's row plus the catalogue, once: a second run adds no content.
        assert.equal(Number(counts.content), DEFAULT_CATALOG_SIZE + 1);
        assert.equal(Number(counts.orphans), 0);
      }
      if (elsewhere) {
        const [defaults] = await query<{ n: string }>(
          db.url,
          `SELECT (SELECT count(*) FROM engagement_events) + (SELECT count(*) FROM content) AS n`,
        );
        assert.equal(Number(defaults.n), 0, 'rows went into the default tables');
      }

      // Keys of the columns' types: integers for BIGINT keys, in the JSON-exact range; the
      // vocabulary CHECK constraints of the default tables allow.
      const rows = await query<{
        content_id: string;
        user_id: string | null;
        event_type: string;
        type: string;
      }>(
        db.url,
        `SELECT e.content_id::text AS content_id, e.user_id::text AS user_id, e.event_type, c.content_type AS type
           FROM ${events} e JOIN ${content} c ON c.${key} = e.content_id`,
      );
      const keyPattern = shape.tables ? /^[1-9]\d{0,15}$/ : /^[0-9a-f]{8}-[0-9a-f]{4}-4/;
      for (const r of rows) {
        assert.match(r.content_id, keyPattern);
        if (r.user_id !== null) assert.match(r.user_id, keyPattern);
        assert.ok(['play', 'pause', 'finish', 'click'].includes(r.event_type), r.event_type);
        assert.ok(['podcast', 'newsletter', 'video'].includes(r.type), r.type);
      }
      assert.ok(rows.filter((r) => r.user_id !== null).length > 150);
      assert.deepEqual(
        await query(db.url, `SELECT * FROM ${content} WHERE ${key}::text = $1`, [shape.contentKey]),
        userRow,
        "the user's content row changed",
      );
    });
  }

  /** `generate` into `schema`.content / `schema`.events (its columns after content_id), refused. */
  async function refusedInto(schema: string, eventColumns: string) {
    const db = await freshDatabase('gshape');
    dbs.push(db);
    await query(
      db.url,
      `CREATE SCHEMA ${schema};
       CREATE TABLE ${schema}.content (content_id BIGINT PRIMARY KEY, content_type TEXT, length_seconds INT);
       CREATE TABLE ${schema}.events (id BIGSERIAL PRIMARY KEY, content_id BIGINT, ${eventColumns});`,
    );
    const refused = await runCli(['generate', '--count', '200', '--rate', '1000', '--seed', '7'], {
      DATABASE_URL: db.url,
      LOG_LEVEL: 'warn',
      EVENTS_TABLE: `${schema}.events`,
      CONTENT_TABLE: `${schema}.content`,
    });
    assert.equal(refused.code, 2, refused.output);
    const rows = async (table: string) =>
      Number((await query<{ n: string }>(db.url, `SELECT count(*) AS n FROM ${schema}.${table}`))[0].n);
    return { output: refused.output, rows };
  }

  it('refuses, in one line, a table with a NOT NULL column it cannot fill', async () => {
    const refused = await refusedInto(
      'strict',
      'user_id BIGINT, event_type TEXT, event_ts TIMESTAMPTZ DEFAULT now(), duration_ms INT, tenant TEXT NOT NULL',
    );
    assert.match(
      refused.output,
      /^engagement: EP_ERR_SOURCE_SHAPE: strict\.events\.tenant is NOT NULL without a default.*\n$/,
    );
    assert.equal(await refused.rows('content'), 0, 'content was inserted before the refusal');
  });

  it('refuses, in one line, a table whose column types are too narrow for generated values', async () => {
    const refused = await refusedInto(
      'narrow',
      'user_id BIGINT, event_type VARCHAR(4), event_ts TIMESTAMPTZ DEFAULT now(), duration_ms INT',
    );
    assert.match(
      refused.output,
      /^engagement: EP_ERR_SOURCE_SHAPE: generated rows do not fit narrow\.events: value too long for type character varying\(4\).*\n$/m,
    );
    assert.equal(await refused.rows('events'), 0, 'no value was cut to fit');
  });
});
