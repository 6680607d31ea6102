import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { parseInstant } from '../../src/cli/common.js';
import { PipelineError } from '../../src/errors.js';

/** The one config line parseInstant throws for `text`. */
function refusal(text: string, allowNow = false): string {
  try {
    parseInstant(text, '--from', { allowNow });
  } catch (err) {
    assert.ok(err instanceof PipelineError && err.kind === 'config', String(err));
    assert.doesNotMatch(err.message, /\n/);
    return err.message;
  }
  assert.fail(`${text} was accepted`);
}

describe('parseInstant: one strict parser for every CLI time', () => {
  const tz = process.env.TZ;
  afterEach(() => {
    process.env.TZ = tz;
  });

  it('reads a date, and a date-time without an offset, as UTC whatever TZ says', () => {
    for (const zone of ['UTC', 'America/New_York', 'Asia/Kolkata']) {
      process.env.TZ = zone;
      assert.equal(parseInstant('2026-11-01', '--from'), '2026-11-01T00:00:00.000000Z', zone);
      assert.equal(parseInstant('2026-11-01T10:00:00', '--from'), '2026-11-01T10:00:00.000000Z', zone);
      assert.equal(parseInstant('2026-11-01T10:00', '--from'), '2026-11-01T10:00:00.000000Z', zone);
    }
  });

  it('keeps microseconds and applies offsets exactly', () => {
    assert.equal(parseInstant('2026-11-01T10:00:53.791001Z', '--from'), '2026-11-01T10:00:53.791001Z');
    assert.equal(parseInstant('2026-11-01T10:00:53.5+02:00', '--from'), '2026-11-01T08:00:53.500000Z');
    // As psql prints it, and with lower-case letters.
    assert.equal(parseInstant('2026-11-01 10:00:53.5+00', '--from'), '2026-11-01T10:00:53.500000Z');
    assert.equal(parseInstant('2026-11-01t10:00:53z', '--from'), '2026-11-01T10:00:53.000000Z');
    assert.equal(parseInstant('2026-11-01T00:30:00-0130', '--from'), '2026-11-01T02:00:00.000000Z');
    assert.ok(
      parseInstant('2026-11-01T10:00:53.791001Z', '--from') <
        parseInstant('2026-11-01T10:00:53.791999Z', '--to'),
    );
    assert.equal(parseInstant('0001-01-01T00:00:00Z', '--from'), '0001-01-01T00:00:00.000000Z');
    // All of history (backfill): Postgres's words, sorting before and after every four-digit year.
    assert.equal(parseInstant('-infinity', '--from', { allowInfinity: true }), '-infinity');
    assert.equal(parseInstant('infinity', '--to', { allowInfinity: true }), 'infinity');
    const [first, last] = ['-infinity', 'infinity'];
    assert.ok(first < '0001-01-01T00:00:00.000000Z' && last > '9999-12-31T23:59:59.999999Z');
    assert.throws(() => parseInstant('infinity', '--since'), /--since/);
    assert.equal(parseInstant('9999-12-31T23:59:59Z', '--to'), '9999-12-31T23:59:59.000000Z');
  });

  it('refuses impossible dates and times instead of rolling them over', () => {
    for (const text of [
      '2026-02-30T00:00:00Z',
      '2026-02-29',
      '2026-04-31',
      '2026-13-01',
      '2026-11-01T24:00:00Z',
      '2026-11-01T10:60:00Z',
      '2026-11-01T10:00:00+16:00',
    ])
      assert.match(refusal(text), /is not a real date and time/, text);
    assert.equal(parseInstant('2028-02-29', '--from'), '2028-02-29T00:00:00.000000Z');
  });

  it('refuses what is not ISO 8601, more than microseconds, and years Postgres cannot read', () => {
    for (const text of [
      'yesterday',
      '2026-11-01  10:00:00',
      '11/01/2026',
      '2026-11-01T10',
      '2026-11-01Z',
      ' 2026-11-01',
      '1700000000',
      '',
    ])
      assert.match(refusal(text), /must be an ISO-8601 date or date-time/, JSON.stringify(text));
    assert.match(refusal('2026-11-01T10:00:00.1234567Z'), /at most 6 fractional digits/);
    assert.match(refusal('0000-06-01'), /from 0001-01-01/);
  });

  it('takes now only where allowed', () => {
    assert.match(parseInstant('now', '--to', { allowNow: true }), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.match(refusal('now'), /must be an ISO-8601/);
  });
});
