import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { retry, type RetryFailure } from '../../src/retry/retry.js';

const transient = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
const needsOperator = Object.assign(new Error('permission denied'), { code: '42501' });

describe('retry (the one retry loop)', () => {
  it('retries until fn succeeds, telling each failure and the recovery', async () => {
    const failures: RetryFailure[] = [];
    let recovered: number | null = null;
    const result = await retry(
      async (attempt) => {
        if (attempt < 3) throw transient;
        return 'ok';
      },
      {
        backoff: { baseMs: 1, maxMs: 1 },
        onFailure: (_err, f) => failures.push(f),
        onRecovered: (attempts) => (recovered = attempts),
      },
    );
    assert.equal(result, 'ok');
    assert.deepEqual(
      failures.map((f) => [f.attempt, f.policy]),
      [
        [1, 'transient'],
        [2, 'transient'],
      ],
    );
    assert.equal(recovered, 3);
  });

  it('gives up after `attempts`, throwing the last failure', async () => {
    let calls = 0;
    const delays: (number | null)[] = [];
    await assert.rejects(
      retry(
        async () => {
          calls++;
          throw transient;
        },
        { backoff: { baseMs: 1, maxMs: 1 }, attempts: 3, onFailure: (_e, f) => delays.push(f.delayMs) },
      ),
      transient,
    );
    assert.equal(calls, 3);
    assert.equal(delays.at(-1), null, 'the last failure has no wait');
  });

  it('picks the backoff by the error policy (full jitter, ceiling base * 2^(attempt-1))', async () => {
    const seen: [string, number | null][] = [];
    const errors = [transient, needsOperator, transient];
    await retry(
      async (attempt) => {
        if (attempt <= errors.length) throw errors[attempt - 1];
      },
      {
        backoff: { transient: { baseMs: 2, maxMs: 100 }, sink: { baseMs: 10, maxMs: 100 } },
        random: () => 0.5,
        onFailure: (_e, f) => seen.push([f.policy, f.delayMs]),
      },
    );
    assert.deepEqual(seen, [
      ['transient', 1], // 0.5 * 2
      ['sink', 10], // 0.5 * 10 * 2
      ['transient', 4], // 0.5 * 2 * 4
    ]);
  });

  it('a rows failure counts as transient; policyOf overrides the classification', async () => {
    const policies: string[] = [];
    const rows = Object.assign(new Error('bad value'), { code: '22P02' });
    await assert.rejects(
      retry(
        async () => {
          throw rows;
        },
        { backoff: { baseMs: 1, maxMs: 1 }, attempts: 1, onFailure: (_e, f) => policies.push(f.policy) },
      ),
    );
    await assert.rejects(
      retry(
        async () => {
          throw rows;
        },
        {
          backoff: { baseMs: 1, maxMs: 1 },
          attempts: 1,
          policyOf: () => 'sink',
          onFailure: (_e, f) => policies.push(f.policy),
        },
      ),
    );
    assert.deepEqual(policies, ['transient', 'sink']);
  });

  it('an abort ends the wait at once and stops retrying', async () => {
    const abort = new AbortController();
    let calls = 0;
    const started = Date.now();
    const running = retry(
      async () => {
        calls++;
        throw transient;
      },
      {
        backoff: { baseMs: 60_000, maxMs: 60_000 },
        random: () => 1,
        signal: abort.signal,
        aborted: () => new Error('stopped'),
      },
    );
    setTimeout(() => abort.abort(), 20);
    await assert.rejects(running, /stopped/);
    assert.equal(calls, 1);
    assert.ok(Date.now() - started < 30_000, 'did not wait out the backoff');
  });

  it('a failure seen after the abort is thrown as it is', async () => {
    const abort = new AbortController();
    await assert.rejects(
      retry(
        async () => {
          abort.abort();
          throw transient;
        },
        { backoff: { baseMs: 1, maxMs: 1 }, signal: abort.signal },
      ),
      transient,
    );
  });
});
