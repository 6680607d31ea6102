import type { Pgoutput } from 'pg-logical-replication';
import { microsToIso } from '../domain/timestamps.js';
import { ErrorCodes, PipelineError } from '../errors.js';
import type { Change } from './changes.js';
import { decodeContentRow, decodeEventRow } from './decode-rows.js';

export const EVENTS_TABLE = 'engagement_events';
export const CONTENT_TABLE = 'content';
/** Prefix of the pipeline's pg_logical_emit_message heartbeats. */
export const HEARTBEAT_PREFIX = 'engagement_pipeline.heartbeat';

/** Turns one pgoutput message into the pipeline's Change (null for messages it does not need). Pure. */
export function decodePgoutput(message: Pgoutput.Message): Change | null {
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
      return decodeRowChange(message.tag, message.relation.name, message.new);
    case 'delete': {
      if (message.relation.name === EVENTS_TABLE) return { kind: 'ignored', what: 'event-delete' };
      const id = (message.key ?? message.old)?.id;
      return message.relation.name === CONTENT_TABLE && typeof id === 'string'
        ? { kind: 'content-delete', id }
        : null;
    }
    case 'truncate':
      return decodeTruncate(message);
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

function decodeTruncate(message: Pgoutput.MessageTruncate): Change | null {
  const names = message.relations.map((r) => r.name);
  if (names.includes(EVENTS_TABLE) && message.restartIdentity) {
    return {
      kind: 'halt',
      error: new PipelineError(
        ErrorCodes.TRUNCATE_RESTART_IDENTITY,
        `${EVENTS_TABLE} was truncated with RESTART IDENTITY: new events would reuse event_ids that were already delivered, and every destination would drop them as duplicates; the pipeline stops before that point and confirms nothing past it`,
        'fatal',
        'the README section "TRUNCATE … RESTART IDENTITY" gives the four recovery steps (move the sequence past the delivered ids, renumber rows written since, advance the slot, backfill)',
      ),
    };
  }
  if (names.includes(CONTENT_TABLE)) return { kind: 'content-truncate' };
  return names.includes(EVENTS_TABLE) ? { kind: 'ignored', what: 'truncate' } : null;
}

function decodeRowChange(
  tag: 'insert' | 'update',
  table: string,
  raw: Record<string, unknown>,
): Change | null {
  if (table === EVENTS_TABLE) {
    if (tag === 'update') return { kind: 'ignored', what: 'event-update' };
    const row = decodeEventRow(raw);
    return typeof row === 'string' ? { kind: 'bad-row', table, reason: row, raw } : { kind: 'event', row };
  }
  if (table === CONTENT_TABLE) {
    const content = decodeContentRow(raw);
    return typeof content === 'string'
      ? { kind: 'bad-row', table, reason: content, raw }
      : { kind: 'content-upsert', content };
  }
  return null;
}
