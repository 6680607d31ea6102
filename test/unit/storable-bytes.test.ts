import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { storableBytes } from '../../src/pipeline/worker.js';

// A malformed Kafka message's bytes go into a jsonb dead-letter row: jsonb refuses NUL, and a
// row that cannot be written held every partition of the worker for good.
describe('storableBytes (a malformed message as its dead letter keeps it)', () => {
  it('keeps UTF-8 text as text, absent bytes as null', () => {
    assert.deepEqual(storableBytes('value', Buffer.from('{"a":"é"}')), { value: '{"a":"é"}' });
    assert.deepEqual(storableBytes('key', null), { key: null });
  });

  it('keeps a NUL, invalid UTF-8 or U+FFFD exactly, as base64', () => {
    for (const bytes of [
      Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80]),
      Buffer.from('a\u0000b'),
      Buffer.from([0xc3]),
      Buffer.from('\uFFFD'),
    ]) {
      const stored = storableBytes('value', bytes);
      assert.deepEqual(Object.keys(stored), ['valueBase64']);
      assert.deepEqual(Buffer.from(stored.valueBase64!, 'base64'), bytes);
      assert.ok(!JSON.stringify(stored).includes('\\u0000'));
    }
  });
});
