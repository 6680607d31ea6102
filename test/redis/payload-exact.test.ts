import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import { closeServer, listen, readBody } from '../helpers/http-server.js';
import { cliEnv, CONTENT_IDS, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

// A payload whose numbers a double cannot hold, or would print differently: before payloads
// were kept as text, every sink received 12345678901234567000 and 1.1.
const PAYLOAD_SQL = `'{"f": 1.10, "big": 12345678901234567890, "tiny": -0.000000000000000000001, "s": "a, b: \\"c\\""}'::jsonb`;
// jsonb's own key order (shorter keys first), compacted.
const EXACT = '{"f":1.10,"s":"a, b: \\"c\\"","big":12345678901234567890,"tiny":-0.000000000000000000001}';

/** An external system that keeps every body as received, and answers 500 while `failing`. */
async function captureServer(): Promise<{
  url: string;
  bodies: string[];
  setFailing(f: boolean): void;
  close(): Promise<void>;
}> {
  const bodies: string[] = [];
  let failing = false;
  const server = createServer((req, res) => {
    void readBody(req).then((body) => {
      if (failing) return res.writeHead(500).end();
      bodies.push(body.toString('utf8'));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const port = await listen(server, 0);
  return {
    url: `http://127.0.0.1:${port}/events`,
    bodies,
    setFailing: (f) => (failing = f),
    close: () => closeServer(server),
  };
}

describe('a JSON payload reaches every destination exactly as Postgres holds it', () => {
  let h: Harness;
  let external: Awaited<ReturnType<typeof captureServer>>;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    external = await captureServer();
  });
  after(async () => {
    await external.close();
    await h.cleanup();
  });

  it('stream: DuckDB, Redis content:last, the external body and a dead letter re-sent later', async () => {
    // The first event's POSTs fail until the dead letter exists; the redrive sends it again.
    external.setFailing(true);
    const runtime = await h.start({
      externalUrl: external.url,
      externalMaxAttempts: 1,
      externalRetryFor: '0',
      externalRedriveRate: 100,
    });
    try {
      await h.sql(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
         VALUES ($1, NULL, 'play', now(), 1000, 'exact-1', ${PAYLOAD_SQL})`,
        [CONTENT_IDS[0]],
      );
      await waitFor('the dead letter', async () => {
        const rows = await h.sql(`SELECT 1 FROM engagement_pipeline.dead_letters WHERE sink = 'external'`);
        return rows.length === 1;
      });
      const stored = await h.sql<{ same: boolean }>(
        `SELECT (event -> 'raw_payload')::text = (${PAYLOAD_SQL})::text AS same FROM engagement_pipeline.dead_letters`,
      );
      assert.deepEqual(stored, [{ same: true }], 'the dead letter holds the exact payload');
      const listed = await runCli(['dlq', 'list', '--json'], cliEnv(h));
      assert.ok(listed.output.includes(`"raw_payload":${EXACT}`), listed.output);
      external.setFailing(false);
      await waitFor('the redriven POST', async () => external.bodies.some((b) => b.includes('exact-1')));
      await h.sql(
        `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
         VALUES ($1, NULL, 'play', now(), 1000, 'exact-2', ${PAYLOAD_SQL})`,
        [CONTENT_IDS[1]],
      );
      await waitFor('the second POST', async () => external.bodies.some((b) => b.includes('exact-2')));
      await waitFor('content:last', async () =>
        Boolean(await h.redis.client.get(`${h.redis.prefix}content:last:${CONTENT_IDS[1]}`)),
      );
      const last = (await h.redis.client.get(`${h.redis.prefix}content:last:${CONTENT_IDS[1]}`))!;
      assert.ok(last.includes(`"raw_payload":${EXACT},`), last);
      for (const device of ['exact-1', 'exact-2']) {
        const body = external.bodies.find((b) => b.includes(device))!;
        assert.ok(body.includes(`"raw_payload":${EXACT}`), body);
        assert.doesNotThrow(() => JSON.parse(body));
      }
    } finally {
      await runtime.stop();
    }
    const rows = await duckdbQuery(
      h.duckdbFile,
      `SELECT device, raw_payload::VARCHAR AS payload FROM engagement.events_enriched ORDER BY device`,
    );
    assert.deepEqual(rows, [
      { device: 'exact-1', payload: EXACT },
      { device: 'exact-2', payload: EXACT },
    ]);
  });

  it('backfill: the same text into another DuckDB file', async () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'payload-exact-')), 'backfill.duckdb');
    const run = await runCli(
      ['backfill', '--from', '2000-01-01T00:00:00Z', '--to', 'now', '--sinks', 'analytics'],
      cliEnv(h, { ANALYTICS_URL: `duckdb:${file}` }),
    );
    assert.equal(run.code, 0, run.output);
    const rows = await duckdbQuery(
      file,
      `SELECT device, raw_payload::VARCHAR AS payload FROM engagement.events_enriched ORDER BY device`,
    );
    assert.deepEqual(rows, [
      { device: 'exact-1', payload: EXACT },
      { device: 'exact-2', payload: EXACT },
    ]);
  });
});
