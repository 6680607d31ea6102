import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import { runCli } from '../helpers/cli.js';
import { freshDatabase, query } from '../helpers/postgres.js';

/**
 * `engagement migrate` on a user's own tables, from the outside (the CLI): what it publishes
 * must not break the user's writes, and a second database on the same server is told which
 * slot to use instead of being handed the first database's slot.
 */
describe('migrate on user tables', () => {
  const dbs: { url: string; drop(): Promise<void> }[] = [];
  before(async () => {
    for (let i = 0; i < 2; i++) dbs.push(await freshDatabase('mut'));
  });
  after(async () => {
    for (const db of dbs) await db.drop();
  });

  it('refuses to publish a content table without replica identity (the user could no longer UPDATE it)', async () => {
    const [db] = dbs;
    const slot = `mut_${randomBytes(4).toString('hex')}`;
    await query(
      db.url,
      `CREATE TABLE catalog(cid BIGINT, content_type TEXT, length_seconds INT);
       CREATE TABLE plays(id BIGSERIAL PRIMARY KEY, content_id BIGINT, user_id BIGINT, event_type TEXT,
                          event_ts TIMESTAMPTZ DEFAULT now(), duration_ms INT, device TEXT);
       INSERT INTO catalog VALUES (1, 'article', 350);`,
    );
    const env = {
      DATABASE_URL: db.url,
      EVENTS_TABLE: 'plays',
      CONTENT_TABLE: 'catalog',
      CONTENT_KEY: 'cid',
      SLOT_NAME: slot,
      PUBLICATION_NAME: slot,
      LOG_LEVEL: 'warn',
    };
    const refused = await runCli(['migrate'], env);
    assert.equal(refused.code, 2, refused.output);
    assert.match(refused.output, /EP_ERR_SOURCE_SHAPE: public\.catalog has no replica identity/);
    assert.match(refused.output, /REPLICA IDENTITY FULL/);
    // Nothing was published, so the user's own writes still work.
    await query(db.url, `UPDATE catalog SET length_seconds = 300 WHERE cid = 1`);
    assert.equal((await query(db.url, `SELECT 1 FROM pg_publication WHERE pubname = $1`, [slot])).length, 0);
    assert.equal(
      (await query(db.url, `SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [slot])).length,
      0,
    );

    // With the replica identity the message names, migrate goes through and updates keep working.
    await query(db.url, `ALTER TABLE catalog REPLICA IDENTITY FULL`);
    const migrated = await runCli(['migrate'], env);
    assert.equal(migrated.code, 0, migrated.output);
    await query(db.url, `UPDATE catalog SET length_seconds = 350 WHERE cid = 1`);
    await query(db.url, `DELETE FROM plays`);
  });

  it("refuses a CONTENT_KEY outside the content table's replica identity (deletes could not be recognised)", async () => {
    const [db] = dbs;
    const slot = `mut_${randomBytes(4).toString('hex')}`;
    await query(
      db.url,
      `CREATE SCHEMA k;
       CREATE TABLE k.content(id SERIAL PRIMARY KEY, ext_id BIGINT UNIQUE, content_type TEXT, length_seconds INT);
       CREATE TABLE k.engagement_events(id BIGSERIAL PRIMARY KEY, content_id BIGINT, user_id BIGINT,
                          event_ts TIMESTAMPTZ DEFAULT now(), duration_ms INT);`,
    );
    const env = {
      DATABASE_URL: db.url,
      EVENTS_TABLE: 'k.engagement_events',
      CONTENT_TABLE: 'k.content',
      CONTENT_KEY: 'ext_id',
      SLOT_NAME: slot,
      PUBLICATION_NAME: slot,
      LOG_LEVEL: 'warn',
    };
    const refused = await runCli(['migrate'], env);
    assert.equal(refused.code, 2, refused.output);
    assert.match(
      refused.output,
      /EP_ERR_SOURCE_SHAPE: k\.content's replica identity \(id\) does not include CONTENT_KEY ext_id/,
    );
    await query(db.url, `ALTER TABLE k.content REPLICA IDENTITY FULL`);
    const migrated = await runCli(['migrate'], env);
    assert.equal(migrated.code, 0, migrated.output);
    await query(db.url, `SELECT pg_drop_replication_slot($1)`, [slot]);
  });

  it("a partitioned events table is published through its root (else its rows arrive under the partitions' names)", async () => {
    const [db] = dbs;
    const slot = `mut_${randomBytes(4).toString('hex')}`;
    await query(
      db.url,
      `CREATE SCHEMA p;
       CREATE TABLE p.content(content_id BIGINT PRIMARY KEY, content_type TEXT, length_seconds INT);
       CREATE TABLE p.events(id BIGSERIAL, content_id BIGINT, user_id BIGINT, event_ts TIMESTAMPTZ NOT NULL DEFAULT now(),
                             duration_ms INT, PRIMARY KEY (id, event_ts)) PARTITION BY RANGE (event_ts);
       CREATE TABLE p.events_all PARTITION OF p.events DEFAULT;
       CREATE PUBLICATION ${slot} FOR TABLE p.content, p.events;`,
    );
    const env = {
      DATABASE_URL: db.url,
      EVENTS_TABLE: 'p.events',
      CONTENT_TABLE: 'p.content',
      SLOT_NAME: slot,
      PUBLICATION_NAME: slot,
      LOG_LEVEL: 'warn',
    };
    // A publication made before (by hand, or by an older migrate) without the option: run refuses.
    const run = await runCli(['run'], {
      ...env,
      REDIS_PREFIX: `mut:${slot}:`,
      ANALYTICS_URL: 'duckdb::memory:',
      PORT: '0',
    });
    assert.equal(run.code, 2, run.output);
    assert.match(
      run.output,
      /EP_ERR_SOURCE_SHAPE: p\.events is partitioned and publication \w+ publishes partitions/,
    );
    const migrated = await runCli(['migrate'], env);
    assert.equal(migrated.code, 0, migrated.output);
    const [pub] = await query<{ pubviaroot: boolean }>(
      db.url,
      `SELECT pubviaroot FROM pg_publication WHERE pubname = $1`,
      [slot],
    );
    assert.equal(pub.pubviaroot, true);
    await query(db.url, `SELECT pg_drop_replication_slot($1)`, [slot]);
  });

  it("a first migrate whose content history cannot be seeded leaves no slot behind: the next one creates it, not 'recreate it'", async () => {
    const db = await freshDatabase('mut');
    dbs.push(db);
    const slot = `mut_${randomBytes(4).toString('hex')}`;
    const env = { DATABASE_URL: db.url, SLOT_NAME: slot, PUBLICATION_NAME: slot, LOG_LEVEL: 'warn' };
    assert.equal((await runCli(['migrate'], env)).code, 0);
    // As if the state schema existed but this slot never had: then seeding fails.
    await query(
      db.url,
      `SELECT pg_drop_replication_slot($1);
       DELETE FROM engagement_pipeline.slot_state;
       INSERT INTO content VALUES (gen_random_uuid(), 's1', 'T', 'video', 300, now());
       CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'seed refused'; END$$;
       CREATE TRIGGER refuse BEFORE INSERT ON engagement_pipeline.content_history FOR EACH ROW EXECUTE FUNCTION refuse();`.replace(
        '$1',
        `'${slot}'`,
      ),
    );
    const failed = await runCli(['migrate'], env);
    assert.notEqual(failed.code, 0, failed.output);
    assert.match(failed.output, /seed refused/);
    assert.equal(
      (await query(db.url, `SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [slot])).length,
      0,
    );
    assert.equal((await query(db.url, `SELECT 1 FROM engagement_pipeline.slot_state`)).length, 0);
    await query(db.url, `DROP TRIGGER refuse ON engagement_pipeline.content_history`);
    const again = await runCli(['migrate'], env);
    assert.equal(again.code, 0, again.output);
    assert.doesNotMatch(again.output, /no longer exists/);
    assert.equal(
      (await query(db.url, `SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [slot])).length,
      1,
    );
    await query(db.url, `SELECT pg_drop_replication_slot($1)`, [slot]);
  });

  it('a slot of the same name in another database is refused with one line, by migrate and by run', async () => {
    const [first, second] = dbs;
    const slot = `mut_${randomBytes(4).toString('hex')}`;
    const env = (url: string) => ({
      DATABASE_URL: url,
      SLOT_NAME: slot,
      PUBLICATION_NAME: slot,
      LOG_LEVEL: 'warn',
    });
    const a = await runCli(['migrate'], env(first.url));
    assert.equal(a.code, 0, a.output);
    const b = await runCli(['migrate'], env(second.url));
    assert.equal(b.code, 2, b.output);
    assert.match(b.output, new RegExp(`EP_ERR_SLOT_IN_USE: replication slot '${slot}' belongs to database`));
    assert.match(b.output, /SLOT_NAME/);
    const run = await runCli(['run'], {
      ...env(second.url),
      REDIS_PREFIX: `mut:${slot}:`,
      ANALYTICS_URL: 'duckdb::memory:',
      PORT: '0',
    });
    assert.equal(run.code, 2, run.output);
    assert.match(run.output, /EP_ERR_SLOT_IN_USE/);
    await query(first.url, `SELECT pg_drop_replication_slot($1)`, [slot]);
  });
});
