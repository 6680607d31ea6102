import type { Message, ProducerRecord } from 'kafkajs';
import type pg from 'pg';
import { describeError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { Checkpoint } from '../../pipeline/checkpoint.js';
import type { Metrics } from '../../server/metrics.js';
import type { Change } from '../changes.js';
import { ContentDimension } from '../content-dimension.js';
import { ReplicationSource } from '../replication-source.js';
import { CONTENT_TOPIC, EVENTS_TOPIC } from './client.js';
import { encodeContent, encodeEvent } from './native-format.js';

export interface KafkaCaptureOptions {
  databaseUrl: string;
  slotName: string;
  publicationName: string;
  pool: pg.Pool;
  /** acks=all sends; see ResilientProducer. */
  producer: { send(record: ProducerRecord): Promise<unknown> };
  logger: Logger;
  metrics: Metrics;
  /** Messages per produce request at most, and how long a request may wait to fill. */
  maxRows: number;
  maxWaitMs: number;
  /** Produce requests queued at most before the replication stream is paused. */
  maxInFlight: number;
  onBadRow: (change: Extract<Change, { kind: 'bad-row' }>) => Promise<void>;
}

interface Unit {
  seq: number;
  events: Message[];
  content: Message[];
  ackLsn: string | null;
}

/**
 * `capture --to-kafka`: the replication slot -> engagement.events (+ engagement.content).
 * Kafka is this process's only "sink": a commit LSN is confirmed to Postgres (through the
 * same Checkpoint as direct mode) only after Kafka acknowledged (acks=all) every message up
 * to that commit. Produce requests go out one at a time, in stream order, on an idempotent
 * producer, so each partition holds a gap-free prefix of the stream; after a crash the slot
 * replays from the last confirmed commit and workers drop the copies by source position.
 */
export class KafkaCapture {
  readonly source: ReplicationSource;
  private readonly dimension: ContentDimension;
  private readonly checkpoint: Checkpoint;
  private readonly log: Logger;
  private open: Unit = { seq: 0, events: [], content: [], ackLsn: null };
  private seq = 0;
  private tx = { lsn: '0/0', committedAt: '', index: 0 };
  private timer: NodeJS.Timeout | null = null;
  private sendChain: Promise<void> = Promise.resolve();
  private queued = 0;
  private roomWaiters: (() => void)[] = [];
  private closed = false;
  private stopping = false;
  /** Events acknowledged by Kafka (for logs and the benchmark). */
  published = 0;

  constructor(private readonly options: KafkaCaptureOptions) {
    this.log = options.logger.child({ component: 'capture' });
    this.dimension = new ContentDimension(options.pool);
    this.source = new ReplicationSource({
      databaseUrl: options.databaseUrl,
      slotName: options.slotName,
      publicationName: options.publicationName,
      logger: options.logger,
      metrics: options.metrics,
      onDisconnect: () => this.flush(),
    });
    this.checkpoint = new Checkpoint((lsn) => this.source.acknowledge(lsn));
  }

  async start(): Promise<void> {
    // Publish the whole content table first: the compacted topic must know rows that
    // existed before capture started (it is idempotent: same key, same value).
    const loaded = await this.dimension.loadSnapshot();
    // From the snapshot itself: a second read could see a row the dimension lacks (a tombstone).
    const snapshot = this.dimension.knownIds().map((id) => this.contentMessage(id));
    for (let i = 0; i < snapshot.length; i += this.options.maxRows) {
      await this.send([], snapshot.slice(i, i + this.options.maxRows));
    }
    this.log.info({ content: loaded }, 'content snapshot published to engagement.content');
    await this.source.start(this.handle);
  }

  /** Drains: stop taking changes, send what is open, confirm it, stop streaming. */
  async stop(): Promise<void> {
    this.closed = true;
    await this.flush().catch(() => undefined);
    const drained = this.sendChain.then(() => 'drained');
    const timeout = new Promise((resolve) => setTimeout(resolve, 15_000).unref());
    if ((await Promise.race([drained, timeout])) !== 'drained') {
      this.log.warn('shutdown: Kafka did not acknowledge within 15 s; unconfirmed changes will be replayed');
    }
    this.stopping = true;
    await this.source.stop();
  }

  private handle = (change: Change): void | Promise<void> => {
    if (this.closed) return;
    switch (change.kind) {
      case 'begin':
        this.tx = { lsn: change.commitLsn, committedAt: change.committedAt, index: 0 };
        return;
      case 'event': {
        const value = encodeEvent(change.row, this.tx.lsn, this.tx.index++, this.tx.committedAt);
        this.open.events.push({ key: change.row.content_id, value });
        this.options.metrics.eventsReceived.inc();
        if (this.open.events.length + this.open.content.length >= this.options.maxRows) return this.flush();
        return;
      }
      case 'content-upsert':
        this.dimension.upsert(change.content);
        this.open.content.push(this.contentMessage(change.content.id));
        return;
      case 'content-delete':
        this.dimension.delete(change.id);
        this.open.content.push({ key: change.id, value: null });
        return;
      case 'ignored':
        this.options.metrics.ignoredChanges.inc({ kind: change.what });
        return;
      case 'bad-row':
        this.options.metrics.badRows.inc();
        this.log.error({ table: change.table }, `bad source row dead-lettered: ${change.reason}`);
        return this.options.onBadRow(change);
      case 'commit':
        this.open.ackLsn = change.ackLsn;
        this.armTimer();
        return;
    }
  };

  private contentMessage(id: string): Message {
    const row = this.dimension.peek(id);
    return { key: id, value: row ? encodeContent(row) : null };
  }

  /** Closes the open unit and queues it for sending; waits while too many are queued. */
  private async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const unit = this.open;
    if (unit.events.length === 0 && unit.content.length === 0 && unit.ackLsn === null) return;
    unit.seq = ++this.seq;
    this.open = { seq: 0, events: [], content: [], ackLsn: null };
    this.checkpoint.register(unit.seq, unit.ackLsn);
    this.queued += 1;
    this.sendChain = this.sendChain.then(() => this.sendUntilAcked(unit));
    while (this.queued > this.options.maxInFlight) {
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
  }

  private async sendUntilAcked(unit: Unit): Promise<void> {
    let failingSince: number | null = null;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.send(unit.events, unit.content);
        break;
      } catch (err) {
        if (this.stopping) return;
        if (failingSince === null) {
          failingSince = Date.now();
          this.log.error(`Kafka produce failed, retrying (LSN held): ${describeError(err)}`);
        }
        await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** Math.min(attempt, 6))));
      }
    }
    if (failingSince !== null) this.log.info(`Kafka produce recovered after ${Date.now() - failingSince} ms`);
    this.published += unit.events.length;
    this.options.metrics.eventsDelivered.inc({ sink: 'kafka' }, unit.events.length);
    this.queued -= 1;
    this.roomWaiters.shift()?.();
    this.checkpoint.complete(unit.seq);
  }

  /** Content before events: a worker that sees an event can then find its content row. */
  private async send(events: Message[], content: Message[]): Promise<void> {
    if (content.length > 0) {
      await this.options.producer.send({ topic: CONTENT_TOPIC, acks: -1, messages: content });
    }
    if (events.length > 0) {
      await this.options.producer.send({ topic: EVENTS_TOPIC, acks: -1, messages: events });
    }
  }

  private armTimer(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, this.options.maxWaitMs);
  }
}
