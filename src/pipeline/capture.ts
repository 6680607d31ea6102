import type { Message, ProducerRecord } from 'kafkajs';
import type pg from 'pg';
import { describeError, type PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { SourceShape } from '../domain/source-shape.js';
import { withDeadline } from './deadline.js';
import { Dispatcher, type OpenBatch } from './dispatcher.js';
import { backoffDelay } from '../retry/backoff.js';
import type { Metrics } from '../observability/metrics.js';
import type { Change } from '../source/changes.js';
import { ContentDimension } from '../enrichment/content-dimension.js';
import { ReplicationSource } from '../source/replication-source.js';
import { CONTENT_TOPIC, EVENTS_TOPIC } from '../kafka/client.js';
import { encodeContent, encodeEvent } from '../source/kafka/native-format.js';

export interface KafkaCaptureOptions {
  databaseUrl: string;
  slotName: string;
  publicationName: string;
  /** The user's tables (discovered at start); default: the tables `engagement migrate` creates. */
  shape?: SourceShape;
  pool: pg.Pool;
  /** acks=all sends; see ResilientProducer. */
  producer: { send(record: ProducerRecord): Promise<unknown> };
  logger: Logger;
  metrics: Metrics;
  /** Messages per produce request at most, and how long a request may wait to fill. */
  maxRows: number;
  maxWaitMs: number;
  /** Produce requests queued at most (plus the one being filled) before the replication stream is paused. */
  maxInFlight: number;
  /** stop() returns within this (SHUTDOWN_TIMEOUT_MS); default 20 s. */
  shutdownTimeoutMs?: number;
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
 * to that commit. Batches close as the shared Dispatcher decides (bounded: at most
 * maxInFlight produce requests queued plus the one filling). Produce requests go out one at a time, in stream order, on an idempotent
 * producer, so each partition holds a gap-free prefix of the stream; after a crash the slot
 * replays from the last confirmed commit and workers drop the copies by source position.
 */
export class KafkaCapture implements OpenBatch<Unit> {
  readonly source: ReplicationSource;
  private readonly dimension: ContentDimension;
  private readonly dispatcher: Dispatcher<Unit>;
  private readonly log: Logger;
  private open: Unit = { seq: 0, events: [], content: [], ackLsn: null };
  private tx = { lsn: '0/0', committedAt: '', index: 0 };
  private inTransaction = false;
  private resolveHalted!: (error: PipelineError) => void;
  /** Settles when the stream stopped at a point it must not pass (e.g. TRUNCATE … RESTART IDENTITY). */
  readonly halted = new Promise<PipelineError>((resolve) => (this.resolveHalted = resolve));
  /** Produce requests go out one at a time, in stream order. */
  private sendChain: Promise<void> = Promise.resolve();
  private closed = false;
  private stopping = false;
  /** Events acknowledged by Kafka (for logs and the benchmark). */
  published = 0;

  constructor(private readonly options: KafkaCaptureOptions) {
    this.log = options.logger.child({ component: 'capture' });
    this.dimension = new ContentDimension(options.pool, { shape: options.shape });
    this.source = new ReplicationSource({
      databaseUrl: options.databaseUrl,
      slotName: options.slotName,
      publicationName: options.publicationName,
      shape: options.shape,
      logger: options.logger,
      metrics: options.metrics,
      onDisconnect: async () => {
        // The source replays from the confirmed commit: a half-read transaction starts over.
        this.inTransaction = false;
        this.dispatcher.kick();
      },
      isDrained: () => this.isDrained(),
      onHalt: (error) => {
        this.dispatcher.kick();
        this.resolveHalted(error);
      },
    });
    this.dispatcher = new Dispatcher<Unit>({
      maxRows: options.maxRows,
      maxWaitMs: options.maxWaitMs,
      maxInFlight: options.maxInFlight,
      rowsOf: (unit) => unit.events.length + unit.content.length,
      write: (unit) => {
        const sent = this.sendChain.then(() => this.sendUntilAcked(unit));
        this.sendChain = sent.catch(() => undefined);
        return sent;
      },
      confirm: (lsn) => this.source.acknowledge(lsn),
    });
    this.dispatcher.bind(this);
  }

  get rows(): number {
    return this.open.events.length + this.open.content.length;
  }

  get pending(): boolean {
    return this.rows > 0 || this.open.ackLsn !== null;
  }

  take(seq: number): Unit {
    const unit = { ...this.open, seq };
    this.open = { seq: 0, events: [], content: [], ackLsn: null };
    return unit;
  }

  /** No transaction open, nothing buffered, waiting, in flight or unconfirmed. */
  isDrained(): boolean {
    return !this.inTransaction && this.dispatcher.isDrained();
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

  /**
   * Stops within `shutdownTimeoutMs` whatever Kafka does: stop taking changes, send what is
   * open, wait for Kafka's acknowledgements while time remains, stop streaming. One line
   * says what was left unconfirmed (the slot replays it on the next start).
   */
  async stop(): Promise<void> {
    const timeoutMs = this.options.shutdownTimeoutMs ?? 20_000;
    const started = Date.now();
    const deadline = started + timeoutMs;
    this.closed = true;
    const report = await this.dispatcher.stop(started + Math.max(timeoutMs / 2, timeoutMs - 5_000));
    this.stopping = true;
    await withDeadline(this.source.stop(), deadline, () =>
      this.log.warn('shutdown: replication stream did not close in time'),
    );
    const confirmed = this.source.confirmed;
    if (report.drained) {
      this.log.info({ confirmedLsn: confirmed }, `stopped: Kafka acknowledged everything up to ${confirmed}`);
    } else {
      this.log.warn(
        { confirmedLsn: confirmed, batches: report.batches, messages: report.rows },
        `shutdown after ${((Date.now() - started) / 1000).toFixed(1)} s: ${report.rows} messages in ${report.batches} produce requests were not acknowledged by Kafka; they replay from ${confirmed} on the next start`,
      );
    }
  }

  private handle = (change: Change): void | Promise<void> => {
    if (this.closed) return;
    switch (change.kind) {
      case 'begin':
        this.tx = { lsn: change.commitLsn, committedAt: change.committedAt, index: 0 };
        this.inTransaction = true;
        return;
      case 'event': {
        const value = encodeEvent(change.row, this.tx.lsn, this.tx.index++, this.tx.committedAt);
        this.open.events.push({ key: change.row.content_id, value });
        this.options.metrics.eventsReceived.inc();
        return this.dispatcher.offer(false);
      }
      case 'content-upsert':
        this.dimension.upsert(change.content);
        this.open.content.push(this.contentMessage(change.content.id));
        return this.dispatcher.offer(false);
      case 'content-delete':
        this.dimension.delete(change.id);
        this.open.content.push({ key: change.id, value: null });
        return this.dispatcher.offer(false);
      case 'content-truncate':
        for (const id of this.dimension.knownIds()) {
          this.dimension.delete(id);
          this.open.content.push({ key: id, value: null });
        }
        return this.dispatcher.offer(false);
      case 'halt':
        return; // the source stops there and reports it (halted)
      case 'ignored':
        this.options.metrics.ignoredChanges.inc({ kind: change.what });
        return;
      case 'bad-row':
        this.options.metrics.badRows.inc();
        this.log.error({ table: change.table }, `bad source row dead-lettered: ${change.reason}`);
        return this.options.onBadRow(change);
      case 'commit':
        this.open.ackLsn = change.ackLsn;
        this.inTransaction = false;
        return this.dispatcher.offer(true);
    }
  };

  private contentMessage(id: string): Message {
    const row = this.dimension.peek(id);
    return { key: id, value: row ? encodeContent(row) : null };
  }

  private async sendUntilAcked(unit: Unit): Promise<void> {
    let failingSince: number | null = null;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.send(unit.events, unit.content);
        break;
      } catch (err) {
        // Shutting down: the unit stays unconfirmed and replays on the next start.
        if (this.stopping) throw err;
        if (failingSince === null) {
          failingSince = Date.now();
          this.log.error(`Kafka produce failed, retrying (LSN held): ${describeError(err)}`);
        }
        await new Promise((r) => setTimeout(r, backoffDelay(attempt + 1, { baseMs: 100, maxMs: 5_000 })));
        if (this.stopping) throw new Error('capture stopped');
      }
    }
    if (failingSince !== null) this.log.info(`Kafka produce recovered after ${Date.now() - failingSince} ms`);
    this.published += unit.events.length;
    this.options.metrics.eventsDelivered.inc({ sink: 'kafka' }, unit.events.length);
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
}
