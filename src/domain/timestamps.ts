/**
 * Timestamps travel as ISO-8601 UTC strings with up to microsecond precision, because a JS
 * Date would drop Postgres's microseconds.
 */

const PG_TIMESTAMPTZ =
  /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?|Z)?$/;

/** Normalises Postgres's text form of timestamptz (any offset) to `YYYY-MM-DDTHH:MM:SS.ffffffZ`. */
export function pgTimestampToIso(text: string): string {
  const m = PG_TIMESTAMPTZ.exec(text.trim());
  if (!m) {
    if (text === 'infinity' || text === '-infinity')
      throw new RangeError(`timestamp ${text} is not supported`);
    throw new RangeError(`unparseable timestamp: ${JSON.stringify(text.slice(0, 40))}`);
  }
  const [, y, mo, d, h, mi, s, frac = '', sign, oh = '0', om = '0', os = '0'] = m;
  const offsetMs = sign ? (sign === '-' ? -1 : 1) * ((+oh * 60 + +om) * 60 + +os) * 1000 : 0;
  const utcMs = Date.UTC(+y, +mo - 1, +d, +h, +mi, +s) - offsetMs;
  return `${isoSeconds(utcMs)}.${frac.padEnd(6, '0')}Z`;
}

/** Converts the replication stream's commit time (BigInt µs since the Unix epoch) to ISO. */
export function microsToIso(micros: bigint): string {
  const ms = Number(micros / 1000n);
  const fraction = Number(((micros % 1_000_000n) + 1_000_000n) % 1_000_000n);
  const seconds = Math.floor(ms / 1000) * 1000;
  return `${isoSeconds(seconds)}.${String(fraction).padStart(6, '0')}Z`;
}

/** A JS Date (millisecond precision) as the same ISO form. */
export function dateToIso(date: Date): string {
  const ms = date.getTime();
  const whole = Math.floor(ms / 1000) * 1000;
  return `${isoSeconds(whole)}.${String(ms - whole).padStart(3, '0')}000Z`;
}

/** Milliseconds since the epoch of an ISO timestamp produced by this module. */
export function isoToMillis(iso: string): number {
  return Date.parse(iso.length > 24 ? `${iso.slice(0, 23)}Z` : iso);
}

function isoSeconds(ms: number): string {
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) throw new RangeError('timestamp out of range');
  const text = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ (or ±YYYYYY for far years)
  return text.slice(0, text.length - 5);
}
