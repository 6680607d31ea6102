import type { DeadLetterEntry } from '../../src/state/dead-letter.js';

/** External dead letters for `ids`, each keyed by its id, all failed with `lastError`. */
export function externalDeadLetters(
  ids: readonly number[],
  lastError = '503 Service Unavailable',
): DeadLetterEntry[] {
  return ids.map((id) => ({
    sink: 'external',
    eventId: id,
    idempotencyKey: String(id),
    event: { event_id: id },
    lastError,
    attempts: 1,
  }));
}
