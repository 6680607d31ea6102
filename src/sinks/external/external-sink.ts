import { setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { Batch, EnrichedEvent } from '../../domain/types.js';
import { describeError, ErrorCodes, PipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { DeadLetterEntry, DeadLetterRow, DeadLetterStore } from '../../state/dead-letter.js';
import type { Sink, WriteResult } from '../sink.js';
import { DEFAULT_BACKOFF, parseRetryAfter, retryDelay } from '../../retry/backoff.js';
import { httpPolicy } from '../../retry/error-policy.js';
import { CircuitBreaker, type CircuitState } from './circuit-breaker.js';
import { Redriver, type RedriveOutcome, type RedriverOptions } from './redrive.js';
import { abortError, ExternalRequests, type AttemptResult, type OutgoingRequest } from './requests.js';
import { RequestSlots } from './request-slots.js';

/**
 * The external HTTP system (README, "The external system contract"): at-least-once POSTs with an Idempotency-Key,
 * retries with jittered backoff, a circuit breaker, and a policy for what happens when
 * retries run out.
 *
 * Request shape:
 * - batchSize 1: the body is one enriched event; `Idempotency-Key: <event_id>`. Keys are typed
 *   as in the source (integer keys as JSON numbers, see event-json.ts).
 * - batchSize > 1: the body is a JSON array of up to batchSize events (a contiguous slice of
 *   the stream, in stream order); `Idempotency-Key: <first event_id>-<last event_id>` and
 *   `X-Event-Count`. Same key => same slice => same contents. A replay may slice a stream
 *   differently (batch boundaries move), so a receiver wanting exactly-once effect for arrays
 *   should dedupe on each element's event_id; the key only dedupes identical re-sends.
 * - `X-Signature: sha256=<hex HMAC-SHA256 of the body bytes>` when a secret is set.
 * Requests of one write run up to `concurrency` at a time, so the receiver may see events
 * out of order.
 *
 * Outcomes per request:
 * - 2xx: accepted.
 * - network error, timeout, 5xx, 408, 409, 429: retried (Retry-After honoured, capped), up to
 *   maxAttempts; then `best-effort` dead-letters the request's events and moves on (the
 *   automatic re-drive re-sends them once the system answers), `block` keeps retrying
 *   (backoff at its cap) until it succeeds or the pipeline aborts the write. 409 is here
 *   because a receiver implementing the IETF Idempotency-Key draft answers it to a retry that
 *   arrives while the first request with the same key is still being processed (say ours
 *   timed out): a later retry gets the first request's answer. An array answered 409 is
 *   re-sent whole, under the same key (splitting it would send its events under new keys).
 * - 401, 403, 404, 407: about the endpoint or our credentials (an expired token, a wrong
 *   URL, a proxy asking for authentication), so an operator can fix it and the same request
 *   then succeeds. `block`: the write fails at once with a 'sink'-policy error
 *   (error-policy.ts): nothing is dead-lettered, the position is held, the sink shows
 *   `failed` (/readyz, `status`) and the fan-out retries the batch slowly until the receiver
 *   takes it. `best-effort`: dead-lettered at once, whole arrays, not split (left out of the
 *   automatic re-drive; `engagement dlq replay` once fixed).
 * - any other status (400, 413, 422, other 4xx, 3xx, ...): permanent, dead-lettered at once
 *   under both policies; an array refused with a status that can be about some of its events
 *   (400, 413, 422) is first split in halves until those events stand alone, so the rest is
 *   delivered (within splitBudget requests per array). Retrying cannot change the answer, and
 *   blocking on it would stall the pipeline forever; the dead-letter row keeps the event and
 *   the reason for `engagement dlq replay`.
 * - circuit open: `best-effort` dead-letters without sending (fail fast, so an outage does
 *   not slow the other destinations down); `block` waits for the breaker's probe.
 *
 * Spilling (`best-effort` only, see Sink.spill): a receiver that answers every request, but
 * slower than events arrive, fails nothing, so EXTERNAL_RETRY_FOR never ends its hold and it
 * would set the pace of every destination. Once it alone has held a full window for
 * spillAfterMs (EXTERNAL_SPILL_AFTER), the pipeline turns spilling on: requests not yet sent,
 * and those waiting (a backoff, a Retry-After, a request slot), are recorded as dead letters
 * (`set aside unsent: ...`, attempts 0, or the last error) instead; requests in flight finish
 * (a failing one is dead-lettered rather than retried); the automatic re-drive sends them later
 * under the same keys. Only with a re-drive (EXTERNAL_REDRIVE_RATE > 0), which holds back while
 * spilling so it does not compete with the live stream for the slow receiver.
 *
 * A write that fails after some requests were accepted (the dead-letter table unreachable)
 * is retried whole by the fan-out; the retry skips what was accepted (neither re-sent nor set
 * aside).
 *
 * write() resolves once every event was accepted or recorded in the dead-letter table; it
 * rejects when the pipeline aborts or the dead-letter table cannot be written (the pipeline
 * then retries the batch; re-sends carry the same keys).
 */

export type ExternalPolicy = 'best-effort' | 'block';

export interface ExternalSinkOptions {
  url: string;
  /** HMAC key for X-Signature; unset = unsigned. */
  secret?: string;
  policy: ExternalPolicy;
  /** Events per request. */
  batchSize: number;
  /** Requests in flight at once. */
  concurrency: number;
  /** Attempts per request before the policy applies. */
  maxAttempts: number;
  /** Per attempt, headers and body included. */
  timeoutMs: number;
  deadLetters: Pick<DeadLetterStore, 'record'>;
  metrics: Metrics;
  logger: Logger;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Cap on a server's Retry-After (default 60 s). */
  retryAfterMaxMs?: number;
  /**
   * Consecutive failed attempts that open the circuit. Default 20: random failures rarely
   * reach it, while a real outage does within one round of concurrent requests.
   */
  breakerThreshold?: number;
  /** Time the circuit stays open before one probe (default 2 s). */
  breakerOpenMs?: number;
  /**
   * best-effort: how long a failure is ridden out (retries; while the circuit is open, waiting
   * for probes) before a request is dead-lettered; see #givesUp. 0 (default) = maxAttempts only.
   */
  retryForMs?: number;
  /**
   * The source's key types: integer keys go out as JSON numbers (when safe integers), UUID and
   * text keys as strings (see event-json.ts). Default: UUID keys.
   */
  keyTypes?: KeyTypes;
  /** Automatic re-drive of this sink's pending dead letters once the system answers (off when unset). */
  redrive?: Omit<RedriverOptions, 'sink' | 'metrics' | 'logger' | 'healthy' | 'send'>;
  /**
   * best-effort: how long the sink may alone hold a full window before the pipeline makes it
   * spill (Sink.spillAfterMs, EXTERNAL_SPILL_AFTER); null = never. Ignored under `block`.
   */
  spillAfterMs?: number | null;
}

type Verdict = { delivered: true } | { delivered: false; error: string; attempts: number; status?: number };

/**
 * Refusals that can be about some of an array's events (a value the receiver will not take, a
 * body too large: the 'rows' statuses of httpPolicy, 400, 413, 422): such an array is split in
 * halves until the refused events stand alone. Others (401, 403, 404, 3xx, ...) are about the
 * request or the endpoint: splitting would only multiply requests. Not 409: that is a retry
 * meeting its own first attempt (see above).
 */
const isRowStatus = (status: number): boolean => httpPolicy(status) === 'rows';

/**
 * Refusals of the endpoint or of our credentials, which an operator fixes (then the same
 * request succeeds; httpPolicy's 'sink' statuses, 401, 403, 404, 407): under `block` they
 * hold the position instead of dead-lettering.
 */
const isOperatorStatus = (status: number): boolean => httpPolicy(status) === 'sink';

/**
 * Requests the splitting of one refused array of n events may send: enough to isolate two bad
 * events (two halves per level, log2(n) levels each). A receiver that refuses every array
 * (say one that takes single objects only) costs this many, not 2n - 1, before the rest of
 * the refused parts are dead-lettered whole.
 */
const splitBudget = (n: number) => 4 * Math.ceil(Math.log2(n));

const SINK = 'external';
const DEAD_LETTER_LOG_INTERVAL_MS = 10_000;
const RECOVERY_SPREAD_MS = 1_000;
/** How long requests must have failed, with no success between, before the sink reports down. */
const FAILING_AFTER_MS = 1_000;
/** A failure no request has confirmed for this long is no longer reported (see failure()). */
const FAILURE_STALE_MS = 30_000;
/** The dead letter's reason for an event set aside unsent (redrivable: not an HTTP status). */
export const SET_ASIDE =
  'set aside unsent: the external system answered more slowly than events arrived and alone held the other destinations back (EXTERNAL_SPILL_AFTER); re-sent automatically';

export class ExternalSink implements Sink {
  readonly name = SINK;
  /** EXTERNAL_WRITE_INTERVAL_MS (see Sink.writeIntervalMs). */
  writeIntervalMs?: number;
  /** EXTERNAL_SPILL_AFTER under best-effort (Sink.spillAfterMs); unset under block. */
  readonly spillAfterMs?: number;
  readonly #o: ExternalSinkOptions;
  readonly #target: URL;
  readonly #backoff: { baseMs: number; maxMs: number; retryAfterMaxMs: number };
  readonly #breaker: CircuitBreaker;
  readonly #requests: ExternalRequests;
  /** EXTERNAL_CONCURRENCY, shared by live requests (first) and the re-drive (what is left). */
  readonly #slots: RequestSlots;
  #pool: Pool | undefined;
  readonly #retryForMs: number;
  readonly #redriver: Redriver | null;
  // Failure-streak bookkeeping, so an outage logs one line when it starts and one when it ends.
  #failingSince: number | null = null;
  #streakFailures = 0;
  /** The current streak's "failing" line was logged (it lasted FAILING_AFTER_MS). */
  #streakLogged = false;
  // Aborted (and replaced) when the system answers again: requests sleeping in backoff or
  // waiting for the probe retry at once instead of finishing a wait of up to backoffMaxMs.
  #recovered = unlimitedListeners(new AbortController());
  #lastFailure = 'none';
  #lastFailureAt = 0;
  #deadLetterLoggedAt = 0;
  #deadLettersUnlogged = 0;
  /** The reasons of the events #deadLettersUnlogged counts. */
  readonly #unloggedReasons = new Map<string, number>();
  /** Sink.spill: writes set aside what they have not sent yet. */
  #spilling = false;
  // Aborted (and replaced) when spilling starts: requests waiting out a backoff, a Retry-After
  // or a request slot give up at once instead of holding the write.
  #spillStarted = unlimitedListeners(new AbortController());
  /**
   * `stream@position` of the events a write that then failed had delivered: its retry (the
   * fan-out writes the same batch again) does not send them again, nor set them aside.
   */
  readonly #deliveredBefore = new Set<string>();

  constructor(options: ExternalSinkOptions) {
    for (const key of ['batchSize', 'concurrency', 'maxAttempts', 'timeoutMs'] as const) {
      if (!Number.isInteger(options[key]) || options[key] < 1)
        throw new RangeError(`external sink: ${key} must be a positive integer`);
    }
    this.#o = options;
    this.#target = new URL(options.url);
    if (this.#target.protocol !== 'http:' && this.#target.protocol !== 'https:') {
      throw new RangeError(`external sink: URL must be http(s), got ${this.#target.protocol}`);
    }
    this.#requests = new ExternalRequests({
      target: this.#target,
      batchSize: options.batchSize,
      timeoutMs: options.timeoutMs,
      secret: options.secret,
      keyTypes: options.keyTypes,
      metrics: options.metrics.externalRequests,
    });
    this.#backoff = {
      baseMs: options.backoffBaseMs ?? DEFAULT_BACKOFF.baseMs,
      maxMs: options.backoffMaxMs ?? DEFAULT_BACKOFF.maxMs,
      retryAfterMaxMs: options.retryAfterMaxMs ?? 60_000,
    };
    this.#breaker = new CircuitBreaker({
      failureThreshold: options.breakerThreshold ?? 20,
      openMs: options.breakerOpenMs ?? 2_000,
      onStateChange: (to, from) => this.#onCircuitChange(to, from),
    });
    this.#retryForMs = options.retryForMs ?? 0;
    this.#slots = new RequestSlots(options.concurrency);
    this.#redriver =
      options.redrive && options.redrive.ratePerSecond > 0
        ? new Redriver({
            ...options.redrive,
            sink: SINK,
            metrics: options.metrics,
            logger: options.logger,
            healthy: () =>
              this.#pool !== undefined &&
              this.#breaker.state === 'closed' &&
              this.#failingSince === null &&
              !this.#spilling,
            // Nothing while spilling: the live stream needs every slot the slow receiver has.
            room: () => (this.#spilling ? 0 : this.#slots.free),
            unpaced: (row) => row.lastError === SET_ASIDE,
            perRequest: options.batchSize,
            sendMany: (rows, signal) => this.#redriveMany(rows, signal),
            send: (row, signal) => this.#redriveOne(row, signal),
          })
        : null;
    // Only with a re-drive to send the set-aside events later: without one (EXTERNAL_REDRIVE_RATE
    // 0) they would wait for an operator, so the receiver sets the pace instead.
    if (options.policy === 'best-effort' && options.spillAfterMs != null && this.#redriver !== null) {
      this.spillAfterMs = options.spillAfterMs;
    }
  }

  /** For logs: no userinfo and no query string (either may carry a token). */
  get #safeUrl(): string {
    return `${this.#target.origin}${this.#target.pathname}`;
  }

  /**
   * The failure being ridden out (Sink.failure): once requests have failed for
   * FAILING_AFTER_MS with no success in between, or while the circuit is open. One failed
   * request among successes (a 503 now and then) is not an outage.
   */
  failure(): string | null {
    const since = this.#failingSince;
    const now = Date.now();
    // Only a request clears a failure: with no traffic (nothing sent since), it goes stale
    // instead of keeping the sink down until the next event.
    if (now - this.#lastFailureAt > FAILURE_STALE_MS) return null;
    const failing = since !== null && now - since >= FAILING_AFTER_MS;
    if (!failing && this.#breaker.state !== 'open') return null;
    return `external system failing${since === null ? '' : ` for ${Math.round((Date.now() - since) / 1000)} s`}: ${this.#lastFailure}`;
  }

  backlogSeconds(): number {
    return this.#redriver?.waitingSeconds() ?? 0;
  }

  spill(on: boolean): void {
    // Only where a pipeline was told it may (best-effort with a spillAfterMs): under block
    // every event waits for the receiver, as promised.
    if (this.spillAfterMs === undefined) return;
    this.#spilling = on;
    if (!on) return;
    this.#spillStarted.abort();
    this.#spillStarted = unlimitedListeners(new AbortController());
  }

  get circuitState(): CircuitState {
    return this.#breaker.state;
  }

  async start(): Promise<void> {
    if (this.#pool) return;
    this.#pool = new Pool(this.#target.origin, {
      connections: this.#o.concurrency,
      keepAliveTimeout: 30_000,
      connect: { timeout: this.#o.timeoutMs },
    });
    this.#o.metrics.circuitOpen.set(0);
    this.#redriver?.start();
    this.#o.logger.info(
      {
        sink: SINK,
        url: this.#safeUrl,
        policy: this.#o.policy,
        signed: Boolean(this.#o.secret),
      },
      'external sink started',
    );
  }

  async write(batch: Batch, signal: AbortSignal): Promise<WriteResult | undefined> {
    if (!this.#pool) throw new Error('external sink: write() before start()');
    if (signal.aborted) throw abortError(signal);
    const requests = this.#requests.split(batch);
    const deadLetters: DeadLetterEntry[] = [];
    const deadLettered = new Set<string>();
    const delivered: OutgoingRequest[] = [];
    // A worker that fails (abort, or a bug) stops the others instead of leaving them running.
    const stopAll = new AbortController();
    const runSignal = AbortSignal.any([signal, stopAll.signal]);
    setMaxListeners(0, runSignal); // every concurrent request and wait listens on it
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < requests.length) {
        const request = requests[next++];
        // Only after a failed write (rare): no key strings on the way of every event.
        if (
          this.#deliveredBefore.size > 0 &&
          request.positions.every((p) => this.#deliveredBefore.has(`${batch.stream}@${p}`))
        )
          continue;
        if (this.#spilling) {
          setAside(request, SET_ASIDE, 0);
          continue;
        }
        const verdict = await this.#deliver(request, runSignal);
        // Accepted events are counted by the fan-out (eventsDelivered, once the write resolves);
        // here only what the external system did not take is left to record.
        if (verdict.delivered) {
          delivered.push(request);
          continue;
        }
        if (this.#o.policy === 'block' && verdict.status !== undefined && isOperatorStatus(verdict.status)) {
          throw this.#refused(verdict.status, verdict.error);
        }
        const n = request.events.length;
        const splits = (request.splits ??= { left: splitBudget(n) });
        if (verdict.status !== undefined && isRowStatus(verdict.status) && n > 1 && splits.left >= 2) {
          // Split in halves, sent next by whichever worker is free (order across requests is
          // not promised, see above); the events the system refuses end up alone.
          splits.left -= 2;
          const mid = Math.ceil(n / 2);
          requests.splice(
            next,
            0,
            this.#requests.slice(request, 0, mid, splits),
            this.#requests.slice(request, mid, n, splits),
          );
          continue;
        }
        setAside(request, verdict.error, verdict.attempts);
      }
    };
    const setAside = (request: OutgoingRequest, lastError: string, attempts: number): void => {
      request.events.forEach((event, i) =>
        deadLetters.push({
          sink: SINK,
          eventId: event.event_id,
          idempotencyKey: String(event.event_id),
          event,
          source: `${batch.stream}@${request.positions[i]}`,
          lastError,
          attempts,
        }),
      );
      for (const position of request.positions) deadLettered.add(position);
    };
    // In the order they happened: the first is the cause, the rest mostly its stopAll aborts
    // (a worker's place in the list says nothing about which failed first).
    const failures: unknown[] = [];
    const workers = Array.from({ length: Math.min(this.#o.concurrency, requests.length) }, () =>
      worker().catch((err: unknown) => {
        failures.push(err);
        stopAll.abort();
      }),
    );
    await Promise.all(workers);
    try {
      if (signal.aborted) throw abortError(signal);
      if (failures.length > 0) throw failures[0];
      if (deadLetters.length > 0) await this.#recordDeadLetters(deadLetters);
    } catch (err) {
      // The fan-out writes this batch again: what the receiver accepted is not sent again.
      for (const request of delivered)
        for (const p of request.positions) this.#deliveredBefore.add(`${batch.stream}@${p}`);
      throw err;
    }
    // Resolved: the fan-out moves on to other batches.
    this.#deliveredBefore.clear();
    return deadLetters.length > 0 ? { deadLettered } : undefined;
  }

  async stop(): Promise<void> {
    await this.#redriver?.stop();
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.close();
  }

  /**
   * A refusal an operator must fix (isOperatorStatus), under `block`: a 'sink'-policy failure
   * (error-policy.ts; the cause carries the status), so the fan-out holds the position, shows
   * the sink failed and retries the batch slowly.
   */
  #refused(status: number, error: string): PipelineError {
    const hint =
      status === 404
        ? 'check the host and path of EXTERNAL_URL'
        : status === 407
          ? 'the proxy in front of the receiver wants credentials'
          : 'check the credentials the receiver expects (user:password in EXTERNAL_URL, EXTERNAL_SECRET) and that it grants this client access';
    return new PipelineError(
      ErrorCodes.SINK_WRITE,
      `external system at ${this.#safeUrl} refused the request: ${error}`,
      'fatal',
      `${hint}; EXTERNAL_POLICY=block holds the events and sends them once the receiver takes them`,
      { cause: Object.assign(new Error(error), { status }) },
    );
  }

  /** Sends one request until accepted, permanently rejected, or out of time and attempts (per policy). */
  async #deliver(request: OutgoingRequest, signal: AbortSignal): Promise<Verdict> {
    let attempts = 0;
    let lastError = SET_ASIDE;
    const startedAt = Date.now();
    for (;;) {
      if (signal.aborted) throw abortError(signal);
      // Spilling started while this request waited (a backoff, Retry-After, the probe, a slot).
      if (this.#spilling) return { delivered: false, error: lastError, attempts };
      if (!this.#breaker.allowRequest()) {
        this.#o.metrics.externalRequests.inc({ outcome: 'circuit_open' });
        if (this.#givesUp(attempts, startedAt, true)) {
          return { delivered: false, error: `circuit open (last failure: ${this.#lastFailure})`, attempts };
        }
        // Wait for the breaker's probe time, spread out so waiters do not poll in step.
        const wait = this.#breaker.msUntilProbe() + Math.random() * Math.max(this.#backoff.baseMs, 10);
        await this.#wait(this.#withinBudget(wait, startedAt), signal);
        continue;
      }
      let result: AttemptResult;
      try {
        await this.#slots.acquire(AbortSignal.any([signal, this.#spillStarted.signal]));
      } catch {
        this.#breaker.releaseProbe();
        if (signal.aborted) throw abortError(signal);
        continue; // spilling started: set aside (above)
      }
      attempts += 1;
      try {
        result = await this.#requests.attempt(this.#pool!, request, signal);
      } catch (err) {
        this.#breaker.releaseProbe();
        throw err;
      } finally {
        this.#slots.release();
      }
      if (result.kind === 'accepted' || result.kind === 'permanent') {
        // Any answer that is not a failure shows the system is up.
        this.#breaker.recordSuccess();
        this.#noteUp();
        if (result.kind === 'accepted') return { delivered: true };
        return { delivered: false, error: result.error, attempts, status: result.status };
      }
      this.#breaker.recordFailure();
      this.#noteFailure(result.error);
      lastError = result.error;
      if (this.#givesUp(attempts, startedAt, false)) {
        return { delivered: false, error: result.error, attempts };
      }
      const retryAfterMs = parseRetryAfter(result.retryAfter);
      const wait = retryDelay(attempts, retryAfterMs, this.#backoff);
      // A Retry-After is the server's own instruction: kept even if another request succeeds.
      await this.#wait(this.#withinBudget(wait, startedAt), signal, retryAfterMs === undefined);
    }
  }

  /**
   * best-effort gives a request up once it made maxAttempts (or the circuit is open) AND the
   * failure has lasted retryForMs: counted from the start of the current failure streak (an
   * outage that began before this request was sent counts) or from the request's first
   * attempt, whichever is earlier — so one poisoned request cannot retry forever while others
   * succeed, and a long outage does not make every later batch wait retryForMs again. While
   * spilling, at once: the events wait in the dead-letter table instead of holding the stream.
   * block never gives a retryable failure up.
   */
  #givesUp(attempts: number, startedAt: number, circuitOpen: boolean): boolean {
    if (this.#o.policy !== 'best-effort') return false;
    if (this.#spilling) return true;
    if (!circuitOpen && attempts < this.#o.maxAttempts) return false;
    return Date.now() - Math.min(startedAt, this.#failingSince ?? startedAt) >= this.#retryForMs;
  }

  /**
   * Sleeps until the wait is over, the system answered again, or the write aborts. Woken by a
   * recovery, a waiter still sleeps a random part of a second: a recovering system gets the
   * waiters spread out, not all at once (the reason for full jitter in the first place).
   */
  async #wait(ms: number, signal: AbortSignal, wakeOnRecovery = true): Promise<void> {
    const started = Date.now();
    const recovered = this.#recovered.signal;
    const spill = this.#spillStarted.signal;
    const wake = AbortSignal.any(wakeOnRecovery ? [signal, spill, recovered] : [signal, spill]);
    await sleep(ms, undefined, { signal: wake }).catch(() => undefined);
    if (signal.aborted || spill.aborted || !recovered.aborted) return;
    const left = ms - (Date.now() - started);
    if (left > 0) {
      await sleep(Math.random() * Math.min(left, RECOVERY_SPREAD_MS), undefined, { signal }).catch(
        () => undefined,
      );
    }
  }

  /** A wait shortened so a best-effort request wakes when its retry budget ends, not a backoff later. */
  #withinBudget(waitMs: number, startedAt: number): number {
    if (this.#o.policy !== 'best-effort' || this.#retryForMs === 0) return waitMs;
    const left = Math.min(startedAt, this.#failingSince ?? startedAt) + this.#retryForMs - Date.now();
    return left > 0 ? Math.min(waitMs, left) : waitMs;
  }

  /**
   * One attempt for a re-driven dead letter: one event, under the key it was dead-lettered
   * with, through the same breaker as the live stream (while it is open, the re-drive's request
   * may be the probe that finds the system back when no live traffic asks).
   */
  async #redriveOne(row: DeadLetterRow, signal: AbortSignal): Promise<RedriveOutcome> {
    if (!this.#pool || signal.aborted) return { kind: 'not-sent' };
    // Only a slot the live stream leaves free (RequestSlots).
    if (!this.#slots.tryAcquire()) return { kind: 'not-sent' };
    try {
      return await this.#redriveAttempt([row], signal);
    } finally {
      this.#slots.release();
    }
  }

  /**
   * Set-aside rows re-sent as the live stream sends events: arrays of batchSize (keyed
   * `<first>-<last>`, like any array; receivers of arrays dedupe elements by event_id), each in
   * a free slot. One at a time, a receiver taking 100 events per 3 s request got 0.3 a second
   * back. An array refused for good may hold one bad event: its rows then go one by one, so
   * only the refused ones stay.
   */
  async #redriveMany(rows: DeadLetterRow[], signal: AbortSignal): Promise<RedriveOutcome[]> {
    const size = this.#o.batchSize;
    const groups: DeadLetterRow[][] = [];
    for (let i = 0; i < rows.length; i += size) groups.push(rows.slice(i, i + size));
    const outcomes = await Promise.all(groups.map((group) => this.#redriveArray(group, signal)));
    return outcomes.flat();
  }

  async #redriveArray(rows: DeadLetterRow[], signal: AbortSignal): Promise<RedriveOutcome[]> {
    if (rows.length === 1) return [await this.#redriveOne(rows[0], signal)];
    const notSent: RedriveOutcome = { kind: 'not-sent' };
    if (!this.#pool || signal.aborted || !this.#slots.tryAcquire()) return rows.map(() => notSent);
    let outcome: RedriveOutcome;
    try {
      outcome = await this.#redriveAttempt(rows, signal);
    } finally {
      this.#slots.release();
    }
    if (outcome.kind !== 'permanent') return rows.map(() => outcome);
    // One of them may be the reason: each row goes alone in later passes (paced, as rows of a
    // failure), so only the refused ones stay. Not here: the slot just freed may be a waiting
    // live request's, and a pass of single sends at a slow receiver's pace held every other row.
    const retry: RedriveOutcome = {
      kind: 'retryable',
      error: `array refused (${outcome.error}); re-sent one event per request`,
    };
    return rows.map(() => retry);
  }

  /** One attempt for one row (under its dead-letter key) or an array of rows. */
  async #redriveAttempt(rows: DeadLetterRow[], signal: AbortSignal): Promise<RedriveOutcome> {
    if (!this.#breaker.allowRequest()) return { kind: 'not-sent' };
    const events = rows.map((row) => row.event as EnrichedEvent);
    const single = rows.length === 1;
    const request = this.#requests.build(
      events,
      rows.map((row) => `dlq:${row.id}`),
      single ? rows[0].idempotencyKey : `${events[0].event_id}-${events[events.length - 1].event_id}`,
      single,
    );
    let result: AttemptResult;
    try {
      result = await this.#requests.attempt(this.#pool!, request, signal);
    } catch {
      this.#breaker.releaseProbe();
      return { kind: 'not-sent' };
    }
    if (result.kind === 'retryable') {
      this.#breaker.recordFailure();
      this.#noteFailure(result.error);
      return { kind: 'retryable', error: result.error };
    }
    this.#breaker.recordSuccess();
    this.#noteUp();
    if (result.kind === 'permanent' && this.#o.policy === 'block' && isOperatorStatus(result.status)) {
      // Held, as the live stream is: recording this answer would make the row permanent (out
      // of the re-drive) for a refusal an operator is about to fix.
      return { kind: 'not-sent' };
    }
    return result;
  }

  async #recordDeadLetters(entries: DeadLetterEntry[]): Promise<void> {
    let added: number;
    try {
      added = await this.#o.deadLetters.record(entries);
    } catch (err) {
      // Not recorded = not safe to move on: reject so the pipeline holds the LSN and retries.
      throw new PipelineError(
        ErrorCodes.SINK_WRITE,
        `external: cannot record dead letters: ${describeError(err)}`,
        'transient',
        undefined,
        {
          cause: err,
        },
      );
    }
    this.#o.metrics.deadLetters.inc({ sink: SINK }, added);
    // Rate-limited: during an outage every batch dead-letters, one line per 10 s is enough.
    this.#deadLettersUnlogged += entries.length;
    // The reasons of every event the line counts, not only of this call's (it said "429" for
    // 12,468 events, most of them set aside by a spill in earlier calls).
    countReasons(entries, this.#unloggedReasons);
    const now = Date.now();
    if (now - this.#deadLetterLoggedAt >= DEAD_LETTER_LOG_INTERVAL_MS) {
      this.#o.logger.warn(
        { sink: SINK, events: this.#deadLettersUnlogged, reasons: topReasons(this.#unloggedReasons) },
        `external: dead-lettered ${this.#deadLettersUnlogged} events (see engagement dlq list)`,
      );
      this.#deadLetterLoggedAt = now;
      this.#deadLettersUnlogged = 0;
      this.#unloggedReasons.clear();
    }
  }

  #noteFailure(error: string): void {
    this.#lastFailure = error;
    this.#lastFailureAt = Date.now();
    this.#streakFailures += 1;
    this.#failingSince ??= Date.now();
    // Once the streak is an outage (FAILING_AFTER_MS, as failure() reports it), not for a blip:
    // a 429 now and then among successes logged two lines each (800 pairs in 14 minutes).
    if (this.#streakLogged || Date.now() - this.#failingSince < FAILING_AFTER_MS) return;
    this.#streakLogged = true;
    this.#o.logger.warn({ sink: SINK, url: this.#safeUrl }, `external system failing: ${error}`);
  }

  #noteUp(): void {
    if (this.#failingSince === null) return;
    const seconds = ((Date.now() - this.#failingSince) / 1000).toFixed(1);
    if (this.#streakLogged)
      this.#o.logger.info(
        { sink: SINK, failedAttempts: this.#streakFailures },
        `external system recovered after ${seconds} s`,
      );
    this.#streakLogged = false;
    this.#failingSince = null;
    this.#streakFailures = 0;
    this.#recovered.abort();
    this.#recovered = unlimitedListeners(new AbortController());
    // The system answers again: re-send what the outage dead-lettered now, not at the next tick.
    this.#redriver?.wake();
  }

  #onCircuitChange(to: CircuitState, from: CircuitState): void {
    this.#o.metrics.circuitOpen.set(to === 'closed' ? 0 : 1);
    // Only the first opening of a streak is news; half-open <-> open flapping is not.
    if (to === 'open' && from === 'closed') {
      const meanwhile = this.#o.policy === 'best-effort' ? 'dead-lettering' : 'holding';
      this.#o.logger.warn(
        { sink: SINK, policy: this.#o.policy },
        `external circuit open after ${this.#breaker.consecutiveFailures} consecutive failures: ` +
          `${meanwhile} until a probe succeeds`,
      );
    }
  }
}

function unlimitedListeners(controller: AbortController): AbortController {
  setMaxListeners(0, controller.signal); // one listener per waiting request
  return controller;
}

/** Adds the entries' reasons (their first 80 characters) to `counts`. */
function countReasons(entries: readonly DeadLetterEntry[], counts: Map<string, number>): void {
  for (const e of entries) {
    const reason = e.lastError.slice(0, 80);
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
  }
}

/** The three most frequent reasons with their counts. */
function topReasons(counts: ReadonlyMap<string, number>): Record<string, number> {
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]).slice(0, 3));
}
