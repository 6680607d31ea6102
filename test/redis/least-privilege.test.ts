import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createPool } from '../../src/db/postgres.js';
import { ensureStateSchema } from '../../src/db/schema.js';
import { startMockExternal } from '../../src/mock-external/server.js';
import { runCli, spawnCli, type CliProcess } from '../helpers/cli.js';
import { freshDatabase, query } from '../helpers/postgres.js';
import { testRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

describe('engagement migrate --create-role: the pipeline runs as a least-privilege role', () => {
  const role = `ep_test_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let roleUrl: string;
  let pipeline: CliProcess | null = null;
  const redis = testRedis();

  before(async () => {
    db = await freshDatabase('role');
    const url = new URL(db.url);
    url.username = role;
    url.password = password;
    roleUrl = url.toString();
  });

  after(async () => {
    if (pipeline && pipeline.child.exitCode === null) {
      pipeline.child.kill('SIGKILL');
      await pipeline.exited;
    }
    await redis.cleanup();
    await db.drop();
    await query(process.env.TEST_PG_URL!, `DROP ROLE IF EXISTS ${role}`);
  });

  it('creates the role with only REPLICATION, SELECT on the source tables and its state schema', async () => {
    const { code, output } = await runCli(['migrate', '--create-role', role], {
      DATABASE_URL: db.url,
      PIPELINE_ROLE_PASSWORD: password,
    });
    assert.equal(code, 0, output);
    assert.match(output, new RegExp(`role ${role} created: LOGIN REPLICATION`));
    assert.ok(!output.includes(password), 'a given password is never printed');

    const [attrs] = await query<Record<string, boolean>>(
      db.url,
      `SELECT rolreplication, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = $1`,
      [role],
    );
    assert.deepEqual(attrs, {
      rolreplication: true,
      rolsuper: false,
      rolcreatedb: false,
      rolcreaterole: false,
      rolbypassrls: false,
    });
    const denied = async (sql: string) =>
      assert.rejects(query(roleUrl, sql), /permission denied|must be owner/, sql);
    await denied(`INSERT INTO engagement_events (event_ts) VALUES (now())`);
    await denied(`UPDATE content SET title = 'x'`);
    await denied(`DELETE FROM engagement_events`);
    await denied(`CREATE TABLE public.intruder (id int)`);
    await query(db.url, 'CREATE TABLE public.secrets (v text)');
    await denied('SELECT * FROM public.secrets');
    // What it may do.
    await query(roleUrl, 'SELECT count(*) FROM engagement_events');
    await query(roleUrl, 'SELECT count(*) FROM engagement_pipeline.dead_letters');
    await query(roleUrl, 'SELECT count(*) FROM engagement_pipeline.content_versions');

    // Running it twice is harmless (the role is brought back to the same grants).
    const again = await runCli(['migrate', '--create-role', role], {
      DATABASE_URL: db.url,
      PIPELINE_ROLE_PASSWORD: password,
    });
    assert.equal(again.code, 0, again.output);
    assert.match(again.output, new RegExp(`role ${role} updated`));
  });

  it("runs `work`'s state-schema step as that role (the schema exists; the role may not create schemas)", async () => {
    // `work` prepares its state tables itself, since a Debezium user may never run migrate.
    const pool = createPool(roleUrl, 1, 'least-privilege-test');
    try {
      await ensureStateSchema(pool);
      await ensureStateSchema(pool);
    } finally {
      await pool.end();
    }
  });

  it('streams every event to the sinks when run as that role, and no secret reaches the logs', async () => {
    // An upgrade adds state tables after the role exists: a plain `migrate` (as the admin)
    // must leave them usable by the role.
    await query(
      db.url,
      'DROP TABLE engagement_pipeline.content_versions, engagement_pipeline.content_history',
    );
    const upgrade = await runCli(['migrate'], { DATABASE_URL: db.url });
    assert.equal(upgrade.code, 0, upgrade.output);
    const owners = await query<{ owner: string }>(
      db.url,
      `SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class
        WHERE relnamespace = 'engagement_pipeline'::regnamespace AND relkind = 'r'`,
    );
    assert.deepEqual(
      owners.map((o) => o.owner),
      [role],
    );
    const dir = mkdtempSync(path.join(tmpdir(), 'engagement-role-'));
    // The external system knows another key: every request fails its signature check (401),
    // so the error paths log too.
    const mock = await startMockExternal({ port: 0, secret: 'not-the-pipelines-key' });
    const externalSecret = randomBytes(16).toString('hex');
    const apiToken = randomBytes(16).toString('hex');
    pipeline = spawnCli(['run'], {
      LOG_LEVEL: 'debug',
      EXTERNAL_URL: mock.url,
      EXTERNAL_SECRET: externalSecret,
      API_TOKEN: apiToken,
      DATABASE_URL: roleUrl,
      REDIS_URL: redis.url,
      REDIS_PREFIX: redis.prefix,
      ANALYTICS_URL: `duckdb:${path.join(dir, 'analytics.duckdb')}`,
      PORT: '0',
    });
    await waitFor('the pipeline to stream', () => /pipeline running/.test(pipeline!.output()), 30_000);
    await query(
      db.url,
      `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
       VALUES ('00000000-0000-4000-8000-0000000000aa', 'role-test', 'Role test', 'video', 60, now())`,
    );
    await query(
      db.url,
      `INSERT INTO engagement_events (content_id, event_type, event_ts, duration_ms, device)
       SELECT '00000000-0000-4000-8000-0000000000aa', 'play', now(), g * 10, 'ios' FROM generate_series(1, 500) g`,
    );
    await waitFor(
      'Redis to count 500 events',
      async () =>
        (await redis.client.get(`${redis.prefix}content:count:00000000-0000-4000-8000-0000000000aa`)) ===
        '500',
      30_000,
    );
    pipeline.child.kill('SIGINT');
    const { code } = await pipeline.exited;
    assert.equal(code, 0, pipeline.output());
    await mock.close();
    const output = pipeline.output();
    assert.match(output, /401/, 'the signature failures were logged');
    for (const [what, secret] of Object.entries({ password, externalSecret, apiToken })) {
      assert.ok(!output.includes(secret), `${what} reached the logs`);
    }
    assert.doesNotMatch(pipeline.output(), /permission denied|content history unavailable/);
    // It recorded the content row it streamed (point-in-time enrichment after a restart).
    const versions = await query(
      db.url,
      `SELECT 1 FROM engagement_pipeline.content_versions WHERE content_key = '00000000-0000-4000-8000-0000000000aa'`,
    );
    assert.equal(versions.length, 1);
  });
  it("`migrate --recreate-slot` by an administrator runs nothing of the role's with the administrator's rights", async () => {
    // The role owns its state tables, so it can hang a trigger on them; a trigger runs with the
    // rights of whoever writes the table. This one tries to make the role a superuser and
    // records whom it ran as.
    await query(
      roleUrl,
      `CREATE TABLE engagement_pipeline.trigger_ran_as (who text);
       CREATE FUNCTION engagement_pipeline.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO engagement_pipeline.trigger_ran_as VALUES (current_user);
         -- SET ROLE would not hold it: code run after it takes the session's rights back.
         BEGIN RESET ROLE; EXCEPTION WHEN others THEN NULL; END;
         INSERT INTO engagement_pipeline.trigger_ran_as VALUES (current_user);
         BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', '${role}'); EXCEPTION WHEN others THEN NULL; END;
         RETURN coalesce(NEW, OLD);
       END $$;
       CREATE TRIGGER escalate BEFORE INSERT OR UPDATE OR DELETE ON engagement_pipeline.slot_state
         FOR EACH ROW EXECUTE FUNCTION engagement_pipeline.escalate();
       CREATE TRIGGER escalate BEFORE INSERT OR UPDATE OR DELETE ON engagement_pipeline.content_history
         FOR EACH ROW EXECUTE FUNCTION engagement_pipeline.escalate();`,
    );
    // REPLICATION lets the role drop its slot (an invalidated slot leads to the same recovery).
    await query(
      roleUrl,
      `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()`,
    );
    const recreate = await runCli(['migrate', '--recreate-slot'], { DATABASE_URL: db.url });
    assert.equal(recreate.code, 0, recreate.output);
    assert.match(recreate.output, /recreated/);
    const ran = await query<{ who: string }>(
      db.url,
      'SELECT DISTINCT who FROM engagement_pipeline.trigger_ran_as',
    );
    assert.deepEqual(
      ran.map((r) => r.who),
      [role],
      "the triggers ran, and only with the role's rights",
    );
    const [attrs] = await query<{ rolsuper: boolean }>(
      db.url,
      'SELECT rolsuper FROM pg_roles WHERE rolname = $1',
      [role],
    );
    assert.equal(attrs.rolsuper, false);
  });
  it('`migrate --recreate-slot` as the role itself (the way before PostgreSQL 17): its own schema, its own slot', async () => {
    await query(
      roleUrl,
      `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()`,
    );
    const recreate = await runCli(['migrate', '--recreate-slot'], { DATABASE_URL: roleUrl });
    assert.equal(recreate.code, 0, recreate.output);
    assert.match(recreate.output, /recreated/);
  });

  it('migrate as a role that lacks a right: one line naming it, and what to run it as, exit 2', async () => {
    // The pipeline's own role has REPLICATION but may not create a publication (CREATE on the database).
    const { code, output } = await runCli(['migrate', '--create-role', `${role}_other`], {
      DATABASE_URL: roleUrl,
    });
    assert.equal(code, 2, output);
    assert.match(output, /EP_ERR_CONFIG: migrate was refused a right: permission denied/);
    assert.match(output, /run migrate as a superuser/);
  });
});
