import { STATUS_CODES } from 'node:http';
import type { Pool } from 'undici';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { Batch, EnrichedEvent } from '../../domain/types.js';
import { describeError, ErrorCodes, PipelineError, redactSecrets } from '../../errors.js';
import type { Metrics } from '../../observability/metrics.js';
import { eventJson, eventsJsonArray } from '../event-json.js';
import { AttemptSignal } from './attempt-signal.js';
import { SIGNATURE_HEADER, signBody } from './signature.js';

/** One POST to the external system: its events, their stream positions, and the bytes sent. */
export interface OutgoingRequest {
  events: EnrichedEvent[];
  positions: string[];
  key: string;
  body: Buffer;
  headers: Record<string, string>;
  /** Requests its splitting may still send, shared by the parts of one array (see ExternalSink). */
  splits?: { left: number };
}

export type AttemptResult =
  | { kind: 'accepted' }
  | { kind: 'permanent'; error: string; status: number }
  | { kind: 'retryable'; error: string; retryAfter?: string | string[] };

export interface ExternalRequestsOptions {
  target: URL;
  /** Events per request. */
  batchSize: number;
  /** Per attempt, headers and body included. */
  timeoutMs: number;
  /** HMAC key for X-Signature; unset = unsigned. */
  secret?: string;
  keyTypes?: KeyTypes;
  metrics: Metrics['externalRequests'];
}

/**
 * The external sink's wire side (the request shape and outcomes are described on ExternalSink):
 * turns batches into signed requests with their Idempotency-Keys, and sends one request once,
 * classifying the answer. Retries, the breaker and the policies stay with the sink.
 */
export class ExternalRequests {
  constructor(private readonly o: ExternalRequestsOptions) {}

  /** The batch as requests of up to batchSize events, in stream order. */
  split(batch: Batch): OutgoingRequest[] {
    const size = this.o.batchSize;
    const requests: OutgoingRequest[] = [];
    for (let i = 0; i < batch.events.length; i += size) {
      const events = batch.events.slice(i, i + size);
      const key =
        size === 1
          ? String(events[0].event_id)
          : `${events[0].event_id}-${events[events.length - 1].event_id}`;
      requests.push(this.build(events, batch.positions.slice(i, i + size), key, size === 1));
    }
    return requests;
  }

  /** Events [from, to) of an array request, as an array request of their own. */
  slice(request: OutgoingRequest, from: number, to: number, splits: { left: number }): OutgoingRequest {
    const events = request.events.slice(from, to);
    const key = `${events[0].event_id}-${events[events.length - 1].event_id}`;
    return { ...this.build(events, request.positions.slice(from, to), key, false), splits };
  }

  /** One POST: a single event object (`single`) or an array, with its key, signature and auth. */
  build(events: EnrichedEvent[], positions: string[], key: string, single: boolean): OutgoingRequest {
    const { keyTypes, secret, target } = this.o;
    const body = Buffer.from(single ? eventJson(events[0], keyTypes) : eventsJsonArray(events, keyTypes));
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'idempotency-key': key,
      'user-agent': 'engagement-pipeline',
    };
    if (!single) headers['x-event-count'] = String(events.length);
    if (secret) headers[SIGNATURE_HEADER] = signBody(body, secret);
    if (target.username || target.password) {
      const user = decodeURIComponent(target.username);
      const pass = decodeURIComponent(target.password);
      headers.authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    }
    return { events, positions, key, body, headers };
  }

  /** One HTTP exchange, classified. Throws only when the pipeline aborted. */
  async attempt(pool: Pool, request: OutgoingRequest, signal: AbortSignal): Promise<AttemptResult> {
    const { timeoutMs, metrics, target } = this.o;
    const attempt = new AttemptSignal(signal, timeoutMs);
    try {
      const response = await pool.request({
        method: 'POST',
        path: `${target.pathname}${target.search}`,
        headers: request.headers,
        body: request.body,
        signal: attempt.signal,
      });
      const status = response.statusCode;
      if (status >= 200 && status < 300) {
        await response.body.dump();
        metrics.inc({ outcome: 'accepted' });
        return { kind: 'accepted' };
      }
      const error = `${status} ${STATUS_CODES[status] ?? 'HTTP error'}${await bodySnippet(response.body)}`;
      // 409: a retry that met its own first attempt still in progress (see ExternalSink).
      if (status >= 500 || status === 429 || status === 408 || status === 409) {
        metrics.inc({
          outcome:
            status === 429
              ? 'rate_limited'
              : status === 408
                ? 'timeout'
                : status === 409
                  ? 'conflict'
                  : 'server_error',
        });
        return { kind: 'retryable', error, retryAfter: response.headers['retry-after'] };
      }
      metrics.inc({ outcome: 'rejected' });
      return { kind: 'permanent', error, status };
    } catch (err) {
      if (signal.aborted) throw abortError(signal);
      if (attempt.timedOut) {
        metrics.inc({ outcome: 'timeout' });
        return { kind: 'retryable', error: `timeout after ${timeoutMs} ms` };
      }
      metrics.inc({ outcome: 'network_error' });
      return { kind: 'retryable', error: `network error: ${describeError(err)}` };
    } finally {
      attempt.done();
    }
  }
}

/** The write was aborted by the pipeline (shutdown): transient, the batch replays. */
export function abortError(signal: AbortSignal): PipelineError {
  return new PipelineError(ErrorCodes.SINK_WRITE, 'external: write aborted', 'transient', undefined, {
    cause: signal.reason,
  });
}

/** The start of an error response's body, one line, for logs and the dead-letter reason. */
async function bodySnippet(body: { text(): Promise<string> }): Promise<string> {
  try {
    const text = (await body.text()).replace(/\s+/g, ' ').trim().slice(0, 200);
    return text ? `: ${redactSecrets(text)}` : '';
  } catch {
    return '';
  }
}
