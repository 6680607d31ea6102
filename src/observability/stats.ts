import type { Metrics } from './metrics.js';

/**
 * What /api/stats and the dashboard show. The pipeline fills it (it owns the counters and
 * the replication position); the server only serves it. Plain data, JSON as is.
 */
export interface SinkStats {
  name: string;
  /** Commit -> sink acknowledgement, milliseconds; null before the sink's first batch. */
  p50Ms: number | null;
  p99Ms: number | null;
  /** ISO-8601 UTC of the last accepted batch. */
  lastSuccessAt: string | null;
  up: boolean;
  /** up | behind (lag past LAG_WARN_SECONDS) | down (failing, retried) | failed (needs an operator). */
  state: 'up' | 'behind' | 'down' | 'failed';
  /** now - commit time of the oldest event this sink has not accepted yet; 0 when none is pending. */
  lagSeconds: number;
  /**
   * Events handed to this sink / accepted by it / recorded in the dead-letter table for it
   * instead (not counted as delivered), since the process started.
   */
  received: number;
  delivered: number;
  deadLettered: number;
}

export interface PipelineStats {
  /** Events accepted by every sink per second (counted on delivery, not on receipt). */
  eventsPerSecond: number;
  /** Events read from the source. */
  totalEvents: number;
  /** Events accepted by every sink. */
  totalDelivered?: number;
  sinks: SinkStats[];
  /** Pending dead letters, every sink. */
  deadLetters: number;
  /** Age of the oldest pending dead letter in seconds (since its first failure); null when none. */
  deadLettersOldestSeconds?: number | null;
  /** Dead letters replayed so far (re-driven automatically or by `engagement dlq replay`). */
  deadLettersRedriven?: number;
  /** The slot's lag in bytes (engagement_slot_lag_bytes, as `engagement status` shows it); null before the first poll. */
  replicationLagBytes: number | null;
  confirmedLsn: string | null;
  /** ISO-8601 UTC. */
  startedAt: string;
}

export interface SinkLatency {
  name: string;
  p50Ms: number | null;
  p99Ms: number | null;
  /** Observations the quantiles are computed from. */
  count: number;
}

/**
 * p50/p99 per sink from the `engagement_commit_to_sink_seconds` histogram, interpolated
 * within buckets the way Prometheus's histogram_quantile does (so the dashboard agrees
 * with a Grafana panel over the same metric). Values are cumulative since process start.
 */
export async function sinkLatencyFromMetrics(metrics: Metrics): Promise<SinkLatency[]> {
  const snapshot = await metrics.commitToSinkSeconds.get();
  const bySink = new Map<string, { le: number; count: number }[]>();
  for (const v of snapshot.values) {
    if (v.metricName !== 'engagement_commit_to_sink_seconds_bucket') continue;
    // Bucket samples carry an `le` label that the histogram's label type does not declare.
    const labels = v.labels as Record<string, string | number | undefined>;
    const sink = String(labels.sink ?? '');
    const le = labels.le === '+Inf' ? Infinity : Number(labels.le);
    const buckets = bySink.get(sink) ?? [];
    buckets.push({ le, count: v.value });
    bySink.set(sink, buckets);
  }
  return [...bySink.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, buckets]) => {
      buckets.sort((a, b) => a.le - b.le);
      const count = buckets[buckets.length - 1]?.count ?? 0;
      return { name, count, p50Ms: quantileMs(buckets, 0.5), p99Ms: quantileMs(buckets, 0.99) };
    });
}

/** histogram_quantile over cumulative buckets (sorted by `le`, last one +Inf); null when empty. */
export function quantileMs(buckets: readonly { le: number; count: number }[], q: number): number | null {
  const total = buckets[buckets.length - 1]?.count ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      // Above the last finite bound nothing is known: report that bound, as Prometheus does.
      if (le === Infinity) return round(lowerBound * 1000);
      const inBucket = count - lowerCount;
      const fraction = inBucket > 0 ? (rank - lowerCount) / inBucket : 1;
      return round((lowerBound + (le - lowerBound) * fraction) * 1000);
    }
    lowerBound = le;
    lowerCount = count;
  }
  return round(lowerBound * 1000);
}

/**
 * The `sinks` part of PipelineStats from the metrics registry: latency quantiles plus the
 * engagement_sink_up / engagement_sink_last_success_timestamp_seconds gauges. `names`
 * lists the configured sinks so one that has not written yet still shows (as down).
 */
export async function sinkStatsFromMetrics(
  metrics: Metrics,
  names: readonly string[] = [],
): Promise<SinkStats[]> {
  const [latency, up, last, lag, received, delivered, deadLettered, states] = await Promise.all([
    sinkLatencyFromMetrics(metrics),
    metrics.sinkUp.get(),
    metrics.sinkLastSuccess.get(),
    metrics.sinkLagSeconds.get(),
    metrics.sinkEventsReceived.get(),
    metrics.eventsDelivered.get(),
    metrics.deadLetters.get(),
    metrics.sinkState.get(),
  ]);
  const gauge = (values: typeof up.values) =>
    new Map(values.map((v) => [String(v.labels.sink ?? ''), v.value]));
  const upBySink = gauge(up.values);
  const lastBySink = gauge(last.values);
  const lagBySink = gauge(lag.values);
  const receivedBySink = gauge(received.values);
  const deliveredBySink = gauge(delivered.values);
  const deadLetteredBySink = gauge(deadLettered.values);
  const stateBySink = new Map(
    states.values.filter((v) => v.value === 1).map((v) => [String(v.labels.sink ?? ''), v.labels.state]),
  );
  const latencyBySink = new Map(latency.map((l) => [l.name, l]));
  const all = [...new Set([...names, ...latencyBySink.keys(), ...upBySink.keys()])];
  return all.map((name) => {
    const lastSeconds = lastBySink.get(name);
    return {
      name,
      p50Ms: latencyBySink.get(name)?.p50Ms ?? null,
      p99Ms: latencyBySink.get(name)?.p99Ms ?? null,
      lastSuccessAt: lastSeconds ? new Date(lastSeconds * 1000).toISOString() : null,
      up: upBySink.get(name) === 1,
      state: toState(stateBySink.get(name), upBySink.get(name) === 1),
      lagSeconds: lagBySink.get(name) ?? 0,
      received: receivedBySink.get(name) ?? 0,
      delivered: deliveredBySink.get(name) ?? 0,
      deadLettered: deadLetteredBySink.get(name) ?? 0,
    };
  });
}

function toState(value: unknown, up: boolean): SinkStats['state'] {
  return value === 'up' || value === 'behind' || value === 'down' || value === 'failed'
    ? value
    : up
      ? 'up'
      : 'down';
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

export type SinkState = 'up' | 'behind' | 'down' | 'failed';

/** One sink's health as /api/stats, /readyz and `status` show it. */
export interface SinkHealth {
  name: string;
  state: SinkState;
  /** now - commit time of the oldest event not yet accepted by this sink; 0 when none is pending. */
  lagSeconds: number;
  /** Events handed to the sink / accepted by it / dead-lettered for it (this process). */
  received: number;
  delivered: number;
  deadLettered: number;
  /** The current failure, while failing. */
  error: string | null;
}
