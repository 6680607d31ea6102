import type * as BigQueryJs from '@google-cloud/bigquery';
import type { BigQuery, Dataset, Table } from '@google-cloud/bigquery';
import type * as GoogleAuth from 'google-auth-library';
import type { OAuth2Client } from 'google-auth-library';
import type { KeyTypes } from '../../domain/source-shape.js';
import type { Batch, EnrichedEvent } from '../../domain/types.js';
import { configError, describeError, ErrorCodes, PipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { lazyRequire } from '../../lazy-require.js';
import type { DeadLetterEntry, DeadLetterStore } from '../../state/dead-letter.js';
import type { Sink } from '../sink.js';
import {
  BIGQUERY_TABLE,
  BIGQUERY_TABLE_OPTIONS,
  BIGQUERY_UNIQUE_VIEW,
  bigQueryColumnDifferences,
  bigQueryFields,
  toInsertAllRow,
  uniqueViewQuery,
  type BigQueryField,
  type ExistingField,
  type InsertAllRow,
} from './bigquery-schema.js';
import { DEFAULT_KEY_TYPES, destinationShapeError, keyColumnDifferences } from './columns.js';

export interface BigQueryTarget {
  projectId: string;
  datasetId: string;
  /** Where a new dataset is created (`?location=EU`); BigQuery's default (US) when absent. */
  location?: string;
}

/** bigquery://project/dataset[?location=EU] */
export function parseBigQueryUrl(raw: string): BigQueryTarget {
  const m = /^bigquery:\/\/([a-z][a-z0-9.:-]{3,62}[a-z0-9])\/([A-Za-z0-9_]{1,1024})\/?(?:\?(.*))?$/.exec(raw);
  if (!m) {
    throw configError(
      'ANALYTICS_URL is not a valid bigquery:// URL',
      'bigquery://PROJECT/DATASET (project: 6 to 30 characters in Google Cloud, lowercase letters, digits and -, starting with a letter (older ones may hold . or :); dataset: letters, digits and _)',
    );
  }
  const location = new URLSearchParams(m[3] ?? '').get('location') ?? undefined;
  return { projectId: m[1], datasetId: m[2], location };
}

/** The BigQuery and Google auth clients, loaded when a BigQuery sink is made (see lazy-require.ts). */
const bigqueryJs = lazyRequire<typeof BigQueryJs>('@google-cloud/bigquery');
const googleAuth = lazyRequire<typeof GoogleAuth>('google-auth-library');

/** insertAll: at most 500 rows per request is Google's recommendation; 10 MB is the hard limit. */
const MAX_ROWS_PER_REQUEST = 500;
const MAX_BYTES_PER_REQUEST = 8 * 1024 * 1024;
/** Rows BigQuery marks `stopped` (not wrong themselves) are re-sent this many times. */
const STOPPED_ROW_ROUNDS = 3;

interface RowError {
  row: InsertAllRow;
  errors: { reason?: string; message?: string }[];
}

/**
 * BigQuery through the streaming insertAll API. One row per event_id comes from insertId =
 * event_id (BigQuery drops a re-sent row, best-effort, for about a minute) and, exactly, from
 * the `events_enriched_unique` view the sink creates (what the query pack reads).
 *
 * A row BigQuery refuses (per-row insertErrors) while it accepts others of the same request
 * goes to the dead-letter table with the reason, and the rest is stored (skipInvalidRows).
 * A request whose every row is refused (see everyRowRefused) is the table failing, not the
 * rows (its columns drifted): the write rejects with EP_ERR_ANALYTICS_REFUSED, nothing is
 * dead-lettered, and the pipeline holds the position and retries slowly until BigQuery takes
 * the rows. A whole-request failure (503, quota/rate limits, network) rejects, and the
 * pipeline retries with backoff. The client's own retries are off so there is one retry policy.
 */
export class BigQuerySink implements Sink {
  readonly name = 'analytics';
  private readonly bigquery: BigQuery;
  private readonly dataset: Dataset;
  private readonly table: Table;
  private readonly where: string;
  private readonly keyTypes: KeyTypes;
  private readonly fields: BigQueryField[];

  constructor(
    private readonly options: {
      target: BigQueryTarget;
      deadLetters: Pick<DeadLetterStore, 'record'>;
      logger: Logger;
      /** e.g. an emulator or test server; Google's endpoint when absent. */
      apiEndpoint?: string;
      /** A static OAuth access token instead of Application Default Credentials. */
      accessToken?: string;
      requestTimeoutMs?: number;
      /** The source's key types: content_id/user_id are typed from them (default: UUID keys). */
      keyTypes?: KeyTypes;
    },
  ) {
    const { target } = options;
    this.keyTypes = options.keyTypes ?? DEFAULT_KEY_TYPES;
    this.fields = bigQueryFields(this.keyTypes);
    let authClient: OAuth2Client | undefined;
    if (options.accessToken) {
      authClient = new (googleAuth().OAuth2Client)();
      authClient.setCredentials({ access_token: options.accessToken });
    }
    this.bigquery = new (bigqueryJs().BigQuery)({
      projectId: target.projectId,
      location: target.location,
      apiEndpoint: options.apiEndpoint,
      authClient,
      autoRetry: false,
      timeout: options.requestTimeoutMs ?? 60_000,
    } as ConstructorParameters<typeof BigQueryJs.BigQuery>[0]);
    this.dataset = this.bigquery.dataset(target.datasetId, { location: target.location });
    this.table = this.dataset.table(BIGQUERY_TABLE);
    this.where = `${target.projectId}.${target.datasetId}.${BIGQUERY_TABLE}`;
  }

  async start(): Promise<void> {
    const { target } = this.options;
    try {
      if (!(await this.dataset.exists())[0])
        await ignoreConflict(this.dataset.create({ location: target.location }));
      let existing: ExistingField[] | null = null;
      if ((await this.table.exists())[0]) {
        existing = ((await this.table.getMetadata())[0] as { schema?: { fields?: [] } }).schema?.fields ?? [];
      } else {
        await ignoreConflict(
          this.table.create({
            schema: { fields: this.fields },
            ...BIGQUERY_TABLE_OPTIONS,
            description: 'engagement-pipeline: enriched engagement events (one insertId per event_id)',
          }),
        );
      }
      if (existing) this.checkColumns(existing);
      const view = this.dataset.table(BIGQUERY_UNIQUE_VIEW);
      if (!(await view.exists())[0]) {
        await ignoreConflict(
          view.create({
            view: { query: uniqueViewQuery(target.projectId, target.datasetId), useLegacySql: false },
          }),
        );
      }
    } catch (err) {
      if (err instanceof PipelineError) throw err;
      const code = httpStatus(err);
      throw new PipelineError(
        ErrorCodes.ANALYTICS_UNAVAILABLE,
        `cannot prepare BigQuery table ${this.where}: ${describeBigQueryError(err)}`,
        // At start-up, unreachable is reported like Postgres: one line, exit 2.
        'config',
        code === 401 || code === 403
          ? 'check GOOGLE_APPLICATION_CREDENTIALS (or gcloud auth application-default login) and the BigQuery Data Editor role'
          : 'check ANALYTICS_URL and network access to BigQuery',
        { cause: err },
      );
    }
    this.options.logger.info(`analytics: BigQuery table ${this.where} ready`);
  }

  async write(batch: Batch, signal: AbortSignal): Promise<void> {
    const byId = new Map<string, { event: EnrichedEvent; position: string }>();
    batch.events.forEach((event, i) =>
      byId.set(String(event.event_id), { event, position: batch.positions[i] }),
    );
    const rejected: DeadLetterEntry[] = [];
    for (const chunk of chunks(batch.events.map(toInsertAllRow))) {
      let pending = chunk;
      for (let round = 0; pending.length > 0; round++) {
        if (signal.aborted) throw abortError();
        const rowErrors = await this.insertAll(pending);
        // Nothing of this request was stored, so failing here loses nothing and re-sends no
        // row BigQuery took from it. Rows of earlier requests of this write were stored; the
        // pipeline's retry sends them again with the same insertId (= event_id): BigQuery drops
        // such a re-send within about a minute, and a later one (the sink's retries are slow)
        // leaves a second physical row that `events_enriched_unique` hides, as after any replay
        // (README "Exactly-once, per destination"). Their own refused rows are not recorded
        // yet (that happens when the write resolves), so the retry finds and records them once.
        const refusedAll = everyRowRefused(pending, rowErrors);
        if (refusedAll) throw this.refusedError(pending.length, refusedAll);
        const stopped: InsertAllRow[] = [];
        for (const { row, errors } of rowErrors) {
          // `stopped`: the row was fine but not inserted because another one failed.
          if (errors.every((e) => e.reason === 'stopped') && round < STOPPED_ROW_ROUNDS) stopped.push(row);
          else rejected.push(this.deadLetter(row, errors, byId.get(row.insertId), batch.stream));
        }
        pending = stopped;
      }
    }
    if (rejected.length > 0) {
      // Recorded before write resolves, so the position is confirmed only once they are safe.
      await this.options.deadLetters.record(rejected);
      this.options.logger.warn(
        { rows: rejected.length, reason: rejected[0].lastError },
        `analytics: BigQuery refused ${rejected.length} rows; they are in the dead-letter table`,
      );
    }
  }

  async stop(): Promise<void> {
    // The client keeps no connection state worth flushing; insertAll is synchronous per request.
  }

  /**
   * A table created earlier for other key types is refused with one line, never cast into; so is
   * one whose columns would make insertAll refuse every row (a column the pipeline writes is
   * missing, or one it does not write is REQUIRED): caught here rather than by the first write.
   */
  private checkColumns(existingFields: readonly ExistingField[]): void {
    const existing = new Map(existingFields.map((f) => [String(f.name), String(f.type)]));
    const expected = new Map(this.fields.map((f) => [f.name, f.type as string]));
    // tables.get answers the legacy names (INTEGER for INT64).
    const normalize = (type: string) => (type === 'INTEGER' ? 'INT64' : type);
    const differences = keyColumnDifferences(existing, expected, normalize);
    if (differences.length === 0) {
      const columns = bigQueryColumnDifferences(existingFields, this.fields);
      if (columns.length === 0) return;
      throw destinationShapeError(
        'BigQuery',
        this.where,
        columns,
        this.keyTypes,
        `add the missing columns (ALTER TABLE \`${this.where}\` ADD COLUMN name TYPE), make the columns ` +
          `the pipeline does not write NULLABLE (ALTER TABLE \`${this.where}\` ALTER COLUMN name DROP NOT NULL), ` +
          `or point ANALYTICS_URL at another dataset (bigquery://${this.options.target.projectId}/other_dataset)`,
      );
    }
    throw destinationShapeError(
      'BigQuery',
      this.where,
      differences,
      this.keyTypes,
      `point ANALYTICS_URL at another dataset (bigquery://${this.options.target.projectId}/other_dataset), ` +
        `or rename the table (ALTER TABLE \`${this.where}\` RENAME TO ${BIGQUERY_TABLE}_old) or drop it ` +
        'and re-run `engagement backfill`',
    );
  }

  private refusedError(rows: number, reason: string): PipelineError {
    return new PipelineError(
      ErrorCodes.ANALYTICS_REFUSED,
      `BigQuery refused every row of an insertAll into ${this.where} (${rows} ${rows === 1 ? 'row' : 'rows'}): ` +
        `${reason}; the table does not take what the pipeline writes, nothing was dead-lettered`,
      'config',
      `compare the table's columns with the pipeline's (bq show --schema ${this.where}): add a missing ` +
        'column, make a column the pipeline does not write NULLABLE; the stream resumes once BigQuery takes the rows',
    );
  }

  /** One insertAll request; resolves with the per-row errors, rejects when the whole request failed. */
  private async insertAll(rows: InsertAllRow[]): Promise<RowError[]> {
    try {
      await this.table.insert(rows, {
        raw: true,
        skipInvalidRows: true,
        ignoreUnknownValues: false,
        partialRetries: 0,
      });
      return [];
    } catch (err) {
      const partial = err as { name?: string; errors?: RowError[] };
      if (partial.name === 'PartialFailureError' && Array.isArray(partial.errors)) return partial.errors;
      throw new PipelineError(
        ErrorCodes.SINK_WRITE,
        `BigQuery insertAll of ${rows.length} rows into ${this.where} failed: ${describeBigQueryError(err)}`,
        'transient',
        undefined,
        { cause: err },
      );
    }
  }

  private deadLetter(
    row: InsertAllRow,
    errors: RowError['errors'],
    origin: { event: EnrichedEvent; position: string } | undefined,
    stream: string,
  ): DeadLetterEntry {
    const reason = errors.map((e) => `${e.reason ?? 'error'}: ${e.message ?? ''}`.trim()).join('; ');
    return {
      sink: this.name,
      eventId: origin?.event.event_id ?? row.insertId,
      idempotencyKey: row.insertId,
      event: origin?.event ?? row.json,
      source: origin ? `${stream}@${origin.position}` : null,
      lastError: `BigQuery refused the row (${reason})`,
      attempts: 1,
    };
  }
}

/** A refusal that names the table's columns, never the row's values: every row would get it. */
const TABLE_SHAPE_REFUSAL = /no such field|missing required field/i;

/**
 * BigQuery's reason (`invalid: no such field: device.`) when it refused every row of a request
 * for the table's sake rather than the rows' own, or null when the per-row errors are the rows'
 * (dead-lettered). Every row refused (none `stopped` only, none stored) counts when the request
 * held more than one row, as the fan-out judges a batch whose every row is refused
 * (fanout.ts, AllRowsRejected); a lone row when its refusal names the table's columns. Rows
 * refused while others of the request were stored stay the rows' fault.
 */
function everyRowRefused(sent: InsertAllRow[], rowErrors: RowError[]): string | null {
  const refused = rowErrors.filter(({ errors }) => !errors.every((e) => e.reason === 'stopped'));
  if (refused.length === 0 || new Set(refused.map((r) => r.row)).size < sent.length) return null;
  const errors = refused[0].errors.filter((e) => e.reason !== 'stopped');
  const reason = errors.map((e) => `${e.reason ?? 'error'}: ${e.message ?? ''}`.trim()).join('; ');
  if (sent.length > 1) return reason;
  return errors.some((e) => TABLE_SHAPE_REFUSAL.test(e.message ?? '')) ? reason : null;
}

function* chunks(rows: InsertAllRow[]): Generator<InsertAllRow[]> {
  let current: InsertAllRow[] = [];
  let bytes = 0;
  for (const row of rows) {
    const size = JSON.stringify(row).length;
    if (
      current.length > 0 &&
      (current.length >= MAX_ROWS_PER_REQUEST || bytes + size > MAX_BYTES_PER_REQUEST)
    ) {
      yield current;
      current = [];
      bytes = 0;
    }
    current.push(row);
    bytes += size;
  }
  if (current.length > 0) yield current;
}

async function ignoreConflict(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    // Another worker created it between our exists() and create(): that is the state we want.
    if (httpStatus(err) !== 409) throw err;
  }
}

function httpStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

/** "HTTP 503 (backendError): ..." for API errors; a short line for the rest. */
export function describeBigQueryError(err: unknown): string {
  const status = httpStatus(err);
  if (status !== undefined) {
    const reason = (err as { errors?: { reason?: string }[] }).errors?.[0]?.reason;
    return `HTTP ${status}${reason ? ` (${reason})` : ''}: ${(err as Error).message}`;
  }
  return describeError(err);
}

function abortError(): PipelineError {
  return new PipelineError(ErrorCodes.SINK_WRITE, 'BigQuery write aborted (shutting down)', 'transient');
}
