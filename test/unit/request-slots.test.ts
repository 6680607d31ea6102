import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RequestSlots } from '../../src/sinks/external/request-slots.js';

describe('RequestSlots (live requests first, the re-drive takes what is left)', () => {
  it('live requests wait in order; the re-drive gets no slot while one waits', async () => {
    const slots = new RequestSlots(2);
    const signal = new AbortController().signal;
    assert.equal(slots.tryAcquire(), true, 're-drive takes a free slot');
    await slots.acquire(signal);
    assert.equal(slots.free, 0);
    const order: string[] = [];
    const a = slots.acquire(signal).then(() => order.push('a'));
    const b = slots.acquire(signal).then(() => order.push('b'));
    assert.equal(slots.tryAcquire(), false);
    slots.release();
    await a;
    assert.equal(slots.tryAcquire(), false, 'b still waits: the freed slot is not the re-drive’s');
    slots.release();
    await b;
    assert.deepEqual(order, ['a', 'b']);
    slots.release();
    slots.release();
    assert.equal(slots.free, 2, 'every slot back');
  });

  it('an aborted wait leaves the queue and takes no slot', async () => {
    const slots = new RequestSlots(1);
    await slots.acquire(new AbortController().signal);
    const stop = new AbortController();
    const waiting = slots.acquire(stop.signal);
    stop.abort(new Error('stopping'));
    await assert.rejects(waiting, /stopping/);
    slots.release();
    assert.equal(slots.free, 1);
    assert.equal(slots.tryAcquire(), true);
    await assert.rejects(slots.acquire(stop.signal), /stopping/, 'already aborted: at once');
  });
});
