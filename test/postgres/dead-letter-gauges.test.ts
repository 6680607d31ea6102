import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createPool } from '../../src/db/postgres.js';
import { ensureStateSchema } from '../../src/db/schema.js';
import { silentLogger } from '../../src/logger.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';
import { StatusPoller } from '../../src/observability/status-poller.js';
import { DeadLetterStore } from '../../src/state/dead-letter.js';
import { freshDatabase } from '../helpers/postgres.js';
import { externalDeadLetters } from '../helpers/dead-letters.js';

/** The gauge's value per sink label, as /metrics exposes it (absent labels are absent). */
async function bySink(metrics: Metrics, name: string): Promise<Map<string, number>> {
  const text = await metrics.registry.getSingleMetricAsString(name);
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}\\{sink="([^"]*)"\\} (\\S+)$`).exec(line);
    if (m) values.set(m[1], Number(m[2]));
  }
  return values;
}

describe('dead-letter gauges of the running pipeline (StatusPoller)', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let pool: ReturnType<typeof createPool>;
  before(async () => {
    db = await freshDatabase('dlgauge');
    pool = createPool(db.url, 2, 'dead-letter-gauges-test');
    await ensureStateSchema(pool);
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  const pollerFor = (metrics: ReturnType<typeof createMetrics>, sinks?: string[]) =>
    new StatusPoller({ pool, slotName: 'no_such_slot_dlgauge', metrics, logger: silentLogger(), sinks });

  it('read 0 once every dead letter of a sink is replayed, instead of vanishing from /metrics', async () => {
    const store = new DeadLetterStore(pool);
    const metrics = createMetrics();
    const poller = pollerFor(metrics);
    await store.record(externalDeadLetters([1, 2, 3]));
    // A sink that is not configured (bad source rows) gets its series once it has dead letters.
    await store.record([
      {
        sink: 'source',
        eventId: 9,
        idempotencyKey: 'engagement_events:9',
        event: {},
        lastError: 'bad',
        attempts: 1,
      },
    ]);
    await pool.query(
      `UPDATE engagement_pipeline.dead_letters SET first_failed_at = now() - interval '90 seconds' WHERE sink = 'external'`,
    );
    await poller.poll();
    let pending = await bySink(metrics, 'engagement_dead_letters_pending');
    let oldest = await bySink(metrics, 'engagement_dead_letters_oldest_pending_seconds');
    assert.equal(pending.get('external'), 3);
    assert.equal(pending.get('source'), 1);
    const age = oldest.get('external');
    assert.ok(age !== undefined && age >= 90 && age < 120, `oldest pending external: ${age}`);
    assert.ok((oldest.get('source') ?? -1) >= 0);

    // Every dead letter replayed: both gauges read 0 for both sinks, still present.
    const rows = await store.list({ limit: 100 });
    await store.markReplayed(rows.map((r) => r.id));
    await poller.poll();
    pending = await bySink(metrics, 'engagement_dead_letters_pending');
    oldest = await bySink(metrics, 'engagement_dead_letters_oldest_pending_seconds');
    for (const sink of ['external', 'source']) {
      assert.equal(pending.get(sink), 0, `engagement_dead_letters_pending{sink="${sink}"}`);
      assert.equal(oldest.get(sink), 0, `engagement_dead_letters_oldest_pending_seconds{sink="${sink}"}`);
    }
    poller.stop();
  });

  it('record() says how many rows are new: an event already pending is refreshed, not counted again', async () => {
    const store = new DeadLetterStore(pool);
    const entries = externalDeadLetters([101, 102, 103]);
    assert.equal(await store.record(entries), 3);
    assert.equal(await store.record(externalDeadLetters([102, 103, 104])), 1, 'only 104 is new');
    const [row] = await store
      .list({ sink: 'external', limit: 1_000 })
      .then((rows) => rows.filter((r) => r.eventId === '101'));
    await store.markReplayed([row.id]);
    assert.equal(
      await store.record(externalDeadLetters([101])),
      1,
      'replayed, then refused again: a new pending row',
    );
    await pool.query(`DELETE FROM engagement_pipeline.dead_letters WHERE event_id BETWEEN 101 AND 104`);
  });

  it('the configured sinks read 0 from the first poll, before they ever had a dead letter', async () => {
    const metrics = createMetrics();
    const poller = pollerFor(metrics, ['analytics', 'redis', 'external']);
    await poller.poll();
    for (const name of ['engagement_dead_letters_pending', 'engagement_dead_letters_oldest_pending_seconds'])
      assert.deepEqual(Object.fromEntries(await bySink(metrics, name)), {
        analytics: 0,
        redis: 0,
        external: 0,
      });
    poller.stop();
  });
  it('a dead letter holding a NUL (an event value, a JSON payload, the error) is written, not retried for ever', async () => {
    const store = new DeadLetterStore(pool);
    await store.record([
      {
        sink: 'source',
        eventId: null,
        idempotencyKey: 'dbz.public.engagement_events/0@77',
        event: {
          value: '{"op":"c","after":{"id":"\\u0000"}}',
          raw_payload: '{"a":"\\u0000"}',
          device: 'x\u0000y',
        },
        source: 'dbz.public.engagement_events/0@77',
        lastError: "'\u0000' is not an integer",
        attempts: 1,
      },
    ]);
    const [row] = (
      await pool.query<{ last_error: string; device: string }>(
        `SELECT last_error, event->>'device' AS device FROM engagement_pipeline.dead_letters
          WHERE idempotency_key = 'dbz.public.engagement_events/0@77'`,
      )
    ).rows;
    assert.equal(row.last_error, "'\\u0000' is not an integer");
    assert.equal(row.device, 'x\\u0000y');
  });
});
