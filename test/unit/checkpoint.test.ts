import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Checkpoint } from '../../src/pipeline/checkpoint.js';

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
});
