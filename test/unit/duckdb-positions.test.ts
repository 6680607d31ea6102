import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { PositionMemory } from '../../src/sinks/analytics/duckdb/positions.js';
import { intBetween, prng, seeds } from '../helpers/prng.js';

/** The DuckDB sink's write plan: which of a batch's events it appends. Pure. */

const batchOf = (ids: number[]): Batch => ({
  seq: 1,
  stream: 'kafka:t:0',
  events: ids.map((id) => ({ event_id: id }) as EnrichedEvent),
  positions: ids.map((_, i) => String(i).padStart(8, '0')),
  ackLsn: null,
});

describe('PositionMemory.plan', () => {
  it('keeps the first copy of each event_id, in batch order, whatever the id order', () => {
    const plan = new PositionMemory().plan(batchOf([5, 6, 9, 6, 3, 9, 10, 3, 11]), null);
    assert.deepEqual(
      plan.events.map((e) => e.event_id),
      [5, 6, 9, 3, 10, 11],
    );
    assert.equal(plan.minId, 3);
    assert.equal(plan.maxId, 11);
  });

  for (const seed of seeds(5)) {
    it(`agrees with a set of ids seen (seed ${seed})`, () => {
      const random = prng(seed);
      const ids = Array.from({ length: intBetween(random, 0, 300) }, (_, i) =>
        random() < 0.8 ? i * 2 : intBetween(random, 0, 600),
      );
      const seen = new Set<number>();
      const expected = ids.filter((id) => !seen.has(id) && seen.add(id));
      assert.deepEqual(
        new PositionMemory().plan(batchOf(ids), null).events.map((e) => e.event_id),
        expected,
      );
    });
  }
});
