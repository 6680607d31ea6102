import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { Runtime } from '../../src/runtime.js';
import { waitFor } from '../helpers/wait.js';
import {
  createFaultHarness,
  drainAndStop,
  mockControl,
  sleep,
  type FaultHarness,
} from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';
import { startTraffic } from './support/traffic.js';

interface MockSnapshot {
  requests: number;
  uniqueEventIds: number;
  uniqueKeys: number;
  duplicates: number;
  duplicateEvents: number;
  injected: Record<string, number>;
}

async function mockStats(h: FaultHarness): Promise<MockSnapshot> {
  return (await (await fetch(`${h.mock.url}_stats`)).json()) as MockSnapshot;
}

async function deadLetterCounts(h: FaultHarness): Promise<{ pending: number; replayed: number }> {
  const [row] = await h.sql<{ pending: string; replayed: string }>(
    `SELECT count(*) FILTER (WHERE replayed_at IS NULL)::text AS pending,
            count(*) FILTER (WHERE replayed_at IS NOT NULL)::text AS replayed
       FROM engagement_pipeline.dead_letters WHERE sink = 'external'`,
  );
  return { pending: Number(row.pending), replayed: Number(row.replayed) };
}

/**
 * The mock answers 503 to every request for `ms`, then accepts again. `sample` is given the
 * dead-letter counts (and the ms since the outage began) every 500 ms meanwhile. Returns when
 * the outage ended (epoch ms).
 */
async function outage(
  h: FaultHarness,
  ms: number,
  sample: (counts: { pending: number; replayed: number }, sinceStartMs: number) => void,
): Promise<number> {
  await mockControl(h, { mode: 'fail503' });
  const started = Date.now();
  while (Date.now() < started + ms) {
    const counts = await deadLetterCounts(h);
    sample(counts, Date.now() - started);
    await sleep(500);
  }
  await mockControl(h, { mode: 'ok' });
  return Date.now();
}

/** What the receiver saw, the dead-letter table and the reconciliation, once the run is over. */
async function outcome(h: FaultHarness) {
  return { stats: await mockStats(h), dead: await deadLetterCounts(h), r: await reconcile(h) };
}

/** Source event ids the mock never accepted (the receiver's view, not the dead-letter table's). */
async function notReceived(h: FaultHarness): Promise<string[]> {
  const got = new Set(
    ((await (await fetch(`${h.mock.url}_events?limit=100000000`)).json()) as { ids: number[] }).ids.map(
      String,
    ),
  );
  const source = await h.sql<{ id: string }>('SELECT id::text AS id FROM engagement_events ORDER BY id');
  return source.map((r) => r.id).filter((id) => !got.has(id));
}

describe('fault: the external system down for a while (ridden out, then re-driven by itself)', () => {
  const harnesses: FaultHarness[] = [];
  after(async () => {
    for (const h of harnesses) await h.cleanup().catch(() => undefined);
  });

  it('an 8 s outage under traffic with the defaults: nothing dead-lettered, every event received once', async () => {
    const h = await createFaultHarness();
    harnesses.push(h);
    // Defaults: best-effort, EXTERNAL_RETRY_FOR 2 min; one event per request (key = event_id).
    let runtime: Runtime | null = await h.start({ externalBatchSize: 1 });
    const traffic = startTraffic(h.databaseUrl, 100);
    let cleared = 0;
    let recoveryMs = 0;
    let peakDeadLetters = 0;
    try {
      await sleep(1500);
      cleared = await outage(h, 8000, (counts) => {
        peakDeadLetters = Math.max(peakDeadLetters, counts.pending);
      });
      await sleep(1500);
      await traffic.stop();
      const r0 = runtime;
      runtime = null;
      recoveryMs = await drainAndStop(h, r0, cleared);
    } finally {
      await traffic.stop();
      await runtime?.stop();
    }
    const { stats, dead, r } = await outcome(h);
    const lines = {
      'external system failing': h.logs.count(/external system failing/),
      'external circuit open': h.logs.count(/external circuit open/),
      'external system recovered': h.logs.count(/external system recovered/),
    };
    recordScenario({
      id: '07a-external-outage-8s',
      scenario: 'external outage 8 s (best-effort, defaults)',
      fault: `the mock answered 503 to every request for 8 s under traffic (${stats.injected.fail503} answers); policy best-effort, EXTERNAL_RETRY_FOR 2 min (default)`,
      reconciliation: r,
      recoveryMs,
      logLines: lines,
      notes: `0 dead letters expected: ${dead.pending + dead.replayed} recorded (peak pending ${peakDeadLetters}); the receiver got ${stats.uniqueEventIds} event ids under ${stats.uniqueKeys} keys, ${stats.duplicates} re-sends of an accepted key, ${stats.duplicateEvents - stats.duplicates} under a new key`,
    });
    assertExact(r);
    assert.equal(dead.pending + dead.replayed, 0, 'nothing dead-lettered');
    assert.deepEqual(await notReceived(h), []);
    assert.equal(stats.uniqueEventIds, r.events);
    assert.equal(stats.duplicateEvents - stats.duplicates, 0, 'no event under two keys');
    assert.ok(stats.injected.fail503 > 0);
    assert.equal(lines['external system failing'], 1, h.logs.problems());
    assert.equal(lines['external system recovered'], 1, h.logs.problems());
  });

  it('a 45 s outage under best-effort (EXTERNAL_RETRY_FOR 10 s): dead letters while it lasts, all re-driven after, permanent 400s left', async () => {
    const h = await createFaultHarness();
    harnesses.push(h);
    let runtime: Runtime | null = await h.start({
      externalBatchSize: 1,
      externalPolicy: 'best-effort',
      externalRetryFor: '10s',
      externalRedriveRate: 1000,
    });
    const traffic = startTraffic(h.databaseUrl, 250);
    let cleared = 0;
    let recoveryMs = 0;
    let redriveMs = 0;
    let duringOutage = { pending: 0, replayed: 0 };
    let firstDeadLetterAfterMs: number | null = null;
    try {
      await sleep(1500);
      // Three requests rejected for good before the outage: dead-lettered, never re-driven.
      await mockControl(h, { mode: 'reject400', count: 3 });
      await waitFor('3 permanent rejections', async () => (await mockStats(h)).injected.reject400 === 3);
      cleared = await outage(h, 45_000, (counts, sinceStartMs) => {
        duringOutage = counts;
        if (firstDeadLetterAfterMs === null && counts.pending > 3) firstDeadLetterAfterMs = sinceStartMs;
      });
      await sleep(1500);
      await traffic.stop();
      await waitFor(
        'the outage dead letters re-driven',
        async () => (await deadLetterCounts(h)).pending === 3,
        90_000,
        200,
      );
      redriveMs = Date.now() - cleared;
      const r0 = runtime;
      runtime = null;
      recoveryMs = await drainAndStop(h, r0, cleared);
    } finally {
      await traffic.stop();
      await runtime?.stop();
    }
    const { stats, dead, r } = await outcome(h);
    const permanent = await h.sql<{ id: string; last_error: string; attempts: number }>(
      `SELECT event_id::text AS id, last_error, attempts FROM engagement_pipeline.dead_letters
        WHERE sink = 'external' AND replayed_at IS NULL ORDER BY id`,
    );
    const missing = await notReceived(h);
    const redriveLine = h.logs.lines.find((l) => /re-drove \d+ dead letter/.test(l.msg))?.msg ?? '-';
    recordScenario({
      id: '07b-external-outage-45s',
      scenario: 'external outage 45 s, then automatic re-drive (best-effort)',
      fault: `3 requests rejected with 400, then the mock answered 503 to every request for 45 s under traffic (${stats.injected.fail503} answers); EXTERNAL_RETRY_FOR 10 s, EXTERNAL_REDRIVE_RATE 1000`,
      reconciliation: r,
      recoveryMs,
      logLines: {
        'external circuit open': h.logs.count(/external circuit open/),
        'external: dead-lettered': h.logs.count(/external: dead-lettered/),
        'external system recovered': h.logs.count(/external system recovered/),
        're-drove': h.logs.count(/re-drove \d+ dead letter/),
      },
      notes: `first dead letter ${firstDeadLetterAfterMs ?? '-'} ms into the outage; ${duringOutage.pending} pending when it ended; all ${dead.replayed} re-driven ${redriveMs} ms after it ended ("${redriveLine}"); the 3 rows rejected with 400 stay pending, never re-sent; the receiver got ${stats.uniqueEventIds} of ${r.events} event ids, ${stats.duplicates} re-sends of an accepted key, ${stats.duplicateEvents - stats.duplicates} under a new key`,
    });
    assertExact(r);
    assert.ok(duringOutage.pending > 100, `dead letters during the outage: ${duringOutage.pending}`);
    assert.ok(
      firstDeadLetterAfterMs !== null && firstDeadLetterAfterMs >= 9000,
      `nothing dead-lettered before EXTERNAL_RETRY_FOR (first after ${firstDeadLetterAfterMs} ms)`,
    );
    assert.ok(dead.replayed >= duringOutage.pending - 3, `re-driven ${dead.replayed}`);
    // Permanent rejections: still pending, re-sent by nobody (the mock saw each exactly once).
    assert.equal(permanent.length, 3);
    for (const row of permanent) {
      assert.match(row.last_error, /^400 Bad Request/);
      assert.equal(row.attempts, 1);
    }
    assert.equal(stats.injected.reject400, 3);
    assert.deepEqual([...missing].sort(), permanent.map((p) => p.id).sort());
    assert.equal(stats.uniqueEventIds, r.events - 3);
    assert.equal(stats.duplicateEvents - stats.duplicates, 0, 'no event under two keys');
  });
});
