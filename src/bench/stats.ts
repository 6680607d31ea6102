import { quantileMs } from '../observability/stats.js';

/** Latency summary of exact samples (milliseconds). */
export interface LatencySummary {
  samples: number;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  meanMs: number | null;
}

/** Nearest-rank percentiles of exact samples. */
export function summarize(samples: readonly number[]): LatencySummary {
  if (samples.length === 0)
    return { samples: 0, p50Ms: null, p95Ms: null, p99Ms: null, maxMs: null, meanMs: null };
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => round2(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]);
  return {
    samples: sorted.length,
    p50Ms: at(0.5),
    p95Ms: at(0.95),
    p99Ms: at(0.99),
    maxMs: round2(sorted[sorted.length - 1]),
    meanMs: round2(sorted.reduce((s, v) => s + v, 0) / sorted.length),
  };
}

/** One Prometheus text-format sample. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition (enough for prom-client's output). */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of a counter's samples per value of one label (e.g. events delivered per sink). */
export function counterBy(
  samples: readonly PromSample[],
  name: string,
  label: string,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = s.labels[label] ?? '';
    out[key] = (out[key] ?? 0) + s.value;
  }
  return out;
}

/** Cumulative histogram buckets per sink: sink -> le -> count. */
export type HistogramBuckets = Record<string, Map<number, number>>;

export function histogramBy(samples: readonly PromSample[], name: string, label: string): HistogramBuckets {
  const out: HistogramBuckets = {};
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const key = s.labels[label] ?? '';
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    (out[key] ??= new Map()).set(le, s.value);
  }
  return out;
}

/** The observations made between two scrapes of the same histogram (after minus before). */
export function histogramDelta(after: HistogramBuckets, before: HistogramBuckets | null): HistogramBuckets {
  const out: HistogramBuckets = {};
  for (const [key, buckets] of Object.entries(after)) {
    const base = before?.[key];
    out[key] = new Map([...buckets].map(([le, n]) => [le, n - (base?.get(le) ?? 0)]));
  }
  return out;
}

export interface HistogramSummary {
  /** Observations (the pipeline records one per batch: the batch's oldest event). */
  observations: number;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
}

/** p50/p95/p99 interpolated within buckets, as Prometheus's histogram_quantile does. */
export function summarizeHistogram(buckets: HistogramBuckets): Record<string, HistogramSummary> {
  const out: Record<string, HistogramSummary> = {};
  for (const [key, map] of Object.entries(buckets).sort(([a], [b]) => a.localeCompare(b))) {
    const sorted = [...map].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
    out[key] = {
      observations: sorted[sorted.length - 1]?.count ?? 0,
      p50Ms: quantileMs(sorted, 0.5),
      p95Ms: quantileMs(sorted, 0.95),
      p99Ms: quantileMs(sorted, 0.99),
    };
  }
  return out;
}

export function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
