import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, type Config, type ConfigKey } from '../../src/config.js';
import { migrate } from '../../src/db/migrate.js';
import { silentLogger } from '../../src/logger.js';
import { startRuntime, type Runtime } from '../../src/runtime.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { ReplicationSource, type ReplicationSourceOptions } from '../../src/source/replication-source.js';
import { freshDatabase, query } from './postgres.js';
import { testRedis } from './redis.js';

export interface Harness {
  databaseUrl: string;
  duckdbFile: string;
  redis: ReturnType<typeof testRedis>;
  config(overrides?: Partial<Record<ConfigKey, unknown>>): Config;
  start(overrides?: Partial<Record<ConfigKey, unknown>>): Promise<Runtime>;
  sql<T extends Record<string, unknown> = Record<string, unknown>>(
    text: string,
    params?: unknown[],
  ): Promise<T[]>;
  cleanup(): Promise<void>;
}

/**
 * A fresh database (migrated), a random Redis prefix and a DuckDB file in a temp dir.
 * `tables`: SQL run before migrate (the user's own tables); `settings`: config every start
 * and migrate use (EVENTS_TABLE, CONTENT_TABLE, CONTENT_KEY).
 */
export async function createHarness(
  options: { tables?: string; settings?: Partial<Record<ConfigKey, unknown>> } = {},
): Promise<Harness> {
  const db = await freshDatabase('pipe');
  if (options.tables) await query(db.url, options.tables);
  const settings = options.settings ?? {};
  await migrate(db.url, {
    slotName: 'engagement_pipeline',
    publicationName: 'engagement_pipeline',
    eventsTable: settings.eventsTable as string | undefined,
    contentTable: settings.contentTable as string | undefined,
    contentKey: settings.contentKey as string | undefined,
  });
  const redis = testRedis();
  const dir = mkdtempSync(path.join(tmpdir(), 'engagement-test-'));
  const duckdbFile = path.join(dir, 'analytics.duckdb');
  const config = (overrides: Partial<Record<ConfigKey, unknown>> = {}) =>
    loadConfig(
      {
        databaseUrl: db.url,
        redisUrl: redis.url,
        redisPrefix: redis.prefix,
        analyticsUrl: `duckdb:${duckdbFile}`,
        port: 0,
        ...settings,
        ...overrides,
      },
      {},
    );
  return {
    databaseUrl: db.url,
    duckdbFile,
    redis,
    config,
    start: (overrides) => startRuntime(config(overrides), silentLogger()),
    sql: (text, params) => query(db.url, text, params),
    cleanup: async () => {
      await redis.cleanup();
      await db.drop();
    },
  };
}

export const CONTENT_IDS = [
  '00000000-0000-4000-8000-000000000001',
  '00000000-0000-4000-8000-000000000002',
  '00000000-0000-4000-8000-000000000003',
];

/** Three content rows: a 300 s video, a podcast with NULL length, a 0-length newsletter. */
export async function seedContent(h: Harness): Promise<void> {
  await h.sql(
    `INSERT INTO content (id, slug, title, content_type, length_seconds, publish_ts) VALUES
     ($1, 'video-1', 'Video 1', 'video', 300, now()),
     ($2, 'podcast-1', 'Podcast 1', 'podcast', NULL, now()),
     ($3, 'newsletter-1', 'Newsletter 1', 'newsletter', 0, now())`,
    CONTENT_IDS,
  );
}

/** Inserts `n` events in one multi-row statement, spread over the content and devices. */
export async function insertEvents(h: Harness, n: number, offset = 0): Promise<void> {
  await h.sql(
    `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
     SELECT ($1::uuid[])[1 + (g % 3)], gen_random_uuid(), (ARRAY['play','pause','finish','click'])[1 + (g % 4)],
            now() - make_interval(secs => (g % 120)), CASE WHEN g % 4 = 3 THEN NULL ELSE (g * 37) % 600000 END,
            (ARRAY['ios','android','web-chrome','tv'])[1 + (g % 4)], jsonb_build_object('n', g)
     FROM generate_series($2::int, $3::int) AS g`,
    [CONTENT_IDS, offset + 1, offset + n],
  );
}

/** The environment for running the CLI as a child against this harness's database, Redis and DuckDB. */
export function cliEnv(h: Harness, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: h.databaseUrl,
    REDIS_URL: h.redis.url,
    REDIS_PREFIX: h.redis.prefix,
    ANALYTICS_URL: `duckdb:${h.duckdbFile}`,
    LOG_LEVEL: 'warn',
    ...extra,
  };
}

/** A bare ReplicationSource on the harness's slot (silent, its own metrics), confirming nothing by itself. */
export function harnessSource(h: Harness, extra: Partial<ReplicationSourceOptions> = {}): ReplicationSource {
  return new ReplicationSource({
    databaseUrl: h.databaseUrl,
    slotName: 'engagement_pipeline',
    publicationName: 'engagement_pipeline',
    logger: silentLogger(),
    metrics: createMetrics(),
    isDrained: () => false,
    ...extra,
  });
}
