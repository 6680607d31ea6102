import type { Redis } from 'ioredis';
import { z } from 'zod';
import { parseWindow } from '../domain/windows.js';
import {
  leaderboardQueryProblem,
  otherContentScores,
  readLeaderboard,
} from '../sinks/redis/leaderboard-reader.js';
import { redisKeys } from '../sinks/redis/keys.js';

/**
 * GET /api/top: query validation and the read of the leaderboard ZSETs, with the content
 * fields a person needs to read it (title, type, both scores). The Redis key layout and
 * the window logic live in sinks/redis; this module only shapes the answer.
 */
export const topQuerySchema = z.object({
  window: z
    .string()
    .default('10m')
    .transform((text, ctx) => {
      try {
        return { text, minutes: parseWindow(text) };
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    }),
  by: z.enum(['events', 'seconds']).default('events'),
  dim: z.enum(['content', 'device']).default('content'),
  // Decimal digits only, as /api/recent and every setting read them (zod's coerce took 0x10, 1e1, ' 5').
  limit: z
    .string()
    .optional()
    .transform((text, ctx) => {
      if (text === undefined || text === '') return 10;
      const n = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
      if (n >= 1 && n <= 100) return n;
      ctx.addIssue({ code: 'custom', message: 'must be an integer from 1 to 100 (decimal digits only)' });
      return z.NEVER;
    }),
});
export type TopQuery = z.output<typeof topQuerySchema>;

export interface ContentTopItem {
  content_id: string;
  /** The ranking score: events, or engagement seconds with by=seconds. */
  score: number;
  /** Events in the window. */
  events: number;
  /** Sum of engagement_seconds in the window (to the millisecond). */
  engagement_seconds: number;
  title?: string;
  content_type?: string | null;
}

export interface DeviceTopItem {
  device: string;
  score: number;
}

export interface TopResponse {
  window: string;
  by: 'events' | 'seconds';
  dim: 'content' | 'device';
  items: ContentTopItem[] | DeviceTopItem[];
}

export type ContentTitles = (ids: string[]) => Promise<ReadonlyMap<string, string>>;

/** One-line description of what is wrong with a query, or the parsed query. */
export function parseTopQuery(raw: unknown): { ok: true; query: TopQuery } | { ok: false; error: string } {
  const parsed = topQuerySchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { ok: false, error: `${issue?.path.join('.') || 'query'}: ${issue?.message ?? 'invalid'}` };
  }
  const problem = leaderboardQueryProblem(parsed.data);
  if (problem) return { ok: false, error: `by: ${problem}` };
  return { ok: true, query: parsed.data };
}

export async function readTop(
  redis: Redis,
  prefix: string,
  query: TopQuery,
  contentTitles?: ContentTitles,
): Promise<TopResponse> {
  const base = { window: query.window.text, by: query.by, dim: query.dim };
  const { rows, live, nowMs } = await readLeaderboard(redis, prefix, {
    minutes: query.window.minutes,
    by: query.by,
    dim: query.dim,
    limit: query.limit,
  });
  if (query.dim === 'device') {
    return { ...base, items: rows.map((r) => ({ device: r.member, score: r.score })) };
  }
  const ids = rows.map((r) => r.member);
  if (ids.length === 0) return { ...base, items: [] };

  const keys = redisKeys(prefix);
  // The other score: from its running 10-minute board while the boards are live, else summed
  // from the same minute buckets the ranking was (a stale 10m board, or another window).
  const otherKey = query.by === 'events' ? keys.topSeconds10m : keys.topContent10m;
  const [otherScores, lastJson, titles] = await Promise.all([
    live
      ? redis.zmscore(otherKey, ...ids).then((scores) => scores.map((s) => (s === null ? 0 : Number(s))))
      : otherContentScores(redis, prefix, { by: query.by, minutes: query.window.minutes, nowMs }, ids),
    redis.mget(...ids.map((id) => keys.contentLast(id))),
    contentTitles
      ? contentTitles(ids).catch(() => new Map<string, string>())
      : Promise.resolve(new Map<string, string>()),
  ]);

  const items = rows.map((row, i): ContentTopItem => {
    const last = parseLast(lastJson[i]);
    const other = otherScores[i];
    const score = query.by === 'seconds' ? roundSeconds(row.score) : row.score;
    const item: ContentTopItem = {
      content_id: row.member,
      score,
      events: query.by === 'events' ? row.score : other,
      engagement_seconds: query.by === 'seconds' ? score : roundSeconds(other),
    };
    const title = titles.get(row.member) ?? (typeof last?.title === 'string' ? last.title : undefined);
    if (title !== undefined) item.title = title;
    if (last && 'content_type' in last) item.content_type = (last.content_type as string | null) ?? null;
    return item;
  });
  return { ...base, items };
}

function parseLast(json: string | null): Record<string, unknown> | null {
  if (!json) return null;
  try {
    const value: unknown = JSON.parse(json);
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** ZINCRBY of decimals accumulates float noise (12.300000000000001); show milliseconds. */
function roundSeconds(value: number): number {
  return Math.round(value * 1000) / 1000;
}
