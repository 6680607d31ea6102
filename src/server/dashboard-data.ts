import type { BackfillRow } from '../db/status-queries.js';

/**
 * What the dashboard shows beyond /api/stats, gathered by the server (so a page opened now
 * sees the last ten minutes, not only what happened while it was open).
 */
export interface RatePoint {
  /** Epoch ms of the sample. */
  t: number;
  /** Events/s received from the source over the previous interval. */
  received: number;
  /** Events/s delivered per sink over the previous interval. */
  delivered: Record<string, number>;
}

export interface Totals {
  received: number;
  delivered: Record<string, number>;
}

export interface DashboardExtras {
  history: RatePoint[];
  totals: Totals | null;
  /** Rows in the analytics table; null when the store cannot be queried. */
  analyticsRows: number | null;
  /** Backfills not finished (running, failed or interrupted). */
  backfills: BackfillRow[];
  /** Per sink: seconds from the newest delivered event's commit to its delivery (the lag gauge). */
  sinkLagSeconds: Record<string, number>;
}

/** Samples received/delivered totals every `intervalMs` and keeps `capacity` rates (default 10 min). */
export class RateHistory {
  private readonly points: RatePoint[] = [];
  private last: { at: number; totals: Totals } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private sampling = false;

  constructor(
    private readonly readTotals: () => Promise<Totals>,
    private readonly intervalMs = 1_000,
    private readonly capacity = 600,
  ) {}

  start(): void {
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Oldest first. */
  history(): RatePoint[] {
    return [...this.points];
  }

  latest(): Totals | null {
    return this.last?.totals ?? null;
  }

  async sample(now = Date.now()): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const totals = await this.readTotals();
      const prev = this.last;
      this.last = { at: now, totals };
      if (!prev || now <= prev.at) return;
      const seconds = (now - prev.at) / 1000;
      const rate = (a: number, b: number | undefined) => Math.max(0, round1((a - (b ?? 0)) / seconds));
      const delivered: Record<string, number> = {};
      for (const [sink, n] of Object.entries(totals.delivered))
        delivered[sink] = rate(n, prev.totals.delivered[sink]);
      this.points.push({ t: now, received: rate(totals.received, prev.totals.received), delivered });
      if (this.points.length > this.capacity) this.points.shift();
    } catch {
      // A failed read leaves a hole in the history, never an error on the page.
    } finally {
      this.sampling = false;
    }
  }
}

/** Memoizes an async read for `ttlMs`, so N open dashboards cost one query per interval. */
export function cached<T>(read: () => Promise<T>, ttlMs: number): () => Promise<T> {
  let entry: { at: number; value: Promise<T> } | null = null;
  return () => {
    const now = Date.now();
    if (!entry || now - entry.at >= ttlMs) {
      const value = read();
      entry = { at: now, value };
      // A failure is not kept: the next call asks again.
      value.catch(() => {
        if (entry?.value === value) entry = null;
      });
    }
    return entry.value;
  };
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
