import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lastOrder } from '../../src/sinks/redis/leaderboard-ops.js';
import { intBetween, pick, prng } from '../helpers/prng.js';
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

  it('lastOrder is the signed-year text of its definition, for usual and unusual events alike', () => {
    // The definition: the year plus 1,000,000 in 7 digits, the rest of the text, the id in 20.
    const defined = (ts: string, id: number) => {
      const m = /^([+-]?)(\d+)(.*)$/.exec(ts);
      const year = m ? Number(m[2]) * (m[1] === '-' ? -1 : 1) : -1_000_000;
      return `${String(year + 1_000_000).padStart(7, '0')}${m ? m[3] : ''} ${String(id).padStart(20, '0')}`;
    };
    const random = prng(7);
    const two = (n: number) => String(n).padStart(2, '0');
    for (let n = 0; n < 5_000; n++) {
      const year = pick(random, [0, 1, 999, 1000, 1970, 2026, 9999]);
      const usual = `${String(year).padStart(4, '0')}-${two(intBetween(random, 1, 12))}-${two(intBetween(random, 1, 28))}T${two(intBetween(random, 0, 23))}:${two(intBetween(random, 0, 59))}:${two(intBetween(random, 0, 59))}.${String(intBetween(random, 0, 999_999)).padStart(6, '0')}Z`;
      const ts = pick(random, [
        usual,
        usual,
        '+010000-01-01T00:00:00.000000Z',
        '-000044-03-15T00:00:00.000000Z',
        usual.slice(0, 19) + 'Z',
        usual.replace('Z', '+01:00'),
        '',
        'x',
        '２０２６-01-01T00:00:00.000000Z',
      ]);
      const id = pick(random, [0, 1, intBetween(random, 0, 2 ** 31), 2 ** 53 - 1, -5, 2 ** 53 + 2, 0.5]);
      assert.equal(lastOrder({ event_ts: ts, event_id: id }), defined(ts, id), `${ts} ${id}`);
    }
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
