import { DEFAULT_SHAPE, type KeyType, type KeyTypes } from '../domain/source-shape.js';
import { payloadJson } from '../domain/json-text.js';
import type { EnrichedEvent } from '../domain/types.js';

/**
 * The enriched event as JSON for the destinations that receive documents (the external
 * system's payload, the enriched Kafka topic, Redis `content:last`): keys are typed as in the
 * source. Integer keys are JSON numbers when they are safe integers (a JSON number is a double
 * to most readers, so a bigint beyond 2^53 stays a string rather than arriving rounded);
 * UUID and text keys are strings. In memory every key is its text form. `raw_payload` is
 * written as its exact JSON text (domain/json-text.ts).
 */

/** Keys as their text, whatever the source's types (the form `GET /api/events` sends). */
export const TEXT_KEYS: KeyTypes = Object.freeze({ content_id: 'text', user_id: 'text' });

/** A key's JSON value for its source type. */
export function keyJsonValue(value: string | null, type: KeyType): string | number | null {
  if (value === null || type === 'uuid' || type === 'text') return value;
  if (!/^-?(0|[1-9]\d*)$/.test(value)) return value; // not an integer's text: left as it came
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : value;
}

/**
 * The document for one event, every key typed as in the source, with `raw_payload` NULL:
 * eventJson writes the payload's own text in its place (domain/json-text.ts).
 */
function eventDocument(
  e: EnrichedEvent,
  keyTypes: KeyTypes = DEFAULT_SHAPE.keyTypes,
): Record<string, unknown> {
  return {
    ...e,
    content_id: keyJsonValue(e.content_id, keyTypes.content_id),
    user_id: keyJsonValue(e.user_id, keyTypes.user_id),
    raw_payload: null,
  };
}

/**
 * The event's JSON; key order is the event's. The payload's text is put in place of the
 * document's `"raw_payload":null`: that sequence can only be the key itself (a quote inside
 * a JSON string is escaped, and a string value is followed by `,` or `}`, never `:`).
 */
export function eventJson(e: EnrichedEvent, keyTypes: KeyTypes = DEFAULT_SHAPE.keyTypes): string {
  const json = JSON.stringify(eventDocument(e, keyTypes));
  const payload = payloadJson(e.raw_payload);
  if (payload === null) return json;
  const at = json.indexOf(NULL_PAYLOAD) + NULL_PAYLOAD.length - 4;
  return `${json.slice(0, at)}${payload}${json.slice(at + 4)}`;
}

/** Several events' JSON as one array (the external system's batched body). */
export function eventsJsonArray(
  events: EnrichedEvent[],
  keyTypes: KeyTypes = DEFAULT_SHAPE.keyTypes,
): string {
  let out = '[';
  for (let i = 0; i < events.length; i++) out += (i === 0 ? '' : ',') + eventJson(events[i], keyTypes);
  return `${out}]`;
}

const NULL_PAYLOAD = '"raw_payload":null';
