import { ErrorCodes, PipelineError } from '../errors.js';

/**
 * What the fan-out does about a failed sink write:
 * - `transient` (network, timeouts, 5xx, 429, locks, a restarting server): retry the same
 *   batch with backoff; the source position is held meanwhile.
 * - `sink` (authentication, permission, unknown table/schema/dataset, an analytics table that
 *   refuses every row: EP_ERR_ANALYTICS_REFUSED): retrying soon cannot
 *   help, an operator must act. One clear error line, the position held, the sink marked
 *   failed (/readyz 503, `status`, /api/stats) and retried slowly until it is fixed.
 * - `rows` (the sink deterministically rejects something in the batch: a bad value, a
 *   constraint, a Kafka record over the topic's size limit): split the batch to find the rows, dead-letter them for that sink with the
 *   reason, deliver the rest.
 */
export type ErrorPolicy = 'transient' | 'sink' | 'rows';

const TRANSIENT_NETWORK = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ESOCKETTIMEDOUT',
  'ABORT_ERR',
]);

/** ClickHouse server error types (`ClickHouseError.type`). */
const CLICKHOUSE_SINK = new Set([
  'AUTHENTICATION_FAILED',
  'UNKNOWN_USER',
  'REQUIRED_PASSWORD',
  'ACCESS_DENIED',
  'NOT_ENOUGH_PRIVILEGES',
  'UNKNOWN_TABLE',
  'UNKNOWN_DATABASE',
  'NO_SUCH_COLUMN_IN_TABLE',
  'UNKNOWN_IDENTIFIER',
  'READONLY',
]);
const CLICKHOUSE_ROWS = new Set([
  'CANNOT_PARSE_TEXT',
  'CANNOT_PARSE_INPUT_ASSERTION_FAILED',
  'CANNOT_PARSE_QUOTED_STRING',
  'CANNOT_PARSE_NUMBER',
  'CANNOT_PARSE_DATE',
  'CANNOT_PARSE_DATETIME',
  'CANNOT_PARSE_UUID',
  'TYPE_MISMATCH',
  'INCORRECT_DATA',
  'VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE',
  'ILLEGAL_TYPE_OF_ARGUMENT',
]);

/**
 * kafkajs protocol error types (`KafkaJSProtocolError.type`): a record over the topic's
 * max.message.bytes, refused alone (ResilientProducer splits larger sends), fails again whenever sent.
 */
const KAFKA_ROWS = new Set(['MESSAGE_TOO_LARGE']);

/** Decides the policy for any thrown value; unknown failures are treated as transient (held, retried). */
export function policyFor(err: unknown): ErrorPolicy {
  // Sinks wrap the driver's error (cause): the innermost specific signal decides.
  const chain: unknown[] = [];
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    chain.push(e);
  }
  for (const e of chain.slice().reverse()) {
    const specific = classify(e);
    if (specific) return specific;
  }
  for (const e of chain) {
    if (e instanceof PipelineError) {
      if (e.code === ErrorCodes.ANALYTICS_LOCKED) return 'transient'; // another writer: wait it out
      return e.kind === 'transient' ? 'transient' : 'sink';
    }
  }
  return 'transient';
}

function classify(e: unknown): ErrorPolicy | null {
  if (typeof e !== 'object' || e === null) return null;
  // Decided by the sink, not by the text it quotes (a column named `blocked` is no lock).
  if (e instanceof PipelineError && e.code === ErrorCodes.ANALYTICS_REFUSED) return 'sink';
  const x = e as { code?: unknown; status?: unknown; statusCode?: unknown; type?: unknown; name?: unknown };
  if (x.name === 'AbortError' || x.name === 'TimeoutError') return 'transient';
  const code = typeof x.code === 'string' ? x.code : undefined;
  if (code && (TRANSIENT_NETWORK.has(code) || code.startsWith('UND_ERR_'))) return 'transient';
  const status = [x.status, x.statusCode, x.code].find((v): v is number => typeof v === 'number');
  if (status !== undefined && status >= 400 && status < 600) return httpPolicy(status);
  if (typeof x.type === 'string') {
    if (CLICKHOUSE_SINK.has(x.type)) return 'sink';
    if (CLICKHOUSE_ROWS.has(x.type) || KAFKA_ROWS.has(x.type)) return 'rows';
  }
  if (code && /^[0-9A-Z]{5}$/.test(code)) return postgresPolicy(code);
  const message = e instanceof Error ? e.message : '';
  return messagePolicy(message);
}

/**
 * An HTTP error status's policy, for any sink that speaks HTTP (the external sink also splits
 * arrays on 'rows' statuses and, under `block`, holds the position on 'sink' ones).
 */
export function httpPolicy(status: number): ErrorPolicy {
  if (status === 408 || status === 429 || status >= 500) return 'transient';
  // 407: a proxy in front of the service wants credentials, as operator-fixable as a 401.
  if (status === 401 || status === 403 || status === 404 || status === 407) return 'sink';
  if (status === 400 || status === 413 || status === 422) return 'rows';
  return 'transient';
}

/** SQLSTATE classes. */
function postgresPolicy(code: string): ErrorPolicy | null {
  if (code.startsWith('08') || code.startsWith('53') || code.startsWith('57') || code.startsWith('40'))
    return 'transient';
  if (code === '55P03' || code === '55006') return 'transient'; // lock not available, object in use
  if (code.startsWith('28') || code === '42501') return 'sink'; // authentication, permission
  if (code === '42P01' || code === '3F000' || code === '42703' || code === '3D000') return 'sink'; // unknown table/schema/column/db
  if (code.startsWith('22') || code.startsWith('23')) return 'rows'; // data exception, integrity
  return null;
}

/** Drivers that only give a message (DuckDB, Redis replies). */
function messagePolicy(message: string): ErrorPolicy | null {
  if (/^(NOAUTH|WRONGPASS|NOPERM)\b/.test(message)) return 'sink';
  if (/^(LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN)\b/.test(message)) return 'transient';
  // ioredis's "Command timed out": Redis did not answer in time (src/sinks/redis/connection.ts).
  if (
    /Connection is closed|Stream isn't writeable|connect ECONNREFUSED|socket hang up|Command timed out/i.test(
      message,
    )
  )
    return 'transient';
  if (/^(Catalog Error|Permission Error)\b/.test(message)) return 'sink';
  if (/^(Conversion Error|Invalid Input Error|Constraint Error|Out of Range Error)\b/.test(message))
    return 'rows';
  if (/^(IO Error|Transaction Error)\b/.test(message) || /lock/i.test(message)) return 'transient';
  return null;
}
