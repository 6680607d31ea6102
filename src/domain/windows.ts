/** Minute buckets and the sliding 10-minute window used by the Redis leaderboards. */

/** `YYYYMMDDHHMM` of the UTC minute an ISO timestamp falls in (string slicing, no Date). */
export function minuteBucketOfIso(iso: string): string {
  // iso: YYYY-MM-DDTHH:MM:...; years beyond 9999 are not bucketed meaningfully but stay unique.
  return iso.slice(0, 4) + iso.slice(5, 7) + iso.slice(8, 10) + iso.slice(11, 13) + iso.slice(14, 16);
}

/** The bucket ids of the `minutes` UTC minutes ending at (and including) `nowMs`'s minute. */
export function windowBuckets(nowMs: number, minutes: number): string[] {
  const start = Math.floor(nowMs / 60_000) * 60_000;
  const buckets: string[] = [];
  for (let i = minutes - 1; i >= 0; i--) {
    buckets.push(minuteBucketOfIso(new Date(start - i * 60_000).toISOString()));
  }
  return buckets;
}

/** Parses `10m`, `5m`, `1h` into whole minutes (1..60: bucket retention bounds the window). */
export function parseWindow(text: string): number {
  const m = /^(\d+)(m|h)$/.exec(text);
  if (!m) throw new RangeError(`window must look like 10m or 1h, got ${JSON.stringify(text)}`);
  const minutes = +m[1] * (m[2] === 'h' ? 60 : 1);
  if (minutes < 1 || minutes > 10) throw new RangeError('window must be between 1m and 10m');
  return minutes;
}
