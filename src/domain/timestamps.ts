/**
 * Timestamps travel through the pipeline as one canonical text: ISO-8601 UTC with exactly six
 * fractional digits, `YYYY-MM-DDTHH:MM:SS.ffffffZ`. A JS Date would drop Postgres's microseconds
 * and covers fewer years than Postgres, so every conversion here is integer arithmetic on
 * microseconds since the Unix epoch (a bigint), exact over Postgres's whole timestamptz range
 * (4714-11-24 BC .. 294276-12-31 AD).
 *
 * Years outside 0000..9999 use ISO-8601's expanded form with a sign and six digits, as
 * JavaScript's Date#toISOString does: `+010000-01-01T00:00:00.000000Z`. Years are astronomical
 * (proleptic Gregorian, year 0 = 1 BC): Postgres's `0044-03-15 12:00:00+00 BC` is
 * `-000043-03-15T12:00:00.000000Z`. Which destination can hold which part of that range is
 * the destination's business (see each sink's range check), not the domain's.
 */

/** An inclusive range of instants, in microseconds since the Unix epoch. */
export interface TimestampRange {
  /** For messages, e.g. `DuckDB TIMESTAMPTZ`. */
  label: string;
  min: bigint;
  max: bigint;
}

const MICROS_PER_SECOND = 1_000_000n;
const SECONDS_PER_DAY = 86_400n;

// Postgres DateStyle=ISO output (`2026-11-23 10:00:00.123456+00`, `10000-01-01 00:00:00+00`,
// `0044-03-15 12:00:00+00 BC`, offsets with minutes or seconds) and the canonical form itself.
const TIMESTAMP_TEXT =
  /^([+-]?)(\d{4,6})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?|Z)?( BC)?$/;

/** Microseconds since the epoch of a proleptic-Gregorian UTC date and time (astronomical year). */
export function civilToMicros(
  year: number,
  month: number,
  day: number,
  hour = 0,
  minute = 0,
  second = 0,
  micro = 0,
): bigint {
  const seconds =
    BigInt(daysFromCivil(year, month, day)) * SECONDS_PER_DAY + BigInt(hour * 3600 + minute * 60 + second);
  return seconds * MICROS_PER_SECOND + BigInt(micro);
}

/** Postgres's timestamptz range: 4714-11-24 00:00:00 BC .. 294276-12-31 23:59:59.999999 UTC. */
export const POSTGRES_TIMESTAMPTZ_RANGE: TimestampRange = {
  label: 'Postgres timestamptz',
  min: civilToMicros(-4713, 11, 24),
  max: civilToMicros(294276, 12, 31, 23, 59, 59, 999_999),
};

/**
 * Normalises Postgres's text form of timestamptz (any offset, `BC` suffix, 5- and 6-digit
 * years) to the canonical ISO form, exactly. `infinity`/`-infinity` (no instant) and text
 * outside Postgres's range throw a RangeError with the reason.
 */
export function pgTimestampToIso(text: string): string {
  // The stream's usual case (UTC, years 0000..9999) is a re-spelling: no arithmetic needed.
  const fast = utcTimestampToIso(text);
  if (fast !== null) return fast;
  const m = UTC_TIMESTAMP_TEXT.exec(text);
  if (m && isValidCivil(+m[1], +m[2], +m[3], +m[4], +m[5], +m[6]))
    return `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${(m[7] ?? '').padEnd(6, '0')}Z`;
  return microsToIso(pgTimestampToMicros(text));
}

const UTC_TIMESTAMP_TEXT =
  /^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:\+00(?::?00)?|Z)$/;

/**
 * What the UTC_TIMESTAMP_TEXT branch of pgTimestampToIso returns, read with character codes (once
 * per event, where the RegExp and its match array were a visible cost); null for any text it
 * does not read, which then takes the RegExp path. A property test pins the two together.
 */
function utcTimestampToIso(text: string): string | null {
  const n = text.length;
  if (n < 20) return null;
  // The canonical text is written byte by byte as the input is read, then made one string (a
  // flat one: a concatenation would be flattened later, by whoever reads it first).
  const out = ISO_SCRATCH;
  for (let i = 0; i < 19; i++) {
    const c = text.charCodeAt(i);
    const want = DATE_TIME_LAYOUT[i];
    if (want === DIGIT ? c < 48 || c > 57 : i === 10 ? c !== 32 && c !== 84 : c !== want) return null;
    out[i] = c;
  }
  out[10] = 84; // T
  out[19] = 46; // .
  let p = 19;
  if (text.charCodeAt(19) === 46) {
    // '.': one to six digits
    p = 20;
    while (p < n && p < 26) {
      const c = text.charCodeAt(p);
      if (c < 48 || c > 57) break;
      out[p++] = c;
    }
    if (p === 20) return null;
  }
  out.fill(48, p === 19 ? 20 : p, 26);
  out[26] = 90; // Z
  // Z, +00, +0000 or +00:00, then the end.
  const rest = n - p;
  const zone = text.charCodeAt(p);
  if (zone === 90) {
    if (rest !== 1) return null;
  } else if (zone === 43 && text.charCodeAt(p + 1) === 48 && text.charCodeAt(p + 2) === 48) {
    if (rest === 5) {
      if (text.charCodeAt(p + 3) !== 48 || text.charCodeAt(p + 4) !== 48) return null;
    } else if (rest === 6) {
      if (text.charCodeAt(p + 3) !== 58 || text.charCodeAt(p + 4) !== 48 || text.charCodeAt(p + 5) !== 48)
        return null;
    } else if (rest !== 3) return null;
  } else return null;
  const year = (out[0] - 48) * 1000 + (out[1] - 48) * 100 + (out[2] - 48) * 10 + out[3] - 48;
  if (
    !isValidCivil(
      year,
      twoDigits(out, 5),
      twoDigits(out, 8),
      twoDigits(out, 11),
      twoDigits(out, 14),
      twoDigits(out, 17),
    )
  )
    return null;
  return (out as unknown as { latin1Slice(start: number, end: number): string }).latin1Slice(0, 27);
}

function twoDigits(bytes: Uint8Array, at: number): number {
  return (bytes[at] - 48) * 10 + bytes[at + 1] - 48;
}

const ISO_SCRATCH = Buffer.alloc(27);
const DIGIT = 0;
/** `YYYY-MM-DD HH:MM:SS` (position 10: a space or T), digits as DIGIT. */
const DATE_TIME_LAYOUT = Uint8Array.from('dddd-dd-dd dd:dd:dd', (c) => (c === 'd' ? DIGIT : c.charCodeAt(0)));

/** Microseconds since the epoch of a Postgres timestamptz text or a canonical ISO timestamp. */
export function pgTimestampToMicros(text: string): bigint {
  const trimmed = text.trim();
  const m = TIMESTAMP_TEXT.exec(trimmed);
  if (!m) {
    if (trimmed === 'infinity' || trimmed === '-infinity')
      throw new RangeError(`timestamp ${trimmed} is not supported (no instant to store)`);
    throw new RangeError(`unparseable timestamp: ${JSON.stringify(text.slice(0, 40))}`);
  }
  const [, yearSign, y, mo, d, h, mi, s, frac = '', sign, oh = '0', om = '0', os = '0', bc] = m;
  if (bc && yearSign) throw new RangeError(`unparseable timestamp: ${JSON.stringify(text.slice(0, 40))}`);
  // Postgres counts 1 BC, 2 BC, ... with no year 0; astronomical numbering has 0, -1, ...
  const year = bc ? 1 - Number(y) : yearSign === '-' ? -Number(y) : Number(y);
  const month = Number(mo);
  const day = Number(d);
  // Offsets as Postgres bounds them (±15:59:59): +99:99 is no zone, not a shifted time.
  if (!isValidCivil(year, month, day, +h, +mi, +s) || +oh > 15 || +om > 59 || +os > 59)
    throw new RangeError(`invalid timestamp: ${JSON.stringify(text.slice(0, 40))}`);
  const offsetSeconds = sign ? (sign === '-' ? -1 : 1) * ((+oh * 60 + +om) * 60 + +os) : 0;
  const micros =
    civilToMicros(year, month, day, +h, +mi, +s, Number(frac.padEnd(6, '0'))) -
    BigInt(offsetSeconds) * MICROS_PER_SECOND;
  const range = POSTGRES_TIMESTAMPTZ_RANGE;
  if (micros < range.min || micros > range.max)
    throw new RangeError(`timestamp ${trimmed} is outside ${range.label}'s range`);
  return micros;
}

/** The canonical ISO form of an instant (µs since the Unix epoch); the stream's commit time is one. */
export function microsToIso(micros: bigint): string {
  const days = floorDiv(micros, SECONDS_PER_DAY * MICROS_PER_SECOND);
  const inDay = micros - days * SECONDS_PER_DAY * MICROS_PER_SECOND;
  const [year, month, day] = civilFromDays(Number(days));
  if (Math.abs(year) > 999_999) throw new RangeError('timestamp out of range');
  const secondOfDay = Number(inDay / MICROS_PER_SECOND);
  const fraction = Number(inDay % MICROS_PER_SECOND);
  const yearText =
    year >= 0 && year <= 9999 ? pad(year, 4) : `${year < 0 ? '-' : '+'}${pad(Math.abs(year), 6)}`;
  return (
    `${yearText}-${pad(month, 2)}-${pad(day, 2)}T${pad(Math.floor(secondOfDay / 3600), 2)}:` +
    `${pad(Math.floor(secondOfDay / 60) % 60, 2)}:${pad(secondOfDay % 60, 2)}.${pad(fraction, 6)}Z`
  );
}

/** Microseconds since the epoch of a canonical ISO timestamp (or any form pgTimestampToMicros reads). */
export function isoToMicros(iso: string): bigint {
  return pgTimestampToMicros(iso);
}

/** A JS Date (millisecond precision) as the same ISO form. */
export function dateToIso(date: Date): string {
  const ms = date.getTime();
  if (Number.isNaN(ms)) throw new RangeError('timestamp out of range');
  // Years 0000..9999 (every clock reading): Date's own ISO text, padded to microseconds.
  if (ms >= YEAR_0_MS && ms < YEAR_10000_MS) return `${date.toISOString().slice(0, -1)}000Z`;
  return microsToIso(BigInt(ms) * 1000n);
}

const YEAR_0_MS = Number(civilToMicros(0, 1, 1) / 1000n);
const YEAR_10000_MS = Number(civilToMicros(10000, 1, 1) / 1000n);

/** Milliseconds since the epoch of an ISO timestamp produced by this module (microseconds truncated). */
export function isoToMillis(iso: string): number {
  return Number(floorDiv(isoToMicros(iso), 1000n));
}

/** Why `iso` cannot be stored in a column of `range` (null when it can); `field` names the column. */
export function timestampRangeProblem(field: string, iso: string, range: TimestampRange): string | null {
  // Canonical texts of years 0000..9999 have one width, so they sort as they compare in time.
  if (iso.length === 27 && iso.charCodeAt(0) <= 57 && iso.charCodeAt(0) >= 48 && iso.endsWith('Z')) {
    const { minIso, maxIso } = boundsOf(range);
    if (isoAtLeast(iso, minIso) && !isoAtLeast(iso, maxIso, true)) return null;
  }
  let micros: bigint;
  try {
    micros = isoToMicros(iso);
  } catch (err) {
    return `${field} ${JSON.stringify(iso)}: ${(err as Error).message}`;
  }
  if (micros >= range.min && micros <= range.max) return null;
  return `${field} ${iso} is outside ${range.label}'s range (${microsToIso(range.min)} .. ${microsToIso(range.max)})`;
}

const bounds = new WeakMap<TimestampRange, { minIso: string; maxIso: string }>();
// The range asked about last (a sink checks three timestamps per event against one range).
let lastRange: TimestampRange | null = null;
let lastBounds = { minIso: '', maxIso: '' };
function boundsOf(range: TimestampRange): { minIso: string; maxIso: string } {
  if (range === lastRange) return lastBounds;
  let b = bounds.get(range);
  if (!b) bounds.set(range, (b = { minIso: microsToIso(range.min), maxIso: microsToIso(range.max) }));
  lastRange = range;
  lastBounds = b;
  return b;
}

/** A 4-digit-year canonical `iso` >= `bound` (> with `strict`), for any canonical bound. */
function isoAtLeast(iso: string, bound: string, strict = false): boolean {
  if (bound.startsWith('-')) return true;
  if (bound.startsWith('+')) return false;
  return strict ? iso > bound : iso >= bound;
}

function isValidCivil(year: number, month: number, day: number, h: number, mi: number, s: number): boolean {
  return (
    month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(year, month) && h <= 23 && mi <= 59 && s <= 59
  );
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

// Days since 1970-01-01 of a proleptic-Gregorian date and back (H. Hinnant's algorithms, which
// are exact for every year, negative ones included, given floor division).
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}

function civilFromDays(days: number): [number, number, number] {
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const dayOfEra = z - era * 146_097;
  const yearOfEra = Math.floor(
    (dayOfEra -
      Math.floor(dayOfEra / 1460) +
      Math.floor(dayOfEra / 36_524) -
      Math.floor(dayOfEra / 146_096)) /
      365,
  );
  const dayOfYear = dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const mp = Math.floor((5 * dayOfYear + 2) / 153);
  const day = dayOfYear - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return [yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day];
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}
