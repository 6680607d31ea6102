import { hostname } from 'node:os';
import type pg from 'pg';
import { STATE_SCHEMA } from '../db/schema.js';
import { isoToMillis } from '../domain/timestamps.js';
import type { Batch } from '../domain/types.js';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { SinkHealth } from '../observability/stats.js';

/** This process, as named in the `writer` column. */
export const PROCESS_WRITER = `${hostname()}:${process.pid}`;

/**
 * The health upsert's tail when several processes share the rows: a writer replaces the row
 * when it wrote it, when it reports a worse state (or the same with more lag), or when the
 * row's writer stopped refreshing it (gone: 5 s, five of its intervals; health_at, since every
 * worker's progress write bumps updated_at). Otherwise the last
 * writer would win every second, and a group with one failing worker would read 'up'.
 */
const HEALTH_SHARED_SQL = `, writer = EXCLUDED.writer, health_at = now()
         WHERE s.writer IS NULL OR s.writer = EXCLUDED.writer
            OR s.health_at IS NULL OR s.health_at < now() - interval '5 seconds'
            OR ${severity('EXCLUDED.state')} > ${severity('s.state')}
            OR (${severity('EXCLUDED.state')} = ${severity('s.state')}
                AND coalesce(EXCLUDED.lag_seconds, 0) >= coalesce(s.lag_seconds, 0))`;

function severity(column: string): string {
  return `CASE ${column} WHEN 'failed' THEN 3 WHEN 'down' THEN 2 WHEN 'behind' THEN 1 ELSE 0 END`;
}

interface Progress {
  lastSuccessAt: number;
  lastCommittedAt: string | null;
  lagSeconds: number | null;
  events: number;
}

/**
 * Persists each sink's last success to engagement_pipeline.sink_progress so a separate
 * `engagement status` process (and `migrate --recreate-slot`) can read it. Chosen over Redis
 * because Postgres is the one store every mode has and the slot lives there too. Written at
 * most once a second, off the write path: a failure here is logged, never blocks delivery.
 */
export class SinkProgressWriter {
  private readonly progress = new Map<string, Progress>();
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;
  private failing = false;
  /** The running pipeline's per-sink health, written every interval (state, live lag). */
  private health: (() => SinkHealth[]) | null = null;
  /** The state columns are missing (a state schema from before they existed): skip them. */
  private noHealthColumns = false;
  private writer: string | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly slotName: string,
    private readonly logger: Logger,
    private readonly intervalMs = 1_000,
  ) {}

  /**
   * Also writes each sink's state and live lag every interval, so `status` tells the truth.
   * `writer` (PROCESS_WRITER): several processes write the same rows (a consumer group's
   * workers), so the worst state holds the row while its writer keeps refreshing it (see
   * HEALTH_SHARED_SQL).
   */
  trackHealth(health: () => SinkHealth[], writer?: string): void {
    this.health = health;
    this.writer = writer ?? null;
  }

  /** Called by the fan-out when a sink accepted a batch. */
  record(sink: string, batch: Batch, at = Date.now()): void {
    if (batch.events.length === 0) return;
    const previous = this.progress.get(sink);
    const newest = batch.events[batch.events.length - 1].committed_at;
    this.progress.set(sink, {
      lastSuccessAt: at,
      lastCommittedAt: newest,
      // How long the newest event took from its source commit to this sink.
      lagSeconds: Math.max(0, at - isoToMillis(newest)) / 1000,
      events: (previous?.events ?? 0) + batch.events.length,
    });
    this.dirty = true;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }

  flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (!this.dirty) return this.writeHealth();
    this.dirty = false;
    const entries = [...this.progress.entries()];
    const deltas = entries.map(([, p]) => p.events);
    this.flushing = this.pool
      .query(
        `INSERT INTO ${STATE_SCHEMA}.sink_progress AS s
           (slot_name, sink, last_success_at, last_committed_at, lag_seconds, events_total, updated_at)
         SELECT $1, u.sink, to_timestamp(u.at / 1000.0), u.committed, u.lag, u.events, now()
           FROM unnest($2::text[], $3::float8[], $4::timestamptz[], $5::float8[], $6::bigint[])
                AS u(sink, at, committed, lag, events)
         ON CONFLICT (slot_name, sink) DO UPDATE SET
           last_success_at = EXCLUDED.last_success_at, last_committed_at = EXCLUDED.last_committed_at,
           lag_seconds = EXCLUDED.lag_seconds, events_total = s.events_total + EXCLUDED.events_total,
           updated_at = now()`,
        [
          this.slotName,
          entries.map(([sink]) => sink),
          entries.map(([, p]) => p.lastSuccessAt),
          entries.map(([, p]) => p.lastCommittedAt),
          entries.map(([, p]) => p.lagSeconds),
          deltas,
        ],
      )
      .then(() => {
        // events_total accumulates deltas: subtract what was written.
        entries.forEach(([sink], i) => {
          const p = this.progress.get(sink);
          if (p) p.events -= deltas[i];
        });
        if (this.failing) this.logger.info('sink progress recorded again');
        this.failing = false;
        return this.writeHealth();
      })
      .catch((err) => {
        this.dirty = true;
        if (!this.failing) this.logger.warn(`cannot record sink progress: ${describeError(err)}`);
        this.failing = true;
      })
      .finally(() => (this.flushing = null));
    return this.flushing;
  }

  private writeHealth(): Promise<void> {
    if (!this.health || this.noHealthColumns) return Promise.resolve();
    const health = this.health();
    if (health.length === 0) return Promise.resolve();
    return this.pool
      .query(
        // A sink that never succeeded still gets a row (last_success_at = epoch: "never").
        `INSERT INTO ${STATE_SCHEMA}.sink_progress AS s
           (slot_name, sink, last_success_at, lag_seconds, state, last_error, updated_at${this.writer ? ', writer, health_at' : ''})
         SELECT $1, u.sink, to_timestamp(0), u.lag, u.state, u.error, now()${this.writer ? ', $6, now()' : ''}
           FROM unnest($2::text[], $3::float8[], $4::text[], $5::text[]) AS u(sink, lag, state, error)
         ON CONFLICT (slot_name, sink) DO UPDATE SET
           lag_seconds = EXCLUDED.lag_seconds, state = EXCLUDED.state, last_error = EXCLUDED.last_error,
           updated_at = now()${this.writer ? HEALTH_SHARED_SQL : ''}`,
        [
          this.slotName,
          health.map((h) => h.name),
          health.map((h) => h.lagSeconds),
          health.map((h) => h.state),
          health.map((h) => h.error),
          ...(this.writer ? [this.writer] : []),
        ],
      )
      .then(() => undefined)
      .catch((err: { code?: string }) => {
        if (err.code === '42703') {
          this.noHealthColumns = true;
          this.logger.warn(
            'sink_progress has no state column: run `engagement migrate` to show sink health in `status`',
          );
        }
        // Other failures: logged by the progress write above, retried next interval.
      });
  }
}
