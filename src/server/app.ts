import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { bearerChecker, needsToken } from './auth.js';
import { DASHBOARD_HTML } from './dashboard.js';
import type { Metrics } from '../observability/metrics.js';
import type { PipelineStats } from '../observability/stats.js';
import {
  parseBoundedInt,
  readRecent,
  readTimeline,
  type AnalyticsQueryable,
  type RecentEvent,
  type Timeline,
} from './analytics-queries.js';
import { cached, type DashboardExtras } from './dashboard-data.js';
import { isEventId, parseEventFilter, type EnrichedEventStream } from './event-stream.js';
import { createStreamHub } from './stream.js';
import { parseTopQuery, readTop, type ContentTitles } from './top.js';

export interface Readiness {
  ready: boolean;
  /** Why not, one line each (empty when ready). */
  reasons: string[];
}

export interface AppDeps {
  /** A plain ioredis client (no keyPrefix); keys are built with `redisPrefix`. */
  redis: Redis;
  redisPrefix: string;
  metrics: Metrics;
  logger: Logger;
  /** When set, /api/* and /metrics require `Authorization: Bearer <token>`. */
  apiToken?: string;
  stats: () => Promise<PipelineStats>;
  /** Readiness; with reasons when not ready (a sink failing or behind, Redis unreachable). */
  ready: () => Readiness | boolean | Promise<Readiness | boolean>;
  /** Titles for content ids (e.g. from the pipeline's in-memory content dimension). */
  contentTitles?: ContentTitles;
  /** SSE push interval (default 1000 ms). */
  streamIntervalMs?: number;
  /** The analytics store, for /api/timeline and /api/recent (null: not queryable, e.g. BigQuery). */
  analytics?: AnalyticsQueryable | null;
  /** Enriched events for GET /api/events (absent: 404). */
  events?: EnrichedEventStream;
  /** The dashboard's extras (rate history, totals, analytics rows, backfills), sent with each frame. */
  dashboard?: () => Promise<DashboardExtras>;
}

/** What the probe routes need: the part of AppDeps a `work` process has too. */
export type ProbeDeps = Pick<AppDeps, 'metrics' | 'logger' | 'apiToken' | 'ready'>;

/**
 * The routes every serving process has: `/healthz`, `/readyz` (503 with the reasons while not
 * ready) and `/metrics` (Prometheus, behind API_TOKEN when set), with the bearer check and the
 * error handler. `run` and `demo` add the dashboard and the API (buildApp); `work` serves these
 * alone.
 */
export function buildProbeApp(deps: ProbeDeps): FastifyInstance {
  const app = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast keeps the instance type the default one.
    loggerInstance: deps.logger.child({ component: 'http' }) as FastifyBaseLogger,
    // Per-request info logs would drown the pipeline's logs (the dashboard streams constantly).
    logController: new LogController({ disableRequestLogging: true }),
  });

  if (deps.apiToken) {
    const authorized = bearerChecker(deps.apiToken);
    app.addHook('onRequest', async (request, reply) => {
      if (!needsToken(request.routeOptions.url) || authorized(request.headers.authorization)) return;
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer realm="engagement"')
        .send({ error: 'missing or wrong bearer token (Authorization: Bearer <API_TOKEN>)' });
    });
  }

  app.setErrorHandler((err, request, reply) => {
    // A client's mistake Fastify already classified (a body that is not JSON, or too large, for
    // a route that takes none): its 4xx, and not worth an error line in the pipeline's log.
    const status = (err as { statusCode?: unknown }).statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500)
      return reply.code(status).send({ error: describeError(err) });
    request.log.error({ url: request.url.split('?')[0], err: describeError(err) }, 'request failed');
    return reply.code(500).send({ error: describeError(err) });
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    let readiness: Readiness;
    try {
      const answer = await deps.ready();
      readiness = typeof answer === 'boolean' ? { ready: answer, reasons: [] } : answer;
    } catch (err) {
      readiness = { ready: false, reasons: [describeError(err)] };
    }
    return reply.code(readiness.ready ? 200 : 503).send(readiness);
  });

  app.get('/metrics', async (_request, reply) => {
    const text = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(text);
  });

  return app;
}

/**
 * The HTTP server of `run` and `demo` (routes: README, "HTTP server"): dashboard, leaderboard and stats API,
 * Prometheus metrics, liveness and readiness. It reads only: Redis for the leaderboards,
 * the metrics registry, and the pipeline's stats() callback.
 */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app = buildProbeApp(deps);

  app.get('/api/top', async (request, reply) => {
    const parsed = parseTopQuery(request.query);
    if (!parsed.ok) return reply.code(400).send({ error: parsed.error });
    try {
      return await readTop(deps.redis, deps.redisPrefix, parsed.query, deps.contentTitles);
    } catch (err) {
      return reply.code(503).send({ error: `redis unavailable: ${describeError(err)}` });
    }
  });

  app.get('/api/stats', async (_request, reply) => {
    try {
      return await deps.stats();
    } catch (err) {
      return reply.code(503).send({ error: `stats unavailable: ${describeError(err)}` });
    }
  });

  // Analytics reads, memoized per parameter: N dashboards cost one query per interval.
  const analyticsRead = <T>(ttlMs: number, read: (store: AnalyticsQueryable, n: number) => Promise<T>) => {
    const byParam = new Map<number, () => Promise<T>>();
    return (store: AnalyticsQueryable, n: number): Promise<T> => {
      let fn = byParam.get(n);
      if (!fn) {
        if (byParam.size >= 32) byParam.clear();
        fn = cached(() => read(store, n), ttlMs);
        byParam.set(n, fn);
      }
      return fn();
    };
  };
  const timeline = analyticsRead<Timeline>(2_000, (store, minutes) => readTimeline(store, minutes));
  const recent = analyticsRead<RecentEvent[]>(1_000, async (store, limit) => {
    const rows = await readRecent(store, limit);
    const ids = [...new Set(rows.map((r) => r.content_id).filter((id): id is string => id !== null))];
    const titles = deps.contentTitles && ids.length > 0 ? await deps.contentTitles(ids) : new Map();
    return rows.map((r) => {
      const title = r.content_id === null ? undefined : titles.get(r.content_id);
      return title ? { ...r, title } : r;
    });
  });
  const notQueryable = {
    error: 'the analytics store cannot be queried from here (BigQuery: use its console)',
  };

  app.get('/api/timeline', async (request, reply) => {
    const minutes = parseBoundedInt((request.query as Record<string, unknown>).minutes, 'minutes', 60, 1440);
    if (!minutes.ok) return reply.code(400).send({ error: minutes.error });
    if (!deps.analytics) return reply.code(501).send(notQueryable);
    try {
      return await timeline(deps.analytics, minutes.value);
    } catch (err) {
      return reply.code(503).send({ error: `analytics store unavailable: ${describeError(err)}` });
    }
  });

  app.get('/api/recent', async (request, reply) => {
    const limit = parseBoundedInt((request.query as Record<string, unknown>).limit, 'limit', 20, 200);
    if (!limit.ok) return reply.code(400).send({ error: limit.error });
    if (!deps.analytics) return reply.code(501).send(notQueryable);
    try {
      return { items: await recent(deps.analytics, limit.value) };
    } catch (err) {
      return reply.code(503).send({ error: `analytics store unavailable: ${describeError(err)}` });
    }
  });

  const events = deps.events;
  if (events) {
    app.addHook('preClose', async () => events.closeAll());
    app.get('/api/events', (request, reply) => {
      const query = request.query as Record<string, unknown>;
      const header = request.headers['last-event-id'];
      const given = (Array.isArray(header) ? header[0] : header) ?? query.last_event_id;
      const lastEventId = typeof given === 'string' && given !== '' ? given : undefined;
      if (lastEventId !== undefined && !isEventId(lastEventId)) {
        return reply.code(400).send({
          error: `Last-Event-ID ${JSON.stringify(lastEventId.slice(0, 40))} is not an id of this stream (like 00000000016B3A28:00000000)`,
        });
      }
      reply.hijack();
      events.open(reply.raw, {
        lastEventId,
        filter: parseEventFilter(query),
        onClose: (listener) => request.raw.on('close', listener),
      });
    });
  }

  // What the dashboard needs each second, in one frame. A failing part is null plus an error,
  // so a Redis outage still shows the (now interesting) pipeline stats.
  const snapshot = async () => {
    const [top, devices, stats, extras] = await Promise.allSettled([
      readTop(deps.redis, deps.redisPrefix, topQuery('content'), deps.contentTitles),
      readTop(deps.redis, deps.redisPrefix, topQuery('device')),
      deps.stats(),
      deps.dashboard ? deps.dashboard() : Promise.resolve(null),
    ]);
    const errors = [top, devices, stats, extras]
      .filter((r) => r.status === 'rejected')
      .map((r) => describeError(r.reason));
    return {
      at: new Date().toISOString(),
      top: top.status === 'fulfilled' ? top.value.items : null,
      devices: devices.status === 'fulfilled' ? devices.value.items : null,
      stats: stats.status === 'fulfilled' ? stats.value : null,
      extras: extras.status === 'fulfilled' ? extras.value : null,
      errors,
    };
  };
  const hub = createStreamHub(snapshot, deps.streamIntervalMs ?? 1000);
  app.addHook('preClose', async () => hub.closeAll());

  app.get('/api/stream', (request, reply) => {
    reply.hijack();
    hub.open(reply.raw, (listener) => request.raw.on('close', listener));
  });

  app.get('/', async (_request, reply) =>
    reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(DASHBOARD_HTML),
  );

  return app;
}

function topQuery(dim: 'content' | 'device') {
  const parsed = parseTopQuery({ dim, limit: '10' });
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.query;
}
