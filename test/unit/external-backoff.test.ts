import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backoffDelay, parseRetryAfter, retryDelay } from '../../src/retry/backoff.js';
import { CircuitBreaker, type CircuitState } from '../../src/sinks/external/circuit-breaker.js';
import { signBody, verifySignature } from '../../src/sinks/external/signature.js';

const opts = { baseMs: 100, maxMs: 1000 };

describe('backoffDelay (full jitter)', () => {
  it('draws from [0, min(max, base*2^(n-1))]', () => {
    // random() -> just below 1 gives the ceiling of each attempt
    const top = () => 0.999999;
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 50].map((n) => backoffDelay(n, opts, top)),
      [99, 199, 399, 799, 999, 999, 999],
    );
    assert.equal(
      backoffDelay(3, opts, () => 0),
      0,
    );
    assert.equal(
      backoffDelay(3, opts, () => 0.5),
      200,
    );
  });
  it('stays finite and capped for huge attempt numbers', () => {
    assert.equal(
      backoffDelay(10_000, opts, () => 0.5),
      500,
    );
  });
  it('is spread out with the real random source', () => {
    const draws = new Set(Array.from({ length: 50 }, () => backoffDelay(5, opts)));
    assert.ok(draws.size > 10, `expected jitter, got ${[...draws].join(',')}`);
    for (const d of draws) assert.ok(d >= 0 && d < 1000);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-11-23T10:00:00Z');
  it('reads delay-seconds', () => {
    assert.equal(parseRetryAfter('3', now), 3000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter(['7', '9'], now), 7000);
  });
  it('reads an HTTP-date, relative to now, never negative', () => {
    assert.equal(parseRetryAfter('Mon, 23 Nov 2026 10:00:05 GMT', now), 5000);
    assert.equal(parseRetryAfter('Mon, 23 Nov 2026 09:59:00 GMT', now), 0);
  });
  it('ignores absent or invalid values', () => {
    for (const bad of [undefined, '', '-1', '1.5', 'soon', '12abc']) {
      assert.equal(parseRetryAfter(bad, now), undefined, String(bad));
    }
  });
  it('retryDelay prefers Retry-After, capped; else backoff', () => {
    const o = { ...opts, retryAfterMaxMs: 5000 };
    assert.equal(
      retryDelay(1, 2000, o, () => 0),
      2000,
    );
    assert.equal(
      retryDelay(1, 86_400_000, o, () => 0),
      5000,
    );
    assert.equal(
      retryDelay(3, undefined, o, () => 0.5),
      200,
    );
  });
});

describe('CircuitBreaker transition table', () => {
  function harness(threshold = 3, openMs = 1000) {
    let t = 0;
    const changes: string[] = [];
    const breaker = new CircuitBreaker({
      failureThreshold: threshold,
      openMs,
      now: () => t,
      onStateChange: (to: CircuitState, from: CircuitState) => changes.push(`${from}->${to}`),
    });
    return { breaker, changes, advance: (ms: number) => (t += ms) };
  }

  // [from state, event, expected state, expected allowRequest() result when the event is 'allow']
  type Row = [string, (h: ReturnType<typeof harness>) => boolean | void, CircuitState, boolean?];
  const toOpen = (h: ReturnType<typeof harness>) => {
    for (let i = 0; i < 3; i++) h.breaker.recordFailure();
  };
  const toHalfOpen = (h: ReturnType<typeof harness>) => {
    toOpen(h);
    h.advance(1000);
    assert.equal(h.breaker.allowRequest(), true);
  };
  const rows: Record<string, Row> = {
    'closed + allow -> closed, allowed': ['closed', (h) => h.breaker.allowRequest(), 'closed', true],
    'closed + success -> closed': ['closed', (h) => h.breaker.recordSuccess(), 'closed'],
    'closed + failures below threshold -> closed': [
      'closed',
      (h) => {
        h.breaker.recordFailure();
        h.breaker.recordFailure();
      },
      'closed',
    ],
    'closed + failure #threshold -> open': ['closed', toOpen, 'open'],
    'closed + success resets the count': [
      'closed',
      (h) => {
        h.breaker.recordFailure();
        h.breaker.recordFailure();
        h.breaker.recordSuccess();
        h.breaker.recordFailure();
        h.breaker.recordFailure();
      },
      'closed',
    ],
    'open + allow before openMs -> open, refused': [
      'open',
      (h) => {
        toOpen(h);
        h.advance(999);
        return h.breaker.allowRequest();
      },
      'open',
      false,
    ],
    'open + allow after openMs -> half-open, probe allowed': [
      'open',
      (h) => {
        toOpen(h);
        h.advance(1000);
        return h.breaker.allowRequest();
      },
      'half-open',
      true,
    ],
    'open + late failure -> open (wait not extended)': [
      'open',
      (h) => {
        toOpen(h);
        h.advance(600);
        h.breaker.recordFailure();
        h.advance(400);
        return h.breaker.allowRequest();
      },
      'half-open',
      true,
    ],
    'open + late success -> closed': [
      'open',
      (h) => {
        toOpen(h);
        h.breaker.recordSuccess();
      },
      'closed',
    ],
    'half-open + second allow while probing -> refused': [
      'half-open',
      (h) => {
        toHalfOpen(h);
        return h.breaker.allowRequest();
      },
      'half-open',
      false,
    ],
    'half-open + probe success -> closed': [
      'half-open',
      (h) => {
        toHalfOpen(h);
        h.breaker.recordSuccess();
        return h.breaker.allowRequest();
      },
      'closed',
      true,
    ],
    'half-open + probe failure -> open, timer restarted': [
      'half-open',
      (h) => {
        toHalfOpen(h);
        h.breaker.recordFailure();
        h.advance(999);
        return h.breaker.allowRequest();
      },
      'open',
      false,
    ],
    'half-open + probe released -> another probe allowed': [
      'half-open',
      (h) => {
        toHalfOpen(h);
        h.breaker.releaseProbe();
        return h.breaker.allowRequest();
      },
      'half-open',
      true,
    ],
  };
  for (const [name, [from, act, expected, allowed]] of Object.entries(rows)) {
    it(name, () => {
      const h = harness();
      assert.ok(name.startsWith(from));
      const result = act(h);
      assert.equal(h.breaker.state, expected);
      if (allowed !== undefined) assert.equal(result, allowed);
    });
  }
  it('reports transitions and time until the probe', () => {
    const h = harness(2, 500);
    h.breaker.recordFailure();
    h.breaker.recordFailure();
    assert.equal(h.breaker.msUntilProbe(), 500);
    h.advance(200);
    assert.equal(h.breaker.msUntilProbe(), 300);
    h.advance(300);
    assert.equal(h.breaker.allowRequest(), true);
    h.breaker.recordFailure();
    h.advance(500);
    h.breaker.allowRequest();
    h.breaker.recordSuccess();
    assert.deepEqual(h.changes, [
      'closed->open',
      'open->half-open',
      'half-open->open',
      'open->half-open',
      'half-open->closed',
    ]);
  });
});

describe('signature', () => {
  const body = Buffer.from('{"event_id":1,"x":"é"}');
  it('is sha256=<hex HMAC-SHA256 of the body bytes> (RFC 4231 test case 2)', () => {
    assert.equal(
      signBody('what do ya want for nothing?', 'Jefe'),
      'sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    );
  });
  it('verifies its own signatures and rejects tampering', () => {
    const sig = signBody(body, 'k');
    assert.equal(verifySignature(body, 'k', sig), true);
    assert.equal(verifySignature(body.toString('utf8'), 'k', sig), true);
    assert.equal(verifySignature(body, 'k', sig.toUpperCase().replace('SHA256=', 'sha256=')), true);
    assert.equal(verifySignature(body, 'other', sig), false);
    assert.equal(verifySignature(Buffer.from('{"event_id":2,"x":"é"}'), 'k', sig), false);
    for (const bad of [undefined, '', sig.slice(7), `sha1=${sig.slice(7)}`, sig.slice(0, -2), `${sig}00`]) {
      assert.equal(verifySignature(body, 'k', bad), false, String(bad));
    }
  });
});
