import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Redis } from 'ioredis';
import { isoToMillis } from '../domain/timestamps.js';
import { redisKeys } from '../sinks/redis/keys.js';

/**
 * Commit -> visible in `top:content:10m`, seen from outside the pipeline. Each marker is a
 * single-row INSERT (its own transaction) of an event for a content item used by no other
 * event, so the marker's content id appearing in the ZSET means that event became visible.
 * An independent poller asks ZMSCORE for every outstanding marker every `pollMs`. The
 * commit time is the one the pipeline itself took from the replication stream's commit
 * message (`committed_at` of the enriched event in `content:last:{id}`), so the latency is
 * exactly commit -> visible, on one machine's clock. Resolution: the poll interval plus one
 * Redis round trip.
 */
export interface MarkerResult {
  contentId: string;
  /** Wall-clock ms when the INSERT returned (commit acknowledged to the client). */
  ackedAt: number;
  /** Wall-clock ms when the poller first saw the member in top:content:10m. */
  seenAt: number | null;
  /** The source commit time (ms) from the enriched event. */
  committedAt: number | null;
}

/** Creates `n` content rows for markers (before the pipeline needs them, so its dimension knows them). */
export async function createMarkerContent(pool: pg.Pool, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, () => randomUUID());
  for (let i = 0; i < ids.length; i += 5000) {
    const chunk = ids.slice(i, i + 5000);
    await pool.query(
      `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts)
       SELECT id, 'bench-marker-' || id::text, 'bench marker', 'video', 300, now() FROM unnest($1::uuid[]) AS id`,
      [chunk],
    );
  }
  return ids;
}

export class LatencyProbe {
  private readonly pending = new Map<string, MarkerResult>();
  private readonly done: MarkerResult[] = [];
  private polling = false;
  private pollLoop: Promise<void> | null = null;
  private readonly keys;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly pollMs = 2,
  ) {
    this.keys = redisKeys(prefix);
  }

  start(): void {
    this.polling = true;
    this.pollLoop = this.poll();
  }

  /** Inserts one marker event for `contentId` (its own transaction), starts watching it; returns the ack time. */
  async mark(pool: pg.Pool, contentId: string): Promise<number> {
    await pool.query(
      `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
       VALUES ($1, gen_random_uuid(), 'play', now(), 1000, 'bench-marker', '{"bench":"marker"}')`,
      [contentId],
    );
    const ackedAt = wallNow();
    this.pending.set(contentId, { contentId, ackedAt, seenAt: null, committedAt: null });
    return ackedAt;
  }

  get outstanding(): number {
    return this.pending.size;
  }

  /** Waits until every marker was seen or `timeoutMs` passed; stops polling; reads commit times. */
  async finish(timeoutMs: number): Promise<MarkerResult[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending.size > 0 && Date.now() < deadline) await sleep(10);
    this.polling = false;
    await this.pollLoop;
    const unseen = [...this.pending.values()];
    this.pending.clear();
    const seen = this.done.splice(0);
    for (let i = 0; i < seen.length; i += 500) {
      const chunk = seen.slice(i, i + 500);
      const values = await this.redis.mget(...chunk.map((m) => this.keys.contentLast(m.contentId)));
      values.forEach((json, k) => {
        if (json === null) return;
        const committed = (JSON.parse(json) as { committed_at?: string }).committed_at;
        if (committed) chunk[k].committedAt = isoToMillis(committed);
      });
    }
    return [...seen, ...unseen];
  }

  private async poll(): Promise<void> {
    while (this.polling) {
      if (this.pending.size > 0) {
        const ids = [...this.pending.keys()];
        try {
          const scores = (await this.redis.call('ZMSCORE', this.keys.topContent10m, ...ids)) as (
            string | null
          )[];
          const now = wallNow();
          scores.forEach((score, i) => {
            if (score === null) return;
            const marker = this.pending.get(ids[i]);
            if (!marker) return;
            marker.seenAt = now;
            this.pending.delete(ids[i]);
            this.done.push(marker);
          });
        } catch {
          // Redis hiccup: try again on the next tick
        }
      }
      await sleep(this.pollMs);
    }
  }
}

/**
 * Wall clock, the one Postgres stamps commits with. Not performance.timeOrigin + now():
 * the monotonic clock drifts from the wall clock while NTP slews it, which over a run of
 * minutes can exceed the latencies measured; millisecond resolution is enough here.
 */
export function wallNow(): number {
  return Date.now();
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
