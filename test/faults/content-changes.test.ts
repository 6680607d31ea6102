import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { clientConfig } from '../../src/db/postgres.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import type { CliProcess } from '../helpers/cli.js';
import { CONTENT_IDS } from '../helpers/pipeline.js';
import {
  createFaultHarness,
  sleep,
  startRun,
  stopRun,
  waitCaughtUp,
  type FaultHarness,
} from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';

const CYCLES = Number(process.env.FAULT_CONTENT_CYCLES ?? 4);
const [VIDEO, PODCAST] = CONTENT_IDS;

/**
 * One session, serially: a steady trickle of events for a video and a podcast, each stating
 * in its payload what its content was when it committed; every few rounds the video's length
 * changes, and the podcast is deleted or re-inserted. Nothing else writes, so the payload is
 * the truth for "as of the event's commit". Events written after a restart's confirmed
 * position but before the next change are the ones a dimension loaded "now" gets wrong.
 */
function startContentChurn(databaseUrl: string): { stop(): Promise<number> } {
  let running = true;
  let changes = 0;
  const events = (client: pg.Client, id: string, length: number | null, type: string | null) =>
    client.query(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
       SELECT $1::uuid, gen_random_uuid(), 'play', now(), g * 100, 'ios',
              jsonb_build_object('length', $2::int, 'type', $3::text)
       FROM generate_series(1, 2) g`,
      [id, length, type],
    );
  const loop = (async () => {
    const client = new pg.Client(clientConfig(databaseUrl, 'fault-content-churn'));
    await client.connect();
    let video = 300;
    let podcast: number | null = 0;
    try {
      for (let round = 1; running; round++) {
        if (round % 6 === 0) {
          video = round;
          await client.query('UPDATE content SET length_seconds = $2 WHERE id = $1', [VIDEO, video]);
          changes += 1;
        }
        if (round % 10 === 0) {
          if (podcast === null) {
            podcast = round;
            await client.query(
              `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
               VALUES ($1, 'podcast-1', 'Podcast 1', 'podcast', $2, now())`,
              [PODCAST, podcast],
            );
          } else {
            podcast = null;
            await client.query('DELETE FROM content WHERE id = $1', [PODCAST]);
          }
          changes += 1;
        }
        await events(client, VIDEO, video, 'video');
        await events(client, PODCAST, podcast, podcast === null ? null : 'podcast');
        await sleep(60);
      }
    } finally {
      await client.end();
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return changes;
    },
  };
}

describe('fault: content updated and deleted while the pipeline is killed and restarted', () => {
  let h: FaultHarness;
  let running: CliProcess | null = null;
  before(async () => {
    h = await createFaultHarness();
    // Events must be able to name deleted content (users' tables need not have the key).
    await h.sql('ALTER TABLE engagement_events DROP CONSTRAINT IF EXISTS engagement_events_content_id_fkey');
    await h.sql('UPDATE content SET length_seconds = 0 WHERE id = $1', [PODCAST]);
  });
  after(async () => {
    running?.child.kill('SIGKILL');
    await h.cleanup();
  });

  it(`enriches every event with the content as of its commit across ${CYCLES} kill -9 cycles`, async () => {
    const env = h.env({ EXTERNAL_BATCH_SIZE: '1' });
    const churn = startContentChurn(h.databaseUrl);
    let versions = 0;
    try {
      for (let i = 0; i < CYCLES; i++) {
        running = await startRun(env, `cycle ${i}`);
        const p = running;
        await sleep(200 + Math.random() * 1300);
        p.child.kill('SIGKILL');
        await p.exited;
        running = null;
        // Down for a moment: content keeps changing, events keep coming, none confirmed.
        await sleep(300 + Math.random() * 700);
      }
    } finally {
      versions = await churn.stop();
    }
    const cleared = Date.now();
    running = await startRun(env, 'final run');
    const final = running;
    await waitCaughtUp(h);
    const recoveryMs = Date.now() - cleared;
    await stopRun(final);
    running = null;

    const rows = await duckdbQuery(
      h.duckdbFile,
      `SELECT event_id::VARCHAR AS id, length_seconds, content_type,
              json_extract(raw_payload, '$.length')::INTEGER AS want_length,
              json_extract_string(raw_payload, '$.type') AS want_type
         FROM engagement.events_enriched`,
    );
    const wrong = rows.filter(
      (r) => r.length_seconds !== r.want_length || (r.content_type ?? null) !== (r.want_type ?? null),
    );
    const r = await reconcile(h);
    if (wrong.length > 0) {
      r.problems.push(
        `${wrong.length} of ${rows.length} events enriched with content other than at their commit (e.g. ${JSON.stringify(wrong[0])})`,
      );
    }
    recordScenario({
      id: '16-content-changes',
      scenario: `content updated and deleted around kill -9 ×${CYCLES}`,
      fault: `\`engagement run\` SIGKILLed ${CYCLES} times while one session updates a video's length and deletes/re-inserts a podcast between the events it writes (${versions} content changes); events replayed after each restart`,
      reconciliation: r,
      recoveryMs,
      notes: `every DuckDB row's content_type and length_seconds compared with the content at its commit: ${wrong.length} of ${rows.length} differ`,
    });
    assertExact(r);
    assert.equal(wrong.length, 0);
    assert.ok(rows.length > 100, `traffic flowed (${rows.length} events)`);
  });
});
