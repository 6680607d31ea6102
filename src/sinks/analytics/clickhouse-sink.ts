import type * as ClickHouseJs from '@clickhouse/client';
import type { ClickHouseClient } from '@clickhouse/client';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { Batch, EnrichedEvent } from '../../domain/types.js';
import { configError, describeError, ErrorCodes, PipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { lazyRequire } from '../../lazy-require.js';
import type { Sink } from '../sink.js';
import {
  CLICKHOUSE_COLUMNS,
  clickHouseColumnType,
  clickHouseDdl,
  clickHouseRowSerializer,
  clickHouseTable,
  deduplicationToken,
  type ClickHouseRow,
} from './clickhouse-schema.js';
import { DEFAULT_KEY_TYPES, destinationShapeError, EVENT_COLUMNS, keyColumnDifferences } from './columns.js';

export interface ClickHouseTarget {
  /** http(s)://host:port of the HTTP interface. */
  url: string;
  username: string;
  password: string;
  database: string;
}

/**
 * clickhouse://user:pass@host:8123/db (HTTP) or clickhouses://user:pass@host:8443/db (HTTPS).
 * The database defaults to `engagement`; user to `default` as ClickHouse's own tools do.
 */
export function parseClickHouseUrl(raw: string): ClickHouseTarget {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw configError(
      'ANALYTICS_URL is not a valid clickhouse:// URL',
      'clickhouse://user:pass@host:8123/db',
    );
  }
  const secure = url.protocol === 'clickhouses:';
  if (!url.hostname)
    throw configError('ANALYTICS_URL has no ClickHouse host', 'clickhouse://user:pass@host:8123/db');
  const database = decodeURIComponent(url.pathname.replace(/^\/+/, '').replace(/\/+$/, '')) || 'engagement';
  if (database.includes('/')) throw configError(`ANALYTICS_URL database "${database}" contains "/"`);
  const port = url.port || (secure ? '8443' : '8123');
  return {
    url: `${secure ? 'https' : 'http'}://${url.hostname}:${port}`,
    username: decodeURIComponent(url.username) || 'default',
    password: decodeURIComponent(url.password),
    database,
  };
}

/**
 * ClickHouse over its HTTP interface. Exactly-once comes from two layers:
 * 1. insert_deduplication_token per batch (derived from its event_ids): an identical batch
 *    replayed after a crash is dropped by the server at insert time;
 * 2. ReplacingMergeTree keyed on event_id: a replay cut at other batch boundaries inserts a
 *    second physical copy, which merges collapse; `FINAL` (used by the query pack) reads one
 *    row per event_id at any time.
 * Each write is one JSONEachRow insert of the whole batch (synchronous: async_insert off, so
 * `write` resolves only when the part is written). Failures reject; the pipeline retries.
 */
export class ClickHouseSink implements Sink {
  readonly name = 'analytics';
  private client: ClickHouseClient | null = null;
  private readonly table: string;
  private readonly keyTypes: KeyTypes;
  private readonly toRow: (e: EnrichedEvent) => ClickHouseRow;
  /** For the dashboard's reads (analytics-queries). */
  readonly dialect = 'clickhouse' as const;
  get tableName(): string {
    return this.table;
  }

  constructor(
    private readonly options: {
      target: ClickHouseTarget;
      logger: Logger;
      /** Per-request timeout; a batch insert of 10k rows takes well under this on a healthy server. */
      requestTimeoutMs?: number;
      /** The source's key types: content_id/user_id are typed from them (default: UUID keys). */
      keyTypes?: KeyTypes;
    },
  ) {
    this.table = clickHouseTable(options.target.database);
    this.keyTypes = options.keyTypes ?? DEFAULT_KEY_TYPES;
    this.toRow = clickHouseRowSerializer(this.keyTypes);
  }

  /** Where the sink writes, without credentials (for logs and errors). */
  get where(): string {
    return `${this.options.target.url}/${this.options.target.database}`;
  }

  async start(): Promise<void> {
    const { target } = this.options;
    const { createClient, ClickHouseLogLevel } = clickhouseJs();
    this.client = createClient({
      url: target.url,
      username: target.username,
      password: target.password,
      request_timeout: this.options.requestTimeoutMs ?? 60_000,
      keep_alive: { enabled: true },
      application: 'engagement-pipeline',
      // The client would print multi-line errors to stderr itself; we report each failure once.
      log: { level: ClickHouseLogLevel.OFF },
    });
    try {
      // DDL without a session database: the database may not exist yet.
      for (const statement of clickHouseDdl(target.database, this.keyTypes)) {
        await this.client.command({ query: statement });
      }
      await this.checkKeyColumns(this.client);
    } catch (err) {
      if (err instanceof PipelineError) {
        await this.client.close().catch(() => undefined);
        this.client = null;
        throw err;
      }
      await this.client.close().catch(() => undefined);
      this.client = null;
      throw new PipelineError(
        ErrorCodes.ANALYTICS_UNAVAILABLE,
        `cannot prepare ${this.table} on ClickHouse at ${this.where}: ${describeClickHouseError(err)}`,
        // At start-up, unreachable is reported like Postgres: one line, exit 2.
        'config',
        isAuthError(err)
          ? 'check the user and password in ANALYTICS_URL'
          : 'check ANALYTICS_URL and that ClickHouse is running',
        { cause: err },
      );
    }
    this.options.logger.info({ where: this.where }, `analytics: ClickHouse table ${this.table} ready`);
  }

  async write(batch: Batch, signal: AbortSignal): Promise<void> {
    if (batch.events.length === 0) return;
    const client = this.client;
    if (!client) throw new PipelineError(ErrorCodes.SINK_WRITE, 'ClickHouse sink is not started', 'fatal');
    try {
      await client.insert({
        table: this.table,
        columns: CLICKHOUSE_COLUMNS,
        format: 'JSONEachRow',
        values: batch.events.map(this.toRow),
        abort_signal: signal,
        clickhouse_settings: {
          insert_deduplicate: 1,
          insert_deduplication_token: deduplicationToken(batch),
          date_time_input_format: 'best_effort',
          // A server-side async_insert default would acknowledge before the data is written.
          async_insert: 0,
        },
      });
    } catch (err) {
      throw new PipelineError(
        ErrorCodes.SINK_WRITE,
        `ClickHouse insert of ${batch.events.length} rows into ${this.table} failed: ${describeClickHouseError(err)}`,
        'transient',
        undefined,
        { cause: err },
      );
    }
  }

  /** A read-only query (JSONEachRow; 64-bit integers arrive as strings, whatever the server's profile says). */
  async query(sql: string): Promise<Record<string, unknown>[]> {
    if (!this.client) throw new Error('the ClickHouse sink is not started');
    const result = await this.client.query({
      query: sql,
      format: 'JSONEachRow',
      clickhouse_settings: { output_format_json_quote_64bit_integers: 1 },
    });
    return result.json<Record<string, unknown>>();
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = null;
    await client?.close();
  }

  /** A table created earlier for other key types is refused with one line, never cast into. */
  private async checkKeyColumns(client: ClickHouseClient): Promise<void> {
    const result = await client.query({
      query:
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'events_enriched'",
      query_params: { db: this.options.target.database },
      format: 'JSONEachRow',
    });
    const rows = await result.json<{ name: string; type: string }>();
    const existing = new Map(rows.map((r) => [r.name, r.type]));
    const expected = new Map(EVENT_COLUMNS.map((c) => [c.name, clickHouseColumnType(c, this.keyTypes)]));
    const differences = keyColumnDifferences(existing, expected);
    if (differences.length === 0) return;
    throw destinationShapeError(
      'ClickHouse',
      `${this.table} at ${this.where}`,
      differences,
      this.keyTypes,
      `rename it (RENAME TABLE ${this.table} TO ${this.table}_old) or drop it and re-run \`engagement backfill\`, ` +
        'or point ANALYTICS_URL at another database (clickhouse://…/other_db)',
    );
  }
}

/** @clickhouse/client, loaded when a ClickHouse sink starts (see lazy-require.ts). */
const clickhouseJs = lazyRequire<typeof ClickHouseJs>('@clickhouse/client');

/** Only the client raises its errors, so an unloaded client means "not one of them". */
function isClickHouseError(err: unknown): err is ClickHouseJs.ClickHouseError {
  const lib = clickhouseJs.loaded();
  return lib !== undefined && err instanceof lib.ClickHouseError;
}

/** "ClickHouse error 60 (UNKNOWN_TABLE): ..." for server errors; a short line for the rest. */
export function describeClickHouseError(err: unknown): string {
  if (isClickHouseError(err)) {
    return `ClickHouse error ${err.code} (${err.type ?? 'UNKNOWN'}): ${err.message.trim()}`;
  }
  return describeError(err);
}

function isAuthError(err: unknown): boolean {
  // 516 AUTHENTICATION_FAILED, 192 UNKNOWN_USER, 194 REQUIRED_PASSWORD.
  return isClickHouseError(err) && ['516', '192', '194'].includes(String(err.code));
}
