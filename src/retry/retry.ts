import { backoffDelay, type BackoffOptions } from './backoff.js';
import { policyFor, type ErrorPolicy } from './error-policy.js';

/** Backoff for a failure expected to pass by itself (a restart, a network blip): fast, capped at 5 s. */
export const TRANSIENT_BACKOFF: BackoffOptions = { baseMs: 100, maxMs: 5_000 };

/** Backoff for a failure that needs an operator (authentication, a missing table): slow, until fixed. */
export const OPERATOR_BACKOFF: BackoffOptions = { baseMs: 5_000, maxMs: 60_000 };

export interface RetryFailure {
  /** Attempts made so far (1 after the first failure). */
  attempt: number;
  /** The failure's policy (see policyFor, or `policyOf`). */
  policy: Exclude<ErrorPolicy, 'rows'>;
  /** The wait before the next attempt; null when this was the last one. */
  delayMs: number | null;
}

export interface RetryOptions {
  /**
   * The full-jitter backoff between attempts, or one per policy: a failure an operator must
   * fix is retried slowly, a transient one soon.
   */
  backoff: BackoffOptions | Record<Exclude<ErrorPolicy, 'rows'>, BackoffOptions>;
  /**
   * How a failure is classified (default: policyFor). A failure classified `rows` counts as
   * transient here: the caller that can split a batch does so before it throws.
   */
  policyOf?: (err: unknown) => ErrorPolicy;
  /** Gives up after this many attempts, throwing the last failure (default: never gives up). */
  attempts?: number;
  /**
   * Aborting stops the retries: a failure seen once it is aborted is thrown as it is, and a
   * wait in progress ends at once (the next attempt is not made; `aborted` is thrown).
   */
  signal?: AbortSignal;
  /** The error thrown when the signal stops the retries between attempts. */
  aborted?: () => Error;
  /** Told every failure that will be retried, and the last one (delayMs null); for logs and metrics. */
  onFailure?: (err: unknown, failure: RetryFailure) => void;
  /** Told when an attempt succeeds after failures (for the "recovered after" line). */
  onRecovered?: (attempts: number, failingForMs: number) => void;
  /** Random source of the jitter (tests pin it). */
  random?: () => number;
}

/**
 * Runs `fn` until it succeeds: the one retry loop of the pipeline (capture's produce, the
 * worker's lookups and dead letters, the fan-out's sink writes, the content dimension's
 * lookups and history writes). Waits between attempts with full-jitter exponential backoff
 * (backoffDelay), chosen by the failure's policy.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const { signal } = options;
  let failingSince: number | null = null;
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw options.aborted?.() ?? new Error('retry aborted');
    let result: T;
    try {
      result = await fn(attempt);
    } catch (err) {
      if (signal?.aborted) throw err;
      failingSince ??= Date.now();
      const classified = (options.policyOf ?? policyFor)(err);
      const policy = classified === 'sink' ? 'sink' : 'transient';
      const last = options.attempts !== undefined && attempt >= options.attempts;
      const backoff = 'baseMs' in options.backoff ? options.backoff : options.backoff[policy];
      const delayMs = last ? null : backoffDelay(attempt, backoff, options.random);
      options.onFailure?.(err, { attempt, policy, delayMs });
      if (delayMs === null) throw err;
      await pause(delayMs, signal);
      continue;
    }
    if (failingSince !== null) options.onRecovered?.(attempt, Date.now() - failingSince);
    return result;
  }
}

/** Waits `ms`, or less when `signal` aborts (it resolves then, never rejects). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
