import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Pgoutput } from 'pg-logical-replication';
import { DEFAULT_SHAPE, type SourceShape } from '../../src/domain/source-shape.js';
import { decodeContentRow, decodeEventRow } from '../../src/source/decode-rows.js';
import { decodePgoutput } from '../../src/source/pgoutput-decoder.js';

const MEDIA: SourceShape = {
  events: { schema: 'media', name: 'plays' },
  content: { schema: 'media', name: 'catalog' },
  eventIdColumn: 'play_id',
  contentKey: 'content_id',
  keyTypes: { content_id: 'bigint', user_id: 'bigint' },
};

const relation = (schema: string, name: string) => ({ schema, name }) as unknown as Pgoutput.MessageRelation;
const insert = (schema: string, name: string, row: Record<string, unknown>) =>
  ({ tag: 'insert', relation: relation(schema, name), new: row }) as unknown as Pgoutput.Message;

describe('source shape: decoding the user tables', () => {
  it('takes the event id from the shape and keys of any accepted type as text', () => {
    const row = decodeEventRow(
      {
        play_id: '41',
        content_id: 1,
        user_id: '777',
        event_ts: '2026-11-02 10:15:30.5+00',
        duration_ms: 7000,
      },
      'play_id',
    );
    assert.deepEqual(row, {
      id: 41,
      content_id: '1',
      user_id: '777',
      event_type: null,
      event_ts: '2026-11-02T10:15:30.500000Z',
      duration_ms: 7000,
      device: null,
      raw_payload: null,
    });
    assert.match(String(decodeEventRow({ id: 1, event_ts: 'x' }, 'play_id')), /play_id undefined/);
    assert.equal(
      (
        decodeEventRow({ id: 1, event_ts: '2026-11-02 10:15:30+00', duration_ms: '8000' }) as {
          duration_ms: number;
        }
      ).duration_ms,
      8000,
    );
  });

  it('maps the content key column to the dimension id; an int8 length as text is an integer', () => {
    assert.deepEqual(
      decodeContentRow({ content_id: '1', content_type: 'article', length_seconds: '350' }, 'content_id'),
      {
        id: '1',
        content_type: 'article',
        length_seconds: 350,
      },
    );
    assert.equal(decodeContentRow({ id: 'x' }, 'content_id'), 'content.content_id is missing');
  });

  it('recognises tables by schema and name: the same name in another schema is not ours', () => {
    const row = { play_id: '5', content_id: '1', event_ts: '2026-11-02 10:15:30+00', duration_ms: 1 };
    assert.equal(decodePgoutput(insert('media', 'plays', row), MEDIA)?.kind, 'event');
    assert.equal(decodePgoutput(insert('public', 'plays', row), MEDIA), null);
    assert.equal(decodePgoutput(insert('media', 'plays', row), DEFAULT_SHAPE), null);
    const upsert = decodePgoutput(
      insert('media', 'catalog', { content_id: 1, content_type: 'article', length_seconds: 350 }),
      MEDIA,
    );
    assert.deepEqual(upsert, {
      kind: 'content-upsert',
      content: { id: '1', content_type: 'article', length_seconds: 350 },
    });
    const del = {
      tag: 'delete',
      relation: relation('media', 'catalog'),
      key: { content_id: 1 },
      old: null,
    } as unknown as Pgoutput.Message;
    assert.deepEqual(decodePgoutput(del, MEDIA), { kind: 'content-delete', id: '1' });
    const truncate = {
      tag: 'truncate',
      relations: [relation('media', 'plays')],
      restartIdentity: true,
    } as unknown as Pgoutput.Message;
    const halt = decodePgoutput(truncate, MEDIA);
    assert.equal(halt?.kind, 'halt');
  });
});
