import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { readDecimal, readInteger } from './config-values.js';
import { configError, redactSecrets } from './errors.js';

/**
 * Configuration is declared once here: env name, flag, default, description and schema.
 * The CLI builds its flags and --help from this table; values come from flags, then env,
 * then defaults; the result is validated, then frozen. Secrets are wrapped so they never
 * print.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return '[redacted]';
  }
  toJSON(): string {
    return '[redacted]';
  }
}

/** A zod schema over readInteger / readDecimal: the same rule for every setting and flag. */
function checked<T>(read: (value: unknown) => T) {
  return z.union([z.string(), z.number()]).transform((value, ctx): T => {
    try {
      return read(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });
}
const integer = (min: number, max?: number) => checked((v) => readInteger(v, min, max));
const positiveInt = integer(1);
/**
 * The longest delay a Node.js timer takes (2^31 - 1 ms, about 24.8 days): a larger one fires
 * after 1 ms instead (with a TimeoutOverflowWarning), so a setting read as a timer is refused
 * above it rather than turned into its opposite.
 */
const MAX_TIMER_MS = 2_147_483_647;
/** The shutdown guard waits SHUTDOWN_TIMEOUT_MS plus this grace (cli/signals.ts exitIfStuck). */
export const SHUTDOWN_GRACE_MS = 5_000;
/** A table as Postgres names it, exactly (case included): `name` or `schema.name`. */
const tableName = z
  .string()
  .regex(
    /^([A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}$/,
    'must be name or schema.name (letters, digits, _ and $)',
  );
const analyticsUrl = z
  .string()
  .refine((url) => /^(duckdb:|clickhouse:\/\/|clickhouses:\/\/|bigquery:\/\/)/.test(url), {
    message: 'must start with duckdb:, clickhouse:// or bigquery://',
  });

export const configSpec = {
  databaseUrl: {
    env: 'DATABASE_URL',
    flag: 'database-url',
    describe: 'Postgres connection URL (source)',
    schema: z.string().url().optional(),
  },
  redisUrl: {
    env: 'REDIS_URL',
    flag: 'redis-url',
    describe: 'Redis URL',
    schema: z
      .string()
      .regex(
        /^rediss?(\+cluster)?:\/\//,
        'must start with redis://, rediss:// or redis+cluster://host:port,host:port',
      )
      .refine(hasRedisDatabaseNumber, {
        message: 'the path must be empty or a database number (decimal digits), e.g. redis://host:6379/2',
      })
      .default('redis://127.0.0.1:6379'),
  },
  redisPrefix: {
    env: 'REDIS_PREFIX',
    flag: 'redis-prefix',
    describe: 'prefix prepended to every Redis key',
    schema: z.string().default(''),
  },
  analyticsUrl: {
    env: 'ANALYTICS_URL',
    flag: 'analytics-url',
    describe: 'duckdb:PATH | clickhouse://user:pass@host:8123/db | bigquery://project/dataset',
    schema: analyticsUrl.default('duckdb:./data/engagement.duckdb'),
  },
  // Read by the analytics sink factory. 64MB: the buffer pool spills and evicts instead of growing (RSS stayed flat up to 3M rows).
  duckdbMemoryLimit: {
    env: 'DUCKDB_MEMORY_LIMIT',
    flag: 'duckdb-memory-limit',
    describe: "DuckDB's buffer pool (memory_limit): it spills and evicts past this instead of growing",
    schema: z
      .string()
      .regex(/^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i, 'expected a size like 256MB or 1GiB')
      .default('64MB'),
  },
  // 1: a second DuckDB thread cost 4-7 µs more CPU per row for the same writes (see DuckDbSink).
  duckdbThreads: {
    env: 'DUCKDB_THREADS',
    flag: 'duckdb-threads',
    describe: "DuckDB's worker threads (its `threads` setting): more only speed up large dashboard scans",
    schema: integer(1, 256).default(1),
  },
  // 500 ms: DuckDB spends ~4 ms of CPU per commit whatever its size, so at 1,000 events/s a
  // commit per 20 ms batch cost more than everything else together; Redis is not held by it.
  analyticsWriteIntervalMs: {
    env: 'ANALYTICS_WRITE_INTERVAL_MS',
    flag: 'analytics-write-interval-ms',
    describe:
      'least time between two commits to the analytics store; batches arriving meanwhile are written together (0: as soon as the last commit ended)',
    schema: integer(0, 60_000).default(500),
  },
  // 100 ms: at 1,000 events/s a POST per 20 ms batch cost the pipeline and the receiver more
  // CPU than the rest of the pipeline; with EXTERNAL_BATCH_SIZE 1 it only groups the writes.
  externalWriteIntervalMs: {
    env: 'EXTERNAL_WRITE_INTERVAL_MS',
    flag: 'external-write-interval-ms',
    describe:
      'least time between two writes to the external system; batches arriving meanwhile go out together, in EXTERNAL_BATCH_SIZE arrays',
    schema: integer(0, 60_000).default(100),
  },
  bigqueryApiEndpoint: {
    env: 'BIGQUERY_API_ENDPOINT',
    flag: 'bigquery-api-endpoint',
    describe: 'BigQuery API endpoint (an emulator or test server; unset: Google)',
    schema: z.string().optional(),
  },
  // Env only, like PIPELINE_ROLE_PASSWORD: a flag would show the secret in `ps` and shell history.
  bigqueryAccessToken: {
    env: 'BIGQUERY_ACCESS_TOKEN',
    describe: 'static OAuth access token for BigQuery (unset: Application Default Credentials)',
    schema: z.string().optional(),
    secret: true,
  },
  externalUrl: {
    env: 'EXTERNAL_URL',
    flag: 'external-url',
    describe: 'external HTTP endpoint, http:// or https:// (unset: external sink off)',
    schema: z
      .string()
      // One check (zod runs a refine even after .url() failed, and `new URL` would then throw).
      .refine(
        (url) => URL.canParse(url) && /^https?:$/.test(new URL(url).protocol),
        'must be an http:// or https:// URL',
      )
      .optional(),
  },
  externalSecret: {
    env: 'EXTERNAL_SECRET',
    flag: 'external-secret',
    describe: 'HMAC-SHA256 key for X-Signature',
    schema: z.string().min(1).optional(),
    secret: true,
  },
  externalPolicy: {
    env: 'EXTERNAL_POLICY',
    flag: 'external-policy',
    describe: 'after the last attempt: best-effort (dead-letter) or block (hold the LSN)',
    schema: z.enum(['best-effort', 'block']).default('best-effort'),
  },
  externalBatchSize: {
    env: 'EXTERNAL_BATCH_SIZE',
    flag: 'external-batch-size',
    describe: 'events per POST (1 = one event object; >1 = JSON array)',
    schema: positiveInt.default(1),
  },
  externalConcurrency: {
    env: 'EXTERNAL_CONCURRENCY',
    flag: 'external-concurrency',
    describe: 'concurrent requests to the external system',
    schema: positiveInt.default(32),
  },
  externalMaxAttempts: {
    env: 'EXTERNAL_MAX_ATTEMPTS',
    flag: 'external-max-attempts',
    describe: 'attempts per request before the policy applies',
    schema: positiveInt.default(6),
  },
  externalTimeoutMs: {
    env: 'EXTERNAL_TIMEOUT_MS',
    flag: 'external-timeout-ms',
    describe: 'per-request timeout',
    schema: integer(1, MAX_TIMER_MS).default(5000),
  },
  externalRetryFor: {
    env: 'EXTERNAL_RETRY_FOR',
    flag: 'external-retry-for',
    describe:
      'how long an outage is ridden out (retries, batches held) before best-effort dead-letters: 90s, 2m, 500ms (bare number = seconds; 0 = after EXTERNAL_MAX_ATTEMPTS only)',
    schema: z.coerce
      .string()
      .regex(/^\d+(ms|s|m|h)?$/, 'must be a duration such as 90s, 2m or 500ms')
      .default('2m')
      .transform(durationToMs),
  },
  externalSpillAfter: {
    env: 'EXTERNAL_SPILL_AFTER',
    flag: 'external-spill-after',
    describe:
      'best-effort: how long an external system that answers, but slower than events arrive, may alone hold the other destinations back before its unsent events are set aside as dead letters and re-sent automatically (2s, 500ms; off = never)',
    schema: z.coerce
      .string()
      .regex(/^(\d+(ms|s|m|h)?|off)$/, 'must be a duration such as 2s or 500ms, or off')
      .default('2s')
      .transform((text) => (text === 'off' ? null : durationToMs(text))),
  },
  externalRedriveRate: {
    env: 'EXTERNAL_REDRIVE_RATE',
    flag: 'external-redrive-rate',
    describe:
      'dead letters re-sent automatically per second once the external system answers again (0 = off)',
    schema: integer(0).default(100),
  },
  kafkaBrokers: {
    env: 'KAFKA_BROKERS',
    flag: 'kafka-brokers',
    describe: 'comma-separated Kafka bootstrap servers',
    schema: z.string().optional(),
  },
  kafkaSsl: {
    env: 'KAFKA_SSL',
    flag: 'kafka-ssl',
    describe: 'TLS to the Kafka brokers (true|false; system CA store)',
    schema: z
      .enum(['true', 'false'])
      .default('false')
      .transform((v) => v === 'true'),
  },
  kafkaSaslMechanism: {
    env: 'KAFKA_SASL_MECHANISM',
    flag: 'kafka-sasl-mechanism',
    describe: 'SASL for Kafka: plain | scram-sha-256 | scram-sha-512 (unset: none)',
    schema: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).optional(),
  },
  kafkaSaslUsername: {
    env: 'KAFKA_SASL_USERNAME',
    flag: 'kafka-sasl-username',
    describe: 'SASL user name',
    schema: z.string().min(1).optional(),
  },
  kafkaSaslPassword: {
    env: 'KAFKA_SASL_PASSWORD',
    flag: 'kafka-sasl-password',
    describe: 'SASL password',
    schema: z.string().min(1).optional(),
    secret: true,
  },
  kafkaTopicPartitions: {
    env: 'KAFKA_TOPIC_PARTITIONS',
    flag: 'kafka-topic-partitions',
    describe:
      'partitions of the topics this process creates (events, enriched); bounds the useful number of workers',
    schema: positiveInt.default(6),
  },
  kafkaReplicationFactor: {
    env: 'KAFKA_REPLICATION_FACTOR',
    flag: 'kafka-replication-factor',
    describe:
      'replication factor of created topics (min.insync.replicas = factor - 1, at least 1); capped by the broker count',
    schema: positiveInt.default(3),
  },
  kafkaEnrichedTopic: {
    env: 'KAFKA_ENRICHED_TOPIC',
    flag: 'kafka-enriched-topic',
    describe: 'publish enriched events (JSON, keyed by content_id) to this Kafka topic too (unset: off)',
    schema: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,249}$/, 'letters, digits, . _ -')
      .optional(),
  },
  slotName: {
    env: 'SLOT_NAME',
    flag: 'slot-name',
    describe: 'logical replication slot',
    schema: z
      .string()
      .regex(/^[a-z0-9_]{1,63}$/, 'lower-case letters, digits and _ only')
      .default('engagement_pipeline'),
  },
  publicationName: {
    env: 'PUBLICATION_NAME',
    flag: 'publication-name',
    describe: 'publication of the content and events tables',
    schema: z
      .string()
      .regex(/^[a-z0-9_]{1,63}$/, 'lower-case letters, digits and _ only')
      .default('engagement_pipeline'),
  },
  pipelineRolePassword: {
    env: 'PIPELINE_ROLE_PASSWORD',
    describe: 'migrate --create-role: the password of the role (unset: generated and shown once)',
    schema: z.string().optional(),
    secret: true,
  },
  eventsTable: {
    env: 'EVENTS_TABLE',
    flag: 'events-table',
    describe: 'the events table, schema.name or name (default engagement_events)',
    schema: tableName.optional(),
  },
  contentTable: {
    env: 'CONTENT_TABLE',
    flag: 'content-table',
    describe: 'the content table, schema.name or name (default content)',
    schema: tableName.optional(),
  },
  contentKey: {
    env: 'CONTENT_KEY',
    flag: 'content-key',
    describe: "the content column events.content_id refers to (default: the content table's primary key)",
    schema: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/, 'a column name: letters, digits, _ and $')
      .optional(),
  },
  port: {
    env: 'PORT',
    flag: 'port',
    describe: 'HTTP port (0 = any free port)',
    schema: integer(0, 65535).default(8787),
  },
  host: {
    env: 'HOST',
    flag: 'host',
    describe: 'HTTP bind address',
    // An IPv6 literal may come bracketed as in URLs (`[::1]`); Node listens on the bare address.
    schema: z
      .string()
      .default('127.0.0.1')
      .transform((h) => h.replace(/^\[(.*)\]$/, '$1')),
  },
  apiToken: {
    env: 'API_TOKEN',
    flag: 'api-token',
    describe: 'bearer token for the HTTP API (required when not bound to loopback)',
    schema: z.string().optional(), // at least 8 characters: assertSafeHttpExposure
    secret: true,
  },
  batchMaxRows: {
    env: 'BATCH_MAX_ROWS',
    flag: 'batch-max-rows',
    describe: 'events per batch at most (an event counts once more per 16 KiB of its payload)',
    schema: positiveInt.default(2000),
  },
  batchMaxWaitMs: {
    env: 'BATCH_MAX_WAIT_MS',
    flag: 'batch-max-wait-ms',
    describe: 'how long a batch may wait to fill',
    schema: integer(1, MAX_TIMER_MS).default(20),
  },
  // 8: with 4, a catch-up left the JS thread idle ~17 % while DuckDB committed; 8 wrote
  // larger merged batches (bench/results/2026-12-02-issue13-window-and-allocator.md).
  maxInFlightBatches: {
    env: 'MAX_IN_FLIGHT_BATCHES',
    flag: 'max-in-flight-batches',
    describe:
      'full batches of events being written at once (backpressure bound: this x BATCH_MAX_ROWS rows; small batches count by their rows)',
    schema: positiveInt.default(8),
  },
  shutdownTimeoutMs: {
    env: 'SHUTDOWN_TIMEOUT_MS',
    flag: 'shutdown-timeout-ms',
    describe:
      'SIGINT/SIGTERM: stop within this many ms; what the sinks did not confirm replays on the next start',
    schema: integer(1, MAX_TIMER_MS - SHUTDOWN_GRACE_MS).default(20_000),
  },
  lagWarnSeconds: {
    env: 'LAG_WARN_SECONDS',
    flag: 'lag-warn-seconds',
    describe: 'a sink whose oldest pending event is older than this is "behind" (/readyz 503)',
    schema: checked((v) => readDecimal(v, { min: 0, minExclusive: true })).default(30),
  },
  heartbeatIntervalMs: {
    env: 'HEARTBEAT_INTERVAL_MS',
    flag: 'heartbeat-interval-ms',
    describe: 'how often the pipeline emits a slot heartbeat (pg_logical_emit_message); 0 = off',
    schema: integer(0, MAX_TIMER_MS).default(10_000),
  },
  slotLagWarnBytes: {
    env: 'SLOT_LAG_WARN_BYTES',
    flag: 'slot-lag-warn-bytes',
    describe: '`engagement status` warns when the slot lags more than this',
    schema: positiveInt.default(1024 * 1024 * 1024),
  },
  logLevel: {
    env: 'LOG_LEVEL',
    flag: 'log-level',
    describe: 'fatal|error|warn|info|debug',
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  },
} as const;

type Spec = typeof configSpec;
export type ConfigKey = keyof Spec;
/** The settings that also have a command-line flag (the others are env-only). */
export type FlagConfigKey = { [K in ConfigKey]: Spec[K] extends { flag: string } ? K : never }[ConfigKey];
type Plain = { [K in ConfigKey]: z.output<Spec[K]['schema']> };
/** Validated, frozen configuration; secret values are wrapped in Secret. */
export type Config = Readonly<{
  [K in ConfigKey]: Spec[K] extends { secret: true } ? Secret | undefined : Plain[K];
}>;

/**
 * Builds the configuration from flag values (camelCase keys, as commander gives them)
 * over the environment. Throws a config PipelineError naming the env var on bad input.
 */
export function loadConfig(
  flags: Partial<Record<ConfigKey, unknown>> = {},
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(configSpec) as ConfigKey[]) {
    const spec = configSpec[key];
    const raw = flags[key] ?? emptyToUndefined(env[spec.env]);
    const parsed = spec.schema.safeParse(raw);
    if (!parsed.success) {
      const shown = 'secret' in spec ? '' : ` (got ${JSON.stringify(redactSecrets(String(raw)))})`;
      const name = 'flag' in spec ? `${spec.env} / --${spec.flag}` : spec.env;
      throw configError(`${name}: ${parsed.error.issues[0]?.message ?? 'invalid'}${shown}`);
    }
    out[key] = 'secret' in spec && parsed.data !== undefined ? new Secret(String(parsed.data)) : parsed.data;
  }
  return Object.freeze(out as Config);
}

/**
 * For the commands that serve HTTP (`run`, `demo`): off loopback the data needs a token, and a
 * token shorter than 8 characters is refused. Checked there only: `top` or `migrate` serve
 * nothing, and a HOST meant for the server must not stop them.
 */
export function assertSafeHttpExposure(config: Pick<Config, 'host' | 'apiToken'>): void {
  if (config.apiToken && config.apiToken.reveal().length < 8)
    throw configError(
      'API_TOKEN / --api-token: at least 8 characters',
      'use a long random token, e.g. `openssl rand -hex 16`',
    );
  if (!isLoopback(config.host) && !config.apiToken)
    throw configError(
      `HOST=${config.host} is not loopback and API_TOKEN is not set`,
      'set API_TOKEN or bind to 127.0.0.1',
    );
}

/** DATABASE_URL, or a one-line config error saying how to set it. */
export function requireDatabaseUrl(config: Config): string {
  if (!config.databaseUrl)
    throw configError('DATABASE_URL is not set', 'export DATABASE_URL=postgres://user@host:5432/db');
  return config.databaseUrl;
}

/** `90s`, `2m`, `500ms`, `1h`; a bare number is seconds. */
function durationToMs(text: string): number {
  const match = /^(\d+)(ms|s|m|h)?$/.exec(text)!;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? 's']!;
  return Number(match[1]) * unit;
}

/**
 * ioredis reads a plain URL's path as the database number with parseInt, so `/abc` became
 * NaN (db 0, then a SELECT error on each command) and `/2x` became 2: only digits pass here.
 * Cluster URLs have no database (parseClusterUrl refuses a path).
 */
function hasRedisDatabaseNumber(url: string): boolean {
  if (/^rediss?\+cluster:/.test(url)) return true;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  const db = parsed.searchParams.get('db');
  return /^(\/(\d+)?)?$/.test(parsed.pathname) && (db === null || /^\d+$/.test(db));
}

function emptyToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/**
 * Exactly the loopback addresses: `localhost`, an IPv4 literal in 127.0.0.0/8 (also as
 * `::ffff:127.x.y.z`) and `::1`. A prefix test took `127.0.0.1.example`, a name anyone can
 * point anywhere, as loopback and started without API_TOKEN.
 */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = h.replace(/^(::ffff:|0:0:0:0:0:ffff:)/, '');
  return isIPv4(v4) && v4.startsWith('127.');
}
