import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import type { Batch } from '../../domain/types.js';
import { windowBuckets } from '../../domain/windows.js';
import { describeError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { Sink } from '../sink.js';
import { redisKeys, WINDOW_MINUTES, type RedisKeys } from './keys.js';
import { leaderboardOps } from './leaderboard-ops.js';

const APPLY_BATCH_LUA = readFileSync(new URL('./apply-batch.lua', import.meta.url), 'utf8');

type ApplyResult = 0 | 1 | string;
interface ScriptedRedis extends Redis {
  applyBatch(numKeys: number, ...keysAndArgs: string[]): Promise<ApplyResult>;
}

export interface RedisSinkOptions {
  url: string;
  prefix: string;
  logger: Logger;
  /** How often the 10-minute ZSETs may be rebuilt while events flow (ms). */
  refreshMinIntervalMs?: number;
}

/** ioredis options shared by the sink and readers: fail fast while Redis is down, reconnect forever. */
export function createRedis(url: string): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 5_000,
    retryStrategy: (times) => Math.min(100 * times, 2_000),
    lazyConnect: true,
  });
  redis.on('error', () => undefined); // surfaced by the failing command; ioredis reconnects
  return redis;
}

/**
 * The real-time leaderboards (DESIGN.md §5). Each batch is one Lua call: all increments
 * plus the stream's watermark, atomically, so a replayed batch is a no-op. The 10-minute
 * ZSETs are rebuilt from the minute buckets right after writes (at most every
 * refreshMinIntervalMs) and at least once a second.
 */
export class RedisSink implements Sink {
  readonly name = 'redis';
  readonly keys: RedisKeys;
  private readonly redis: ScriptedRedis;
  private refreshTimer: NodeJS.Timeout | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private lastRefresh = 0;
  private refreshing: Promise<void> | null = null;

  constructor(private readonly options: RedisSinkOptions) {
    this.keys = redisKeys(options.prefix);
    this.redis = createRedis(options.url) as ScriptedRedis;
    this.redis.defineCommand('applyBatch', { lua: APPLY_BATCH_LUA });
  }

  get client(): Redis {
    return this.redis;
  }

  async start(): Promise<void> {
    if (this.redis.status === 'wait') await this.redis.connect().catch(() => undefined);
    this.ticker = setInterval(() => void this.refreshWindows(), 1_000);
    this.ticker.unref();
  }

  async write(batch: Batch): Promise<void> {
    if (batch.events.length === 0) return;
    let events = batch.events;
    let positions = batch.positions;
    for (;;) {
      const { keys, args } = leaderboardOps(events, this.keys);
      const result = await this.redis.applyBatch(
        1 + keys.length,
        this.keys.watermark(batch.stream),
        ...keys,
        positions[0],
        positions[positions.length - 1],
        ...args,
      );
      if (result === 0 || result === 1) break;
      // The batch straddles the watermark (a replay split differently): keep only what is newer.
      const keep = positions.findIndex((p) => p > result);
      events = events.slice(keep);
      positions = positions.slice(keep);
    }
    this.scheduleRefresh();
  }

  async stop(): Promise<void> {
    if (this.ticker) clearInterval(this.ticker);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    await this.refreshing?.catch(() => undefined);
    await this.refreshWindows().catch(() => undefined);
    this.redis.disconnect();
  }

  /** Rebuilds the 10-minute ZSETs from the minute buckets of the current window. */
  refreshWindows(now = Date.now()): Promise<void> {
    if (this.refreshing) return this.refreshing;
    const buckets = windowBuckets(now, WINDOW_MINUTES);
    const k = this.keys;
    this.lastRefresh = Date.now();
    this.refreshing = this.redis
      .multi()
      .zunionstore(k.topContent10m, buckets.length, ...buckets.map(k.contentBucket))
      .zunionstore(k.topSeconds10m, buckets.length, ...buckets.map(k.secondsBucket))
      .zunionstore(k.topDevice10m, buckets.length, ...buckets.map(k.deviceBucket))
      .hset(k.windowMeta, {
        from: buckets[0],
        to: buckets[buckets.length - 1],
        refreshed_at: new Date(now).toISOString(),
      })
      .exec()
      .then(() => undefined)
      .catch((err) => this.options.logger.debug(`leaderboard refresh failed: ${describeError(err)}`))
      .finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  private scheduleRefresh(): void {
    if (this.refreshTimer) return;
    const wait = Math.max(0, (this.options.refreshMinIntervalMs ?? 50) - (Date.now() - this.lastRefresh));
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void this.refreshWindows();
    }, wait);
  }
}
