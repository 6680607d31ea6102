import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeTimestamp, ValueError } from '../../src/source/kafka/debezium-values.js';

describe("Debezium's timestamps (ZonedTimestamp text)", () => {
  it('reads every year Postgres has, exactly, as the stream spells it', () => {
    const cases: [string, string][] = [
      ['2026-11-02T10:15:30.123456Z', '2026-11-02T10:15:30.123456Z'],
      ['2026-11-02T10:15:30.123456789Z', '2026-11-02T10:15:30.123456Z'],
      ['2026-11-02T10:15:30+05:30', '2026-11-02T04:45:30.000000Z'],
      ['+10000-01-01T00:00:00Z', '+010000-01-01T00:00:00.000000Z'],
      ['+294276-12-31T23:59:59.999999Z', '+294276-12-31T23:59:59.999999Z'],
      ['-0044-03-15T12:00:00Z', '-000044-03-15T12:00:00.000000Z'],
    ];
    for (const [debezium, iso] of cases) assert.equal(decodeTimestamp(debezium), iso, debezium);
  });

  it('refuses a date that does not exist instead of rolling it over', () => {
    assert.throws(() => decodeTimestamp('2026-02-30T00:00:00Z'), ValueError);
    assert.throws(() => decodeTimestamp('2026-11-02 10:15:30'), ValueError);
    assert.throws(() => decodeTimestamp('2026-11-02T10:15:30+99:99'), ValueError, 'no such zone');
  });
});
