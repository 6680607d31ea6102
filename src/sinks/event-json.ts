import { DEFAULT_SHAPE, type KeyType, type KeyTypes } from '../domain/source-shape.js';
import type { EnrichedEvent } from '../domain/types.js';

/**
 * The enriched event as JSON for the destinations that receive documents (the external
 * system's payload, the enriched Kafka topic, Redis `content:last`): keys are typed as in the
 * source. Integer keys are JSON numbers when they are safe integers (a JSON number is a double
 * to most readers, so a bigint beyond 2^53 stays a string rather than arriving rounded);
 * UUID and text keys are strings. In memory every key is its text form, so with UUID keys the
 * document is the event itself, unchanged.
 */

/** A key's JSON value for its source type. */
export function keyJsonValue(value: string | null, type: KeyType): string | number | null {
  if (value === null || type === 'uuid' || type === 'text') return value;
  if (!/^-?(0|[1-9]\d*)$/.test(value)) return value; // not an integer's text: left as it came
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : value;
}

function isTextKeyed(keyTypes: KeyTypes): boolean {
  return (
    (keyTypes.content_id === 'uuid' || keyTypes.content_id === 'text') &&
    (keyTypes.user_id === 'uuid' || keyTypes.user_id === 'text')
  );
}

/** The document for one event (the event itself when every key is text). */
export function eventDocument(
  e: EnrichedEvent,
  keyTypes: KeyTypes = DEFAULT_SHAPE.keyTypes,
): EnrichedEvent | Record<string, unknown> {
  if (isTextKeyed(keyTypes)) return e;
  return {
    ...e,
    content_id: keyJsonValue(e.content_id, keyTypes.content_id),
    user_id: keyJsonValue(e.user_id, keyTypes.user_id),
  };
}

/** `JSON.stringify` of the event's document; key order is the event's. */
export function eventJson(e: EnrichedEvent, keyTypes: KeyTypes = DEFAULT_SHAPE.keyTypes): string {
  return JSON.stringify(eventDocument(e, keyTypes));
}
