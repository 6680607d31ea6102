import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JsonText } from '../../src/domain/json-text.js';
import { eventPosition } from '../../src/domain/position.js';
import type { EngagementEventRow } from '../../src/domain/types.js';
import { decodeNativeEvent, encodeEvent } from '../../src/source/kafka/native-format.js';

const ROW_PAYLOAD = '{"f":1.10,"big":12345678901234567890}';
const ROW: EngagementEventRow = {
  id: 7,
  content_id: '00000000-0000-4000-8000-000000000001',
  user_id: null,
  event_type: 'play',
  event_ts: '2026-12-01T10:11:12.345678Z',
  duration_ms: 1500,
  device: 'ios',
  raw_payload: new JsonText(ROW_PAYLOAD),
};

function decoded(value: string) {
  const record = decodeNativeEvent(Buffer.from(value));
  assert.equal(record.kind, 'event', JSON.stringify(record));
  return record as Extract<typeof record, { kind: 'event' }>;
}

describe('the native Kafka format carries the payload exactly', () => {
  it('capture -> worker: the exact text, and the parsed value beside it for earlier workers', () => {
    const wire = encodeEvent(ROW, '0/16B3748', 2, '2026-12-01T10:11:12.400000Z');
    const message = JSON.parse(wire) as { v: number; row: Record<string, unknown> };
    assert.equal(message.v, 1);
    assert.equal(message.row.raw_payload_json, ROW_PAYLOAD);
    assert.deepEqual(message.row.raw_payload, JSON.parse(ROW_PAYLOAD));
    const record = decoded(wire);
    assert.deepEqual(record.row, ROW);
    assert.ok(!('raw_payload_json' in record.row));
  });

  it("names the captured cluster (src), read back as the record's source; absent from earlier captures", () => {
    const record = decoded(encodeEvent(ROW, '0/16B3748', 2, '2026-12-01T10:11:12.400000Z', 'postgres:7401'));
    assert.equal(record.source, 'postgres:7401');
    assert.equal(record.position, eventPosition('0/16B3748', 2));
    const earlier = decoded(encodeEvent(ROW, '0/16B3748', 2, '2026-12-01T10:11:12.400000Z'));
    assert.equal(earlier.source, undefined);
    assert.ok(!('source' in earlier));
  });

  it('a message of an earlier capture (no text field) is read from the parsed value; NULL stays NULL', () => {
    const old = JSON.stringify({
      v: 1,
      lsn: '0/1',
      idx: 0,
      committed_at: '2026-12-01T10:11:12.400000Z',
      row: { ...ROW, raw_payload: { a: 1 } },
    });
    assert.equal((decoded(old).row.raw_payload as JsonText).text, '{"a":1}');
    const none = encodeEvent({ ...ROW, raw_payload: null }, '0/1', 0, '2026-12-01T10:11:12.400000Z');
    assert.equal(decoded(none).row.raw_payload, null);
  });

  it('a text field that is not JSON is a bad message, never a broken payload downstream', () => {
    const bad = encodeEvent(ROW, '0/1', 0, '2026-12-01T10:11:12.400000Z').replace(
      '"raw_payload_json":"{',
      '"raw_payload_json":"{{',
    );
    const record = decodeNativeEvent(Buffer.from(bad));
    assert.equal(record.kind, 'bad');
  });

  it('a timestamp that does not exist is a bad message; other spellings are made canonical', () => {
    const at = (ts: string) => encodeEvent({ ...ROW, event_ts: ts }, '0/1', 0, '2026-12-01T10:11:12.4Z');
    assert.equal(decodeNativeEvent(Buffer.from(at('2026-02-30T00:00:00.000000Z'))).kind, 'bad');
    const record = decoded(at('2026-12-01 10:11:12.5+00'));
    assert.equal(record.row.event_ts, '2026-12-01T10:11:12.500000Z');
    assert.equal(record.committedAt, '2026-12-01T10:11:12.400000Z');
  });
});
