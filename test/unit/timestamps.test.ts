import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  civilToMicros,
  dateToIso,
  isoToMicros,
  isoToMillis,
  microsToIso,
  pgTimestampToIso,
  pgTimestampToMicros,
  POSTGRES_TIMESTAMPTZ_RANGE,
  timestampRangeProblem,
} from '../../src/domain/timestamps.js';
import { minuteBucketOfIso, windowBuckets } from '../../src/domain/windows.js';
import { eventPosition, lsnToSortable, compareLsn } from '../../src/domain/position.js';
import { intBetween, pick, prng, seeds } from '../helpers/prng.js';

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
  it('converts instants before 1970 (negative µs) exactly', () => {
    assert.equal(microsToIso(-1n), '1969-12-31T23:59:59.999999Z');
    assert.equal(microsToIso(-1_000_001n), '1969-12-31T23:59:58.999999Z');
  });
});

// Postgres's text output (DateStyle ISO) over its whole timestamptz range, 4714-11-24 BC ..
// 294276-12-31 AD. Expanded years (ISO-8601, as Date#toISOString writes them) outside 0..9999;
// BC years as astronomical years (1 BC = 0000, 44 BC = -000043).
describe('Postgres timestamp edges', () => {
  const cases: [string, string][] = [
    ['0001-01-01 00:00:00+00', '0001-01-01T00:00:00.000000Z'],
    ['0099-12-31 23:59:59.999999+00', '0099-12-31T23:59:59.999999Z'],
    ['0100-03-01 00:00:00.000001+00', '0100-03-01T00:00:00.000001Z'],
    ['1899-12-31 23:59:59.999999+00', '1899-12-31T23:59:59.999999Z'],
    ['9999-12-31 23:59:59.999999+00', '9999-12-31T23:59:59.999999Z'],
    ['10000-01-01 00:00:00+00', '+010000-01-01T00:00:00.000000Z'],
    ['294276-12-31 23:59:59.999999+00', '+294276-12-31T23:59:59.999999Z'],
    ['0001-12-31 23:59:59.999999+00 BC', '0000-12-31T23:59:59.999999Z'],
    ['0044-03-15 12:00:00+00 BC', '-000043-03-15T12:00:00.000000Z'],
    ['4714-11-24 00:00:00+00 BC', '-004713-11-24T00:00:00.000000Z'],
    ['0005-02-29 00:00:00+00 BC', '-000004-02-29T00:00:00.000000Z'],
    ['2000-02-29 12:00:00.5+00', '2000-02-29T12:00:00.500000Z'],
    // Offsets other than UTC (a session whose TimeZone is not UTC), local mean time included.
    ['0001-01-01 01:00:00+01', '0001-01-01T00:00:00.000000Z'],
    ['1850-01-01 00:53:28+00:53:28', '1850-01-01T00:00:00.000000Z'],
    ['0001-01-01 00:00:00+01 BC', '-000001-12-31T23:00:00.000000Z'],
  ];
  for (const [text, iso] of cases) {
    it(`${text} -> ${iso}`, () => assert.equal(pgTimestampToIso(text), iso));
  }
  it('reads its own canonical form back unchanged', () => {
    for (const [, iso] of cases) assert.equal(pgTimestampToIso(iso), iso);
  });
  it('refuses what has no instant or is outside Postgres', () => {
    assert.throws(() => pgTimestampToIso('infinity'), /infinity is not supported/);
    assert.throws(() => pgTimestampToIso('-infinity'), /infinity is not supported/);
    assert.throws(() => pgTimestampToIso('4714-11-23 23:59:59.999999+00 BC'), /outside Postgres/);
    assert.throws(() => pgTimestampToIso('294277-01-01 00:00:00+00'), /outside Postgres/);
    assert.throws(() => pgTimestampToIso('2026-02-29 00:00:00+00'), /invalid timestamp/);
    assert.throws(() => pgTimestampToIso('0004-02-29 00:00:00+00 BC'), /invalid timestamp/);
    assert.throws(() => pgTimestampToIso('-000043-03-15 12:00:00+00 BC'), /unparseable/);
  });
  it('agrees with Date.UTC wherever a JS Date reaches, to the microsecond', () => {
    let seed = 42;
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    // A Date reaches 271821 BC .. 275760 AD; Postgres starts at 4714 BC.
    const minMs = Number(POSTGRES_TIMESTAMPTZ_RANGE.min / 1000n);
    const maxMs = 8.64e15;
    for (let i = 0; i < 2000; i++) {
      const ms = Math.floor(minMs + next() * (maxMs - minMs));
      const micro = Math.floor(next() * 1000);
      const iso = microsToIso(BigInt(ms) * 1000n + BigInt(micro));
      const dateIso = new Date(ms).toISOString();
      assert.equal(iso, `${dateIso.slice(0, -1)}${String(micro).padStart(3, '0')}Z`);
      assert.equal(isoToMicros(iso), BigInt(ms) * 1000n + BigInt(micro));
      assert.equal(isoToMillis(iso), ms);
    }
  });
  it('round-trips every day at the ends of the range', () => {
    const day = 86_400_000_000n;
    const { min, max } = POSTGRES_TIMESTAMPTZ_RANGE;
    for (let t = min; t < min + 800n * day; t += day + 1n) assert.equal(isoToMicros(microsToIso(t)), t);
    for (let t = max; t > max - 800n * day; t -= day + 7n) assert.equal(isoToMicros(microsToIso(t)), t);
    assert.equal(microsToIso(min), '-004713-11-24T00:00:00.000000Z');
    assert.equal(microsToIso(max), '+294276-12-31T23:59:59.999999Z');
  });
  it('converts a Date and checks a range', () => {
    assert.equal(dateToIso(new Date('0005-06-07T08:09:10.123Z')), '0005-06-07T08:09:10.123000Z');
    const range = { label: 'Test', min: civilToMicros(1900, 1, 1), max: civilToMicros(2000, 1, 1) };
    assert.equal(timestampRangeProblem('event_ts', '1950-01-01T00:00:00.000000Z', range), null);
    assert.match(
      String(timestampRangeProblem('event_ts', '1899-12-31T23:59:59.999999Z', range)),
      /^event_ts 1899-12-31T23:59:59.999999Z is outside Test's range \(1900-01-01T00:00:00.000000Z \.\. 2000-01-01/,
    );
  });
});

describe('windows', () => {
  it('buckets by UTC minute', () => {
    assert.equal(minuteBucketOfIso('2026-11-23T10:07:59.999999Z'), '202611231007');
    assert.equal(minuteBucketOfIso('0001-01-01T00:00:00.000000Z'), '000101010000');
  });
  it('gives expanded years their own buckets, outside every recent window', () => {
    assert.equal(minuteBucketOfIso('+010000-01-01T00:00:00.000000Z'), '+0100000101' + '0000');
    assert.equal(minuteBucketOfIso('-000043-03-15T12:34:56.000000Z'), '-0000430315' + '1234');
    const now = Date.parse('2026-11-23T10:00:30Z');
    const window = windowBuckets(now, 10);
    for (const far of ['+010000-01-01T00:00:00.000000Z', '-000043-03-15T12:34:56.000000Z'])
      assert.ok(!window.includes(minuteBucketOfIso(far)));
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

// Property: the character-code reading of the stream's usual timestamps gives exactly what the
// general parser gives (the same text, or the same error), on near-misses as much as on hits.
describe('pgTimestampToIso agrees with the general parser', () => {
  const general = (text: string): string => microsToIso(pgTimestampToMicros(text));
  const outcome = (f: () => string): string => {
    try {
      return f();
    } catch (err) {
      return `threw ${(err as Error).name}: ${(err as Error).message}`;
    }
  };
  for (const seed of seeds(10)) {
    it(`random and mutated timestamps (seed ${seed})`, () => {
      const random = prng(seed);
      const two = (max: number) => String(intBetween(random, 0, max)).padStart(2, '0');
      const zones = [
        '',
        'Z',
        '+00',
        '+0000',
        '+00:00',
        '+00:00:00',
        '+01',
        '-00',
        '+00:0',
        '+00:000',
        '+05:30',
        ' BC',
        '+00 BC',
        'z',
      ];
      const chars = '0123456789-: T.+Z'.split('');
      for (let n = 0; n < 2000; n++) {
        const fraction = pick(random, [
          '',
          '.',
          ...[1, 2, 3, 4, 5, 6, 7].map(
            (k) => `.${String(intBetween(random, 0, 10 ** k - 1)).padStart(k, '0')}`,
          ),
        ]);
        let text =
          `${String(intBetween(random, 0, 9999)).padStart(4, '0')}-${two(13)}-${two(32)}` +
          `${pick(random, [' ', 'T'])}${two(25)}:${two(61)}:${two(61)}${fraction}${pick(random, zones)}`;
        if (random() < 0.3) {
          const at = intBetween(random, 0, text.length);
          const op = intBetween(random, 0, 2);
          const c = pick(random, chars);
          text =
            op === 0
              ? text.slice(0, at) + c + text.slice(at + 1)
              : op === 1
                ? text.slice(0, at) + c + text.slice(at)
                : text.slice(0, at) + text.slice(at + 1);
        }
        assert.equal(
          outcome(() => pgTimestampToIso(text)),
          outcome(() => general(text)),
          text,
        );
      }
    });
  }
});
