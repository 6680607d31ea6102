import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { PipelineError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { startRuntime } from '../../src/runtime.js';
import { SHAPES } from '../fixtures/source-shapes.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';
import { runCli } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { closeServer, listen, readBody } from '../helpers/http-server.js';
import { cliEnv, createHarness, type Harness } from '../helpers/pipeline.js';
import { freshDatabase, query } from '../helpers/postgres.js';
import { waitFor } from '../helpers/wait.js';

/** An external system that accepts everything and keeps the bodies (the payload as sent). */
async function startRecorder(): Promise<{ url: string; bodies: unknown[]; close(): Promise<void> }> {
  const bodies: unknown[] = [];
  const server = createServer((req, res) => {
    void readBody(req).then((body) => {
      bodies.push(JSON.parse(body.toString('utf8')));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const port = await listen(server, 0);
  return { url: `http://127.0.0.1:${port}/events`, bodies, close: () => closeServer(server) };
}

for (const shape of SHAPES) {
  describe(`source shape: ${shape.name}`, () => {
    let h: Harness;
    before(async () => {
      h = await createHarness({ tables: shape.tables, settings: shape.settings });
      await h.sql(shape.content);
    });
    after(async () => h?.cleanup());

    it('streams (run) the seed 003 example into DuckDB, Redis and the external payload with typed keys', async () => {
      const external = await startRecorder();
      const runtime = await h.start({ externalUrl: external.url });
      try {
        assert.deepEqual(runtime.shape.keyTypes, {
          content_id: shape.duckdbKeyType === 'UUID' ? 'uuid' : 'bigint',
          user_id: shape.duckdbKeyType === 'UUID' ? 'uuid' : 'bigint',
        });
        await h.sql(shape.event, [7000]);
        const key = `${h.redis.prefix}content:count:${shape.contentKey}`;
        await waitFor('the event counted in Redis', async () => (await h.redis.client.get(key)) === '1');
        await waitFor('the external system received it', () => external.bodies.length === 1);
      } finally {
        await runtime.stop();
        await external.close();
      }
      const payload = external.bodies[0] as Record<string, unknown>;
      assert.equal(payload.content_id, shape.json.content_id);
      assert.equal(payload.user_id, shape.json.user_id);
      assert.equal(payload.engagement_seconds, 7);
      assert.equal(payload.engagement_pct, 0.02);
      assert.equal(payload.content_type, shape.contentType);
      assert.equal(payload.length_seconds, 350);

      const last = JSON.parse(
        (await h.redis.client.get(`${h.redis.prefix}content:last:${shape.contentKey}`)) ?? 'null',
      ) as Record<string, unknown>;
      assert.equal(last.content_id, shape.json.content_id);
      assert.equal(last.engagement_pct, 0.02);
      const top = await h.redis.client.zrange(`${h.redis.prefix}top:content:10m`, '0', '-1');
      assert.deepEqual(top, [shape.contentKey]);

      const rows = await duckdbQuery(
        h.duckdbFile,
        `SELECT content_id::VARCHAR AS content_id, typeof(content_id) AS key_type, user_id::VARCHAR AS user_id,
                content_type, length_seconds, engagement_seconds::VARCHAR AS secs, engagement_pct::VARCHAR AS pct
           FROM engagement.events_enriched`,
      );
      assert.deepEqual(rows, [
        {
          content_id: shape.contentKey,
          key_type: shape.duckdbKeyType,
          user_id: shape.userId,
          content_type: shape.contentType,
          length_seconds: 350,
          secs: '7.000',
          pct: '0.02',
        },
      ]);
    });

    it('backfills the same rows into ClickHouse (chdb), and Redis counts them once', async () => {
      let front: ChdbHttp | null = null;
      try {
        front = await startChdbHttp({ user: 'u', password: 'p' });
        const result = await runCli(
          ['backfill', '--from', '2000-01-01T00:00:00Z', '--to', 'now', '--sinks', 'analytics,redis'],
          cliEnv(h, {
            ...shape.env,
            ANALYTICS_URL: `clickhouse://u:p@127.0.0.1:${front.port}/shapes`,
          }),
        );
        assert.equal(result.code, 0, result.output);
        assert.match(result.output, /done: 1 rows/);
        assert.match(result.output, /redis: 0 events newly counted/);
        const rows = await front.rows(
          `SELECT toTypeName(content_id) AS key_type, toString(content_id) AS key, toString(user_id) AS user,
                  content_type, length_seconds, toString(engagement_seconds) AS secs, toString(engagement_pct) AS pct
             FROM shapes.events_enriched FINAL`,
        );
        assert.deepEqual(
          rows.map(({ key, user, key_type, ...r }) => ({
            content_id: key,
            key_type: String(key_type).replace(/^Nullable\((.*)\)$/, '$1'),
            user_id: user,
            ...r,
          })),
          [
            {
              content_id: shape.contentKey,
              key_type: shape.clickhouseKeyType,
              user_id: shape.userId,
              content_type: shape.contentType,
              length_seconds: 350,
              secs: '7',
              pct: '0.02',
            },
          ],
        );
      } finally {
        await front?.close();
      }
      assert.equal(await h.redis.client.get(`${h.redis.prefix}content:count:${shape.contentKey}`), '1');
    });
  });
}

describe('source shape problems: one clear line at start', () => {
  /** `engagement migrate` as a user runs it, and `run`'s start (in process) on the same tables. */
  async function startWith(tables: string, env: Record<string, string> = {}) {
    const db = await freshDatabase('shape');
    try {
      await query(db.url, tables);
      const migrated = await runCli(['migrate'], { DATABASE_URL: db.url, LOG_LEVEL: 'warn', ...env });
      const run = await startRuntime(loadConfig({ databaseUrl: db.url }, env), silentLogger()).then(
        async (runtime) => {
          await runtime.stop();
          return null;
        },
        (err: unknown) => err,
      );
      assert.ok(run instanceof PipelineError, `run started: ${String(run)}`);
      assert.equal(run.code, /EP_ERR_[A-Z_]+/.exec(migrated.output)?.[0], 'run and migrate say the same');
      return migrated;
    } finally {
      await db.drop();
    }
  }
  const lines = (output: string) => output.trim().split('\n');

  it('a missing duration_ms column is named', async () => {
    const result = await startWith(`
      CREATE TABLE content (content_id BIGINT PRIMARY KEY, content_type TEXT, length_seconds INT);
      CREATE TABLE engagement_events (id BIGSERIAL PRIMARY KEY, content_id BIGINT, user_id BIGINT,
        event_type TEXT, event_ts TIMESTAMPTZ DEFAULT now(), device TEXT)`);
    assert.equal(result.code, 2, result.output);
    assert.equal(lines(result.output).length, 1, result.output);
    assert.match(result.output, /EP_ERR_SOURCE_SHAPE: public\.engagement_events has no duration_ms column/);
  });

  it('an unsupported key type is named with the accepted ones', async () => {
    const result = await startWith(`
      CREATE TABLE content (content_id NUMERIC(12,2) PRIMARY KEY, content_type TEXT, length_seconds INT);
      CREATE TABLE engagement_events (id BIGSERIAL PRIMARY KEY, content_id NUMERIC(12,2), user_id BIGINT,
        event_type TEXT, event_ts TIMESTAMPTZ DEFAULT now(), duration_ms INT, device TEXT)`);
    assert.equal(result.code, 2, result.output);
    assert.equal(lines(result.output).length, 1, result.output);
    assert.match(
      result.output,
      /EP_ERR_SOURCE_SHAPE: public\.content\.content_id is numeric\(12,2\); key columns must be uuid, bigint, integer or text/,
    );
  });

  it('a configured table that does not exist is named, and migrate creates nothing next to a lone table', async () => {
    const result = await startWith(
      `CREATE TABLE content (content_id BIGINT PRIMARY KEY, content_type TEXT, length_seconds INT)`,
    );
    assert.equal(result.code, 2, result.output);
    assert.match(result.output, /EP_ERR_SOURCE_TABLE_MISSING: events table engagement_events not found/);
    // Named tables are the user's: missing, they are reported, never created.
    const named = await startWith('SELECT 1', {
      EVENTS_TABLE: 'media.plays',
      CONTENT_TABLE: 'media.catalog',
    });
    assert.equal(named.code, 2, named.output);
    assert.match(
      named.output,
      /EP_ERR_SOURCE_TABLE_MISSING: events table media\.plays and content table media\.catalog not found/,
    );
  });
});
