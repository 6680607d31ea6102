import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeJson } from '../../src/source/kafka/debezium-values.js';
import {
  jsonbSafe,
  textSafe,
  compactJson,
  jsonTextOf,
  JsonText,
  payloadJson,
  recordJson,
  toJsonText,
} from '../../src/domain/json-text.js';
import { intBetween, pick, prng, seeds } from '../helpers/prng.js';

/** A random JSON value: nested objects and arrays, strings with spaces, quotes, escapes and non-ASCII. */
function randomValue(random: () => number, depth = 0): unknown {
  const kind = depth > 3 ? intBetween(random, 0, 3) : intBetween(random, 0, 5);
  switch (kind) {
    case 0:
      return pick(random, [null, true, false, 0, -1.5, 1e21, 12.25, 2 ** 53 + 2]);
    case 1:
    case 2:
      return Array.from({ length: intBetween(random, 0, 6) }, () =>
        pick(random, [' ', '"', '\\', '\n', '\t', 'a', 'é', '😀', ':', ',', '{', ']', '\u0001']),
      ).join('');
    case 3:
      return intBetween(random, -1e6, 1e6);
    case 4:
      return Array.from({ length: intBetween(random, 0, 4) }, () => randomValue(random, depth + 1));
    default:
      return Object.fromEntries(
        Array.from({ length: intBetween(random, 0, 4) }, (_, i) => [
          `${pick(random, ['k', 'a b', 'q"', ' '])}${i}`,
          randomValue(random, depth + 1),
        ]),
      );
  }
}

/** JSON text with random whitespace between tokens: what a json column may hold. */
function spaced(random: () => number, value: unknown): string {
  const ws = () => pick(random, ['', '', ' ', '  ', '\n', '\t', '\r\n ']);
  if (value === null || typeof value !== 'object') return ws() + JSON.stringify(value) + ws();
  if (Array.isArray(value)) return `${ws()}[${value.map((v) => spaced(random, v)).join(',')}]${ws()}`;
  const members = Object.entries(value).map(
    ([k, v]) => `${ws()}${JSON.stringify(k)}${ws()}:${spaced(random, v)}`,
  );
  return `${ws()}{${members.join(',')}${members.length === 0 ? ws() : ''}}${ws()}`;
}

describe('JSON payloads kept as text', () => {
  for (const seed of seeds(10)) {
    it(`compactJson writes what JSON.stringify would, whatever the whitespace (seed ${seed})`, () => {
      const random = prng(seed);
      for (let n = 0; n < 300; n++) {
        const value = randomValue(random);
        const text = spaced(random, value);
        assert.equal(compactJson(text), JSON.stringify(value), text);
      }
    });
  }

  it("keeps numbers, escapes and key order exactly as written (Postgres's jsonb text)", () => {
    const pg = '{"f": 1.10, "big": 12345678901234567890, "s": "a \\" b\\\\", "e": 1e400, "u": "\\u00e9"}';
    assert.equal(
      compactJson(pg),
      '{"f":1.10,"big":12345678901234567890,"s":"a \\" b\\\\","e":1e400,"u":"\\u00e9"}',
    );
    assert.equal(compactJson('[1,2]'), '[1,2]');
    assert.equal(compactJson('"  "'), '"  "');
  });

  it('a JSON null is no payload; other values become JSON text', () => {
    assert.equal(jsonTextOf('null'), null);
    assert.equal(jsonTextOf(' null '), null);
    assert.equal(jsonTextOf('"null"')?.text, '"null"');
    assert.equal(toJsonText(null), null);
    assert.equal(toJsonText('a "b"')?.text, '"a \\"b\\""', 'a text column is a JSON string');
    assert.equal(toJsonText({ a: 1 })?.text, '{"a":1}');
    const kept = new JsonText('{"a":1.0}');
    assert.equal(toJsonText(kept), kept);
    assert.equal(payloadJson(kept), '{"a":1.0}');
    assert.equal(payloadJson(undefined), null);
    assert.equal(
      JSON.stringify({ p: kept }),
      '{"p":{"a":1}}',
      'a serializer that does not know it still writes JSON',
    );
  });

  it('recordJson: the exact payload, appended after the other fields', () => {
    const text = '{"n":12345678901234567890}';
    const json = recordJson({ event_id: 1, s: '"raw_payload":null', raw_payload: new JsonText(text) });
    assert.equal(json, `{"event_id":1,"s":"\\"raw_payload\\":null","raw_payload":${text}}`);
    assert.equal(recordJson({ raw_payload: null }), '{"raw_payload":null}');
    assert.equal(recordJson({ raw_payload: { a: 1 } }), '{"raw_payload":{"a":1}}');
    assert.equal(recordJson(['x']), '["x"]');
    assert.equal(recordJson(undefined), 'null');
  });
});

describe("Debezium's JSON values", () => {
  it('a jsonb value (schema io.debezium.data.Json) is its exact text; a text column stays a string', () => {
    const json = { type: 'string', name: 'io.debezium.data.Json' };
    assert.equal((decodeJson('{"n": 1.10}', json) as JsonText).text, '{"n":1.10}');
    assert.equal(decodeJson('null', json), null);
    assert.equal(decodeJson('42', { type: 'string' }), '42', 'text that looks like JSON is still text');
    assert.equal(decodeJson('not json', json), 'not json');
    assert.equal((decodeJson('[1, 2]', undefined) as JsonText).text, '[1,2]', 'schemaless: taken as JSON');
    assert.equal(decodeJson(null, json), null);
  });
});

describe('jsonbSafe / textSafe (a dead letter holding a NUL is still written)', () => {
  it('turns the JSON escape \\u0000 into text, leaves an escaped backslash before u0000 alone', () => {
    assert.equal(jsonbSafe(JSON.stringify({ a: 'x\u0000y' })), '{"a":"x\\\\u0000y"}');
    assert.deepEqual(JSON.parse(jsonbSafe(JSON.stringify({ a: 'x\u0000y' }))), { a: 'x\\u0000y' });
    const literal = JSON.stringify({ a: '\\u0000' }); // the six characters, already text
    assert.equal(jsonbSafe(literal), literal);
    assert.equal(jsonbSafe('{"a":"\\\\\\u0000"}'), '{"a":"\\\\\\\\u0000"}');
    assert.equal(jsonbSafe('{"a":1}'), '{"a":1}');
  });
  it('writes a NUL character in text as \\u0000', () => {
    assert.equal(textSafe("'\u0000' is not an integer"), "'\\u0000' is not an integer");
    assert.equal(textSafe('plain'), 'plain');
  });
});
