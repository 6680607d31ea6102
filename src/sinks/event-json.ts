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

/** The event's JSON; key order is the event's. */
export function eventJson(e: EnrichedEvent, keyTypes: KeyTypes = DEFAULT_SHAPE.keyTypes): string {
  return enrichedEventJson(e, keyTypes) ?? documentJson(e, keyTypes);
}

/** EnrichedEvent's keys in the order enrichedEvent (domain/enrich.ts) gives every event it makes. */
const EVENT_KEYS: readonly (keyof EnrichedEvent)[] = [
  'event_id',
  'content_id',
  'user_id',
  'event_type',
  'event_ts',
  'duration_ms',
  'device',
  'raw_payload',
  'content_type',
  'length_seconds',
  'engagement_seconds',
  'engagement_pct',
  'committed_at',
  'processed_at',
];

/**
 * eventJson of an event with exactly EnrichedEvent's keys in that order, every value of a type
 * JSON.stringify writes as itself (string, number or null; the payload as payloadJson gives it):
 * every event the pipeline makes. Written member by member, each value as JSON.stringify writes
 * it, so the text is documentJson's. Without the intermediate document it costs 1.15 µs per
 * event instead of 1.5-1.9 (the external sink and content:last each write one per event), for
 * about a fifth more short-lived garbage (1,690 bytes instead of 1,386: a string per value and
 * the concatenation; joining an array of the parts made more).
 * null for any other event (a key more, less or elsewhere, a boolean or object value), which
 * documentJson writes.
 */
function enrichedEventJson(e: EnrichedEvent, keyTypes: KeyTypes): string | null {
  let i = 0;
  for (const key in e) if (key !== EVENT_KEYS[i++]) return null;
  if (i !== EVENT_KEYS.length) return null;
  const payload = payloadJson(e.raw_payload);
  if (payload === undefined) return null;
  const parts = [
    valueJson(e.event_id),
    valueJson(keyJsonValue(e.content_id, keyTypes.content_id)),
    valueJson(keyJsonValue(e.user_id, keyTypes.user_id)),
    valueJson(e.event_type),
    valueJson(e.event_ts),
    valueJson(e.duration_ms),
    valueJson(e.device),
    valueJson(e.content_type),
    valueJson(e.length_seconds),
    valueJson(e.engagement_seconds),
    valueJson(e.engagement_pct),
    valueJson(e.committed_at),
    valueJson(e.processed_at),
  ];
  for (let k = 0; k < parts.length; k++) if (parts[k] === undefined) return null;
  return (
    `{"event_id":${parts[0]},"content_id":${parts[1]},"user_id":${parts[2]},"event_type":${parts[3]},` +
    `"event_ts":${parts[4]},"duration_ms":${parts[5]},"device":${parts[6]},"raw_payload":${payload ?? 'null'},` +
    `"content_type":${parts[7]},"length_seconds":${parts[8]},"engagement_seconds":${parts[9]},` +
    `"engagement_pct":${parts[10]},"committed_at":${parts[11]},"processed_at":${parts[12]}}`
  );
}

/**
 * A string, number or null as JSON.stringify writes it (NaN and ±Infinity as null); undefined
 * for any other value.
 */
function valueJson(v: unknown): string | undefined {
  if (v === null) return 'null';
  if (typeof v === 'string') return stringJson(v);
  if (typeof v !== 'number') return undefined;
  return Number.isFinite(v) ? String(v) : 'null';
}

/**
 * JSON.stringify of a string. Most of an event's strings (timestamps, UUIDs, categories) need
 * no escape, and JSON.stringify escapes only `"`, `\`, the control characters and lone
 * surrogates: a string with none of those is itself between quotes (any surrogate, paired or
 * not, takes JSON.stringify's way). eventsJsonArray went from ~2.9 to ~2.1 µs per event
 * (bench/results/2026-12-03-s18-session.md).
 */
function stringJson(v: string): string {
  return NEEDS_ESCAPE.test(v) ? JSON.stringify(v) : `"${v}"`;
}

// eslint-disable-next-line no-control-regex -- the control characters are what JSON escapes
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * eventJson of any event: JSON.stringify of its document, then the payload's text is put in
 * place of the document's `"raw_payload":null`: that sequence can only be the key itself (a
 * quote inside a JSON string is escaped, and a string value is followed by `,` or `}`, never `:`).
 */
function documentJson(e: EnrichedEvent, keyTypes: KeyTypes): string {
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
  const parts = new Array<string>(events.length);
  for (let i = 0; i < events.length; i++) parts[i] = eventJson(events[i], keyTypes);
  return `[${parts.join(',')}]`;
}

const NULL_PAYLOAD = '"raw_payload":null';
