import type { Message, ProducerRecord } from 'kafkajs';
import type pg from 'pg';
import { describeError, type PipelineError } from '../errors.js';
import type { EngagementEventRow } from '../domain/types.js';
import type { Logger } from '../logger.js';
import { DEFAULT_SHAPE, type SourceShape } from '../domain/source-shape.js';
import { Dispatcher } from './dispatcher.js';
import { weightOfLength } from './row-weight.js';
import { drainSlotStream, slotSource } from './slot-stream.js';
import { shutdownTimes } from './deadline.js';
import { TransactionAssembler, type TransactionAssemblerOptions } from './transaction-assembler.js';
import { retry, TRANSIENT_BACKOFF } from '../retry/retry.js';
import type { Metrics } from '../observability/metrics.js';
import type { Change } from '../source/changes.js';
import { ContentDimension } from '../enrichment/content-dimension.js';
import type { ReplicationSource } from '../source/replication-source.js';
import { CONTENT_TOPIC, EVENTS_TOPIC } from '../kafka/client.js';
import { decodeNativeEvent, encodeContent, encodeEvent } from '../source/kafka/native-format.js';
import { MessageTooLarge } from '../sinks/kafka/resilient-producer.js';

export interface KafkaCaptureOptions {
  databaseUrl: string;
  slotName: string;
  publicationName: string;
  /** The user's tables (discovered at start); default: the tables `engagement migrate` creates. */
  shape?: SourceShape;
  pool: pg.Pool;
  /** acks=all sends; see ResilientProducer (a message refused alone throws its MessageTooLarge). */
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
  /** What the unit counts toward BATCH_MAX_ROWS: its messages, weighed by size (row-weight.ts). */
  weight: number;
  ackLsn: string | null;
}

/** A message's weight: one, plus one per 16 KiB of its value (a 2.5 MB payload counts ~160). */
function messageWeight(message: Message): number {
  return weightOfLength(message.value?.length ?? 0);
}

/** Capture's assembler: events and content changes become Kafka messages (see TransactionAssembler). */
class MessageAssembler extends TransactionAssembler<Unit> {
  /** The captured cluster, written into every event message (native-format.ts, `src`). */
  sourceId: () => string | undefined = () => undefined;
  private events: Message[] = [];
  private content: Message[] = [];
  private weight = 0;

  constructor(
    options: TransactionAssemblerOptions<Unit>,
    private readonly dimension: ContentDimension,
  ) {
    super(options);
  }

  /** Weighed by size, as direct mode weighs events: memory stays bounded in bytes too. */
  get rows(): number {
    return this.weight;
  }

  protected takeOpen(seq: number, ackLsn: string | null): Unit {
    const unit = { seq, events: this.events, content: this.content, weight: this.weight, ackLsn };
    this.events = [];
    this.content = [];
    this.weight = 0;
    return unit;
  }

  private push(to: Message[], message: Message): void {
    to.push(message);
    this.weight += messageWeight(message);
  }

  protected onEvent(row: EngagementEventRow, index: number): void | Promise<void> {
    const value = encodeEvent(row, this.tx.commitLsn, index, this.tx.committedAt, this.sourceId());
    this.push(this.events, { key: row.content_id, value });
    this.base.metrics.eventsReceived.inc();
    return this.base.dispatcher.offer(false);
  }

  protected onContent(
    change: Extract<Change, { kind: 'content-upsert' | 'content-delete' | 'content-truncate' }>,
  ): void | Promise<void> {
    switch (change.kind) {
      case 'content-upsert':
        this.dimension.upsert(change.content);
        this.push(this.content, contentMessage(this.dimension, change.content.id));
        break;
      case 'content-delete':
        this.dimension.delete(change.id);
        this.push(this.content, { key: change.id, value: null });
        break;
      case 'content-truncate':
        for (const id of this.dimension.knownIds()) {
          this.dimension.delete(id);
          this.push(this.content, { key: id, value: null });
        }
        break;
    }
    return this.base.dispatcher.offer(false);
  }
}

function contentMessage(dimension: ContentDimension, id: string): Message {
  const row = dimension.peek(id);
  return { key: id, value: row ? encodeContent(row) : null };
}

/**
 * `capture --to-kafka`: the replication slot -> engagement.events (+ engagement.content).
 * The same parts as direct mode (source -> assembler -> Dispatcher -> destination ->
 * Checkpoint), with Kafka as the only destination: a commit LSN is confirmed to Postgres only
 * after Kafka acknowledged (acks=all) every message up to that commit. Produce requests go
 * out one at a time, in stream order, on an idempotent producer, so each partition holds a
 * gap-free prefix of the stream; after a crash the slot replays from the last confirmed
 * commit and workers drop the copies by source position.
 */
export class KafkaCapture {
  readonly source: ReplicationSource;
  private readonly dimension: ContentDimension;
  private readonly assembler: MessageAssembler;
  private readonly dispatcher: Dispatcher<Unit>;
  private readonly log: Logger;
  private resolveHalted!: (error: PipelineError) => void;
  /** Settles when the stream stopped at a point it must not pass (e.g. TRUNCATE … RESTART IDENTITY). */
  readonly halted = new Promise<PipelineError>((resolve) => (this.resolveHalted = resolve));
  /** Produce requests go out one at a time, in stream order. */
  private sendChain: Promise<void> = Promise.resolve();
  /** Aborted once the drain is over: a produce still retrying gives up (its unit replays). */
  private readonly stopping = new AbortController();
  /** Events acknowledged by Kafka (for logs and the benchmark). */
  published = 0;

  constructor(private readonly options: KafkaCaptureOptions) {
    this.log = options.logger.child({ component: 'capture' });
    this.dimension = new ContentDimension(options.pool, { shape: options.shape });
    this.dispatcher = new Dispatcher<Unit>({
      maxRows: options.maxRows,
      maxWaitMs: options.maxWaitMs,
      maxInFlight: options.maxInFlight,
      rowsOf: (unit) => unit.weight,
      write: (unit) => {
        const sent = this.sendChain.then(() => this.sendUntilAcked(unit));
        this.sendChain = sent.catch(() => undefined);
        return sent;
      },
      confirm: (lsn) => this.source.acknowledge(lsn),
    });
    this.assembler = new MessageAssembler(
      { metrics: options.metrics, logger: this.log, dispatcher: this.dispatcher, onBadRow: options.onBadRow },
      this.dimension,
    );
    this.source = slotSource({ ...options, onHalt: (error) => this.resolveHalted(error) }, this.assembler);
    // Named in every event message: workers keep each partition's watermark with the cluster its
    // LSNs belong to (a cluster restored from a dump restarts them lower). Read by the source at
    // start; a reconnect to another cluster halts the capture (ReplicationSource).
    this.assembler.sourceId = () => this.source.sourceId ?? undefined;
  }

  /** No transaction open, nothing buffered, waiting, in flight or unconfirmed. */
  isDrained(): boolean {
    return this.assembler.isDrained();
  }

  async start(): Promise<void> {
    // Publish the whole content table first: the compacted topic must know rows that
    // existed before capture started (it is idempotent: same key, same value).
    const loaded = await this.dimension.loadSnapshot();
    // From the snapshot itself: a second read could see a row the dimension lacks (a tombstone).
    const snapshot = this.dimension.knownIds().map((id) => contentMessage(this.dimension, id));
    for (let i = 0; i < snapshot.length; i += this.options.maxRows) {
      await this.sendAll([], snapshot.slice(i, i + this.options.maxRows));
    }
    this.log.info({ content: loaded }, 'content snapshot published to engagement.content');
    await this.source.start(this.assembler.handle);
  }

  /**
   * Stops within `shutdownTimeoutMs` whatever Kafka does: stop taking changes, send what is
   * open, wait for Kafka's acknowledgements while time remains, stop streaming. One line
   * says what was left unconfirmed (the slot replays it on the next start).
   */
  async stop(): Promise<void> {
    const times = shutdownTimes(this.options.shutdownTimeoutMs);
    const { assembler, dispatcher, source } = this;
    const report = await drainSlotStream({ assembler, dispatcher, source, logger: this.log }, times, () =>
      this.stopping.abort(),
    );
    const confirmed = this.source.confirmed;
    if (report.drained) {
      this.log.info({ confirmedLsn: confirmed }, `stopped: Kafka acknowledged everything up to ${confirmed}`);
    } else {
      this.log.warn(
        { confirmedLsn: confirmed, batches: report.batches, messages: report.rows },
        `shutdown after ${((Date.now() - times.started) / 1000).toFixed(1)} s: ${report.rows} messages in ${report.batches} produce requests were not acknowledged by Kafka; they replay from ${confirmed} on the next start`,
      );
    }
  }

  private async sendUntilAcked(unit: Unit): Promise<void> {
    await retry(() => this.sendAll(unit.events, unit.content), {
      backoff: TRANSIENT_BACKOFF,
      // Shutting down: the unit stays unconfirmed and replays on the next start.
      signal: this.stopping.signal,
      aborted: () => new Error('capture stopped'),
      onFailure: (err, { attempt }) => {
        if (attempt === 1) this.log.error(`Kafka produce failed, retrying (LSN held): ${describeError(err)}`);
      },
      onRecovered: (_attempts, ms) => this.log.info(`Kafka produce recovered after ${ms} ms`),
    });
    this.published += unit.events.length;
    this.options.metrics.eventsDelivered.inc({ sink: 'kafka' }, unit.events.length);
  }

  /**
   * Sends until Kafka acknowledged every message but those it refuses for their size, which are
   * dead-lettered (as bad source rows, `dlq list --sink source`) and removed from `events` /
   * `content`. A message is removed only once its dead letter is stored: the caller confirms
   * the unit's LSN after this returns, so nothing passes unrecorded. The resend after a removal
   * repeats messages Kafka already has; workers drop those copies by source position.
   */
  private async sendAll(events: Message[], content: Message[]): Promise<void> {
    for (;;) {
      try {
        return await this.send(events, content);
      } catch (err) {
        if (!(err instanceof MessageTooLarge)) throw err;
        const messages = err.topic === EVENTS_TOPIC ? events : content;
        await this.deadLetterRefused(messages[err.index], err);
        messages.splice(err.index, 1);
      }
    }
  }

  private async deadLetterRefused(message: Message, err: MessageTooLarge): Promise<void> {
    const shape = this.options.shape ?? DEFAULT_SHAPE;
    const isEvent = err.topic === EVENTS_TOPIC;
    const value = Buffer.from(message.value ?? '');
    const decoded = isEvent ? decodeNativeEvent(value) : null;
    // What capture itself encoded: an event (its exact payload kept) or a content row.
    const raw = (decoded?.kind === 'event' ? decoded.row : JSON.parse(value.toString('utf8'))) as {
      id: unknown;
    };
    const what = isEvent ? `event ${String(raw.id)}` : `content row ${String(message.key)}`;
    const reason = `${what} is too large for ${err.topic}: ${err.bytes} bytes encoded, over the topic's limit of ${err.limit} bytes (max.message.bytes); Kafka refused it (MESSAGE_TOO_LARGE)`;
    const table = isEvent ? shape.events.name : shape.content.name;
    await this.options.onBadRow({ kind: 'bad-row', table, reason, raw });
    this.options.metrics.badRows.inc();
    this.log.error(
      { topic: err.topic, bytes: err.bytes, limit: err.limit },
      `${reason}; dead-lettered (engagement dlq list --sink source)`,
    );
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
