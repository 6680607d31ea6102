import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { destinationsKey, type DestinationSettings } from '../../src/backfill/destinations.js';

const base: DestinationSettings = {
  analyticsUrl: 'clickhouse://user:one@ch.internal:8123/analytics',
  redisUrl: 'redis://:secret@cache:6379/2',
  redisPrefix: 'eng:',
  externalUrl: 'https://hooks.example/ingest?token=abc',
};

describe('backfill destinations key', () => {
  it('changes with where a chosen sink writes, not with its credentials or the other sinks', () => {
    const key = destinationsKey(base, ['analytics', 'redis']);
    assert.match(key, /^[0-9a-f]{16}$/);
    assert.equal(
      destinationsKey(
        {
          ...base,
          analyticsUrl: 'clickhouse://user:two@ch.internal:8123/analytics',
          redisUrl: 'redis://:other@cache:6379/2',
        },
        ['analytics', 'redis'],
      ),
      key,
      'a rotated password is the same destination',
    );
    assert.equal(destinationsKey({ ...base, externalUrl: 'http://elsewhere/' }, ['analytics', 'redis']), key);
    for (const other of [
      { redisPrefix: 'bf7:' },
      { redisUrl: 'redis://:secret@cache:6379/3' },
      { redisUrl: 'redis://:secret@cache2:6379/2' },
      { analyticsUrl: 'clickhouse://user:one@ch.internal:8123/other' },
    ])
      assert.notEqual(
        destinationsKey({ ...base, ...other }, ['analytics', 'redis']),
        key,
        JSON.stringify(other),
      );
    assert.notEqual(destinationsKey(base, ['analytics']), key);
  });

  it('a DuckDB file by its absolute path', () => {
    const relative = { ...base, analyticsUrl: 'duckdb:./data/engagement.duckdb' };
    const absolute = { ...base, analyticsUrl: `duckdb:${path.resolve('data/engagement.duckdb')}` };
    assert.equal(destinationsKey(relative, ['analytics']), destinationsKey(absolute, ['analytics']));
  });
});
