import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { migrate } from '../../src/db/migrate.js';
import { SOURCE_TABLES_SQL } from '../../src/db/schema.js';
import { PipelineError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { readStreamedShape } from '../../src/runtime.js';
import { runCli } from '../helpers/cli.js';
import { freshDatabase, query } from '../helpers/postgres.js';

/**
 * A publication made before `engagement migrate` (by the user, by hand) is checked, not taken
 * as it is: pgoutput applies its actions, row filters and column lists on the server, so what
 * it leaves out would never reach the stream and nothing downstream could tell.
 */
describe('an existing publication is checked by migrate and at the start of run', () => {
  let db: { url: string; name: string; drop(): Promise<void> };
  before(async () => {
    db = await freshDatabase('pubchk');
    await query(db.url, SOURCE_TABLES_SQL);
    await query(
      db.url,
      `CREATE SCHEMA media;
       CREATE TABLE media.catalog(cid BIGINT PRIMARY KEY, content_type TEXT, length_seconds INT);
       CREATE TABLE media.plays(id BIGSERIAL PRIMARY KEY, content_id BIGINT, event_ts TIMESTAMPTZ DEFAULT now(),
                                duration_ms INT, device TEXT);`,
    );
  });
  after(async () => {
    await db.drop();
  });

  const fresh = () => `pc_${randomBytes(4).toString('hex')}`;
  /** The start-up checks `run` and `capture` make, in process. */
  const start = (publicationName: string, tables: { eventsTable?: string; contentTable?: string } = {}) =>
    readStreamedShape(db.url, { publicationName, ...tables }, silentLogger());
  const refused = async (
    promise: Promise<unknown>,
    code: string,
    message: RegExp,
  ): Promise<PipelineError> => {
    const err = await promise.then(
      () => assert.fail('expected a refusal'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof PipelineError, String(err));
    assert.equal(err.code, code, err.oneLine());
    assert.equal(err.kind, 'config');
    assert.match(err.oneLine(), message);
    assert.doesNotMatch(err.oneLine(), /\n/);
    return err;
  };

  it("the tester's publication: migrate exits 2 with one line naming every problem, run refuses too, nothing is created", async () => {
    const pub = fresh();
    await query(
      db.url,
      `CREATE PUBLICATION ${pub} FOR TABLE content,
         engagement_events (id, content_id, event_ts, event_type) WHERE (event_type <> 'click')
         WITH (publish = 'insert')`,
    );
    const env = { DATABASE_URL: db.url, SLOT_NAME: pub, PUBLICATION_NAME: pub, LOG_LEVEL: 'warn' };
    const migrated = await runCli(['migrate'], env);
    assert.equal(migrated.code, 2, migrated.output);
    const lines = migrated.output.trim().split('\n');
    assert.equal(lines.length, 1, migrated.output);
    assert.match(lines[0], new RegExp(`^engagement: EP_ERR_PUBLICATION: publication ${pub} `));
    assert.match(lines[0], /does not publish update, delete, truncate/);
    assert.match(lines[0], /a row filter \(WHERE \(event_type <> 'click'::text\)\)/);
    assert.match(
      lines[0],
      /a column list without user_id, duration_ms, device, raw_payload on public\.engagement_events/,
    );
    assert.match(
      lines[0],
      /fix: ALTER PUBLICATION "\w+" SET \(publish = 'insert, update, delete, truncate'\)/,
    );
    assert.match(
      lines[0],
      /ALTER PUBLICATION "\w+" SET TABLE "public"\."content", "public"\."engagement_events"/,
    );
    assert.doesNotMatch(lines[0], /migrated|present/);
    // Refused before the slot: nothing streams from a publication that filters.
    assert.equal(
      (await query(db.url, `SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [pub])).length,
      0,
    );

    const run = await runCli(['run'], {
      ...env,
      REDIS_PREFIX: `pubchk:${pub}:`,
      ANALYTICS_URL: 'duckdb::memory:',
      PORT: '0',
    });
    assert.equal(run.code, 2, run.output);
    assert.match(run.output, /EP_ERR_PUBLICATION: publication \w+ does not publish update, delete, truncate/);

    // The fix the line names makes both go through.
    await query(db.url, `ALTER PUBLICATION ${pub} SET (publish = 'insert, update, delete, truncate')`);
    await query(db.url, `ALTER PUBLICATION ${pub} SET TABLE content, engagement_events`);
    await start(pub);
    const report = await migrate(db.url, { slotName: pub, publicationName: pub });
    assert.equal(report.publication, 'present');
    await query(db.url, `SELECT pg_drop_replication_slot($1)`, [pub]);
  });

  it('a row filter alone is refused', async () => {
    const pub = fresh();
    await query(
      db.url,
      `CREATE PUBLICATION ${pub} FOR TABLE content WHERE (length_seconds > 0), engagement_events`,
    );
    const message = /row filter \(WHERE \(length_seconds > 0\)\) on public\.content: changes/;
    await refused(start(pub), 'EP_ERR_PUBLICATION', message);
    await refused(migrate(db.url, { slotName: pub, publicationName: pub }), 'EP_ERR_PUBLICATION', message);
  });

  it('a column list that leaves a column out is refused; one naming every column is not', async () => {
    const pub = fresh();
    await query(
      db.url,
      `CREATE PUBLICATION ${pub} FOR TABLE content,
         engagement_events (id, content_id, user_id, event_type, event_ts, duration_ms, raw_payload)`,
    );
    await refused(
      start(pub),
      'EP_ERR_PUBLICATION',
      /a column list without device on public\.engagement_events/,
    );
    await query(
      db.url,
      `ALTER PUBLICATION ${pub} SET TABLE content,
         engagement_events (id, content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)`,
    );
    await start(pub);
  });

  it("publish = 'insert' is refused (content updates and TRUNCATE ... RESTART IDENTITY would go unseen)", async () => {
    const pub = fresh();
    await query(
      db.url,
      `CREATE PUBLICATION ${pub} FOR TABLE content, engagement_events WITH (publish = 'insert')`,
    );
    await refused(start(pub), 'EP_ERR_PUBLICATION', /does not publish update, delete, truncate: /);
    await query(db.url, `ALTER PUBLICATION ${pub} SET (publish = 'insert, update, delete')`);
    await refused(start(pub), 'EP_ERR_PUBLICATION', /does not publish truncate: /);
  });

  it('a table missing from the publication: run refuses and says to migrate, migrate adds it', async () => {
    const pub = fresh();
    await query(db.url, `CREATE PUBLICATION ${pub} FOR TABLE content`);
    const err = await refused(
      start(pub),
      'EP_ERR_PUBLICATION',
      /publication \w+ does not publish public\.engagement_events: /,
    );
    assert.match(err.hint ?? '', /engagement migrate/);
    const report = await migrate(db.url, { slotName: pub, publicationName: pub });
    assert.equal(report.publication, 'updated');
    await start(pub);
    await query(db.url, `SELECT pg_drop_replication_slot($1)`, [pub]);
  });

  it('a publication that does not exist is refused at start', async () => {
    await refused(
      start(fresh()),
      'EP_ERR_PUBLICATION_MISSING',
      /publication \w+ does not exist.*engagement migrate/,
    );
  });

  it('schema-qualified tables are checked by their own names', async () => {
    const pub = fresh();
    const tables = { eventsTable: 'media.plays', contentTable: 'media.catalog' };
    await query(
      db.url,
      `CREATE PUBLICATION ${pub} FOR TABLE media.catalog, media.plays WHERE (device <> 'tv')`,
    );
    await refused(
      start(pub, tables),
      'EP_ERR_PUBLICATION',
      /row filter \(WHERE \(device <> 'tv'::text\)\) on media\.plays/,
    );
    await query(db.url, `ALTER PUBLICATION ${pub} SET TABLE media.catalog, media.plays`);
    await start(pub, tables);
  });

  it('what migrate creates, FOR TABLES IN SCHEMA and FOR ALL TABLES pass (no filter, every action)', async () => {
    const created = fresh();
    const report = await migrate(db.url, { slotName: created, publicationName: created });
    assert.equal(report.publication, 'created');
    const [row] = await query<Record<string, boolean>>(
      db.url,
      `SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1`,
      [created],
    );
    assert.deepEqual(row, { pubinsert: true, pubupdate: true, pubdelete: true, pubtruncate: true });
    await start(created);
    await query(db.url, `SELECT pg_drop_replication_slot($1)`, [created]);

    const schema = fresh();
    await query(db.url, `CREATE PUBLICATION ${schema} FOR TABLES IN SCHEMA public`);
    await start(schema);
    await refused(
      start(schema, { eventsTable: 'media.plays', contentTable: 'media.catalog' }),
      'EP_ERR_PUBLICATION',
      /does not publish media\.catalog and media\.plays/,
    );

    const all = fresh();
    await query(db.url, `CREATE PUBLICATION ${all} FOR ALL TABLES`);
    await start(all);
    await start(all, { eventsTable: 'media.plays', contentTable: 'media.catalog' });
  });
});
