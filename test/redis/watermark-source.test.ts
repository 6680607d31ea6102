import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { pino, type Logger } from 'pino';
import { eventPosition } from '../../src/domain/position.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { RedisSink } from '../../src/sinks/redis/redis-sink.js';
import { testRedis } from '../helpers/redis.js';

/**
 * The slot's watermark in Redis is tied to the Postgres cluster it came from. A Postgres
 * dump/restored into a new cluster (same SLOT_NAME, same Redis) restarts its LSNs below the
 * stored watermark while event ids go on: without the source's identity every batch would be
 * a silent no-op (and the fan-out would confirm it).
 */

const TS = new Date().toISOString().replace('Z', '000Z');

function events(content: string, ids: number[]): EnrichedEvent[] {
  return ids.map((id) => ({
    event_id: id,
    content_id: content,
    user_id: null,
    event_type: 'play',
    event_ts: TS,
    duration_ms: 1000,
    device: 'ios',
    raw_payload: null,
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: 1,
    engagement_pct: 0,
    committed_at: TS,
    processed_at: TS,
  }));
}

/** A batch of one transaction committed at `lsn`. */
function batch(stream: string, content: string, lsn: string, ids: number[]): Batch {
  return {
    seq: 1,
    stream,
    events: events(content, ids),
    positions: ids.map((_, i) => eventPosition(lsn, i)),
    ackLsn: null,
  };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

function captureLogger(): { logger: Logger; lines: { msg: string; level: number; stream?: string }[] } {
  const lines: { msg: string; level: number; stream?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

describe('Redis: the slot watermark carries its source identity', () => {
  const redis = testRedis();
  const sinks: RedisSink[] = [];
  after(async () => {
    await Promise.all(sinks.map((s) => s.stop()));
    await redis.cleanup();
  });

  /** A Kafka worker's sink: no positioned stream, it learns each batch's cluster (if any) from the batch. */
  async function workerSink(): Promise<RedisSink> {
    const sink = new RedisSink({ url: redis.url, prefix: redis.prefix, logger: pino({ level: 'silent' }) });
    sinks.push(sink);
    await sink.start();
    return sink;
  }

  async function sinkFor(stream: string, source: string, logger: Logger = pino({ level: 'silent' })) {
    const calls = { n: 0 };
    const sink = new RedisSink({
      url: redis.url,
      prefix: redis.prefix,
      logger,
      positionedStream: {
        stream,
        sourceId: async () => {
          calls.n += 1;
          return source;
        },
      },
    });
    sinks.push(sink);
    await sink.start();
    return { sink, calls };
  }
  const count = async (content: string) =>
    Number((await redis.client.get(`${redis.prefix}content:count:${content}`)) ?? 0);
  const watermark = (stream: string) => redis.client.get(`${redis.prefix}pipeline:watermark:${stream}`);

  it("a restored cluster's lower positions (new event ids) are applied over the old cluster's watermark", async () => {
    const content = '00000000-0000-4000-8000-0000000000a1';
    const a = await sinkFor('slot-a', 'postgres:111');
    await a.sink.write(batch('slot-a', content, '5/10000000', range(1_000, 1_009)));
    assert.equal(await count(content), 10);

    // The same slot name and Redis, Postgres restored into another cluster: its LSNs start low.
    const captured = captureLogger();
    const b = await sinkFor('slot-a', 'postgres:222', captured.logger);
    await b.sink.write(batch('slot-a', content, '0/2000000', range(1_010, 1_019)));
    assert.equal(await count(content), 20, "the new cluster's batch counted, not skipped");
    assert.equal(await watermark('slot-a'), `${eventPosition('0/2000000', 9)}|postgres:222`);
    await b.sink.write(batch('slot-a', content, '0/2000100', range(1_020, 1_024)));
    assert.equal(await count(content), 25);

    // Another source's watermark again (say an old instance still running): ignored, one warning per stream.
    await redis.client.set(
      `${redis.prefix}pipeline:watermark:slot-a`,
      `${eventPosition('5/20000000', 0)}|postgres:111`,
    );
    await b.sink.write(batch('slot-a', content, '0/2000200', range(1_025, 1_029)));
    assert.equal(await count(content), 30);
    const warnings = captured.lines.filter((l) => l.level === 40);
    assert.equal(warnings.length, 1, JSON.stringify(captured.lines));
    assert.equal(warnings[0].stream, 'slot-a');
    assert.match(warnings[0].msg, /another source \(postgres:111, now postgres:222/);
    assert.equal(b.calls.n, 1, 'the identity is read once');

    // Events the old cluster already counted (ids seen) still count once, whatever the watermark.
    await redis.client.set(
      `${redis.prefix}pipeline:watermark:slot-a`,
      `${eventPosition('5/20000000', 0)}|postgres:111`,
    );
    await b.sink.write(batch('slot-a', content, '0/3000000', range(1_000, 1_004)));
    assert.equal(await count(content), 30);

    // A stream without an identity (a Kafka partition) keeps a bare position.
    await b.sink.write(batch('kafka:t:0', content, '0/4000000', range(1_030, 1_031)));
    assert.equal(await watermark('kafka:t:0'), eventPosition('0/4000000', 1));
    assert.equal(await count(content), 32);
  });

  it("after the switch, the new source's watermark guards its replays (skipped below, trimmed when straddling)", async () => {
    const content = '00000000-0000-4000-8000-0000000000a2';
    const a = await sinkFor('slot-b', 'postgres:111');
    await a.sink.write(batch('slot-b', content, '5/10000000', range(2_000, 2_009)));
    const b = await sinkFor('slot-b', 'postgres:222');
    await b.sink.write(batch('slot-b', content, '0/2000000', range(2_010, 2_019)));
    assert.equal(await count(content), 20);
    // New event ids at or below the new source's watermark: a replay, skipped (the seen bits
    // could not tell, so only the watermark stops them).
    await b.sink.write(batch('slot-b', content, '0/1000000', range(2_100, 2_109)));
    await b.sink.write(batch('slot-b', content, '0/2000000', range(2_110, 2_119)));
    assert.equal(await count(content), 20, 'a replay of the same source is a no-op');
    // Straddling: positions 0..9 at 0/2000000 were applied, 10..14 are new.
    const straddle = batch('slot-b', content, '0/2000000', range(2_200, 2_214));
    await b.sink.write(straddle);
    assert.equal(await count(content), 25, 'only the part past the watermark counts');
    assert.equal(await watermark('slot-b'), `${eventPosition('0/2000000', 14)}|postgres:222`);
  });

  it("a Kafka partition's batches carrying their cluster (native capture's src) keep its watermark per cluster", async () => {
    const content = '00000000-0000-4000-8000-0000000000a4';
    const stream = 'kafka:engagement.events:3';
    // No positioned stream: a worker learns the cluster from the messages, batch by batch.
    const worker = await workerSink();
    const from = (source: string, lsn: string, ids: number[]): Batch => ({
      ...batch(stream, content, lsn, ids),
      sourceId: source,
    });
    await worker.write(from('postgres:111', '5/10000000', range(4_000, 4_009)));
    assert.equal(await watermark(stream), `${eventPosition('5/10000000', 9)}|postgres:111`);
    await worker.write(from('postgres:111', '5/10000000', range(4_010, 4_019)));
    assert.equal(
      await count(content),
      10,
      "a capture's re-sent copies (same cluster, same positions): no-ops",
    );
    // Postgres moved under the running capture: the new cluster's LSNs restart lower.
    await worker.write(from('postgres:222', '0/2000000', range(4_020, 4_029)));
    assert.equal(await count(content), 20, "the new cluster's events counted, not taken for replays");
    assert.equal(await watermark(stream), `${eventPosition('0/2000000', 9)}|postgres:222`);
    await worker.write(from('postgres:222', '0/2000000', range(4_030, 4_039)));
    assert.equal(await count(content), 20, 'and its own copies are still no-ops');
  });

  it('a watermark of an older version (a bare position) counts as the current source: replays still skipped', async () => {
    const content = '00000000-0000-4000-8000-0000000000a3';
    const key = `${redis.prefix}pipeline:watermark:slot-c`;
    const old = await sinkFor('slot-c', 'postgres:111');
    // What the previous version stored: the bare position of its last batch.
    await redis.client.set(key, eventPosition('5/10000000', 9));
    await old.sink.write(batch('slot-c', content, '5/10000000', range(3_000, 3_009)));
    await old.sink.write(batch('slot-c', content, '4/0', range(3_010, 3_019)));
    assert.equal(await count(content), 0, 'at or below the old-format watermark: skipped');
    assert.equal(await redis.client.get(key), eventPosition('5/10000000', 9), 'untouched by a replay');
    await old.sink.write(batch('slot-c', content, '5/10000100', range(3_020, 3_024)));
    assert.equal(await count(content), 5);
    assert.equal(
      await redis.client.get(key),
      `${eventPosition('5/10000100', 4)}|postgres:111`,
      'rewritten with the identity',
    );
    await old.sink.write(batch('slot-c', content, '5/10000100', range(3_030, 3_034)));
    assert.equal(await count(content), 5, 'and replays of the same source are still skipped');
    assert.equal(old.sink.stateLosses, 0);
  });

  it('a Kafka partition without a known cluster (Debezium): events below the watermark count once, by their seen bits', async () => {
    const content = '00000000-0000-4000-8000-0000000000a5';
    const stream = 'kafka:dbz.public.engagement_events:0';
    const worker = await workerSink();
    await worker.write(batch(stream, content, '5/10000000', range(5_000, 5_009)));
    assert.equal(await count(content), 10);
    await worker.write(batch(stream, content, '5/10000000', range(5_000, 5_009)));
    assert.equal(await count(content), 10, "a connector's re-sent copies: no-ops");
    // The connector now reads another cluster (dump/restore, a blue/green switch): LSNs restart
    // lower, event ids go on. Debezium's records do not say which cluster they come from.
    await worker.write(batch(stream, content, '0/2000000', range(5_010, 5_019)));
    assert.equal(await count(content), 20, "the new cluster's events counted, not taken for replays");
    assert.equal(await watermark(stream), eventPosition('5/10000000', 9), 'the watermark never moves back');
    await worker.write(batch(stream, content, '0/2000000', range(5_010, 5_019)));
    await worker.write(batch(stream, content, '4/0', range(5_005, 5_014)));
    assert.equal(await count(content), 20, 'and their copies, in any split, are still no-ops');
  });
});
