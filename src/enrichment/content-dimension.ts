import type pg from 'pg';
import { DEFAULT_SHAPE, quoteIdent, type SourceShape } from '../domain/source-shape.js';
import type { ContentInfo } from '../domain/types.js';
import { describeError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { BackoffOptions } from '../retry/backoff.js';
import { retry } from '../retry/retry.js';
import { contentSelect, ContentHistory, type ContentVersion } from './content-history.js';

export interface ContentDimensionOptions {
  logger?: Logger;
  /** The user's tables (discovered at start); default: the tables `engagement migrate` creates. */
  shape?: SourceShape;
  /**
   * Direct mode: the slot whose stream keeps this dimension current. Every content change is
   * then recorded with its commit position (content-history.ts), and `loadAsOfSlot()` rebuilds
   * the dimension as of the slot's confirmed position, so a replayed event is enriched with
   * the content row as it was at the event's commit, like on its first delivery.
   */
  slotName?: string;
  /**
   * Retry a failing lookup or history write with backoff until it succeeds or `close()`
   * (the caller holds its stream meanwhile). Off: the error is thrown to the caller.
   */
  retry?: boolean;
  /** The backoff between retries (default: LOOKUP_BACKOFF; tests shorten it). */
  backoff?: BackoffOptions;
  /** Told about every failed attempt of a retried call (the stream waits meanwhile). */
  onRetry?: (err: unknown) => void;
}

/** A change of the content table, as the stream carries it. */
export type ContentChange =
  | { kind: 'content-upsert'; content: Partial<ContentInfo> & { id: string } }
  | { kind: 'content-delete'; id: string }
  /** TRUNCATE of the content table: every row is gone at this point of the stream. */
  | { kind: 'content-truncate' };

/**
 * Thrown by a retrying call that `close()` stopped before its next attempt (an attempt failing
 * after `close()` throws its own error); the change is replayed on the next start.
 */
export class DimensionClosedError extends Error {
  constructor() {
    super('content dimension closed');
    this.name = 'DimensionClosedError';
  }
}

/** Recorded versions between two prunes of the history while running. */
const PRUNE_EVERY = 1_000;
/** Changes held in memory at most before they are written (and the stream waits for it). */
const RECORD_AT = 1_000;
/** Retries of a lookup or history write: soon at first (a lock_timeout, a lost connection), 10 s at most. */
const LOOKUP_BACKOFF: BackoffOptions = { baseMs: 100, maxMs: 10_000 };
/**
 * With `retry`, a lookup attempt waits this long at most for a lock on the content table (a
 * migration, a `LOCK TABLE`), then fails and is retried: without it the attempt would wait as
 * long as the lock is held, and `close()` could not end it, so a stop overran SHUTDOWN_TIMEOUT_MS.
 */
const LOOKUP_LOCK_TIMEOUT_MS = 1_000;

/**
 * The `content` table held in memory: loaded at start (as of the slot's confirmed position
 * when it has a history, else by snapshot), kept current by the same change stream, with a
 * direct lookup for ids it has never seen. A lookup that finds nothing is remembered as
 * absent; the stream will bring the row if it is inserted later.
 *
 * Changes apply in stream order, so an event sees the content as of its own position in the
 * stream: an update earlier in the same transaction included, a later one not. The same
 * holds on every replay.
 */
export class ContentDimension {
  private readonly rows = new Map<string, ContentInfo | null>();
  /** Rows read by a lookup (today's, never recorded): their next change is recorded even if equal. */
  private readonly lookedUp = new Set<string>();
  private readonly log: Logger;
  private readonly shape: SourceShape;
  private history: ContentHistory | null;
  /** Fired by `close()`: ends the retries in progress. */
  private readonly closing = new AbortController();
  private recordedSincePrune = 0;
  /** Applied changes not yet handed to the history. */
  private unrecorded: ContentVersion[] = [];
  /** The history writes in progress (one at a time, in stream order). */
  private writing: Promise<void> | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: ContentDimensionOptions = {},
  ) {
    this.log = (options.logger ?? silentLogger()).child({ component: 'content-dimension' });
    this.shape = options.shape ?? DEFAULT_SHAPE;
    this.history = options.slotName ? new ContentHistory(pool, options.slotName, this.shape) : null;
  }

  get size(): number {
    return this.rows.size;
  }

  async loadSnapshot(): Promise<number> {
    const { rows } = await this.pool.query<ContentInfo>(contentSelect(this.shape));
    for (const row of rows) this.rows.set(row.id, row);
    return rows.length;
  }

  /**
   * Loads the dimension as of the slot's confirmed position (where the stream will resume),
   * from the recorded history; a stream without history yet is seeded from a snapshot first.
   * Without a usable history (no slot configured, the slot missing, the state table absent
   * or not ours) it falls back to a snapshot of now, and says so.
   */
  async loadAsOfSlot(): Promise<{ rows: number; from: 'history' | 'snapshot'; asOf: string | null }> {
    const history = this.history;
    const slot = history ? await history.slotPositions() : null;
    if (!history || !slot) return { rows: await this.loadSnapshot(), from: 'snapshot', asOf: null };
    let versions: Map<string, ContentInfo | null>;
    try {
      if (!(await history.isSeeded())) {
        const seeded = await history.seed();
        this.log.info(
          { content: seeded, slot: history.stream },
          'content history started from a snapshot of the content table',
        );
      }
      versions = await history.asOf(slot.confirmed);
    } catch (err) {
      if (!isSchemaProblem(err)) throw err;
      this.history = null;
      this.log.warn(
        `content history unavailable (${describeError(err)}): the dimension is loaded as of now, so events replayed from before a content change get the changed row; run \`engagement migrate\``,
      );
      return { rows: await this.loadSnapshot(), from: 'snapshot', asOf: null };
    }
    this.rows.clear();
    for (const [id, row] of versions) this.rows.set(id, row);
    if (slot.restart) await this.pruneHistory(slot.restart);
    return { rows: this.knownIds().length, from: 'history', asOf: slot.confirmed };
  }

  /** Ids of the content rows known to exist. */
  knownIds(): string[] {
    return [...this.rows].filter(([, row]) => row !== null).map(([id]) => id);
  }

  /** Known content, `null` when known to be absent, `undefined` when never seen. */
  peek(id: string): ContentInfo | null | undefined {
    return this.rows.get(id);
  }

  /**
   * A content change from the stream, in the transaction that commits at `commitLsn`: applied
   * in memory at once; with a history, queued for it. The queue is written when the
   * transaction's commit arrives (`recorded()`), or when it holds RECORD_AT changes: then the
   * returned promise makes the stream wait, so memory stays bounded in a huge transaction.
   */
  apply(change: ContentChange, commitLsn: string): void | Promise<void> {
    const changed: ContentVersion[] = [];
    const set = (key: string, row: ContentInfo | null) => {
      const previous = this.rows.get(key);
      this.rows.set(key, row);
      // A change that leaves the row as it was (an update of columns the dimension does not
      // hold, a delete of an absent row) adds no version: the row as of its commit is unchanged.
      const known = previous !== undefined && !this.lookedUp.delete(key);
      if (!known || !sameRow(previous, row)) changed.push({ key, commitLsn, row });
    };
    if (change.kind === 'content-upsert') set(change.content.id, this.merged(change.content));
    else if (change.kind === 'content-delete') set(change.id, null);
    else for (const key of this.knownIds()) set(key, null);
    if (!this.history || changed.length === 0) return;
    // Not push(...changed): a TRUNCATE of a large catalog changes every known row, and
    // spreading over ~100,000 of them into one call overflows the stack.
    for (const c of changed) this.unrecorded.push(c);
    if (this.unrecorded.length >= RECORD_AT) return this.recorded();
  }

  /** True while applied changes are not yet known to be in the history. */
  get recording(): boolean {
    return this.unrecorded.length > 0 || this.writing !== null;
  }

  /**
   * Resolves once every change applied so far is in the history (`undefined`: nothing to wait
   * for). The stream calls it at each commit and waits, so no position past a content change
   * can be confirmed before the history has it. A failing write is retried with backoff.
   */
  recorded(): Promise<void> | undefined {
    const history = this.history;
    if (!history || this.unrecorded.length === 0) return this.writing ?? undefined;
    const versions = this.unrecorded;
    this.unrecorded = [];
    const previous = this.writing ?? Promise.resolve();
    const run: Promise<void> = previous
      .then(() =>
        this.retrying(`recording ${versions.length} content change(s)`, () => history.recordMany(versions)),
      )
      .then(() => {
        this.recordedSincePrune += versions.length;
        if (this.recordedSincePrune >= PRUNE_EVERY) void this.pruneNow();
      })
      .finally(() => {
        if (this.writing === run) this.writing = null;
      });
    this.writing = run;
    return run;
  }

  /** In memory only (Kafka feeds; the stream uses `apply`). */
  upsert(change: Partial<ContentInfo> & { id: string }): void {
    this.rows.set(change.id, this.merged(change));
  }

  delete(id: string): void {
    this.rows.set(id, null);
  }

  /** The row after a change; columns the change lacks (unchanged TOAST values) are kept. */
  private merged(change: Partial<ContentInfo> & { id: string }): ContentInfo {
    const previous = this.rows.get(change.id);
    return {
      id: change.id,
      slug: change.slug !== undefined ? change.slug : (previous?.slug ?? null),
      title: change.title !== undefined ? change.title : (previous?.title ?? null),
      content_type:
        change.content_type !== undefined ? change.content_type : (previous?.content_type ?? null),
      length_seconds:
        change.length_seconds !== undefined ? change.length_seconds : (previous?.length_seconds ?? null),
    };
  }

  /**
   * Fetches ids never seen before; remembers misses as absent. These rows are today's (the
   * history holds only what the stream brought), which is all that can be known of content
   * the stream never carried. With `retry`, a failing query (a lock_timeout while `content`
   * is locked, a lost connection) is retried with backoff until it succeeds or `close()`.
   */
  async lookup(ids: string[]): Promise<void> {
    const unseen = [...new Set(ids)].filter((id) => !this.rows.has(id));
    if (unseen.length === 0) return;
    const rows = await this.retrying('content lookup', () => this.fetch(unseen));
    for (const id of unseen) {
      this.rows.set(id, null);
      this.lookedUp.add(id);
    }
    for (const row of rows) this.rows.set(row.id, row);
  }

  /** Stops retries in progress (a wait ends at once, rejecting with DimensionClosedError). */
  close(): void {
    this.closing.abort();
  }

  private async fetch(ids: string[]): Promise<ContentInfo[]> {
    try {
      // Bound as the key's own type, so the lookup uses the key's index.
      const { contentKey, contentKeyType, keyTypes } = this.shape;
      const sql = `${contentSelect(this.shape)} WHERE ${quoteIdent(contentKey)} = ANY($1::${contentKeyType ?? keyTypes.content_id}[])`;
      if (!this.options.retry) return (await this.pool.query<ContentInfo>(sql, [ids])).rows;
      return await this.withLockTimeout((client) =>
        client.query<ContentInfo>(sql, [ids]).then((r) => r.rows),
      );
    } catch (err) {
      // A data exception (an id the key type refuses) is about the ids, not the database:
      // retrying cannot help. Such an id cannot name a row: look the others up one by one.
      if (!isDataException(err)) throw err;
      if (ids.length > 1) return (await Promise.all(ids.map((id) => this.fetch([id])))).flat();
      this.log.warn(`content id ${JSON.stringify(ids[0])} cannot exist (${describeError(err)}): absent`);
      return [];
    }
  }

  /** Runs `fn` in a transaction whose lock waits end after LOOKUP_LOCK_TIMEOUT_MS (SQLSTATE 55P03). */
  private async withLockTimeout<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      await client.query(`SET LOCAL lock_timeout = ${LOOKUP_LOCK_TIMEOUT_MS}`);
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      // A client that cannot roll back is not returned to the pool (its transaction would leak).
      await client.query('ROLLBACK').catch((rollback: Error) => (broken = rollback));
      throw err;
    } finally {
      client.release(broken);
    }
  }

  /** With `retry`, runs `fn` until it succeeds or `close()`; without, once. */
  private retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (!this.options.retry) return fn();
    return retry(fn, {
      backoff: this.options.backoff ?? LOOKUP_BACKOFF,
      signal: this.closing.signal,
      aborted: () => new DimensionClosedError(),
      // One warning per failure streak; the repeats go to debug.
      onFailure: (err, { attempt, delayMs }) => {
        this.log[attempt === 1 ? 'warn' : 'debug'](
          { attempt, retryInMs: delayMs },
          `${what} failed, retrying while the stream waits: ${describeError(err)}`,
        );
        this.options.onRetry?.(err);
      },
      onRecovered: (attempts, failingForMs) =>
        this.log.info({ attempts, failingForMs }, `${what} succeeded after retries`),
    });
  }

  private async pruneNow(): Promise<void> {
    this.recordedSincePrune = 0;
    const slot = await this.history?.slotPositions().catch(() => null);
    if (slot?.restart) await this.pruneHistory(slot.restart);
  }

  /**
   * Below the slot's restart position, never its confirmed one: Postgres keeps the confirmed
   * position in memory and may resume from an older one after a crash of its own, but never
   * from before the restart position it has written to disk.
   */
  private async pruneHistory(below: string): Promise<void> {
    try {
      const pruned = (await this.history?.prune(below)) ?? 0;
      if (pruned > 0) this.log.debug({ pruned, below }, 'content history pruned');
    } catch (err) {
      this.log.warn(`pruning the content history failed (retried later): ${describeError(err)}`);
    }
  }
}

function sameRow(a: ContentInfo | null, b: ContentInfo | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.id === b.id &&
    a.slug === b.slug &&
    a.title === b.title &&
    a.content_type === b.content_type &&
    a.length_seconds === b.length_seconds
  );
}

function sqlState(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** Class 22: the value, not the database, is the problem. */
function isDataException(err: unknown): boolean {
  return sqlState(err).startsWith('22');
}

/** The state table is missing (no migrate since this version) or not accessible to this role. */
function isSchemaProblem(err: unknown): boolean {
  return ['42P01', '42501', '3F000'].includes(sqlState(err));
}
