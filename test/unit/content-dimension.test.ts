import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type pg from 'pg';
import { pino } from 'pino';
import { ContentDimension, DimensionClosedError } from '../../src/enrichment/content-dimension.js';

// The dimension's retries over a fake pool: a lookup query that fails a given number of times.

const VIDEO = '00000000-0000-4000-8000-000000000001';
const locked = Object.assign(new Error('canceling statement due to lock timeout'), { code: '55P03' });

function failingPool(failures: number) {
  let calls = 0;
  /** Every statement sent, in order; `release` when a client went back to the pool. */
  const statements: string[] = [];
  const lookup = async (): Promise<unknown> => {
    calls++;
    if (calls <= failures) throw locked;
    return {
      rows: [{ id: VIDEO, slug: 'v', title: 'V', content_type: 'video', length_seconds: 42 }],
    };
  };
  const client = {
    query: async (sql: string): Promise<unknown> => {
      statements.push(sql.startsWith('SELECT') ? 'SELECT' : sql);
      return sql.startsWith('SELECT') ? lookup() : { rows: [] };
    },
    release: () => void statements.push('release'),
  };
  const pool = { query: lookup, connect: async () => client };
  return { pool: pool as unknown as pg.Pool, calls: () => calls, statements };
}

function logCapture() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'debug' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  const count = (pattern: RegExp, level: number) =>
    lines.filter((l) => l.level === level && pattern.test(l.msg)).length;
  return { logger, count };
}

const WARN = 40;
const INFO = 30;
const DEBUG = 20;

describe('ContentDimension retries', () => {
  it('a failing lookup is retried until it succeeds: one warning, then one line on recovery', async () => {
    const { pool, calls } = failingPool(3);
    const logs = logCapture();
    const dimension = new ContentDimension(pool, {
      logger: logs.logger,
      retry: true,
      backoff: { baseMs: 1, maxMs: 5 },
    });
    await dimension.lookup([VIDEO]);
    assert.equal(calls(), 4);
    assert.equal(dimension.peek(VIDEO)?.length_seconds, 42);
    assert.equal(logs.count(/content lookup failed, retrying/, WARN), 1, 'one warning per streak');
    assert.equal(logs.count(/content lookup failed, retrying/, DEBUG), 2, 'the repeats at debug');
    assert.equal(logs.count(/content lookup succeeded after retries/, INFO), 1);
  });

  it('with retry, each attempt waits at most 1 s for a lock (a transaction with SET LOCAL lock_timeout)', async () => {
    const { pool, statements } = failingPool(1);
    const dimension = new ContentDimension(pool, { retry: true, backoff: { baseMs: 1, maxMs: 5 } });
    await dimension.lookup([VIDEO]);
    const attempt = ['BEGIN', 'SET LOCAL lock_timeout = 1000', 'SELECT'];
    assert.deepEqual(statements, [...attempt, 'ROLLBACK', 'release', ...attempt, 'COMMIT', 'release']);
  });

  it('close() ends a retry wait at once with DimensionClosedError', async () => {
    const { pool, calls } = failingPool(Infinity);
    const logs = logCapture();
    const dimension = new ContentDimension(pool, {
      logger: logs.logger,
      retry: true,
      backoff: { baseMs: 600_000, maxMs: 600_000 },
    });
    const started = Date.now();
    const lookup = dimension.lookup([VIDEO]);
    // Waiting: the first failure is logged before the pause starts.
    while (logs.count(/content lookup failed/, WARN) === 0) await new Promise((r) => setTimeout(r, 5));
    dimension.close();
    await assert.rejects(lookup, DimensionClosedError);
    assert.equal(calls(), 1);
    assert.ok(Date.now() - started < 60_000, 'did not wait out the backoff');
    assert.equal(dimension.peek(VIDEO), undefined, 'nothing remembered: the next start looks it up');
  });

  it('without retry, a failing lookup is thrown to the caller', async () => {
    const { pool, calls } = failingPool(1);
    const dimension = new ContentDimension(pool);
    await assert.rejects(dimension.lookup([VIDEO]), locked);
    assert.equal(calls(), 1);
  });
});
