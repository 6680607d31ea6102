import type { Metrics } from '../observability/metrics.js';
import { quantileMs } from '../observability/stats.js';

/**
 * The demo's one-line live status: events/s and commit -> Redis p99 over the last 10 s, slot
 * lag and dead-letter depth. Sampled every second from the in-process metrics (the same
 * numbers /metrics and /api/stats serve). On a terminal the line is rewritten in place;
 * otherwise (CI, a pipe) a full line is printed every 5 s.
 */
export interface StatusSample {
  eventsPerSecond: number;
  totalEvents: number;
  redisP99Ms: number | null;
  lagBytes: number | null;
  deadLetters: number | null;
  /** Events accepted by the Redis sink since start (the leaderboard has content once > 0). */
  redisDelivered: number;
}

type Buckets = { le: number; count: number }[];

const P99_WINDOW_SECONDS = 10;

export class StatusSampler {
  /** (time, events received) of the last P99_WINDOW_SECONDS samples, oldest first. */
  private totals: { at: number; total: number }[] = [];
  private history: Buckets[] = [];

  constructor(
    private readonly metrics: Metrics,
    private readonly deadLetterDepth: () => Promise<number>,
  ) {}

  async sample(): Promise<StatusSample> {
    const now = performance.now();
    const total = sum((await this.metrics.eventsReceived.get()).values);
    // Over the window, not the last second: a paused source (the window full) reads in bursts,
    // and a one-second sample printed every 5 s alternated between 0 and twice the rate.
    this.totals.push({ at: now, total });
    if (this.totals.length > P99_WINDOW_SECONDS + 1) this.totals.shift();
    const first = this.totals[0];
    const elapsed = (now - first.at) / 1000;
    const eventsPerSecond = elapsed <= 0 ? 0 : (total - first.total) / elapsed;

    const buckets = await this.redisBuckets();
    this.history.push(buckets);
    if (this.history.length > P99_WINDOW_SECONDS + 1) this.history.shift();
    const recent = difference(buckets, this.history[0]);
    const redisP99Ms = quantileMs(recent, 0.99);

    const lag = (await this.metrics.slotLagBytes.get()).values[0]?.value ?? null;
    const delivered = (await this.metrics.eventsDelivered.get()).values
      .filter((v) => v.labels.sink === 'redis')
      .reduce((s, v) => s + v.value, 0);
    return {
      eventsPerSecond,
      totalEvents: total,
      redisP99Ms,
      lagBytes: lag,
      deadLetters: await this.deadLetterDepth().catch(() => null),
      redisDelivered: delivered,
    };
  }

  private async redisBuckets(): Promise<Buckets> {
    const snapshot = await this.metrics.commitToSinkSeconds.get();
    const out: Buckets = [];
    for (const v of snapshot.values) {
      if (v.metricName !== 'engagement_commit_to_sink_seconds_bucket') continue;
      const labels = v.labels as Record<string, string | number | undefined>;
      if (labels.sink !== 'redis') continue;
      out.push({ le: labels.le === '+Inf' ? Infinity : Number(labels.le), count: v.value });
    }
    return out.sort((a, b) => a.le - b.le);
  }
}

/** Cumulative buckets now minus then (same bounds); `now` itself when there is no `then`. */
function difference(now: Buckets, then: Buckets | undefined): Buckets {
  if (!then || then === now || then.length !== now.length) return now;
  return now.map((b, i) => ({ le: b.le, count: b.count - (then[i]?.count ?? 0) }));
}

function sum(values: { value: number }[]): number {
  return values.reduce((s, v) => s + v.value, 0);
}

export function formatStatus(s: StatusSample, uptimeSeconds: number): string {
  return [
    `${formatUptime(uptimeSeconds)}`,
    `${Math.round(s.eventsPerSecond).toLocaleString('en-US')} events/s`,
    `commit→redis p99 ${s.redisP99Ms === null ? '–' : formatMs(s.redisP99Ms)}`,
    `lag ${s.lagBytes === null ? '–' : formatBytes(s.lagBytes)}`,
    `DLQ ${s.deadLetters === null ? '–' : s.deadLetters.toLocaleString('en-US')}`,
    `${s.totalEvents.toLocaleString('en-US')} events total`,
  ].join(' · ');
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${value} B` : `${value.toFixed(1)} ${units[i]}`;
}

function formatUptime(seconds: number): string {
  const s = Math.floor(seconds);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** Writes status lines: in place on a TTY (every call), a new line every `everyMs` otherwise. */
export class StatusLine {
  private open = false;
  private lastPrinted = 0;
  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly everyMs = 5000,
  ) {}

  get tty(): boolean {
    return this.out.isTTY === true;
  }

  update(line: string): void {
    if (this.tty) {
      const width = this.out.columns ?? 120;
      this.out.write(`\r\x1b[2K${line.length > width - 1 ? line.slice(0, width - 2) + '…' : line}`);
      this.open = true;
      return;
    }
    const now = Date.now();
    if (now - this.lastPrinted < this.everyMs) return;
    this.lastPrinted = now;
    this.out.write(`${line}\n`);
  }

  /** Prints a whole line (a message), keeping the status line below it on a TTY. */
  message(text: string): void {
    this.finish();
    this.out.write(`${text}\n`);
  }

  finish(): void {
    if (this.open) this.out.write('\r\x1b[2K');
    this.open = false;
  }
}
