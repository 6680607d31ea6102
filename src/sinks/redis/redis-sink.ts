import { readFileSync } from 'node:fs';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { Batch, EnrichedEvent } from '../../domain/types.js';
import { minuteBucketOfIso, minuteBucketOfMs } from '../../domain/windows.js';
import { configError, describeError, ErrorCodes, PipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { Sink } from '../sink.js';
import { SourceIdentity, type PositionedStream } from '../source-identity.js';
import {
  BACKFILL_REDIS_HORIZON_MINUTES,
  CONTENT_LAST_TTL_SECONDS,
  redisKeys,
  type RedisKeys,
} from './keys.js';
import {
  boundReplies,
  hostOf,
  isRefusedDatabase,
  isReplyTimeout,
  REDIS_REPLY_TIMEOUT_MS,
  refuseUnselectedDatabase,
} from './connection.js';
import { leaderboardOps, rollWindowArgs, seenArgs } from './leaderboard-ops.js';

const APPLY_BATCH_LUA = readFileSync(new URL('./apply-batch.lua', import.meta.url), 'utf8');
const ROLL_WINDOW_LUA = readFileSync(new URL('./roll-window.lua', import.meta.url), 'utf8');

/**
 * See apply-batch.lua: applied, applied without a watermark, replay, straddled watermark,
 * ['dup', k, j, ...], or ['foreign', source] (applied over another source's watermark).
 */
type ApplyResult = 0 | 1 | 2 | string | (string | number)[];
interface ScriptedRedis extends Redis {
  /**
   * Keys and arguments as arrays, which ioredis flattens into the command: spread into the
   * call, a batch of some 8,000 events with distinct content ids or minutes (over 100,000
   * arguments) overflowed the JS stack ("Maximum call stack size exceeded") on every retry,
   * and the stream stopped for good.
   */
  applyBatch(numKeys: number, keys: readonly string[], args: readonly string[]): Promise<ApplyResult>;
  /** See roll-window.lua: [status, from, to] of the stored window. */
  rollWindow(numKeys: number, ...keysAndArgs: string[]): Promise<[string, string, string]>;
}

export interface RedisSinkOptions {
  url: string;
  prefix: string;
  logger: Logger;
  /** The sink's clock (ms since the epoch), which places the 10-minute window; tests move it. */
  clock?: () => number;
  /**
   * The source's key types: keys are always their text form (`content:count:777`); the JSON in
   * `content:last` types them as in the source (see event-json.ts). Default: UUID keys.
   */
  keyTypes?: KeyTypes;
  /**
   * The stream whose positions belong to a known source (direct mode: the replication slot)
   * and how to learn that source's identity (the Postgres system identifier), stored with the
   * stream's watermark: a watermark of another source (Postgres dump/restored into a new
   * cluster, whose LSNs restart lower) is ignored instead of skipping every batch. Other
   * streams (Kafka partitions) keep a bare position.
   */
  positionedStream?: PositionedStream;
}

/**
 * ioredis client shared by the sink and readers: fail fast while Redis is down or does not
 * answer (every reply is awaited for a bounded time, see REDIS_REPLY_TIMEOUT_MS), reconnect
 * forever. `redis+cluster://[user:pass@]host:port,host:port` (or `rediss+cluster://`) gives a
 * Redis Cluster client; it answers every command the sink and readers use, so callers keep the
 * `Redis` type (all our keys share one hash tag, see assertClusterPrefix).
 */
export function createRedis(url: string): Redis {
  const options: RedisOptions = {
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    // The floor for commands that do not pass through boundReplies (a cluster node's own).
    commandTimeout: REDIS_REPLY_TIMEOUT_MS,
    retryStrategy: (times) => Math.min(100 * times, 2_000),
  };
  const cluster = parseClusterUrl(url);
  if (cluster) {
    const client = clusterClient(cluster, options, (times) => Math.min(100 * times, 2_000));
    client.on('error', () => undefined); // surfaced by the failing command; ioredis reconnects
    // (Its commands are bounded by their size; a node that stops answering is the cluster
    // client's to replace, not dropped here.)
    return boundReplies(client as unknown as Redis, { reconnect: false });
  }
  const redis = new Redis(url, { ...options, enableOfflineQueue: false, lazyConnect: true });
  redis.on('error', () => undefined); // surfaced by the failing command; ioredis reconnects
  return refuseUnselectedDatabase(boundReplies(redis, { reconnect: true }), url);
}

/**
 * A Redis Cluster client for a parsed `redis+cluster://` URL (lazy, no offline queue): each
 * node's connection takes `redisOptions` plus the URL's credentials and TLS.
 */
export function clusterClient(
  cluster: NonNullable<ReturnType<typeof parseClusterUrl>>,
  redisOptions: RedisOptions,
  clusterRetryStrategy: (times: number) => number | null,
): Cluster {
  return new Cluster(cluster.nodes, {
    redisOptions: { ...redisOptions, ...cluster.auth, ...(cluster.tls ? { tls: {} } : {}) },
    clusterRetryStrategy,
    enableOfflineQueue: false,
    lazyConnect: true,
  });
}

/** `redis+cluster://[user:pass@]h1:p1,h2:p2[/]` -> seed nodes and credentials; null for a plain URL. */
export function parseClusterUrl(url: string): {
  nodes: { host: string; port: number }[];
  auth: { username?: string; password?: string };
  tls: boolean;
} | null {
  const m = /^(rediss?)\+cluster:\/\/(?:([^@/]*)@)?([^/?#]+)\/?$/.exec(url);
  if (!m) return null;
  const auth: { username?: string; password?: string } = {};
  if (m[2]) {
    const [user, ...pass] = m[2].split(':');
    if (user) auth.username = decodeURIComponent(user);
    if (pass.length > 0) auth.password = decodeURIComponent(pass.join(':'));
  }
  const nodes = m[3].split(',').map((hostPort) => {
    const i = hostPort.lastIndexOf(':');
    const host = (i > 0 ? hostPort.slice(0, i) : hostPort).replace(/^\[|\]$/g, '');
    const port = i > 0 ? Number(hostPort.slice(i + 1)) : 6379;
    if (!host || !Number.isInteger(port) || port <= 0 || port > 65535)
      throw configError(`REDIS_URL: bad cluster node ${JSON.stringify(hostPort)}`);
    return { host, port };
  });
  return { nodes, auth, tls: m[1] === 'rediss' };
}

/**
 * On a Redis Cluster one batch's script and the window's roll touch many keys, which must
 * live in one slot: the prefix must carry a hash tag (`{engagement}:`), so every key does.
 */
export function assertClusterPrefix(url: string, prefix: string): void {
  const open = prefix.indexOf('{');
  const close = open < 0 ? -1 : prefix.indexOf('}', open + 1);
  if (!parseClusterUrl(url) || close > open + 1) return; // Redis hashes the first non-empty {…}
  throw configError(
    `REDIS_URL is a Redis Cluster but REDIS_PREFIX ${JSON.stringify(prefix)} has no hash tag: one batch's keys must share a slot`,
    'set REDIS_PREFIX to a prefix with a hash tag, e.g. REDIS_PREFIX={engagement}:',
  );
}

/**
 * The real-time leaderboards (README, "Redis layout"). Each batch is one Lua call, all or nothing:
 * every key is checked before the first write, then all effects plus the stream's watermark.
 * Every effect of an event (content:count, content:last, minute buckets) is guarded by its
 * bit in the seen bitmaps, so the stream, replays and backfills count each event once,
 * whoever comes first. The same call adds each increment to the 10-minute ZSETs when its
 * minute is inside the window stored in Redis, so a batch is on the leaderboards the moment it
 * is applied; once a minute the window moves (roll-window.lua: subtract the minute that left,
 * add the one that entered), from a 1 s ticker or before a batch carrying a newer minute.
 */
export class RedisSink implements Sink {
  readonly name = 'redis';
  readonly keys: RedisKeys;
  private readonly redis: ScriptedRedis;
  private ticker: NodeJS.Timeout | null = null;
  /** Writes in flight (the ticker stays out of their way). */
  private writes = 0;
  private readonly now: () => number;
  /** The last minute of the stored window as this process last saw it (it only moves forward). */
  private windowTo = '';
  private rolling: Promise<unknown> | null = null;
  /** Streams whose watermark this process has seen in Redis (to notice it vanishing). */
  private readonly watermarked = new Set<string>();
  /** Times Redis was found to have lost the stream's state (FLUSHALL, restart without persistence). */
  stateLosses = 0;
  private readonly identity: SourceIdentity;
  /** Streams whose watermark of another source was reported (one warning per stream). */
  private readonly foreignReported = new Set<string>();
  /** Between start() and stop(): when failure() speaks. */
  private started = false;
  /** The client's last error (a refused connection, a reply that did not come), for failure(). */
  private lastError: string | null = null;

  constructor(private readonly options: RedisSinkOptions) {
    assertClusterPrefix(options.url, options.prefix);
    this.keys = redisKeys(options.prefix);
    this.identity = new SourceIdentity(options.positionedStream, {
      code: ErrorCodes.POSTGRES_UNREACHABLE,
      sink: 'Redis',
    });
    this.redis = createRedis(options.url) as ScriptedRedis;
    this.redis.on('error', (err: unknown) => (this.lastError = describeError(err)));
    this.redis.on('ready', () => (this.lastError = null));
    this.redis.defineCommand('applyBatch', { lua: APPLY_BATCH_LUA });
    this.redis.defineCommand('rollWindow', { lua: ROLL_WINDOW_LUA });
    this.now = options.clock ?? Date.now;
  }

  get client(): Redis {
    return this.redis;
  }

  /**
   * While the client has no working connection (Redis refusing, or not answering: see
   * REDIS_REPLY_TIMEOUT_MS), the sink is down even before a write fails, so an idle pipeline
   * reports it too (/readyz, engagement_sink_up, /api/stats, status).
   */
  failure(): string | null {
    if (!this.started || this.redis.status === 'ready') return null;
    return `Redis unreachable at ${hostOf(this.options.url)}${this.lastError ? `: ${this.lastError}` : ''}`;
  }

  async start(): Promise<void> {
    // Redis down (or not answering) at start is ridden out: ioredis reconnects, writes fail
    // fast and are retried, the sink shows down meanwhile. A refused database is not.
    if (this.redis.status === 'wait')
      await this.redis.connect().catch((err: unknown) => {
        if (isRefusedDatabase(err)) throw err;
        this.options.logger.warn(
          `Redis unreachable at ${hostOf(this.options.url)} at start-up (${this.lastError ?? describeError(err)}); ` +
            'starting anyway: Redis writes are held (source position too) and retried until it answers',
        );
      });
    this.started = true;
    // One rebuild at start: heals a window that drifted from its buckets (a bucket deleted or
    // evicted by hand, a version that kept the ZSETs differently); from then on, rolls.
    await this.refreshWindows().catch((err) =>
      this.options.logger.debug(`leaderboard rebuild failed: ${describeError(err)}`),
    );
    // Every second, not only when the clock passed the window's end: a roll that finds the
    // window current costs two reads, and one that finds it gone (FLUSHALL) rebuilds it.
    this.ticker = setInterval(() => {
      // Not behind a write: replies come in order, so a roll sent now would wait for the
      // write's reply under its own, shorter, reply bound (connection.ts) and could drop the
      // connection while Redis is still working on a large batch. The write rolls first anyway.
      if (this.rolling || this.writes > 0) return;
      this.rolling = this.rollWindow()
        .catch((err) => this.options.logger.debug(`leaderboard window roll failed: ${describeError(err)}`))
        .finally(() => (this.rolling = null));
    }, 1_000);
    this.ticker.unref();
  }

  async write(batch: Batch): Promise<void> {
    if (batch.events.length === 0) return;
    this.writes += 1;
    try {
      await this.writeStream(batch);
    } catch (err) {
      throw this.unreachable(err) ?? err;
    } finally {
      this.writes -= 1;
    }
  }

  /**
   * A write that failed because Redis refused the connection or did not answer (the client is
   * not ready, or a reply timed out), as one line naming Redis, instead of the client's words
   * ("Stream isn't writeable ...", "Command timed out"). Transient: retried.
   */
  private unreachable(err: unknown): PipelineError | null {
    if (err instanceof PipelineError) return null;
    const timedOut = isReplyTimeout(err);
    if (!timedOut && this.redis.status === 'ready') return null;
    const host = hostOf(this.options.url);
    return new PipelineError(
      ErrorCodes.REDIS_UNREACHABLE,
      timedOut
        ? `Redis at ${host} not answering: no reply within ${REDIS_REPLY_TIMEOUT_MS / 1000} s (more for a large batch)`
        : `Redis unreachable at ${host}: ${this.lastError ?? describeError(err)}`,
      'transient',
      undefined,
      { cause: err },
    );
  }

  private async writeStream(batch: Batch): Promise<void> {
    await this.rollBefore(batch.events, this.now());
    // Stored with the watermark; '' for a stream without one (Kafka messages of an earlier capture).
    const sourceId = batch.sourceId ?? (await this.identity.of(batch.stream)) ?? '';
    const fresh = await this.apply('s', batch.events, batch.positions, this.keys.watermark(batch.stream), {
      sourceId,
    });
    if (fresh.noWatermark && this.watermarked.has(batch.stream)) this.reportStateLost(batch.stream);
    if (fresh.foreignSource !== null)
      this.reportForeignWatermark(batch.stream, fresh.foreignSource, sourceId);
    this.watermarked.add(batch.stream);
  }

  /**
   * The stream's watermark came from another source (Postgres dump/restored into a new cluster
   * under the same slot name): its position says nothing about this source's, so it was
   * ignored and replaced (the seen bitmaps still count each event_id once). One line per stream.
   */
  private reportForeignWatermark(stream: string, stored: string, current: string): void {
    if (this.foreignReported.has(stream)) return;
    this.foreignReported.add(stream);
    this.options.logger.warn(
      { stream, storedSource: stored, source: current },
      `the Redis watermark of stream ${stream} was written for another source (${stored}, now ${current}: ` +
        'Postgres restored into a new cluster?); ignored and replaced, events are deduplicated by event_id',
    );
  }

  /**
   * Moves the window first when the clock is past it and the batch carries a minute past it, so
   * the first batch of a new minute lands on the leaderboards at once (not a ticker period later).
   */
  private async rollBefore(events: readonly EnrichedEvent[], nowMs: number): Promise<void> {
    const to = this.windowTo;
    if (to >= minuteBucketOfMs(nowMs)) return;
    if (to === '' || events.some((e) => minuteBucketOfIso(e.event_ts) > to)) await this.rollWindow(nowMs);
  }

  /**
   * Moves the stored 10-minute window to the one ending at `nowMs`'s minute (nothing when it is
   * there already, or ahead): incrementally, or rebuilt from the buckets after a long pause.
   * Safe from any number of processes at once (roll-window.lua).
   */
  async rollWindow(nowMs = this.now(), rebuild = false): Promise<'same' | 'rolled' | 'rebuilt'> {
    const { keys, args } = rollWindowArgs(this.keys, nowMs, rebuild);
    let result: [string, string, string];
    try {
      result = await this.redis.rollWindow(keys.length, ...keys, ...args);
    } catch (err) {
      throw keyTypeError(err) ?? err;
    }
    if (result[2] > this.windowTo) this.windowTo = result[2];
    return result[0] as 'same' | 'rolled' | 'rebuilt';
  }

  /**
   * The watermark this process wrote is gone, so Redis lost its data (FLUSHALL, a restart
   * without persistence, eviction, a failover to an empty replica). Writing goes on (new
   * events count again at once, and mark themselves seen), but what was applied before is
   * missing and no replay can bring it back: the slot already confirmed it. A backfill over
   * all of history restores it exactly (events already counted since the loss are skipped
   * by their seen bits), totals included. One error line per loss, with that command.
   */
  private reportStateLost(stream: string): void {
    this.stateLosses += 1;
    this.options.logger.error(
      { stream },
      `${ErrorCodes.REDIS_STATE_LOST}: the Redis watermark of stream ${stream} vanished while the pipeline was writing ` +
        '(FLUSHALL, a restart without persistence, eviction or failover); content:count, content:last and the leaderboards miss the events applied before ' +
        `(fix: \`${REDIS_REBUILD_COMMAND}\` rebuilds all of them exactly while the pipeline keeps running; ` +
        'enable Redis persistence (appendonly yes) and noeviction)',
    );
  }

  /**
   * A backfill's write: the same effects as the stream's (content:count, content:last, minute
   * buckets inside retention), each event at most once across the stream and every backfill
   * thanks to the seen bitmaps. Returns how many events were newly counted (the rest had
   * been counted already).
   */
  async writeBackfill(events: readonly EnrichedEvent[], nowMs = this.now()): Promise<number> {
    if (events.length === 0) return 0;
    const bucketsFrom = minuteBucketOfMs(nowMs - BACKFILL_REDIS_HORIZON_MINUTES * 60_000);
    try {
      await this.rollBefore(events, nowMs);
      const { applied } = await this.apply('b', events, [], this.keys.watermark('backfill'), { bucketsFrom });
      return applied;
    } catch (err) {
      // One line naming Redis, as the stream's writes say it (the backfill stops on it and resumes when re-run).
      throw this.unreachable(err) ?? err;
    }
  }

  /** One Lua call per attempt; retried without what the script reports as replayed or seen. */
  private async apply(
    mode: 's' | 'b',
    all: readonly EnrichedEvent[],
    allPositions: readonly string[],
    watermarkKey: string,
    { bucketsFrom, sourceId = '' }: { bucketsFrom?: string; sourceId?: string },
  ): Promise<{ applied: number; noWatermark: boolean; foreignSource: string | null }> {
    let events = all;
    let positions = allPositions;
    if (hasRepeatedIds(all)) {
      // The same event twice in one batch (a redelivery): the script would report the second
      // copy's seen bit as a duplicate and the retry would skip the id, so no copy would count.
      const ids = new Set(all.map((e) => e.event_id));
      const keep = all.map((e) => ids.delete(e.event_id));
      events = all.filter((_, i) => keep[i]);
      if (allPositions.length > 0) positions = allPositions.filter((_, i) => keep[i]);
    }
    const skip = new Set<number>();
    for (;;) {
      const seen = seenArgs(events, this.keys, skip);
      const ops = leaderboardOps(events, this.keys, {
        skip,
        bucketsFrom,
        keyTypes: this.options.keyTypes,
        nowMs: this.now(),
      });
      if (seen.keys.length === 0 && mode === 'b')
        return { applied: 0, noWatermark: false, foreignSource: null };
      let result: ApplyResult;
      try {
        const keys = [watermarkKey].concat(this.keys.windowKeys, seen.keys, ops.keys);
        const args = [
          mode,
          positions[0] ?? '',
          positions[positions.length - 1] ?? '',
          String(seen.keys.length),
          String(CONTENT_LAST_TTL_SECONDS),
          sourceId,
          String(ops.contents),
        ].concat(seen.args, ops.args);
        result = await this.redis.applyBatch(keys.length, keys, args);
      } catch (err) {
        throw keyTypeError(err) ?? err;
      }
      if (result === 0) return { applied: 0, noWatermark: false, foreignSource: null };
      if (result === 1 || result === 2)
        return { applied: events.length - skip.size, noWatermark: result === 2, foreignSource: null };
      if (Array.isArray(result) && result[0] === 'foreign')
        return { applied: events.length - skip.size, noWatermark: false, foreignSource: String(result[1]) };
      if (Array.isArray(result)) {
        // Counted already (by a backfill, or a replay the watermark could not see): no effect again.
        for (let i = 1; i < result.length; i += 2) {
          skip.add(seen.ids[Number(result[i]) - 1][Number(result[i + 1])]);
        }
        continue;
      }
      // The batch straddles the watermark (a replay split differently): keep only what is newer.
      const keep = positions.findIndex((p) => p > result);
      events = events.slice(keep);
      positions = positions.slice(keep);
    }
  }

  async stop(): Promise<void> {
    this.started = false;
    if (this.ticker) clearInterval(this.ticker);
    await this.rolling?.catch(() => undefined);
    this.redis.disconnect();
  }

  /**
   * Rebuilds the 10-minute ZSETs from the minute buckets of the window ending at `now`'s minute
   * (unless the stored window is already past it), atomically with the stored window. What the
   * incremental updates must always equal; run at start and by tests as the reference.
   */
  async refreshWindows(now = this.now()): Promise<void> {
    await this.rollWindow(now, true);
  }
}

/** True when an event_id occurs twice (ids rising through the batch, the usual case, are checked without a Set). */
function hasRepeatedIds(events: readonly EnrichedEvent[]): boolean {
  let i = 1;
  while (i < events.length && events[i].event_id > events[i - 1].event_id) i++;
  if (i >= events.length) return false;
  return new Set(events.map((e) => e.event_id)).size < events.length;
}

/**
 * What rebuilds everything Redis holds from the source (after FLUSHALL, a restart without
 * persistence, a new Redis): a backfill over all of history. Safe while the pipeline runs
 * and safe to repeat: the seen bitmaps skip every event already counted.
 */
export const REDIS_REBUILD_COMMAND = 'engagement backfill --sinks redis --from -infinity --to infinity';

/** The script's refusal to touch a key of the wrong type, as one operator line (nothing was written). */
function keyTypeError(err: unknown): PipelineError | null {
  const message = err instanceof Error ? err.message : '';
  const m = /EP_ERR_REDIS_KEY_TYPE (\S+) (.*)$/.exec(message);
  if (!m) return null;
  return new PipelineError(
    ErrorCodes.REDIS_KEY_TYPE,
    `Redis key ${m[1]} ${m[2]}`,
    'fatal',
    `delete or rename that key (something else writes under REDIS_PREFIX?); the batch is retried and applied once the key is usable`,
    { cause: err },
  );
}
