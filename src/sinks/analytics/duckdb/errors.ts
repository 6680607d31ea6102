import { ErrorCodes, PipelineError } from '../../../errors.js';

/**
 * What a failed DuckDB write means for the batch, so the fan-out can choose: a transient
 * failure (the file locked by another process, an IO error, a database that must be
 * reopened) is retried with the same rows; a RowConversionError is permanent for the row it
 * names (retrying the same value fails the same way).
 */
export class RowConversionError extends PipelineError {
  readonly transient = false;
  constructor(
    readonly eventId: number,
    readonly column: string,
    readonly value: unknown,
    reason: string,
  ) {
    super(
      ErrorCodes.BAD_ROW,
      `DuckDB cannot store event ${eventId}: ${column} = ${preview(value)} is ${reason}`,
      'fatal',
      'the row is refused by the analytics table; it is a dead letter candidate, not a reason to retry',
    );
    this.name = 'RowConversionError';
  }
}

/** A write that failed for a reason other than the rows: retry the same batch. */
export class DuckDbTransientError extends PipelineError {
  readonly transient = true;
  constructor(
    message: string,
    code: typeof ErrorCodes.ANALYTICS_LOCKED | typeof ErrorCodes.ANALYTICS_UNAVAILABLE,
    hint?: string,
    cause?: unknown,
  ) {
    super(code, message, 'transient', hint, { cause });
    this.name = 'DuckDbTransientError';
  }
}

/** DuckDB's text for a duplicate key, from the Appender's flush or an INSERT. */
export function isDuplicateKey(err: unknown): boolean {
  const message = (err as Error)?.message ?? '';
  return /duplicate key|violates primary key|PRIMARY KEY or UNIQUE constraint/i.test(message);
}

export function isLockConflict(err: unknown): boolean {
  return /could not set lock|conflicting lock|lock on file/i.test((err as Error)?.message ?? '');
}

/** Failures after which this DuckDB instance must not be used again (reopen from the file). */
export function invalidatesDatabase(err: unknown): boolean {
  return /FATAL|invalidated|IO Error|No space left|Could not write/i.test((err as Error)?.message ?? '');
}

/** Wraps a DuckDB failure that is not about a row's value. */
export function transientWriteError(err: unknown, what: string): PipelineError {
  if (err instanceof PipelineError) return err;
  const message = (err as Error)?.message ?? String(err);
  if (isLockConflict(err)) {
    return new DuckDbTransientError(
      `DuckDB ${what}: the file is in use by another process (DuckDB admits one writer): ${message}`,
      ErrorCodes.ANALYTICS_LOCKED,
      'stop the other writer; the write is retried',
      err,
    );
  }
  return new DuckDbTransientError(
    `DuckDB ${what} failed: ${message}`,
    ErrorCodes.ANALYTICS_UNAVAILABLE,
    undefined,
    err,
  );
}

function preview(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
