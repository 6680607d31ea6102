import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { createPool } from '../../src/db/postgres.js';
import { STATE_SCHEMA_SQL } from '../../src/db/schema.js';
import { createLogger } from '../../src/logger.js';
import type { Batch } from '../../src/domain/types.js';
import type { SinkHealth } from '../../src/observability/stats.js';
import { SinkProgressWriter } from '../../src/state/sink-progress.js';
import { freshDatabase, query } from '../helpers/postgres.js';

function health(state: SinkHealth['state'], lagSeconds = 0): () => SinkHealth[] {
  return () => [
    { name: 'kafka', state, lagSeconds, error: state === 'up' ? null : `${state}!` } as SinkHealth,
  ];
}

describe('sink progress shared by a consumer group (one row per group and sink)', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let pool: pg.Pool;
  before(async () => {
    db = await freshDatabase('sink_progress');
    await query(db.url, STATE_SCHEMA_SQL);
    pool = createPool(db.url);
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  const row = async () =>
    (
      await pool.query<{ state: string; last_error: string | null }>(
        `SELECT state, last_error FROM engagement_pipeline.sink_progress WHERE slot_name = 'kafka:g' AND sink = 'kafka'`,
      )
    ).rows[0];

  it("a failing worker's state holds the row while it refreshes it; healthy workers do not hide it", async () => {
    const logger = createLogger('silent');
    const failing = new SinkProgressWriter(pool, 'kafka:g', logger);
    const healthy = new SinkProgressWriter(pool, 'kafka:g', logger);
    let failingHealth = health('failed', 30);
    failing.trackHealth(() => failingHealth(), 'host:1');
    healthy.trackHealth(health('up'), 'host:2');
    // Before: every writer overwrote the row each second, the last one winning.
    for (let i = 0; i < 3; i++) {
      await failing.flush();
      await healthy.flush();
      assert.deepEqual(await row(), { state: 'failed', last_error: 'failed!' });
    }
    // Its writer recovered: the row says so at once.
    failingHealth = health('up');
    await failing.flush();
    assert.equal((await row()).state, 'up');
    // A writer that stopped refreshing (gone) is replaced after 5 s.
    failingHealth = health('down', 10);
    await failing.flush();
    await healthy.flush();
    assert.equal((await row()).state, 'down');
    // ... also while the healthy worker keeps delivering (its progress write refreshes the row).
    const batch = {
      seq: 1,
      stream: 'kafka:t:0',
      events: [{ committed_at: new Date().toISOString() }],
      positions: ['1'],
      ackLsn: null,
    } as unknown as Batch;
    for (let i = 0; i < 6; i++) {
      healthy.record('kafka', batch);
      await healthy.flush();
      await sleep(1_000);
    }
    assert.equal((await row()).state, 'up');
  });
});
