/** Minute buckets and the sliding 10-minute window used by the Redis leaderboards. */

/**
 * `YYYYMMDDHHMM` of the UTC minute a canonical ISO timestamp falls in (string slicing, no Date).
 * Years outside 0000..9999 keep their sign and six digits (`+010000…`, `-000043…`): such a
 * bucket is unique, never part of a window of the last minutes, and expires like any other.
 */
export function minuteBucketOfIso(iso: string): string {
  const y = iso.startsWith('+') || iso.startsWith('-') ? 7 : 4; // length of the year part
  return (
    iso.slice(0, y) +
    iso.slice(y + 1, y + 3) +
    iso.slice(y + 4, y + 6) +
    iso.slice(y + 7, y + 9) +
    iso.slice(y + 10, y + 12)
  );
}

/** `YYYYMMDDHHMM` of the UTC minute a time (ms since the epoch) falls in. */
export function minuteBucketOfMs(ms: number): string {
  return minuteBucketOfIso(new Date(ms).toISOString());
}

/** When a `YYYYMMDDHHMM` bucket's minute ends (ms since the epoch); null for other years' buckets. */
export function minuteBucketEndMs(minute: string): number | null {
  const m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)$/.exec(minute);
  if (!m) return null;
  const [y, mo, d, h, mi] = m.slice(1).map(Number);
  const date = new Date(0);
  date.setUTCFullYear(y, mo - 1, d); // years 0..99 too (Date.UTC would read them as 1900..1999)
  date.setUTCHours(h, mi + 1, 0, 0);
  return date.getTime();
}

/** The bucket ids of the `minutes` UTC minutes ending at (and including) `nowMs`'s minute. */
export function windowBuckets(nowMs: number, minutes: number): string[] {
  const start = Math.floor(nowMs / 60_000) * 60_000;
  const buckets: string[] = [];
  for (let i = minutes - 1; i >= 0; i--) {
    buckets.push(minuteBucketOfMs(start - i * 60_000));
  }
  return buckets;
}

/** Parses `10m`, `5m` into whole minutes, 1..10 (bucket retention bounds the window). */
export function parseWindow(text: string): number {
  const m = /^(\d+)(m|h)$/.exec(text);
  if (!m)
    throw new RangeError(
      `window must be whole minutes from 1m to 10m, like 5m (got ${JSON.stringify(text)})`,
    );
  const minutes = +m[1] * (m[2] === 'h' ? 60 : 1);
  if (minutes < 1 || minutes > 10)
    throw new RangeError(`window must be from 1m to 10m (got ${JSON.stringify(text)})`);
  return minutes;
}
