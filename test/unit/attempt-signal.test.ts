import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, it } from 'node:test';
import { AttemptSignal } from '../../src/sinks/external/attempt-signal.js';

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe('AttemptSignal (one external request attempt)', () => {
  it('leaves no timer and no listener on the pipeline signal once the attempt is done', () => {
    const pipeline = new AbortController();
    const before = timers();
    const attempts = Array.from({ length: 50 }, () => new AttemptSignal(pipeline.signal, 5_000));
    assert.equal(timers(), before + 50);
    assert.equal(getEventListeners(pipeline.signal, 'abort').length, 50);
    for (const attempt of attempts) attempt.done();
    assert.equal(timers(), before, 'a finished attempt must not leave a timer to fire later');
    assert.equal(getEventListeners(pipeline.signal, 'abort').length, 0);
    assert.ok(attempts.every((a) => !a.signal.aborted && !a.timedOut));
  });

  it('aborts when the pipeline stops, with its reason, and is not a timeout', () => {
    const pipeline = new AbortController();
    const attempt = new AttemptSignal(pipeline.signal, 5_000);
    pipeline.abort(new Error('shutdown'));
    assert.equal(attempt.signal.aborted, true);
    assert.equal((attempt.signal.reason as Error).message, 'shutdown');
    assert.equal(attempt.timedOut, false);
    attempt.done();

    const late = new AttemptSignal(pipeline.signal, 5_000); // the pipeline had stopped already
    assert.equal(late.signal.aborted, true);
    late.done();
  });

  it('aborts after timeoutMs as a timeout', async () => {
    const attempt = new AttemptSignal(new AbortController().signal, 20);
    await new Promise((r) => attempt.signal.addEventListener('abort', r));
    assert.equal(attempt.timedOut, true);
    assert.equal((attempt.signal.reason as Error).message, 'timeout after 20 ms');
    attempt.done();
  });
});
