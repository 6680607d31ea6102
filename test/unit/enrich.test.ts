import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { divideRoundHalfAwayFromZero, fromScaled, fromScaledText } from '../../src/domain/decimal.js';
import { engagementPct, engagementSeconds, enrich, enrichesCleanly } from '../../src/domain/enrich.js';
import { intBetween, prng, seeds } from '../helpers/prng.js';
import type { ContentInfo, EngagementEventRow } from '../../src/domain/types.js';

const video: ContentInfo = { id: 'c1', slug: 'v', title: 'V', content_type: 'video', length_seconds: 300 };
const row = (over: Partial<EngagementEventRow> = {}): EngagementEventRow => ({
  id: 1,
  content_id: 'c1',
  user_id: 'u1',
  event_type: 'play',
  event_ts: '2026-11-23T10:00:00.123456Z',
  duration_ms: 7000,
  device: 'ios',
  raw_payload: { a: 1 },
  ...over,
});

describe('engagement_seconds', () => {
  it('is duration_ms / 1000 exactly, up to 3 decimals', () => {
    assert.equal(engagementSeconds(7000), 7);
    assert.equal(engagementSeconds(7001), 7.001);
    assert.equal(engagementSeconds(1), 0.001);
    assert.equal(engagementSeconds(0), 0);
    assert.equal(engagementSeconds(2147483647), 2147483.647);
    assert.equal(String(engagementSeconds(100)), '0.1');
  });
  it('is NULL for NULL or negative durations', () => {
    assert.equal(engagementSeconds(null), null);
    assert.equal(engagementSeconds(-1), null);
  });
});

describe('engagement_pct', () => {
  it('follows the seed example: 7,000 ms of a 300 s video is 0.02', () => {
    assert.equal(engagementPct(7000, 300), 0.02);
  });
  it('rounds half away from zero in decimal, as Postgres round(numeric, 2)', () => {
    // 0.125 exactly -> 0.13 (binary floating point would give 0.12 for some such values)
    assert.equal(engagementPct(1250, 10), 0.13);
    assert.equal(engagementPct(1150, 10), 0.12); // 0.115 -> 0.12 (1.15*? float says 0.11)
    assert.equal(engagementPct(1050, 10), 0.11); // 0.105 -> 0.11
    assert.equal(engagementPct(1049, 10), 0.1);
    assert.equal(engagementPct(5, 1), 0.01); // 0.005 -> 0.01
    assert.equal(engagementPct(4, 1), 0);
    assert.equal(engagementPct(1, 3), 0); // 0.000333
  });
  it('is not capped above 1 (re-plays)', () => {
    assert.equal(engagementPct(600_000, 300), 2);
  });
  it('is NULL when duration is NULL/negative or length is NULL/0', () => {
    assert.equal(engagementPct(null, 300), null);
    assert.equal(engagementPct(-5, 300), null);
    assert.equal(engagementPct(5000, null), null);
    assert.equal(engagementPct(5000, 0), null);
  });
  it('handles a negative length (no CHECK on the source) symmetrically', () => {
    assert.equal(engagementPct(1250, -10), -0.13);
  });
  it('matches exact rational rounding over a sweep of values', () => {
    for (let d = 0; d < 3000; d += 7) {
      for (const len of [1, 3, 7, 30, 299, 300, 3601]) {
        // reference: compare 2*remainder with divisor on BigInt
        const n = BigInt(d);
        const den = BigInt(len * 10);
        let q = n / den;
        if ((n % den) * 2n >= den) q += 1n;
        assert.equal(engagementPct(d, len), Number(q) / 100 === 0 ? 0 : Number((Number(q) / 100).toFixed(2)));
      }
    }
  });
});

describe('decimal helpers', () => {
  it('divides with half-away-from-zero rounding', () => {
    assert.equal(divideRoundHalfAwayFromZero(5, 2), 3);
    assert.equal(divideRoundHalfAwayFromZero(-5, 2), -3);
    assert.equal(divideRoundHalfAwayFromZero(4, 3), 1);
    assert.equal(divideRoundHalfAwayFromZero(0, 7), 0);
    assert.equal(divideRoundHalfAwayFromZero(2 ** 31 - 1, 3), 715827882);
  });
  it('formats scaled integers exactly', () => {
    assert.equal(fromScaled(7001, 3), 7.001);
    assert.equal(fromScaled(5, 2), 0.05);
    assert.equal(fromScaled(-5, 2), -0.05);
    assert.equal(fromScaled(0, 2), 0);
  });
});

describe('enrich', () => {
  const committed = '2026-11-23T10:00:01.000001Z';
  const processed = '2026-11-23T10:00:01.002000Z';
  it('joins content and derives every field', () => {
    const { event, issues } = enrich(row(), video, committed, processed);
    assert.deepEqual(issues, []);
    assert.deepEqual(event, {
      event_id: 1,
      content_id: 'c1',
      user_id: 'u1',
      event_type: 'play',
      event_ts: '2026-11-23T10:00:00.123456Z',
      duration_ms: 7000,
      device: 'ios',
      raw_payload: { a: 1 },
      content_type: 'video',
      length_seconds: 300,
      engagement_seconds: 7,
      engagement_pct: 0.02,
      committed_at: committed,
      processed_at: processed,
    });
  });
  it('leaves content fields NULL for unknown content, and says so', () => {
    const { event, issues } = enrich(row(), undefined, committed, processed);
    assert.equal(event.content_type, null);
    assert.equal(event.length_seconds, null);
    assert.equal(event.engagement_seconds, 7);
    assert.equal(event.engagement_pct, null);
    assert.deepEqual(issues, ['unknown_content']);
  });
  it('records a negative duration and nulls the derived fields', () => {
    const { event, issues } = enrich(row({ duration_ms: -10 }), video, committed, processed);
    assert.equal(event.duration_ms, -10);
    assert.equal(event.engagement_seconds, null);
    assert.equal(event.engagement_pct, null);
    assert.deepEqual(issues, ['negative_duration']);
  });
  it('handles NULLs everywhere the schema allows them', () => {
    const { event, issues } = enrich(
      row({
        content_id: null,
        user_id: null,
        event_type: null,
        duration_ms: null,
        device: null,
        raw_payload: null,
      }),
      undefined,
      committed,
      processed,
    );
    assert.equal(event.engagement_seconds, null);
    assert.equal(event.engagement_pct, null);
    assert.equal(event.content_type, null);
    assert.deepEqual(issues, ['null_content_id']);
  });
  it('zero and NULL content length give a NULL pct but keep seconds', () => {
    for (const length_seconds of [0, null]) {
      const { event } = enrich(row(), { ...video, length_seconds }, committed, processed);
      assert.equal(event.engagement_seconds, 7);
      assert.equal(event.engagement_pct, null);
      assert.equal(event.length_seconds, length_seconds);
    }
  });
});

// Property: the division is the decimal text's number (both are the double nearest to the
// exact decimal), over the whole safe-integer range and every scale the rules use and more.
describe('fromScaled by division', () => {
  for (const seed of seeds(5)) {
    it(`equals Number(decimal text) (seed ${seed})`, () => {
      const random = prng(seed);
      const edges = [0, -0, 1, -1, 5, 9, 10, 99, 125, 2 ** 31 - 1, -(2 ** 31), 2 ** 53 - 1, -(2 ** 53 - 1)];
      for (let n = 0; n < 20000; n++) {
        const magnitude = 10 ** intBetween(random, 0, 15);
        const units =
          n < edges.length * 8
            ? edges[n % edges.length]
            : Math.round((random() - 0.5) * 2 * Math.min(magnitude, Number.MAX_SAFE_INTEGER));
        const scale = n < edges.length * 8 ? Math.floor(n / edges.length) : intBetween(random, 0, 8);
        assert.equal(fromScaled(units, scale), fromScaledText(units, scale), `${units} ${scale}`);
      }
    });
  }
});

describe('enrichesCleanly', () => {
  it('is true exactly when enrich() reports no issue', () => {
    for (const duration_ms of [null, -1, 0, 5])
      for (const content_id of [null, 'c1'])
        for (const content of [undefined, video]) {
          const r = row({ duration_ms, content_id });
          assert.equal(enrichesCleanly(r, content), enrich(r, content, 'c', 'p').issues.length === 0);
        }
  });
});
