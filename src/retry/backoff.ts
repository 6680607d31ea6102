/**
 * Retry timing for the external sink. Pure functions: the random source and the clock are
 * parameters so tests can pin them.
 */

export interface BackoffOptions {
  /** Delay ceiling of the first retry; doubles per attempt. */
  baseMs: number;
  /** No computed delay exceeds this. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 200, maxMs: 10_000 };

/**
 * "Full jitter" exponential backoff: a uniform draw in [0, min(max, base * 2^(attempt-1))].
 * Full jitter (rather than base + small noise) spreads many clients that failed together,
 * so a recovering server is not hit by synchronized waves. `attempt` counts from 1.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(attempt, 1) - 1, 52); // 2^52 is past any sane cap; avoid Infinity
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** exponent);
  return Math.floor(random() * ceiling);
}

/**
 * Parses a Retry-After header (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
 * Returns milliseconds to wait (0 for a date in the past), or undefined when absent/invalid.
 */
export function parseRetryAfter(
  value: string | string[] | undefined,
  now: number = Date.now(),
): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined) return undefined;
  const text = raw.trim();
  if (text === '') return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // Only accept something that looks like a date, not e.g. "1.5" or "-3" (invalid per the RFC).
  if (!/[a-z]/i.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/**
 * The wait before the next attempt: the server's Retry-After when it gave one (capped, so a
 * hostile or buggy "Retry-After: 86400" cannot stall the pipeline for a day), otherwise
 * jittered exponential backoff.
 */
export function retryDelay(
  attempt: number,
  retryAfterMs: number | undefined,
  options: BackoffOptions & { retryAfterMaxMs: number },
  random: () => number = Math.random,
): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, options.retryAfterMaxMs);
  return backoffDelay(attempt, options, random);
}
