/**
 * A circuit breaker for the external system: stop sending while it is clearly down, probe
 * with one request now and then, resume on the first success.
 *
 *              failure #threshold (consecutive)
 *   ┌────────┐ ─────────────────────────────▶ ┌──────┐
 *   │ closed │                                │ open │ ◀─┐
 *   └────────┘ ◀──────── success ──────────── └──────┘   │
 *       ▲                                         │ openMs elapsed:
 *       │ success (probe or any late reply)       │ next allowRequest() is the probe
 *       │                                         ▼      │ failure
 *       │                                   ┌───────────┐ │
 *       └────────────────────────────────── │ half-open │─┘
 *                                           └───────────┘
 *
 * In half-open exactly one request (the probe) is let through; the others are refused until
 * it reports. A success seen in any state closes the circuit: a reply from a request started
 * before the circuit opened is as good evidence of recovery as the probe's.
 * The clock is injected, so the transitions are unit-tested without sleeping.
 */

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. */
  failureThreshold: number;
  /** How long the circuit stays open before a probe is allowed. */
  openMs: number;
  now?: () => number;
  onStateChange?: (to: CircuitState, from: CircuitState) => void;
}

export class CircuitBreaker {
  #state: CircuitState = 'closed';
  #consecutiveFailures = 0;
  #openedAt = 0;
  #probeInFlight = false;
  readonly #options: Required<Omit<CircuitBreakerOptions, 'onStateChange'>> &
    Pick<CircuitBreakerOptions, 'onStateChange'>;

  constructor(options: CircuitBreakerOptions) {
    if (options.failureThreshold < 1) throw new RangeError('failureThreshold must be >= 1');
    this.#options = { now: Date.now, ...options };
  }

  get state(): CircuitState {
    return this.#state;
  }

  get consecutiveFailures(): number {
    return this.#consecutiveFailures;
  }

  /** May a request go out now? In open state past openMs this hands out the single probe. */
  allowRequest(): boolean {
    if (this.#state === 'closed') return true;
    if (this.#state === 'open') {
      if (this.#options.now() - this.#openedAt < this.#options.openMs) return false;
      this.#transition('half-open');
      this.#probeInFlight = true;
      return true;
    }
    if (this.#probeInFlight) return false;
    this.#probeInFlight = true; // the previous probe was released without a verdict
    return true;
  }

  /** The external system answered in a way that shows it is up (2xx, or a permanent 4xx). */
  recordSuccess(): void {
    this.#consecutiveFailures = 0;
    this.#probeInFlight = false;
    if (this.#state !== 'closed') this.#transition('closed');
  }

  /** A network error, timeout, 5xx or 429. */
  recordFailure(): void {
    this.#consecutiveFailures += 1;
    if (this.#state === 'half-open') {
      this.#probeInFlight = false;
      this.#open();
    } else if (this.#state === 'closed' && this.#consecutiveFailures >= this.#options.failureThreshold) {
      this.#open();
    }
    // open: stays open; late failures of requests sent before it opened do not extend the wait.
  }

  /** The probe ended without a verdict (aborted on shutdown): let another request probe. */
  releaseProbe(): void {
    this.#probeInFlight = false;
  }

  /** Milliseconds until a probe may be sent (0 when a request may be tried now). */
  msUntilProbe(): number {
    if (this.#state !== 'open') return 0;
    return Math.max(0, this.#openedAt + this.#options.openMs - this.#options.now());
  }

  #open(): void {
    this.#openedAt = this.#options.now();
    this.#transition('open');
  }

  #transition(to: CircuitState): void {
    const from = this.#state;
    this.#state = to;
    if (from !== to) this.#options.onStateChange?.(to, from);
  }
}
