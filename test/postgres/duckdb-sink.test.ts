import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { JsonText } from '../../src/domain/json-text.js';
import { eventPosition, offsetPosition } from '../../src/domain/position.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { silentLogger } from '../../src/logger.js';
import { DuckDbSink, RowConversionError } from '../../src/sinks/analytics/duckdb-sink.js';
import { duckdbQuery } from '../helpers/duckdb.js';

const TS = '2026-11-23T10:00:00.123456Z';

function event(id: number, patch: Partial<EnrichedEvent> = {}): EnrichedEvent {
  return {
    event_id: id,
    content_id: '00000000-0000-4000-8000-00000000000a',
    user_id: null,
    event_type: 'play',
    event_ts: TS,
    duration_ms: 1500,
    device: 'ios',
    raw_payload: null,
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: 1.5,
    engagement_pct: 0.01,
    committed_at: TS,
    processed_at: TS,
    ...patch,
  };
}

let seq = 0;
/** Events `ids` of `stream`, positioned as one source transaction per 10 events (`lsnBase` shifts them). */
function batch(stream: string, ids: number[], lsnBase = 0x1000): Batch {
  return {
    seq: ++seq,
    stream,
    events: ids.map((id) => event(id)),
    positions: ids.map((id) => eventPosition(`0/${(lsnBase + Math.floor(id / 10)).toString(16)}`, id % 10)),
    ackLsn: null,
  };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

function fileIn(): string {
  return path.join(mkdtempSync(path.join(tmpdir(), 'ep-duckdb-sink-')), 'a.duckdb');
}

function sinkFor(file: string, positioned?: { stream: string; sourceId: string }): DuckDbSink {
  return new DuckDbSink({
    path: file,
    logger: silentLogger(),
    positionedStream: positioned && { stream: positioned.stream, sourceId: async () => positioned.sourceId },
  });
}

async function counts(file: string): Promise<{ n: number; d: number }> {
  const [r] = await duckdbQuery(
    file,
    'SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM engagement.events_enriched',
  );
  return { n: Number(r.n), d: Number(r.d) };
}

describe('DuckDB sink', () => {
  it('stores every value exactly (microseconds, decimals, JSON, UUIDs, NULLs)', async () => {
    const file = fileIn();
    const sink = sinkFor(file);
    await sink.start();
    await sink.write({
      ...batch('s', [1, 2]),
      events: [
        event(1, {
          user_id: 'ffffffff-0000-4000-8000-00000000000b',
          event_ts: '1969-12-31T23:59:59.500001Z',
          duration_ms: -5,
          engagement_seconds: 123456789.123,
          engagement_pct: -0.07,
          raw_payload: { a: [1, 'ü'], q: 'x"y' },
        }),
        event(2, {
          content_id: null,
          event_type: null,
          device: null,
          duration_ms: null,
          length_seconds: null,
          engagement_seconds: null,
          engagement_pct: null,
        }),
      ],
    });
    await sink.stop();
    const rows = await duckdbQuery(
      file,
      `SELECT event_id, content_id::VARCHAR AS c, user_id::VARCHAR AS u, strftime(event_ts AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ') AS ts,
              duration_ms AS d, engagement_seconds::VARCHAR AS s, engagement_pct::VARCHAR AS p, raw_payload::VARCHAR AS j,
              strftime(committed_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ') AS ca
       FROM engagement.events_enriched ORDER BY event_id`,
    );
    assert.deepEqual(rows, [
      {
        event_id: '1',
        c: '00000000-0000-4000-8000-00000000000a',
        u: 'ffffffff-0000-4000-8000-00000000000b',
        ts: '1969-12-31T23:59:59.500001Z',
        d: -5,
        s: '123456789.123',
        p: '-0.07',
        j: '{"a":[1,"ü"],"q":"x\\"y"}',
        ca: TS,
      },
      { event_id: '2', c: null, u: null, ts: TS, d: null, s: null, p: null, j: null, ca: TS },
    ]);
  });

  it('stores payloads as sent: JSON text exactly, any other value as its JSON', async () => {
    // A payload shaped like a JsonText ({text}) stays an object.
    const file = fileIn();
    const sink = sinkFor(file);
    await sink.start();
    await sink.write({
      ...batch('s', [1, 2, 3, 4]),
      events: [
        event(1, { raw_payload: new JsonText('{"big":12345678901234567890,"f":1.10}') }),
        event(2, { raw_payload: { text: '{"a":1}' } }),
        event(3, { raw_payload: 'plain' }),
        event(4, { raw_payload: new JsonText('[1,2]') }),
      ],
    });
    await sink.stop();
    const rows = await duckdbQuery(
      file,
      'SELECT event_id, raw_payload::VARCHAR AS j FROM engagement.events_enriched ORDER BY event_id',
    );
    assert.deepEqual(
      rows.map((r) => r.j),
      ['{"big":12345678901234567890,"f":1.10}', '{"text":"{\\"a\\":1}"}', '"plain"', '[1,2]'],
    );
  });

  it('refuses a value it cannot store by naming it, stores nothing of that batch, and goes on', async () => {
    const file = fileIn();
    const sink = sinkFor(file, { stream: 's', sourceId: 'one' });
    await sink.start();
    await sink.write(batch('s', range(1, 10)));
    const bad = batch('s', range(11, 20));
    bad.events[4] = event(15, { content_id: 'not-a-uuid' });
    await assert.rejects(sink.write(bad), (err: unknown) => {
      assert.ok(err instanceof RowConversionError);
      assert.equal(err.transient, false);
      assert.equal(err.eventId, 15);
      assert.match(err.message, /event 15: content_id = "not-a-uuid"/);
      return true;
    });
    const tooBig = batch('s', range(11, 20));
    tooBig.events[0] = event(11, { engagement_pct: 1e11 });
    await assert.rejects(sink.write(tooBig), /event 11: engagement_pct = 100000000000/);
    await sink.write(batch('s', range(11, 20)));
    await sink.stop();
    assert.deepEqual(await counts(file), { n: 20, d: 20 });
  });

  it('never skips by a position recorded for another source (a rebuilt cluster restarts its LSNs)', async () => {
    const file = fileIn();
    let sink = sinkFor(file, { stream: 'slot', sourceId: 'cluster-a' });
    await sink.start();
    await sink.write(batch('slot', range(1, 50), 0x9000));
    await sink.stop();
    sink = sinkFor(file, { stream: 'slot', sourceId: 'cluster-b' });
    await sink.start();
    // Lower LSNs than cluster A's, new events and a few already stored.
    await sink.write(batch('slot', range(45, 80), 0x1000));
    await sink.write(batch('slot', range(81, 90), 0x1000));
    await sink.stop();
    assert.deepEqual(await counts(file), { n: 90, d: 90 });
  });

  it('keeps one row per event_id across backfill, Kafka offsets and the stream', async () => {
    const file = fileIn();
    const sink = sinkFor(file, { stream: 'slot', sourceId: 'cluster' });
    await sink.start();
    await sink.write(batch('backfill', range(1, 100)));
    // The stream delivers some of the same events (ids at or below what the backfill wrote).
    await sink.write(batch('slot', range(1, 10)));
    await sink.write(batch('slot', range(50, 150)));
    // A Kafka partition: a re-published copy arrives at a NEW offset, so offsets cannot dedupe.
    const kafka = (ids: number[], firstOffset: number): Batch => ({
      ...batch('kafka:t:0', ids),
      positions: ids.map((_, i) => offsetPosition(String(firstOffset + i))),
    });
    await sink.write(kafka(range(140, 170), 0));
    await sink.write(kafka([...range(160, 175), 171, 172], 31));
    await sink.write(batch('backfill', range(1, 200)));
    // Ids far apart in one batch (read per run of close ids, not across the whole gap).
    await sink.write(kafka([3, 1_000_000, 2_000_000, 150], 60));
    await sink.write(kafka([2_000_000, 4, 1_000_000], 64));
    await sink.stop();
    assert.deepEqual(await counts(file), { n: 202, d: 202 });
  });

  it('redoes a batch with the event_id check when the position-only path meets a stored row', async () => {
    const file = fileIn();
    let sink = sinkFor(file, { stream: 'old-slot', sourceId: 'cluster' });
    await sink.start();
    await sink.write(batch('old-slot', range(1, 30)));
    await sink.stop();
    // SLOT_NAME changed: the new slot's first batch is checked by id, later ones by position
    // only, and one of those overlaps what the old slot wrote.
    sink = sinkFor(file, { stream: 'new-slot', sourceId: 'cluster' });
    await sink.start();
    await sink.write(batch('new-slot', range(31, 35)));
    await sink.write(batch('new-slot', range(36, 40)));
    await sink.write({ ...batch('new-slot', range(20, 50), 0x2000) });
    await sink.write(batch('new-slot', range(51, 60), 0x3000));
    await sink.stop();
    assert.deepEqual(await counts(file), { n: 60, d: 60 });
  });
});
