import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { microsToIso, pgTimestampToIso } from '../../src/domain/timestamps.js';
import { minuteBucketOfIso, windowBuckets } from '../../src/domain/windows.js';
import { eventPosition, lsnToSortable, compareLsn } from '../../src/domain/position.js';

describe('timestamps', () => {
  it('keeps microseconds and normalises offsets to UTC', () => {
    assert.equal(pgTimestampToIso('2026-11-23 10:00:00.123456+00'), '2026-11-23T10:00:00.123456Z');
    assert.equal(pgTimestampToIso('2026-11-23 10:00:00+00'), '2026-11-23T10:00:00.000000Z');
    assert.equal(pgTimestampToIso('2026-11-23 12:30:00.5+02:30'), '2026-11-23T10:00:00.500000Z');
    assert.equal(pgTimestampToIso('2026-11-23 05:00:00-05'), '2026-11-23T10:00:00.000000Z');
  });
  it('rejects garbage with a clear error', () => {
    assert.throws(() => pgTimestampToIso('yesterday'), /unparseable timestamp/);
  });
  it('converts the stream commit time (µs since epoch)', () => {
    assert.equal(microsToIso(1_779_000_000_123_456n), '2026-05-17T06:40:00.123456Z');
  });
});

describe('windows', () => {
  it('buckets by UTC minute', () => {
    assert.equal(minuteBucketOfIso('2026-11-23T10:07:59.999999Z'), '202611231007');
  });
  it('lists the last N minute buckets, current last', () => {
    const now = Date.parse('2026-11-23T10:00:30Z');
    assert.deepEqual(windowBuckets(now, 3), ['202611230958', '202611230959', '202611231000']);
  });
});

describe('positions', () => {
  it('sort in stream order as strings', () => {
    assert.equal(lsnToSortable('16/B374D848'), '00000016B374D848');
    const a = eventPosition('0/9', 2);
    const b = eventPosition('0/10', 1);
    assert.ok(a < b);
    assert.ok(eventPosition('0/10', 1) < eventPosition('0/10', 16));
    assert.equal(compareLsn('0/A', '0/9'), 1);
  });
});
