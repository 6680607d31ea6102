import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatchPacer } from '../../src/pipeline/batch-pacer.js';

describe('BatchPacer', () => {
  it('lets a burst through at once, then one batch per interval', () => {
    const pacer = new BatchPacer(20, 3);
    for (let i = 0; i < 3; i++) {
      assert.equal(pacer.waitMs(1000), 0);
      pacer.spend(1000);
    }
    assert.equal(pacer.waitMs(1000), 20);
    assert.equal(pacer.waitMs(1015), 5);
    assert.equal(pacer.waitMs(1020), 0);
    pacer.spend(1020);
    assert.equal(pacer.waitMs(1030), 10);
  });

  it('refills to the burst and no further after a pause', () => {
    const pacer = new BatchPacer(20, 2);
    pacer.spend(0);
    pacer.spend(0);
    assert.equal(pacer.waitMs(10_000), 0);
    pacer.spend(10_000);
    pacer.spend(10_000);
    assert.equal(pacer.waitMs(10_000), 20, 'two tokens at most, whatever the pause');
  });

  it('never goes below empty, so a long run of spending costs one interval at most', () => {
    const pacer = new BatchPacer(20, 4);
    for (let i = 0; i < 1000; i++) pacer.spend(5000);
    assert.equal(pacer.waitMs(5000), 20);
    assert.equal(pacer.waitMs(5020), 0);
  });

  it('a clock that steps back changes nothing', () => {
    const pacer = new BatchPacer(20, 1);
    pacer.spend(100);
    assert.equal(pacer.waitMs(50), 20);
  });
});
