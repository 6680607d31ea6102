/** The Redis key layout (README, "Redis layout"). Every key goes through here so the prefix is never missed. */
export function redisKeys(prefix: string) {
  const topContent10m = `${prefix}top:content:10m`;
  const topSeconds10m = `${prefix}top:content:seconds:10m`;
  const topDevice10m = `${prefix}top:device:10m`;
  const windowMeta = `${prefix}top:meta:10m`;
  return {
    contentLast: (id: string) => `${prefix}content:last:${id}`,
    contentCount: (id: string) => `${prefix}content:count:${id}`,
    contentBucket: (minute: string) => `${prefix}top:content:bucket:${minute}`,
    secondsBucket: (minute: string) => `${prefix}top:content:seconds:bucket:${minute}`,
    deviceBucket: (minute: string) => `${prefix}top:device:bucket:${minute}`,
    topContent10m,
    topSeconds10m,
    topDevice10m,
    /** Hash: the window (from, to: minute buckets) the 10-minute ZSETs hold, and when it moved. */
    windowMeta,
    /** The window's keys in the order both scripts take them (apply-batch.lua, roll-window.lua). */
    windowKeys: [windowMeta, topContent10m, topSeconds10m, topDevice10m] as const,
    /**
     * The stream's replay watermark: `<position>|<source identity>` for the slot in direct mode,
     * the bare position for streams without an identity (Kafka partitions); see apply-batch.lua.
     */
    watermark: (stream: string) => `${prefix}pipeline:watermark:${stream}`,
    /** Bitmap of event_ids whose effects were applied (one bit per id; no TTL). */
    seen: (chunk: number) => `${prefix}pipeline:seen:${chunk}`,
  };
}

export type RedisKeys = ReturnType<typeof redisKeys>;

export const CONTENT_LAST_TTL_SECONDS = 3600;
export const BUCKET_TTL_SECONDS = 900;
export const WINDOW_MINUTES = 10;
/**
 * The longest move of the 10-minute window done incrementally (subtract the minutes that left,
 * add those that entered); a longer one is a rebuild from the buckets. Well inside the buckets'
 * TTL: a bucket must still exist when it leaves the window, or it cannot be subtracted.
 */
export const WINDOW_ROLL_MAX_MINUTES = 3;
/** Events without a device still count on the device board under this name. */
export const UNKNOWN_DEVICE = 'unknown';

/**
 * Seen bitmaps cover SEEN_CHUNK_BITS event ids each (8 KiB), so a minute of 20k events/s
 * touches about 19 of them. They never expire: they are the per-event dedupe of every Redis
 * effect (content:count, content:last, buckets), and a replay or a backfill may come at any
 * time. One bit per event id: 100 million ids are 12.5 MB.
 */
export const SEEN_CHUNK_BITS = 65_536;
/**
 * A backfill writes minute buckets only for events whose minute is this recent (the buckets
 * the 10-minute window reads, with margin); older events still count in content:count and
 * content:last.
 */
export const BACKFILL_REDIS_HORIZON_MINUTES = 14;
