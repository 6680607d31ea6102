import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import type { Kafka, Message, Producer, ProducerRecord, RecordMetadata } from 'kafkajs';
import pino from 'pino';
import type pg from 'pg';
import { JsonText } from '../../src/domain/json-text.js';
import { EVENTS_TOPIC } from '../../src/kafka/client.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { KafkaCapture } from '../../src/pipeline/capture.js';
import { policyFor } from '../../src/retry/error-policy.js';
import type { Change } from '../../src/source/changes.js';
import { encodeEvent } from '../../src/source/kafka/native-format.js';
import {
  batchBytes,
  DEFAULT_MAX_MESSAGE_BYTES,
  fittingCount,
  recordBytes,
} from '../../src/sinks/kafka/record-size.js';
import { MessageTooLarge, ResilientProducer } from '../../src/sinks/kafka/resilient-producer.js';

// kafkajs's own encoder and errors: what the broker receives, and what it answers with.
const require = createRequire(import.meta.url);
const Record = require('kafkajs/src/protocol/recordBatch/record/v0') as (m: object) => unknown;
const { RecordBatch } = require('kafkajs/src/protocol/recordBatch/v0') as {
  RecordBatch: (o: object) => Promise<{ buffer: Buffer }>;
};
const { createErrorFromCode } = require('kafkajs/src/protocol/error') as {
  createErrorFromCode: (code: number) => Error;
};
const { KafkaJSProtocolError, KafkaJSNonRetriableError } = require('kafkajs/src/errors') as {
  KafkaJSProtocolError: new (e: Error) => Error;
  KafkaJSNonRetriableError: new (e: Error, o: { cause: Error }) => Error;
};

/** The record batch kafkajs sends for `messages` (one partition), as the broker measures it. */
async function encodedSize(messages: Message[]): Promise<number> {
  const now = Date.now();
  const records = messages.map((m, i) => Record({ ...m, offsetDelta: i, timestampDelta: 0 }));
  const batch = await RecordBatch({ records, firstTimestamp: now, maxTimestamp: now, lastOffsetDelta: 0 });
  return batch.buffer.length;
}

/** kafkajs's rejection of a batch over the limit, as producer.send throws it. */
function tooLargeError(): Error {
  const protocol = new KafkaJSProtocolError(createErrorFromCode(10));
  return new KafkaJSNonRetriableError(protocol, { cause: protocol });
}

const event = (id: number, pad = 200): Message => ({
  key: '00000000-0000-4000-8000-000000000001',
  value: encodeEvent(
    {
      id,
      content_id: '00000000-0000-4000-8000-000000000001',
      user_id: '00000000-0000-4000-8000-00000000000a',
      event_type: 'play',
      event_ts: '2026-12-01T10:11:12.345678Z',
      duration_ms: 1500,
      device: 'web-chrome',
      raw_payload: new JsonText(JSON.stringify({ n: id, pad: 'p'.repeat(pad) })),
    },
    '0/16B3748',
    id,
    '2026-12-01T10:11:12.400000Z',
  ),
});
const idOf = (m: Message) => (JSON.parse(String(m.value)) as { row: { id: number } }).row.id;

function logCapture() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  return { logger, lines };
}

/**
 * A broker of one topic: refuses a batch larger than `limit` (measured with kafkajs's encoder) as
 * MESSAGE_TOO_LARGE; `configured` is what DescribeConfigs answers (an Error: not allowed).
 */
class FakeBroker {
  readonly sends: { partition: number; ids: number[]; bytes: number }[] = [];
  producers = 0;
  private readonly ends = new Map<number, number>();

  constructor(
    private readonly limit: number,
    private readonly partitions = 1,
    private readonly configured: number | Error = limit,
  ) {}

  kafka(): Kafka {
    const admin = {
      connect: async () => undefined,
      disconnect: async () => undefined,
      fetchTopicMetadata: async ({ topics }: { topics: string[] }) => ({
        topics: [
          {
            name: topics[0],
            partitions: Array.from({ length: this.partitions }, (_, partitionId) => ({ partitionId })),
          },
        ],
      }),
      describeConfigs: async () => {
        if (this.configured instanceof Error) throw this.configured;
        return {
          resources: [
            { configEntries: [{ configName: 'max.message.bytes', configValue: String(this.configured) }] },
          ],
        };
      },
    };
    return { admin: () => admin } as unknown as Kafka;
  }

  producer(): Producer {
    this.producers += 1;
    return {
      connect: async () => undefined,
      disconnect: async () => undefined,
      send: async (record: ProducerRecord): Promise<RecordMetadata[]> => {
        const partition = record.messages[0].partition!;
        assert.ok(
          record.messages.every((m) => m.partition === partition),
          'one partition per send',
        );
        const bytes = await encodedSize(record.messages);
        if (bytes > this.limit) throw tooLargeError();
        this.sends.push({ partition, ids: record.messages.map(idOf), bytes });
        const base = this.ends.get(partition) ?? 0;
        this.ends.set(partition, base + record.messages.length);
        return [{ topicName: record.topic, partition, errorCode: 0, baseOffset: String(base) }];
      },
    } as unknown as Producer;
  }

  producerFor(logger = logCapture().logger): ResilientProducer {
    return new ResilientProducer(this.kafka(), () => this.producer(), logger);
  }

  /** Ids sent to `partition`, in order. */
  sent(partition = 0): number[] {
    return this.sends.filter((s) => s.partition === partition).flatMap((s) => s.ids);
  }
}

const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('record batch size estimate', () => {
  it('is never below what kafkajs encodes, and close to it', async () => {
    const shapes: Message[][] = [
      [event(1)],
      ids(1, 500).map((id) => event(id)),
      [{ key: null, value: null }],
      [{ key: Buffer.from('k'), value: Buffer.alloc(70_000, 1) }],
      [
        {
          key: 'clé',
          value: 'ü'.repeat(1000),
          headers: { 'engagement-position': '0000000000000001', h: ['a', 'b'] },
        },
      ],
    ];
    for (const messages of shapes) {
      const actual = await encodedSize(messages);
      const estimate = batchBytes(messages);
      assert.ok(estimate >= actual, `estimate ${estimate} >= encoded ${actual}`);
      assert.ok(estimate - actual <= 64 * messages.length, `estimate ${estimate} close to ${actual}`);
    }
  });

  it('splits 2000 messages of ~770 B into runs under the limit; a message over it goes alone', () => {
    const messages = ids(1, 2000).map((id) => event(id));
    assert.ok(recordBytes(messages[0]) > 750 && recordBytes(messages[0]) < 850);
    const first = fittingCount(messages, 0, DEFAULT_MAX_MESSAGE_BYTES);
    assert.ok(first > 1000 && first < 2000, `${first}`);
    assert.ok(batchBytes(messages.slice(0, first)) <= DEFAULT_MAX_MESSAGE_BYTES);
    assert.ok(batchBytes(messages.slice(0, first + 1)) > DEFAULT_MAX_MESSAGE_BYTES);
    assert.equal(fittingCount(messages, first, DEFAULT_MAX_MESSAGE_BYTES), 2000 - first);

    const huge = [event(1), event(2, 2_000_000), event(3)];
    assert.equal(fittingCount(huge, 0, DEFAULT_MAX_MESSAGE_BYTES), 1);
    assert.equal(fittingCount(huge, 1, DEFAULT_MAX_MESSAGE_BYTES), 1, 'alone');
    assert.equal(fittingCount(huge, 2, DEFAULT_MAX_MESSAGE_BYTES), 1);
  });
});

describe('ResilientProducer: sends bounded by size', () => {
  it("one partition's 2000 messages go in several sends, in order, each once; one result per partition", async () => {
    const broker = new FakeBroker(DEFAULT_MAX_MESSAGE_BYTES);
    const producer = broker.producerFor();
    const results = await producer.send({
      topic: EVENTS_TOPIC,
      messages: ids(1, 2000).map((id) => event(id)),
    });
    assert.ok(broker.sends.length >= 2, `${broker.sends.length} sends`);
    assert.ok(broker.sends.every((s) => s.bytes <= DEFAULT_MAX_MESSAGE_BYTES));
    assert.deepEqual(broker.sent(0), ids(1, 2000));
    assert.deepEqual(
      results.map((r) => [r.partition, r.baseOffset]),
      [[0, '0']],
      'baseOffset of the first send',
    );
    assert.equal(broker.producers, 1);
  });

  it('a message refused alone stops its partition there (MessageTooLarge, rows); other partitions go on', async () => {
    const broker = new FakeBroker(DEFAULT_MAX_MESSAGE_BYTES, 2);
    const producer = broker.producerFor();
    const p0 = [1, 2, 3, 4, 5, 6, 7].map((id) => ({
      ...event(id, id === 4 ? 1_200_000 : 200),
      partition: 0,
    }));
    const p1 = [11, 12].map((id) => ({ ...event(id), partition: 1 }));
    const messages = [p0[0], p1[0], ...p0.slice(1), p1[1]];
    const err = await producer.send({ topic: EVENTS_TOPIC, messages }).then(
      () => assert.fail('resolved'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof MessageTooLarge, String(err));
    assert.equal(messages[err.index], p0[3], 'names the message by its index in the record');
    assert.equal(err.limit, DEFAULT_MAX_MESSAGE_BYTES);
    assert.ok(err.bytes > 2_400_000, `${err.bytes}`);
    assert.equal(policyFor(err), 'rows', 'the fan-out splits the batch and dead-letters it');
    assert.deepEqual(broker.sent(0), [1, 2, 3], 'nothing after it in its partition');
    assert.deepEqual(broker.sent(1), [11, 12]);
    assert.equal(broker.producers, 1, 'the producer is kept');
    await producer.send({ topic: EVENTS_TOPIC, messages: p0.slice(4) });
    assert.equal(broker.producers, 1);
  });

  it("the topic's limit is read; when it cannot be, or the broker takes less, sends shrink until it accepts", async () => {
    const small = new FakeBroker(300_000);
    await small.producerFor().send({ topic: EVENTS_TOPIC, messages: ids(1, 1000).map((id) => event(id)) });
    assert.ok(small.sends.length >= 3 && small.sends.every((s) => s.bytes <= 300_000));
    assert.deepEqual(small.sent(), ids(1, 1000));

    const denied = new FakeBroker(300_000, 1, new Error('Topic authorization failed'));
    const { logger, lines } = logCapture();
    const producer = denied.producerFor(logger);
    await producer.send({ topic: EVENTS_TOPIC, messages: ids(1, 1000).map((id) => event(id)) });
    assert.deepEqual(denied.sent(), ids(1, 1000), 'every message once, in order');
    assert.equal(denied.producers, 1);
    assert.equal(
      lines.filter((l) => /could not read engagement.events's max.message.bytes/.test(l.msg)).length,
      1,
    );
    const shrunk = lines.filter((l) => /refused \d+ messages .* in one request/.test(l.msg));
    assert.ok(shrunk.length >= 1 && shrunk.length <= 3, lines.map((l) => l.msg).join('\n'));
    // Learnt: the next send is not refused first.
    const before = shrunk.length;
    await producer.send({ topic: EVENTS_TOPIC, messages: ids(1001, 1000).map((id) => event(id)) });
    assert.equal(lines.filter((l) => /in one request/.test(l.msg)).length, before);
    assert.deepEqual(denied.sent(), ids(1, 2000));
  });
});

/** A capture that is never started (no database, no slot): its send path and assembler only. */
function testCapture(
  options: Omit<
    ConstructorParameters<typeof KafkaCapture>[0],
    'databaseUrl' | 'slotName' | 'publicationName' | 'pool' | 'metrics'
  >,
): KafkaCapture {
  return new KafkaCapture({
    databaseUrl: 'postgres://unused',
    slotName: 's',
    publicationName: 'p',
    pool: {} as pg.Pool,
    metrics: createMetrics(),
    ...options,
  });
}

describe('capture: an event Kafka refuses alone', () => {
  it('is dead-lettered as a bad source row before it leaves the unit; the rest is sent in order', async () => {
    const sent: number[][] = [];
    const producer = {
      send: async (record: ProducerRecord) => {
        const index = record.messages.findIndex((m) => idOf(m) === 3);
        if (index >= 0)
          throw new MessageTooLarge(record.topic, index, 2_200_494, 1_048_588, { cause: tooLargeError() });
        sent.push(record.messages.map(idOf));
      },
    };
    const badRows: Extract<Change, { kind: 'bad-row' }>[] = [];
    let failNext = true;
    const { logger, lines } = logCapture();
    const capture = testCapture({
      producer,
      logger,
      maxRows: 100,
      maxWaitMs: 10,
      maxInFlight: 2,
      onBadRow: async (change) => {
        if (failNext) {
          failNext = false;
          throw new Error('connection terminated');
        }
        badRows.push(change);
      },
    });
    const sendAll = (
      capture as unknown as { sendAll(e: Message[], c: Message[]): Promise<void> }
    ).sendAll.bind(capture);
    const events = ids(1, 5).map((id) => event(id, id === 3 ? 1_100_000 : 200));
    // The dead letter could not be stored: the event stays in the unit (the retry sends it again).
    await assert.rejects(sendAll(events, []), /connection terminated/);
    assert.deepEqual(events.map(idOf), [1, 2, 3, 4, 5]);
    await sendAll(events, []);
    assert.deepEqual(sent, [[1, 2, 4, 5]]);
    assert.equal(badRows.length, 1);
    assert.equal(badRows[0].table, 'engagement_events');
    assert.equal((badRows[0].raw as { id: number }).id, 3);
    assert.ok(
      (badRows[0].raw as { raw_payload: unknown }).raw_payload instanceof JsonText,
      'the exact payload',
    );
    assert.match(
      badRows[0].reason,
      /^event 3 is too large for engagement.events: 2200494 bytes .* limit of 1048588 bytes/,
    );
    const errors = lines.filter((l) => l.level === 50);
    assert.equal(errors.length, 1);
    assert.match(
      errors[0].msg,
      /event 3 is too large .* dead-lettered \(engagement dlq list --sink source\)/,
    );
  });
});

describe('capture: units weighed by size', () => {
  it('one transaction of 300 events with ~150 KB payloads goes out in units within BATCH_MAX_ROWS by weight', async () => {
    const units: number[] = [];
    const producer = {
      send: async (record: ProducerRecord) => {
        if (record.topic === EVENTS_TOPIC) units.push(record.messages.length);
        await new Promise((r) => setTimeout(r, 2));
      },
    };
    const capture = testCapture({
      producer,
      logger: pino({ level: 'silent' }),
      maxRows: 64,
      maxWaitMs: 10,
      maxInFlight: 2,
      onBadRow: async () => undefined,
    });
    const handle = (capture as unknown as { assembler: { handle(c: Change): void | Promise<void> } })
      .assembler.handle;
    const pad = 'x'.repeat(150 * 1024); // 1 + 9 per event (16 KiB units)
    const changes: Change[] = [
      { kind: 'begin', commitLsn: '0/1000', committedAt: '2026-12-01T10:11:12.400000Z' },
      ...Array.from({ length: 300 }, (_, i): Change => ({
        kind: 'event',
        row: {
          id: i + 1,
          content_id: null,
          user_id: null,
          event_type: 'play',
          event_ts: '2026-12-01T10:11:12.345678Z',
          duration_ms: 1,
          device: null,
          raw_payload: new JsonText(JSON.stringify({ pad })),
        },
      })),
      { kind: 'commit', ackLsn: '0/1800' },
    ];
    for (const change of changes) await handle(change);
    const until = Date.now() + 20_000;
    while (units.reduce((a, b) => a + b, 0) < 300 && Date.now() < until)
      await new Promise((r) => setTimeout(r, 5));
    assert.equal(
      units.reduce((a, b) => a + b, 0),
      300,
    );
    // Counted by messages, one unit would have held all 300 (~45 MB); weighed, at most 64 / 10.
    assert.ok(Math.max(...units) <= 7, `units of ${units.join(', ')} events`);
  });
});
