import { DEFAULT_SHAPE, type KeyType, type KeyTypes } from '../domain/source-shape.js';
import { payloadJson } from '../domain/json-text.js';
import type { EnrichedEvent } from '../domain/types.js';
import { JsonWriter } from './json-writer.js';

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
  writeEvent(scratch.reset(), e, keyTypes);
  return scratch.text();
}

/** eventJson as UTF-8 bytes (the external system's body for one event). */
export function eventJsonBytes(e: EnrichedEvent, keyTypes: KeyTypes = DEFAULT_SHAPE.keyTypes): Buffer {
  writeEvent(scratch.reset(), e, keyTypes);
  return scratch.bytes();
}

/** Several events' JSON as one array, as UTF-8 bytes (the external system's batched body). */
export function eventsJsonBytes(
  events: readonly EnrichedEvent[],
  keyTypes: KeyTypes = DEFAULT_SHAPE.keyTypes,
): Buffer {
  const w = scratch.reset();
  w.raw('[');
  for (let i = 0; i < events.length; i++) {
    if (i > 0) w.raw(',');
    writeEvent(w, events[i], keyTypes);
  }
  w.raw(']');
  return w.bytes();
}

/** One writer for every document: each is written whole, then copied out, before the next. */
const scratch = new JsonWriter();

function writeEvent(w: JsonWriter, e: EnrichedEvent, keyTypes: KeyTypes): void {
  const start = w.length;
  if (writeEnrichedEvent(w, e, keyTypes)) return;
  w.truncate(start);
  w.raw(documentJson(e, keyTypes));
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
 * The JSON of an event with exactly EnrichedEvent's keys in that order, every value of a type
 * JSON.stringify writes as itself (string, number or null; the payload as payloadJson gives it):
 * every event the pipeline makes. Written member by member, each value as JSON.stringify writes
 * it, so the text is documentJson's. Returns false, having written nothing that stays, for any
 * other event (a key more, less or elsewhere, a boolean or object value): documentJson writes it.
 */
function writeEnrichedEvent(w: JsonWriter, e: EnrichedEvent, keyTypes: KeyTypes): boolean {
  let i = 0;
  for (const key in e) if (key !== EVENT_KEYS[i++]) return false;
  if (i !== EVENT_KEYS.length) return false;
  const payload = payloadJson(e.raw_payload);
  if (payload === undefined) return false;
  const ok =
    member(w, '{"event_id":', e.event_id) &&
    member(w, ',"content_id":', keyJsonValue(e.content_id, keyTypes.content_id)) &&
    member(w, ',"user_id":', keyJsonValue(e.user_id, keyTypes.user_id)) &&
    member(w, ',"event_type":', e.event_type) &&
    member(w, ',"event_ts":', e.event_ts) &&
    member(w, ',"duration_ms":', e.duration_ms) &&
    member(w, ',"device":', e.device);
  if (!ok) return false;
  w.raw(',"raw_payload":');
  w.raw(payload ?? 'null');
  return (
    member(w, ',"content_type":', e.content_type) &&
    member(w, ',"length_seconds":', e.length_seconds) &&
    member(w, ',"engagement_seconds":', e.engagement_seconds) &&
    member(w, ',"engagement_pct":', e.engagement_pct) &&
    member(w, ',"committed_at":', e.committed_at) &&
    member(w, ',"processed_at":', e.processed_at) &&
    (w.raw('}'), true)
  );
}

function member(w: JsonWriter, key: string, value: unknown): boolean {
  w.raw(key);
  return w.value(value);
}

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

const NULL_PAYLOAD = '"raw_payload":null';
