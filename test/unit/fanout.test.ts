import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { pino } from 'pino';
import { Fanout } from '../../src/pipeline/fanout.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { DeadLetterEntry } from '../../src/state/dead-letter.js';
import type { Sink } from '../../src/sinks/sink.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function event(id: number, committedAt = new Date().toISOString()): EnrichedEvent {
  return {
    event_id: id,
    content_id: null,
    user_id: null,
    event_type: 'play',
    event_ts: committedAt,
    duration_ms: 1,
    device: null,
    raw_payload: null,
    content_type: null,
    length_seconds: null,
    engagement_seconds: null,
    engagement_pct: null,
    committed_at: committedAt,
    processed_at: committedAt,
  };
}

function batch(seq: number, ids: number[], committedAt?: string): Batch {
  return {
    seq,
    stream: 's',
    events: ids.map((id) => event(id, committedAt)),
    positions: ids.map((id) => String(id).padStart(8, '0')),
    ackLsn: null,
  };
}

/** Rejects any write containing a "bad" id with the given error; otherwise applies it. */
class PickySink implements Sink {
  readonly applied: number[] = [];
  writes = 0;
  constructor(
    readonly name: string,
    private readonly bad: Set<number>,
    private readonly error: () => Error = () => new Error('Conversion Error: could not convert'),
  ) {}
  async start() {}
  async stop() {}
  async write(b: Batch): Promise<void> {
    this.writes += 1;
    if (b.events.some((e) => this.bad.has(e.event_id))) throw this.error();
    this.applied.push(...b.events.map((e) => e.event_id));
  }
}

function logCapture() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  return { logger, lines };
}

describe('Fanout', () => {
  it('a row the sink refuses is found by bisection and dead-lettered for that sink; the rest is delivered in order', async () => {
    const recorded: DeadLetterEntry[] = [];
    const picky = new PickySink('analytics', new Set([5, 11]));
    const fine = new PickySink('redis', new Set());
    const { logger, lines } = logCapture();
    const fanout = new Fanout({
      sinks: [picky, fine],
      metrics: createMetrics(),
      logger,
      deadLetters: { record: async (entries) => void recorded.push(...entries) },
    });
    const ids = Array.from({ length: 16 }, (_, i) => i + 1);
    await fanout.write(batch(1, ids));
    assert.deepEqual(
      picky.applied,
      ids.filter((id) => id !== 5 && id !== 11),
    );
    assert.deepEqual(fine.applied, ids, 'the other sink got everything, once');
    assert.deepEqual(
      recorded.map((r) => [r.sink, r.eventId, r.source]),
      [
        ['analytics', 5, 's@00000005'],
        ['analytics', 11, 's@00000011'],
      ],
    );
    assert.match(recorded[0].lastError, /Conversion Error/);
    const health = fanout.health().find((h) => h.name === 'analytics')!;
    assert.equal(health.delivered, 14);
    assert.equal(health.deadLettered, 2);
    assert.equal(health.state, 'up');
    assert.equal(lines.filter((l) => /refused 2 of 16/.test(l.msg)).length, 1);
    fanout.cancel();
  });

  it('a sink rejecting every row is failing, not its rows: nothing dead-lettered, position held', async () => {
    const recorded: DeadLetterEntry[] = [];
    const all = new PickySink('analytics', new Set([1, 2, 3, 4]));
    const fanout = new Fanout({
      sinks: [all],
      metrics: createMetrics(),
      logger: logCapture().logger,
      deadLetters: { record: async (entries) => void recorded.push(...entries) },
      failedRetryBaseMs: 10,
      failedRetryMaxMs: 20,
    });
    let done = false;
    const write = fanout.write(batch(1, [1, 2, 3, 4])).then(() => (done = true));
    write.catch(() => undefined);
    await sleep(100);
    assert.equal(done, false);
    assert.deepEqual(recorded, []);
    assert.equal(fanout.health()[0].state, 'failed');
    fanout.cancel();
    await assert.rejects(write);
  });

  it('an authentication error marks the sink failed with one log line, retries slowly, and recovers', async () => {
    let broken = true;
    const sink = new PickySink('clickhouse', new Set(), () =>
      Object.assign(new Error('Authentication failed'), { code: '516', type: 'AUTHENTICATION_FAILED' }),
    );
    const original = sink.write.bind(sink);
    sink.write = async (b) => {
      if (broken) {
        sink.writes += 1;
        throw Object.assign(new Error('Authentication failed'), {
          code: '516',
          type: 'AUTHENTICATION_FAILED',
        });
      }
      return original(b);
    };
    const { logger, lines } = logCapture();
    const metrics = createMetrics();
    const fanout = new Fanout({
      sinks: [sink],
      metrics,
      logger,
      failedRetryBaseMs: 20,
      failedRetryMaxMs: 40,
    });
    const write = fanout.write(batch(1, [1, 2]));
    await sleep(300);
    const h = fanout.health()[0];
    assert.equal(h.state, 'failed');
    assert.match(h.error ?? '', /Authentication failed/);
    assert.ok(h.lagSeconds > 0, 'lag grows while it fails');
    assert.ok(sink.writes >= 2 && sink.writes < 40, `${sink.writes} attempts in 300 ms`);
    assert.equal(lines.filter((l) => /needs attention/.test(l.msg)).length, 1, 'one clear line');
    broken = false;
    await write;
    assert.equal(fanout.health()[0].state, 'up');
    assert.equal(fanout.health()[0].lagSeconds, 0, 'nothing pending: lag 0');
    assert.equal(lines.filter((l) => /recovered/.test(l.msg)).length, 1);
    fanout.cancel();
  });

  it('lag is the age of the oldest event not yet accepted, and it grows while a sink is stuck', async () => {
    let release!: () => void;
    const stuck = new Promise<void>((r) => (release = r));
    const sink: Sink = {
      name: 'external',
      start: async () => undefined,
      stop: async () => undefined,
      write: () => stuck,
    };
    const fanout = new Fanout({
      sinks: [sink],
      metrics: createMetrics(),
      logger: logCapture().logger,
      lagWarnSeconds: 30,
    });
    const old = new Date(Date.now() - 45_000).toISOString();
    const write = fanout.write(batch(1, [1], old));
    void fanout.write(batch(2, [2]));
    const h = fanout.health()[0];
    assert.ok(h.lagSeconds >= 45, `lag ${h.lagSeconds}`);
    assert.equal(h.state, 'behind');
    assert.equal(h.received, 2);
    assert.equal(h.delivered, 0);
    release();
    await write;
    fanout.cancel();
  });
});
