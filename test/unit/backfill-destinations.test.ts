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

  it('a DuckDB file by its absolute path, as the sink opens it', () => {
    const key = (analyticsUrl: string) => destinationsKey({ ...base, analyticsUrl }, ['analytics']);
    const absolute = key(`duckdb:${path.resolve('data/engagement.duckdb')}`);
    assert.equal(key('duckdb:./data/engagement.duckdb'), absolute);
    assert.equal(key('duckdb:'), absolute, 'the default file');
    assert.equal(
      key('duckdb://a.duckdb'),
      key('duckdb:a.duckdb'),
      'duckdb:// is stripped as the sink strips it',
    );
    assert.notEqual(key('duckdb://a.duckdb'), key('duckdb:/a.duckdb'));
  });

  it('an external URL by its query too, but not its secret parameters', () => {
    const key = (externalUrl: string) => destinationsKey({ ...base, externalUrl }, ['external']);
    assert.notEqual(key('https://r/ingest?tenant=a'), key('https://r/ingest?tenant=b'));
    assert.equal(key('https://r/ingest?tenant=a&token=1'), key('https://r/ingest?token=2&tenant=a'));
  });

  it('a Redis Cluster by its nodes, not its password', () => {
    const key = (redisUrl: string) => destinationsKey({ ...base, redisUrl }, ['redis']);
    assert.equal(key('redis+cluster://u:one@h1:7000,h2:7001'), key('redis+cluster://u:two@h1:7000,h2:7001'));
    assert.notEqual(key('redis+cluster://u:one@h1:7000,h2:7001'), key('redis+cluster://u:one@h3:7000'));
  });
});
