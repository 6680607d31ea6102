import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lastOrder } from '../../src/sinks/redis/leaderboard-ops.js';
import { assertClusterPrefix, parseClusterUrl } from '../../src/sinks/redis/redis-sink.js';

describe('Redis sink: pure parts', () => {
  it('lastOrder sorts like (event_ts, event_id), far years included', () => {
    const keys = [
      { event_ts: '-000044-03-15T00:00:00.000000Z', event_id: 9 },
      { event_ts: '0001-01-01T00:00:00.000000Z', event_id: 1 },
      { event_ts: '2026-01-01T00:00:00.000000Z', event_id: 2 },
      { event_ts: '2026-01-01T00:00:00.000000Z', event_id: 10 },
      { event_ts: '2026-01-01T00:00:00.000001Z', event_id: 3 },
      { event_ts: '9999-12-31T23:59:59.999999Z', event_id: 4 },
      { event_ts: '+010000-01-01T00:00:00.000000Z', event_id: 5 },
    ].map(lastOrder);
    assert.deepEqual([...keys].sort(), keys);
  });

  it('parses redis+cluster URLs and insists on a hash tag in the prefix', () => {
    assert.equal(parseClusterUrl('redis://127.0.0.1:6379'), null);
    assert.deepEqual(parseClusterUrl('redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001,h3'), {
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '::1', port: 7001 },
        { host: 'h3', port: 6379 },
      ],
      auth: { username: 'u', password: 'p@ss' },
      tls: false,
    });
    assert.equal(parseClusterUrl('rediss+cluster://h:7000/')?.tls, true);
    assert.throws(() => parseClusterUrl('redis+cluster://h:notaport'), /bad cluster node/);
    assert.throws(() => assertClusterPrefix('redis+cluster://h:7000', 'app:'), /hash tag/);
    assert.throws(() => assertClusterPrefix('redis+cluster://h:7000', 'a{}b'), /hash tag/);
    assertClusterPrefix('redis+cluster://h:7000', '{engagement}:');
    assertClusterPrefix('redis://h:6379', 'app:');
  });
});
