import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PositionMemory, type PlannedBatch } from '../../src/sinks/analytics/duckdb/positions.js';
import { intBetween, prng, seeds } from '../helpers/prng.js';

/** The DuckDB sink's write plan: which of a batch's events it appends. Pure. */

const batchOf = (ids: number[]): PlannedBatch => ({
  stream: 'kafka:t:0',
  ids,
  positions: ids.map((_, i) => String(i).padStart(8, '0')),
});

/** The ids of the rows a plan appends. */
const idsOf = (batch: PlannedBatch, rows: number[]) => rows.map((i) => batch.ids[i]);

describe('PositionMemory.plan', () => {
  it('keeps the first copy of each event_id, in batch order, whatever the id order', () => {
    const batch = batchOf([5, 6, 9, 6, 3, 9, 10, 3, 11]);
    const plan = new PositionMemory().plan(batch, null);
    assert.deepEqual(idsOf(batch, plan.rows), [5, 6, 9, 3, 10, 11]);
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
      const batch = batchOf(ids);
      assert.deepEqual(idsOf(batch, new PositionMemory().plan(batch, null).rows), expected);
    });
  }
});
