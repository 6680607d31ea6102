import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { describeError } from '../../src/errors.js';
import { SOURCE_TABLES_SQL } from '../../src/db/schema.js';
import { DEFAULT_CATALOG_SIZE } from '../../src/generator/catalog.js';
import { runGenerator } from '../../src/generator/writer.js';
import { freshDatabase, query } from '../helpers/postgres.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

describe('generator against Postgres', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  before(async () => {
    db = await freshDatabase('gen');
  });
  after(async () => {
    await db?.drop();
  });

  it('refuses with a migrate hint when the tables are missing', async () => {
    await assert.rejects(runGenerator({ databaseUrl: db.url, rate: 10, count: 1 }), (err) => {
      assert.match(
        describeError(err),
        /engagement_events and content table content not found.*run `engagement migrate`/,
      );
      return true;
    });
  });

  it('rides out Postgres going away (connections dropped, then refused): waits, says so once, goes on', async () => {
    // A database of its own: the cases below count the rows of theirs.
    const own = await freshDatabase('genproxy');
    await query(own.url, SOURCE_TABLES_SQL);
    const url = new URL(own.url);
    const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) });
    url.port = String(proxy.port);
    const events: string[] = [];
    try {
      const run = runGenerator({
        databaseUrl: url.toString(),
        rate: 400,
        count: 1200,
        seed: 7,
        onPostgresGone: (error) => events.push(`gone: ${error}`),
        onPostgresBack: () => events.push('back'),
      });
      await new Promise((r) => setTimeout(r, 800));
      proxy.refuse = true;
      proxy.dropAll();
      await new Promise((r) => setTimeout(r, 1_500));
      proxy.refuse = false;
      const result = await run;
      assert.equal(result.inserted, 1200);
      assert.ok(
        events.some((e) => e.startsWith('gone: ')),
        JSON.stringify(events),
      );
      assert.ok(events.includes('back'), JSON.stringify(events));
    } finally {
      await proxy.close();
      await own.drop();
    }
  });

  it('paces 500 events/s for 10 s: never ahead, not bursted', async () => {
    await query(db.url, SOURCE_TABLES_SQL);
    const progress: number[] = [];
    const result = await runGenerator({
      databaseUrl: db.url,
      rate: 500,
      durationSeconds: 10,
      seed: 42,
      onProgress: (p) => progress.push(p.inserted),
    });
    console.log(
      `achieved ${result.achievedRate.toFixed(1)} events/s (${result.inserted} in ${result.seconds.toFixed(3)} s)`,
    );
    assert.equal(result.inserted, 5000);
    // Never ahead of the pace (a deterministic bound); how far behind depends on how busy the
    // machine is, so the upper bound only catches a generator that stopped pacing altogether.
    assert.ok(result.seconds >= 9.9, `finished early: ${result.seconds} s`);
    assert.ok(result.seconds < 20, `took ${result.seconds} s`);
    // Paced, not bursted: progress arrives tick by tick and grows monotonically.
    assert.ok(progress.length > 20, `${progress.length} progress callbacks`);
    assert.deepEqual(
      progress,
      [...progress].sort((a, b) => a - b),
    );

    const [counts] = await query<{ events: string; content: string; per_second_max: string; span_s: number }>(
      db.url,
      `SELECT (SELECT count(*) FROM engagement_events) AS events,
              (SELECT count(*) FROM content) AS content,
              (SELECT max(n) FROM (SELECT count(*) AS n FROM engagement_events GROUP BY date_trunc('second', event_ts)) s) AS per_second_max,
              (SELECT extract(epoch FROM max(event_ts) - min(event_ts))::float8 FROM engagement_events) AS span_s`,
    );
    assert.equal(Number(counts.events), 5000);
    assert.equal(Number(counts.content), DEFAULT_CATALOG_SIZE);
    // A burst would put thousands into one second; a stalled (busy) machine can stamp a stall's
    // backlog a tick late, so the bound leaves room for that but not for bursting.
    assert.ok(Number(counts.per_second_max) < 1500, `bursty: ${counts.per_second_max} in one second`);
    // Rows are stamped at their ideal moment (never more than a tick late), so the span is ~10 s.
    assert.ok(counts.span_s > 9 && counts.span_s < 20, `event_ts span ${counts.span_s}`);

    const rules = await query<{ bad: string }>(
      db.url,
      `SELECT count(*) AS bad FROM engagement_events e
        WHERE (e.duration_ms IS NULL AND e.event_type NOT IN ('click','pause'))
           OR (e.event_type = 'click' AND e.duration_ms IS NOT NULL)
           OR e.device NOT IN ('ios','android','web-safari','web-chrome','web-firefox','tv','desktop-app')
           OR e.raw_payload->>'app_version' IS NULL
           OR NOT EXISTS (SELECT 1 FROM content c WHERE c.id = e.content_id)`,
    );
    assert.equal(Number(rules[0].bad), 0);
  });

  it('stops at --count, reuses the catalogue, and stops early on abort', async () => {
    const counted = await runGenerator({ databaseUrl: db.url, rate: 2000, count: 300 });
    assert.equal(counted.inserted, 300);
    const [{ content }] = await query<{ content: string }>(db.url, 'SELECT count(*) AS content FROM content');
    assert.equal(Number(content), DEFAULT_CATALOG_SIZE);

    // Abort once some rows are in (not after a fixed time: on a busy machine the catalogue
    // check alone can take most of a second); nothing is inserted after the abort.
    const controller = new AbortController();
    let insertedAtAbort = -1;
    const aborted = await runGenerator({
      databaseUrl: db.url,
      rate: 100,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.inserted >= 50 && insertedAtAbort < 0) {
          insertedAtAbort = p.inserted;
          controller.abort();
        }
      },
    });
    assert.ok(insertedAtAbort >= 50, `aborted at ${insertedAtAbort}`);
    assert.equal(aborted.inserted, insertedAtAbort, 'rows inserted after the abort');
    const [{ n }] = await query<{ n: string }>(db.url, 'SELECT count(*) AS n FROM engagement_events');
    assert.equal(Number(n), 5000 + 300 + aborted.inserted);
  });

  it('rowsPerTransaction 1 commits each event alone (the shape most applications write)', async () => {
    const transactionsOf = async (count: number, rowsPerTransaction?: number) => {
      const [{ last }] = await query<{ last: string | null }>(
        db.url,
        'SELECT max(id)::text AS last FROM engagement_events',
      );
      await runGenerator({ databaseUrl: db.url, rate: 2000, count, rowsPerTransaction });
      const [{ rows, xacts }] = await query<{ rows: string; xacts: string }>(
        db.url,
        'SELECT count(*) AS rows, count(DISTINCT xmin::text) AS xacts FROM engagement_events WHERE id > $1',
        [last ?? '0'],
      );
      return { rows: Number(rows), xacts: Number(xacts) };
    };
    assert.deepEqual(await transactionsOf(200, 1), { rows: 200, xacts: 200 });
    const multi = await transactionsOf(200);
    assert.equal(multi.rows, 200);
    assert.ok(multi.xacts < 200, `${multi.xacts} transactions for 200 rows by default`);
    await assert.rejects(
      runGenerator({ databaseUrl: db.url, rate: 10, count: 1, rowsPerTransaction: 0 }),
      /rowsPerTransaction must be a positive integer/,
    );
  });
});
