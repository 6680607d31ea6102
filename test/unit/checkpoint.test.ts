import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bigIntToLsn, compareLsn, lsnToBigInt } from '../../src/domain/position.js';
import { Checkpoint } from '../../src/pipeline/checkpoint.js';
import { intBetween, prng, seeds } from '../helpers/prng.js';

describe('Checkpoint', () => {
  it('confirms a position only when its batch and every earlier batch are done', () => {
    const confirmed: string[] = [];
    const c = new Checkpoint((lsn) => confirmed.push(lsn));
    c.register(1, '0/10');
    c.register(2, '0/20');
    c.register(3, '0/30');
    c.complete(2);
    c.complete(3);
    assert.deepEqual(confirmed, [], 'batch 1 still pending');
    c.complete(1);
    assert.deepEqual(confirmed, ['0/30'], 'the highest contiguous position, once');
    assert.equal(c.inFlight, 0);
  });

  it('a batch ending inside a transaction (null position) confirms nothing by itself', () => {
    const confirmed: string[] = [];
    const c = new Checkpoint((lsn) => confirmed.push(lsn));
    c.register(1, '0/10');
    c.register(2, null);
    c.complete(1);
    c.complete(2);
    assert.deepEqual(confirmed, ['0/10']);
    c.register(3, null);
    c.complete(3);
    assert.deepEqual(confirmed, ['0/10']);
  });

  it('never moves backwards and compares LSNs numerically, not as text', () => {
    const confirmed: string[] = [];
    const c = new Checkpoint((lsn) => confirmed.push(lsn));
    c.register(1, '0/FF');
    c.complete(1);
    c.register(2, '0/100');
    c.complete(2);
    c.register(3, '0/F0');
    c.complete(3);
    assert.deepEqual(confirmed, ['0/FF', '0/100']);
  });

  it('rejects completing an unknown batch', () => {
    const c = new Checkpoint(() => undefined);
    assert.throws(() => c.complete(7), /unknown batch 7/);
  });

  it('completing a batch twice before its turn confirms once; after its release it is unknown', () => {
    const confirmed: string[] = [];
    const c = new Checkpoint((lsn) => confirmed.push(lsn));
    c.register(1, '0/10');
    c.register(2, '0/20');
    c.complete(2);
    c.complete(2);
    assert.deepEqual(confirmed, []);
    c.complete(1);
    assert.deepEqual(confirmed, ['0/20']);
    assert.throws(() => c.complete(2), /unknown batch 2/);
  });

  it('no batch at all, or only batches without a position: nothing is confirmed', () => {
    const confirmed: string[] = [];
    const c = new Checkpoint((lsn) => confirmed.push(lsn));
    assert.equal(c.inFlight, 0);
    for (let seq = 1; seq <= 5; seq++) c.register(seq, null);
    for (const seq of [3, 1, 5, 2, 4]) c.complete(seq);
    assert.deepEqual(confirmed, []);
    assert.equal(c.inFlight, 0);
  });

  // Property: batches registered in stream order and completed in any order (sinks answer out
  // of order) confirm exactly what a model says: after each completion, the highest position
  // among the longest fully completed prefix, if it is past everything confirmed before.
  for (const seed of seeds(25)) {
    it(`random completion order (seed ${seed}) confirms the highest position of the completed prefix, never backwards`, () => {
      const random = prng(seed);
      const confirmed: string[] = [];
      const c = new Checkpoint((lsn) => confirmed.push(lsn));
      // Model: every registered batch, in order; `released` counts the prefix handed back.
      const batches: { seq: number; ackLsn: string | null; done: boolean }[] = [];
      let released = 0;
      let modelConfirmed: bigint | null = null;
      let position = BigInt(intBetween(random, 0, 0xffff)) << 20n;
      let seq = 0;
      const total = intBetween(random, 1, 200);
      while (released < total) {
        const open = batches.filter((b) => !b.done);
        // Register the next batch, or complete a random open one.
        if (seq < total && (open.length === 0 || random() < 0.45)) {
          // Positions mostly grow (crossing the 32-bit boundary of the LSN text now and then);
          // some batches end inside a transaction (null), a few repeat or go back (a replay).
          const step = random() < 0.1 ? 0x1_0000_0000n : BigInt(intBetween(random, 0, 0x400));
          position += step;
          const back = random() < 0.05 ? BigInt(intBetween(random, 1, 0x800)) : 0n;
          const ackLsn = random() < 0.3 ? null : bigIntToLsn(position > back ? position - back : 0n);
          seq += 1;
          c.register(seq, ackLsn);
          batches.push({ seq, ackLsn, done: false });
        } else {
          const target = open[intBetween(random, 0, open.length - 1)];
          c.complete(target.seq);
          target.done = true;
          let best: bigint | null = null;
          while (released < batches.length && batches[released].done) {
            const lsn = batches[released].ackLsn;
            if (lsn !== null && (best === null || lsnToBigInt(lsn) > best)) best = lsnToBigInt(lsn);
            released += 1;
          }
          if (best !== null && (modelConfirmed === null || best > modelConfirmed)) modelConfirmed = best;
        }
        assert.equal(c.inFlight, batches.length - released, 'in flight = registered - released prefix');
        const last = confirmed.at(-1);
        assert.equal(last === undefined ? null : lsnToBigInt(last), modelConfirmed);
      }
      for (let i = 1; i < confirmed.length; i++) {
        assert.ok(compareLsn(confirmed[i - 1], confirmed[i]) < 0, `${confirmed[i - 1]} then ${confirmed[i]}`);
      }
      assert.equal(c.inFlight, 0);
    });
  }
});
