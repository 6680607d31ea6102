/**
 * One error type with a stable code users can grep and a kind that decides the policy:
 * `config` -> exit 2 with one line; `transient` -> retry with backoff; `fatal` -> stop with the hint.
 */
export type ErrorKind = 'config' | 'transient' | 'fatal';

export const ErrorCodes = {
  CONFIG: 'EP_ERR_CONFIG',
  WAL_LEVEL: 'EP_ERR_WAL_LEVEL',
  NO_REPLICATION_PRIVILEGE: 'EP_ERR_NO_REPLICATION_PRIVILEGE',
  SLOT_MISSING: 'EP_ERR_SLOT_MISSING',
  SLOT_INVALIDATED: 'EP_ERR_SLOT_INVALIDATED',
  SLOT_IN_USE: 'EP_ERR_SLOT_IN_USE',
  PUBLICATION_MISSING: 'EP_ERR_PUBLICATION_MISSING',
  /** The publication would drop changes of a source table: an action, a row filter, a column list, the table. */
  PUBLICATION: 'EP_ERR_PUBLICATION',
  POSTGRES_UNREACHABLE: 'EP_ERR_POSTGRES_UNREACHABLE',
  REDIS_UNREACHABLE: 'EP_ERR_REDIS_UNREACHABLE',
  REDIS_STATE_LOST: 'EP_ERR_REDIS_STATE_LOST',
  REDIS_KEY_TYPE: 'EP_ERR_REDIS_KEY_TYPE',
  /** Redis refused REDIS_URL's database number (SELECT): nothing may run on database 0 instead. */
  REDIS_DATABASE: 'EP_ERR_REDIS_DATABASE',
  /** Redis answered but refused REDIS_URL's user or password. */
  REDIS_AUTH: 'EP_ERR_REDIS_AUTH',
  ANALYTICS_LOCKED: 'EP_ERR_ANALYTICS_LOCKED',
  ANALYTICS_UNAVAILABLE: 'EP_ERR_ANALYTICS_UNAVAILABLE',
  SINK_WRITE: 'EP_ERR_SINK_WRITE',
  /**
   * The analytics store refused every row of a write (e.g. its table's columns drifted): the
   * store is failing, not the rows. Nothing is dead-lettered; held and retried slowly.
   */
  ANALYTICS_REFUSED: 'EP_ERR_ANALYTICS_REFUSED',
  BAD_ROW: 'EP_ERR_BAD_ROW',
  KAFKA_UNREACHABLE: 'EP_ERR_KAFKA_UNREACHABLE',
  DUCKDB_SHARED_GROUP: 'EP_ERR_DUCKDB_SHARED_GROUP',
  TRUNCATE_RESTART_IDENTITY: 'EP_ERR_TRUNCATE_RESTART_IDENTITY',
  /** Reconnected to another Postgres cluster (another system identifier) under the same DATABASE_URL. */
  SOURCE_CHANGED: 'EP_ERR_SOURCE_CHANGED',
  /** A source table is missing (EVENTS_TABLE / CONTENT_TABLE). */
  SOURCE_TABLE_MISSING: 'EP_ERR_SOURCE_TABLE_MISSING',
  /** A source table lacks a column the pipeline needs, or has a key of an unsupported type. */
  SOURCE_SHAPE: 'EP_ERR_SOURCE_SHAPE',
  /**
   * An analytics table created earlier for other key types than the source's (never cast), or a
   * BigQuery table lacking a column the pipeline writes / requiring one it does not write.
   */
  DESTINATION_SHAPE: 'EP_ERR_DESTINATION_SHAPE',
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class PipelineError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly kind: ErrorKind,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PipelineError';
  }

  /** The one line printed for an operator. */
  oneLine(): string {
    return `${this.code}: ${this.message}${this.hint ? ` (fix: ${this.hint})` : ''}`;
  }
}

export function configError(message: string, hint?: string): PipelineError {
  return new PipelineError(ErrorCodes.CONFIG, message, 'config', hint);
}

/** A short, secret-free description of any thrown value. */
export function describeError(err: unknown): string {
  if (err instanceof PipelineError) return err.oneLine();
  if (err instanceof AggregateError && err.errors.length > 0) return describeError(err.errors[0]);
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return redactSecrets(`${err.message || err.name}${typeof code === 'string' ? ` [${code}]` : ''}`);
  }
  return redactSecrets(String(err));
}

/**
 * Removes passwords from any text that may hold a URL or a connection string; everything that
 * prints a URL, a connection string or an error goes through it:
 * - the userinfo password of a URL: `postgres://u:secret@h` -> `postgres://u:***@h` (up to the
 *   last `@` before a space: an unencoded `@`, `#`, `/` or `?` in the password leaks nothing),
 *   also in a malformed URL or a URL's echoed tail (`postgres:/u:secret@h`, `/u:secret@h`);
 * - `key=value` query parameters and libpq keyword words whose key names a password, a
 *   passfile, a secret or a token: `?password=x`, `&sslpassword=x`, `passfile=/p`,
 *   `host=h password='a b'` -> `password=***` (quoted values whole).
 */
export function redactSecrets(text: string): string {
  return (
    text
      // Up to the last `@` before a space: a password may hold `@`, `#`, `/` or `?` unencoded
      // (masking too much of an odd URL's path is the safe side).
      .replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)\S*@/gi, '$1***@')
      // A malformed URL (`postgres:/u:pw@h`, `postgres//u:pw@h`) or the tail of one that a
      // driver echoes (`:5432/u:pw@h/db`) still holds `name:password@`: mask that shape anywhere.
      .replace(/(^|[\s/"'(])([^\s:/@"'()]+:)(?!\/\/)\S*@/g, '$1$2***@')
      .replace(SECRET_PARAMETER, '$1***')
  );
}

/** Parameter names whose value is a secret (or where one is kept): `sslpassword`, `PGPASSFILE`, `api_token`. */
const SECRET_KEY = 'password|passwd|pwd|passfile|secret|token';
const SECRET_PARAMETER = new RegExp(
  `((?:^|[\\s?&;,"'{(])[\\w.-]*(?:${SECRET_KEY})[\\w.-]*\\s*=\\s*)('(?:\\\\.|[^'\\\\])*'|"(?:\\\\.|[^"\\\\])*"|[^\\s&#;,"')}]*)`,
  'gi',
);

/** Whether a URL query parameter or libpq keyword holds a secret (see redactSecrets). */
export function isSecretParameter(name: string): boolean {
  return new RegExp(SECRET_KEY, 'i').test(name);
}

/** Removes the query parameters that hold a secret (isSecretParameter) from `url`, in place. */
export function deleteSecretParameters(url: URL): void {
  for (const key of [...url.searchParams.keys()]) if (isSecretParameter(key)) url.searchParams.delete(key);
}
