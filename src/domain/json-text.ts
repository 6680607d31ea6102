/**
 * A JSON document kept as its text: how an event's `raw_payload` travels from the source to
 * every destination. Parsing it into JavaScript values would change it: Node 20 reads every
 * number as a double, so `12345678901234567890` became `12345678901234567000` and `1.10`
 * became `1.1` in every sink. Kept as text it is also cheaper: parsing the generator's payload
 * and writing it for three destinations costs about 7 µs, compacting it once about 1 µs
 * (bench/results/2026-12-02-payload-as-text.md).
 *
 * `text` is compact JSON (compactJson): whitespace outside strings removed, everything else
 * as the source wrote it (Postgres prints jsonb with a space after `:` and `,`).
 */
export class JsonText {
  constructor(readonly text: string) {}

  /**
   * For a serializer that does not know this class (JSON.stringify of a whole event): the
   * parsed value, which is exact except for numbers beyond a double. The sinks' own
   * serializers use `text` (payloadJson).
   */
  toJSON(): unknown {
    return JSON.parse(this.text);
  }
}

/** A payload as JSON text: JsonText's own text, or JSON.stringify of any other value; null stays null. */
export function payloadJson(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (value instanceof JsonText) return value.text;
  return JSON.stringify(value);
}

/**
 * JSON of a record whose `raw_payload` may be a JsonText (an event, a source row), exact: the
 * payload's text is appended as the last key, after JSON.stringify of the rest (key order
 * means nothing to a jsonb column, where these records are kept).
 */
export function recordJson(record: unknown): string {
  if (record === null || typeof record !== 'object' || !('raw_payload' in record)) {
    return JSON.stringify(record ?? null);
  }
  const { raw_payload: payload, ...rest } = record as Record<string, unknown>;
  return appendJsonMember(JSON.stringify(rest), 'raw_payload', payloadJson(payload) ?? 'null');
}

/** `objectJson` (JSON.stringify of an object) with one more member, last, whose value is already JSON text. */
export function appendJsonMember(objectJson: string, key: string, valueJson: string): string {
  const comma = objectJson.length > 2 ? ',' : '';
  return `${objectJson.slice(0, -1)}${comma}${JSON.stringify(key)}:${valueJson}}`;
}

/**
 * Any payload value as a JsonText (null stays null): a `json`/`jsonb` column's text arrives
 * as a JsonText already; a text column's string becomes a JSON string, other values their
 * JSON (what JSON.stringify made of them before, so each destination stores the same).
 */
export function toJsonText(value: unknown): JsonText | null {
  if (value === null || value === undefined) return null;
  if (value instanceof JsonText) return value;
  return new JsonText(JSON.stringify(value));
}

/**
 * A source's JSON text (valid JSON: a json/jsonb column, Debezium's Json) as the payload:
 * compacted; a JSON `null` is no payload, as it was when payloads were parsed (SQL NULL in
 * the analytics table).
 */
export function jsonTextOf(text: string): JsonText | null {
  return payloadOfCompact(compactJson(text));
}

/** Compact JSON text as the payload: a JSON `null` is no payload (see jsonTextOf). */
export function payloadOfCompact(compact: string): JsonText | null {
  return compact === 'null' ? null : new JsonText(compact);
}

/** Whether `text` is one JSON document (input from outside the pipeline is checked before it is kept as text). */
export function isJsonText(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * `text` (valid JSON) without the whitespace outside its strings: the form JSON.stringify
 * writes, so payloads stored before this class existed compare equal as text. Numbers,
 * escapes and key order are left exactly as written. The result is one flat string (built in
 * bytes, see compactJsonInto): a string glued from pieces costs more to keep and to write out.
 */
export function compactJson(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  const out = Buffer.allocUnsafe(bytes.length);
  const n = compactJsonInto(bytes, 0, bytes.length, out);
  return n === bytes.length ? text : out.toString('utf8', 0, n);
}

/**
 * Copies the JSON document in `src[start, end)` (UTF-8) into `out` from 0 without the
 * whitespace outside its strings; returns the bytes written (`out` needs end - start). Works
 * on bytes: every byte of a multi-byte UTF-8 character is >= 0x80, so none is mistaken for a
 * quote, a backslash or a space. One pass, no RegExp (a backtracking pattern over a large
 * document costs more than the scan).
 */
export function compactJsonInto(src: Uint8Array, start: number, end: number, out: Uint8Array): number {
  let j = 0;
  let i = start;
  while (i < end) {
    const c = src[i++];
    if (c === QUOTE) {
      out[j++] = c;
      while (i < end) {
        const d = src[i++];
        out[j++] = d;
        if (d === QUOTE) break;
        if (d === BACKSLASH && i < end) out[j++] = src[i++];
      }
    } else if (!isJsonSpace(c)) {
      out[j++] = c;
    }
  }
  return j;
}

const QUOTE = 34;
const BACKSLASH = 92;

/** JSON's four whitespace characters (RFC 8259, section 2). */
function isJsonSpace(c: number): boolean {
  return c === 32 || c === 10 || c === 13 || c === 9;
}

/**
 * JSON text as `jsonb` takes it: jsonb refuses the escape `\u0000` (22P05), which JSON.stringify
 * writes for a NUL and a source `json` column may hold. Each such escape becomes the six
 * characters `\u0000` as text (an escaped backslash), so the document is kept, visibly, instead
 * of a write that fails every time it is retried.
 */
export function jsonbSafe(json: string): string {
  if (!/\\u0000/i.test(json)) return json;
  return json.replace(/(?<!\\)((?:\\\\)*)\\u0000/gi, (_, backslashes: string) => `${backslashes}\\\\u0000`);
}

/** Text as a Postgres `text` column takes it: a NUL character (refused, 22021) written as `\u0000`. */
export function textSafe(text: string): string {
  return text.includes('\u0000') ? text.split('\u0000').join('\\u0000') : text;
}
