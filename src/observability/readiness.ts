import type { SinkHealth } from './stats.js';

/** /readyz's reasons from the sinks' health: one line per sink that is behind, down or failed. */
export function sinkReadinessReasons(health: readonly SinkHealth[], lagWarnSeconds: number): string[] {
  return health.flatMap((h) => {
    if (h.state === 'up') return [];
    if (h.state === 'behind')
      return [`sink ${h.name} behind: lag ${h.lagSeconds.toFixed(1)} s > ${lagWarnSeconds} s`];
    return [`sink ${h.name} ${h.state}: ${h.error ?? 'unknown error'}`];
  });
}
