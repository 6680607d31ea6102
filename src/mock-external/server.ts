import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { SIGNATURE_HEADER, verifySignature } from '../sinks/external/signature.js';
import { listenFailure } from '../server/listen.js';

/**
 * The stand-in external system (README, "The external system contract"): accepts POSTed events on any path, checks the
 * signature, and counts what reached it (requests, unique event ids and Idempotency-Keys,
 * duplicates), so tests and the demo can prove delivery. Failures can be injected: a random
 * 5xx rate, latency, and scripted modes switched at runtime through POST /_control.
 *
 * Endpoints:
 *   POST /<any path>  an event object or an array of events; needs an Idempotency-Key header.
 *                     2xx {accepted, duplicate}; 401 bad signature; 400 malformed; injected 5xx/429/400.
 *   POST /_control    {mode?: 'ok'|'fail500'|'fail503'|'rate429'|'reject400', count?,
 *                      retryAfterSeconds?, failRate?, latencyMs?}
 *                     `count` applies the mode to that many requests, then returns to 'ok'.
 *   GET  /_stats      counters (see MockStats)
 *   GET  /_events?limit=N   unique event ids received, in arrival order (first N, default 1000)
 *   GET  /_requests?limit=N the last N requests (default 100; the last 1000 are kept)
 *   POST /_reset      clears counters and restores the start-up settings
 *   GET  /healthz
 */

export type MockMode = 'ok' | 'fail500' | 'fail503' | 'rate429' | 'reject400';

export interface MockExternalOptions {
  port?: number;
  host?: string;
  /** Probability (0..1) that an otherwise-accepted request gets a 503. */
  failRate?: number;
  /** Delay before every answer to an event POST. */
  latencyMs?: number;
  /** When set, X-Signature is required and verified (401 on mismatch). */
  secret?: string;
  /** Cap on tracked ids/keys (memory bound); past it the unique counts are lower bounds. */
  maxTrackedIds?: number;
}

export interface MockStats {
  requests: number;
  accepted: number;
  events: number;
  uniqueEventIds: number;
  uniqueKeys: number;
  /** Accepted requests whose Idempotency-Key had already been accepted. */
  duplicates: number;
  /** Accepted events whose event_id had already been accepted. */
  duplicateEvents: number;
  signatureFailures: number;
  malformed: number;
  injected: { fail500: number; fail503: number; rate429: number; reject400: number; random503: number };
  mode: MockMode;
  modeRemaining: number | null;
  failRate: number;
  latencyMs: number;
  trackingTruncated: boolean;
}

interface RequestRecord {
  at: string;
  path: string;
  idempotencyKey: string | null;
  contentType: string | null;
  /** The first 20 event ids of the body (accepted requests only). */
  eventIds: number[];
  status: number;
  signature: 'ok' | 'bad' | 'none';
}

const controlSchema = z.object({
  mode: z.enum(['ok', 'fail500', 'fail503', 'rate429', 'reject400']).optional(),
  count: z.number().int().positive().optional(),
  retryAfterSeconds: z.number().int().min(0).optional(),
  failRate: z.number().min(0).max(1).optional(),
  latencyMs: z.number().int().min(0).optional(),
});

const REQUEST_LOG_SIZE = 1000;

class MockState {
  mode: MockMode = 'ok';
  modeRemaining: number | null = null;
  retryAfterSeconds = 1;
  failRate: number;
  latencyMs: number;
  counters = {
    requests: 0,
    accepted: 0,
    events: 0,
    duplicates: 0,
    duplicateEvents: 0,
    signatureFailures: 0,
    malformed: 0,
  };
  injected = { fail500: 0, fail503: 0, rate429: 0, reject400: 0, random503: 0 };
  eventIds = new Set<number>();
  keys = new Set<string>();
  truncated = false;
  log: RequestRecord[] = [];

  constructor(private readonly options: MockExternalOptions) {
    this.failRate = options.failRate ?? 0;
    this.latencyMs = options.latencyMs ?? 0;
  }

  /** Bumped by reset(): a request that arrived before a reset must not count after it. */
  generation = 0;

  reset(): void {
    Object.assign(this, new MockState(this.options), { generation: this.generation + 1 });
  }

  /** The scripted mode for this request (consuming one of `count`, if limited). */
  takeMode(): MockMode {
    const mode = this.mode;
    if (mode !== 'ok' && this.modeRemaining !== null) {
      this.modeRemaining -= 1;
      if (this.modeRemaining <= 0) {
        this.mode = 'ok';
        this.modeRemaining = null;
      }
    }
    return mode;
  }

  track<T>(set: Set<T>, value: T): boolean {
    if (set.has(value)) return false;
    if (set.size >= (this.options.maxTrackedIds ?? 5_000_000)) {
      this.truncated = true;
      return true;
    }
    set.add(value);
    return true;
  }

  remember(record: RequestRecord): void {
    this.log.push(record);
    if (this.log.length > REQUEST_LOG_SIZE * 2) this.log = this.log.slice(-REQUEST_LOG_SIZE);
  }

  stats(): MockStats {
    return {
      ...this.counters,
      uniqueEventIds: this.eventIds.size,
      uniqueKeys: this.keys.size,
      injected: { ...this.injected },
      mode: this.mode,
      modeRemaining: this.modeRemaining,
      failRate: this.failRate,
      latencyMs: this.latencyMs,
      trackingTruncated: this.truncated,
    };
  }
}

export function buildMockExternal(options: MockExternalOptions = {}): FastifyInstance {
  const state = new MockState(options);
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024 * 1024 });

  // Keep the raw bytes: the signature is over exactly what was sent, not a re-serialization.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/_stats', async () => state.stats());
  app.get<{ Querystring: { limit?: string } }>('/_events', async (req) => {
    const limit = clampLimit(req.query.limit, 1000, 1_000_000);
    const ids: number[] = [];
    for (const id of state.eventIds) {
      if (ids.length >= limit) break;
      ids.push(id);
    }
    return { total: state.eventIds.size, ids };
  });
  app.get<{ Querystring: { limit?: string } }>('/_requests', async (req) => {
    const limit = clampLimit(req.query.limit, 100, REQUEST_LOG_SIZE);
    return { requests: state.log.slice(-limit) };
  });
  app.post('/_reset', async () => {
    state.reset();
    return state.stats();
  });
  app.post('/_control', async (req, reply) => {
    const parsed = controlSchema.safeParse(parseJson(req.body));
    if (!parsed.success)
      return reply.code(400).send({ error: parsed.error.issues[0]?.message ?? 'invalid control body' });
    const c = parsed.data;
    if (c.mode !== undefined) {
      state.mode = c.mode;
      state.modeRemaining = c.mode === 'ok' ? null : (c.count ?? null);
    }
    if (c.retryAfterSeconds !== undefined) state.retryAfterSeconds = c.retryAfterSeconds;
    if (c.failRate !== undefined) state.failRate = c.failRate;
    if (c.latencyMs !== undefined) state.latencyMs = c.latencyMs;
    return state.stats();
  });
  app.post('/*', (req, reply) => ingest(state, options.secret, req, reply));
  return app;
}

async function ingest(
  state: MockState,
  secret: string | undefined,
  req: FastifyRequest,
  reply: FastifyReply,
) {
  state.counters.requests += 1;
  const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const key = header(req, 'idempotency-key');
  const record: RequestRecord = {
    at: new Date().toISOString(),
    path: req.url,
    idempotencyKey: key,
    contentType: header(req, 'content-type'),
    eventIds: [],
    status: 0,
    signature: 'none',
  };
  const answer = (status: number, body: unknown) => {
    record.status = status;
    state.remember(record);
    return reply.code(status).send(body);
  };
  const generation = state.generation;
  if (state.latencyMs > 0) await sleep(state.latencyMs);
  if (state.generation !== generation) {
    // Reset while this request waited (a client that timed out long ago, usually): counting
    // it would leak into the next test's figures. 503, so a client still waiting retries.
    reply.header('retry-after', '0');
    return reply.code(503).send({ error: 'mock reset while the request was in flight' });
  }

  if (secret !== undefined) {
    record.signature = verifySignature(raw, secret, req.headers[SIGNATURE_HEADER]) ? 'ok' : 'bad';
    if (record.signature === 'bad') {
      state.counters.signatureFailures += 1;
      return answer(401, { error: 'bad or missing X-Signature' });
    }
  }

  const mode = state.takeMode();
  if (mode === 'fail500') {
    state.injected.fail500 += 1;
    return answer(500, { error: 'injected failure' });
  }
  if (mode === 'fail503') {
    state.injected.fail503 += 1;
    return answer(503, { error: 'injected outage' });
  }
  if (mode === 'rate429') {
    state.injected.rate429 += 1;
    reply.header('retry-after', String(state.retryAfterSeconds));
    return answer(429, { error: 'injected rate limit' });
  }
  if (mode === 'reject400') {
    state.injected.reject400 += 1;
    return answer(400, { error: 'injected rejection' });
  }
  if (state.failRate > 0 && Math.random() < state.failRate) {
    state.injected.random503 += 1;
    return answer(503, { error: 'injected random failure' });
  }

  const events = eventIdsOf(parseJson(raw));
  if (events === null || key === null) {
    state.counters.malformed += 1;
    return answer(400, {
      error:
        key === null
          ? 'missing Idempotency-Key'
          : 'expected an event object or an array of events with event_id',
    });
  }
  record.eventIds = events.slice(0, 20);
  state.counters.accepted += 1;
  const duplicate = !state.track(state.keys, key);
  if (duplicate) state.counters.duplicates += 1;
  for (const id of events) {
    state.counters.events += 1;
    if (!state.track(state.eventIds, id)) state.counters.duplicateEvents += 1;
  }
  return answer(200, { accepted: events.length, duplicate });
}

/** The event ids of a valid body, or null when it is not an event / array of events. */
function eventIdsOf(body: unknown): number[] | null {
  const items = Array.isArray(body) ? body : [body];
  if (items.length === 0) return null;
  const ids: number[] = [];
  for (const item of items) {
    const id = (item as { event_id?: unknown } | null)?.event_id;
    if (typeof id !== 'number' || !Number.isSafeInteger(id)) return null;
    ids.push(id);
  }
  return ids;
}

function parseJson(body: unknown): unknown {
  if (!Buffer.isBuffer(body) || body.length === 0) return undefined;
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

function header(req: FastifyRequest, name: string): string | null {
  const value = req.headers[name];
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined || first === '' ? null : first;
}

function clampLimit(raw: string | undefined, fallback: number, max: number): number {
  const n = Number(raw);
  return Number.isInteger(n) && n > 0 ? Math.min(n, max) : fallback;
}

export interface RunningMockExternal {
  app: FastifyInstance;
  /** Base URL with a trailing slash, e.g. http://127.0.0.1:8788/ */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Builds the mock and listens; port 0 picks a free port (read it back from `port`). */
export async function startMockExternal(options: MockExternalOptions = {}): Promise<RunningMockExternal> {
  const host = options.host ?? '127.0.0.1';
  const app = buildMockExternal(options);
  await app.listen({ port: options.port ?? 0, host }).catch((err: unknown) => {
    throw listenFailure(err, host, options.port ?? 0, 'choose another --port (0 = any free port)');
  });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : (options.port ?? 0);
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return { app, url: `http://${urlHost}:${port}/`, port, close: () => app.close() };
}
