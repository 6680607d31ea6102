import type { Pgoutput } from 'pg-logical-replication';
import { DEFAULT_SHAPE, type SourceShape, type TableName } from '../domain/source-shape.js';
import { microsToIso } from '../domain/timestamps.js';
import { ErrorCodes, PipelineError } from '../errors.js';
import type { Change } from './changes.js';
import { decodeContentRow, decodeEventRow } from './decode-rows.js';

/** Prefix of the pipeline's pg_logical_emit_message heartbeats. */
export const HEARTBEAT_PREFIX = 'engagement_pipeline.heartbeat';

/**
 * Turns one pgoutput message into the pipeline's Change (null for messages it does not need).
 * Tables are recognised by the relation message's schema and name, as the shape names them. Pure.
 */
export function decodePgoutput(message: Pgoutput.Message, shape: SourceShape = DEFAULT_SHAPE): Change | null {
  switch (message.tag) {
    case 'begin':
      return {
        kind: 'begin',
        commitLsn: message.commitLsn ?? '0/0',
        committedAt: microsToIso(message.commitTime as bigint),
      };
    case 'commit':
      // The commit record's end: the next record starts exactly there, so confirming it
      // (exactly, see ReplicationSource.sendStatus) never skips the next transaction.
      return { kind: 'commit', ackLsn: message.commitEndLsn ?? message.commitLsn ?? '0/0' };
    case 'insert':
    case 'update':
      return decodeRowChange(message.tag, message.relation, message.new, shape);
    case 'delete': {
      if (is(message.relation, shape.events)) {
        const id = (message.key ?? message.old)?.[shape.eventIdColumn];
        return typeof id === 'string' || typeof id === 'number' || typeof id === 'bigint'
          ? { kind: 'ignored', what: 'event-delete', eventId: String(id) }
          : { kind: 'ignored', what: 'event-delete' };
      }
      const id = (message.key ?? message.old)?.[shape.contentKey];
      return is(message.relation, shape.content) && (typeof id === 'string' || typeof id === 'number')
        ? { kind: 'content-delete', id: String(id) }
        : null;
    }
    case 'truncate':
      return decodeTruncate(message, shape);
    case 'message':
      // A non-transactional heartbeat is a position with nothing before it left to deliver:
      // treated like an empty commit, it lets the checkpoint confirm past WAL of other tables.
      // Its LSN is the end of the message record, where the next record starts.
      return !message.transactional && message.prefix === HEARTBEAT_PREFIX && message.messageLsn
        ? { kind: 'commit', ackLsn: message.messageLsn }
        : null;
    default:
      return null;
  }
}

/**
 * The changes one pgoutput message stands for: as decodePgoutput, except that an update of
 * the content table that changes its join key (`UPDATE content SET content_id = ...`; the old
 * key arrives when it is part of the replica identity) is the old key's delete followed by the
 * new key's row, so the old key stops enriching events as if it still existed.
 */
export function decodePgoutputChanges(
  message: Pgoutput.Message,
  shape: SourceShape = DEFAULT_SHAPE,
): Change[] {
  const change = decodePgoutput(message, shape);
  if (change === null) return [];
  if (message.tag !== 'update' || change.kind !== 'content-upsert') return [change];
  const old = (message.key ?? message.old)?.[shape.contentKey];
  if ((typeof old !== 'string' && typeof old !== 'number') || String(old) === change.content.id)
    return [change];
  return [{ kind: 'content-delete', id: String(old) }, change];
}

function is(relation: { schema: string; name: string }, table: TableName): boolean {
  return relation.name === table.name && relation.schema === table.schema;
}

function decodeTruncate(message: Pgoutput.MessageTruncate, shape: SourceShape): Change | null {
  const events = message.relations.some((r) => is(r, shape.events));
  const content = message.relations.some((r) => is(r, shape.content));
  if (events && message.restartIdentity) {
    return {
      kind: 'halt',
      error: new PipelineError(
        ErrorCodes.TRUNCATE_RESTART_IDENTITY,
        `${shape.events.name} was truncated with RESTART IDENTITY: new events would reuse event_ids that were already delivered, and every destination would drop them as duplicates; the pipeline stops before that point and confirms nothing past it`,
        'fatal',
        'the README section "TRUNCATE … RESTART IDENTITY" gives the four recovery steps (move the sequence past the delivered ids, renumber rows written since, advance the slot, backfill)',
      ),
    };
  }
  if (content) return { kind: 'content-truncate' };
  return events ? { kind: 'ignored', what: 'truncate' } : null;
}

function decodeRowChange(
  tag: 'insert' | 'update',
  relation: { schema: string; name: string },
  raw: Record<string, unknown>,
  shape: SourceShape,
): Change | null {
  const table = relation.name;
  if (is(relation, shape.events)) {
    if (tag === 'update') return { kind: 'ignored', what: 'event-update' };
    const row = decodeEventRow(raw, shape.eventIdColumn);
    return typeof row === 'string' ? { kind: 'bad-row', table, reason: row, raw } : { kind: 'event', row };
  }
  if (is(relation, shape.content)) {
    const content = decodeContentRow(raw, shape.contentKey);
    return typeof content === 'string'
      ? { kind: 'bad-row', table, reason: content, raw }
      : { kind: 'content-upsert', content };
  }
  return null;
}
