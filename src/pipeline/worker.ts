import type { Consumer, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import { enrichCounted } from '../enrichment/enrich-counted.js';
import { offsetPosition } from '../domain/position.js';
import { SourceRuns } from './source-runs.js';
import { dateToIso } from '../domain/timestamps.js';
import type { Batch, EnrichedEvent } from '../domain/types.js';
import { describeError, ErrorCodes, PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import { Fanout } from './fanout.js';
import type { Sink } from '../sinks/sink.js';
import { shutdownTimes, withDeadline } from './deadline.js';
import { Dispatcher } from './dispatcher.js';
import { retry, TRANSIENT_BACKOFF } from '../retry/retry.js';
import type { Metrics } from '../observability/metrics.js';
import type { SinkHealth } from '../observability/stats.js';
import type { DeadLetterEntry, DeadLetterStore } from '../state/dead-letter.js';
import type { ContentDimension } from '../enrichment/content-dimension.js';
import type { ContentFeed } from '../source/kafka/content-feed.js';
import type { WireFormat, WorkerRecord } from '../source/kafka/records.js';
import { batchWeight } from './row-weight.js';

export interface KafkaWorkerOptions {
  kafka: Kafka;
  group: string;
  format: WireFormat;
  /** The destinations; written through a Fanout, as in direct mode. */
  sinks: Sink[];
  /** A sink whose oldest pending event is older than this is "behind" (LAG_WARN_SECONDS). */
  lagWarnSeconds?: number;
  /** Built with `retry`: a failing lookup holds the partition until it succeeds or stop(). */
  dimension: ContentDimension;
  feed: ContentFeed;
  deadLetters: DeadLetterStore;
  metrics: Metrics;
  logger: Logger;
  batchMaxRows: number;
  /** Batches being written at once across this worker's partitions (MAX_IN_FLIGHT_BATCHES). */
  maxInFlightBatches?: number;
  /** stop() returns within this (SHUTDOWN_TIMEOUT_MS); default 20 s. */
  shutdownTimeoutMs?: number;
  /** Partitions processed at once by this worker. */
  partitionsConcurrently: number;
  /**
   * The analytics store admits one writing process (DuckDB): this worker must be alone in
   * its group. A worker that is not the group leader refuses (see onFatal) before writing; the
   * leader refuses once others stay in its group (start()).
   */
  exclusive: boolean;
  /** A condition the worker cannot continue under (the CLI prints it and exits). */
  onFatal: (err: PipelineError) => void;
  /** Told about every batch a sink accepted (sink progress for `engagement status`). */
  onSinkSuccess?: (sink: string, batch: Batch) => void;
}

/**
 * How long a DuckDB worker leading its group waits, after a rebalance, before asking whether
 * it is still alone (see start()): twice the session timeout, so a joiner that refused and
 * died without leaving has been expelled by then.
 */
const SHARED_CHECK_MS = 20_000;

/**
 * `work --from-kafka`: one member of a consumer group. Per fetched partition batch:
 * decode -> content dimension -> the same enrich() -> Fanout (every sink, retried until
 * accepted) -> only then commit the offset. Redis's replay watermark is scoped to the
 * partition (`kafka:<topic>:<partition>`), so a partition re-read after a rebalance or a
 * crash is a no-op there; the other sinks are idempotent by event_id.
 */
/** Kept of SHUTDOWN_TIMEOUT_MS, after leaving the group, for `work` to close its sinks and pool. */
const CLOSE_RESERVE_MS = 2_500;

export class KafkaWorker {
  private readonly consumer: Consumer;
  private readonly fanout: Fanout;
  private readonly log: Logger;
  /** The same bounded window as direct mode: chunks wait for a write slot. */
  private readonly dispatcher: Dispatcher<Batch>;
  private refused = false;
  /** Group generations joined so far (GROUP_JOIN events). */
  private generation = 0;
  /** Aborted by stop(): ends the retries of dead-letter writes in progress. */
  private readonly stopping = new AbortController();
  /** Events handed to sinks and accepted (this process). */
  delivered = 0;
  /**
   * Partition batches received and not yet handed to the sinks in full (waiting on a content
   * lookup, a dead-letter write or a window slot), by `topic:partition`: when their first
   * message was produced (ms). Pending for every sink too, so a worker stuck before its sinks
   * shows a growing lag (`behind`), not `up` with lag 0.
   */
  private readonly undispatched = new Map<string, number>();

  constructor(private readonly options: KafkaWorkerOptions) {
    this.log = options.logger.child({ component: 'worker', group: options.group });
    this.consumer = options.kafka.consumer({
      groupId: options.group,
      sessionTimeout: 10_000,
      heartbeatInterval: 1_000,
      maxWaitTimeInMs: 100,
    });
    this.fanout = new Fanout({
      sinks: options.sinks,
      metrics: options.metrics,
      logger: options.logger,
      deadLetters: options.deadLetters,
      lagWarnSeconds: options.lagWarnSeconds,
      fullRows: options.batchMaxRows,
      onSuccess: options.onSinkSuccess,
      oldestUndispatched: () =>
        this.undispatched.size === 0 ? null : Math.min(...this.undispatched.values()),
      // (Asked only once the dispatcher exists: by the spill check, after start.)
      windowFull: () => !this.dispatcher.hasRoom,
    });
    this.dispatcher = new Dispatcher<Batch>({
      maxRows: options.batchMaxRows,
      maxWaitMs: 0,
      maxInFlight: options.maxInFlightBatches ?? 8,
      rowsOf: (batch) => batchWeight(batch.events),
      write: (batch, rows) => this.fanout.write(batch, rows),
      // Offsets are committed per partition batch once its chunks were accepted (eachBatch).
      confirm: () => undefined,
    });
  }

  /** True once the consumer joined its group (for `work`'s /readyz). */
  get joined(): boolean {
    return this.generation > 0;
  }

  /** True from the start of stop() on (for `work`'s /readyz: 503 while it drains). */
  get isStopping(): boolean {
    return this.stopRequested;
  }
  private stopRequested = false;

  /** Per-sink state and lag, as in direct mode (`engagement status`). */
  sinkHealth(): SinkHealth[] {
    return this.fanout.health();
  }

  async start(): Promise<void> {
    const { consumer, options } = this;
    this.fanout.startHealthTimer();
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      const assigned = event.payload.memberAssignment[options.format.eventsTopic] ?? [];
      this.log.info(
        { partitions: assigned, leader: event.payload.isLeader },
        `joined group ${options.group}: partitions ${assigned.join(',') || 'none'}`,
      );
      const generation = ++this.generation;
      if (!options.exclusive || this.refused) return;
      // Emitted synchronously before the first fetch of the new generation, so a refusing
      // worker never writes a row.
      if (!event.payload.isLeader) this.refuseShared('another worker already consumes');
      // The leader stays leader when others join later: it asks who is in the group once this
      // generation has lasted SHARED_CHECK_MS. A joiner that refuses (another DuckDB worker)
      // leaves before then, which starts a new generation and voids this check.
      else {
        const timer = setTimeout(() => {
          if (generation === this.generation) void this.refuseIfShared(generation);
        }, SHARED_CHECK_MS);
        timer.unref();
      }
    });
    await consumer.connect();
    await consumer.subscribe({ topic: options.format.eventsTopic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: options.partitionsConcurrently,
      eachBatch: (payload) => this.eachBatch(payload),
    });
  }

  /** DuckDB admits one writing process: a DuckDB worker must be alone in its group. */
  private refuseShared(what: string): void {
    if (this.refused) return;
    this.refused = true; // eachBatch writes nothing from now on
    this.options.onFatal(
      new PipelineError(
        ErrorCodes.DUCKDB_SHARED_GROUP,
        `${what} group '${this.options.group}' and ANALYTICS_URL is DuckDB (one writing process)`,
        'config',
        'run several workers only with a server analytics store (clickhouse:// or bigquery://), or one worker per group with DuckDB',
      ),
    );
  }

  private async refuseIfShared(generation: number): Promise<void> {
    const admin = this.options.kafka.admin();
    try {
      await admin.connect();
      const { groups } = await admin.describeGroups([this.options.group]);
      // A rebalance under way lists a joiner before it may refuse by itself; this worker's own
      // GROUP_JOIN follows and schedules the check again.
      if (groups[0]?.state !== 'Stable') return;
      const members = groups[0].members.length;
      if (members > 1 && generation === this.generation)
        this.refuseShared(`${members - 1} other worker(s) joined`);
    } catch (err) {
      this.log.warn(`checking that this DuckDB worker is alone in its group: ${describeError(err)}`);
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  /**
   * Stops within `shutdownTimeoutMs`: waits for the sinks while time remains, then cancels
   * what is left (its offsets are not committed: the group re-reads it, sinks dedupe) and
   * leaves the group.
   */
  async stop(): Promise<void> {
    this.stopRequested = true;
    const { drainBy, deadline } = shutdownTimes(this.options.shutdownTimeoutMs);
    this.fanout.flush(); // sinks waiting out a write interval write now
    const report = await this.dispatcher.stop(drainBy);
    // Retries still waiting on Postgres (a lookup, a dead-letter write) end now: their
    // partition batch is not committed and the group re-reads it.
    this.stopping.abort();
    this.options.dimension.close();
    if (!report.drained) {
      this.fanout.cancel();
      this.log.warn(
        { batches: report.batches, events: report.rows },
        `shutdown: ${report.rows} events in ${report.batches} batches were not accepted by every sink; their offsets stay uncommitted and the group re-reads them`,
      );
    }
    // disconnect() waits for the running eachBatch calls, then leaves the group. With the broker
    // down it never finishes: it gets the budget but the time `work` still needs to close the
    // sinks and the pool (a worker stopped 1.7 s past SHUTDOWN_TIMEOUT_MS otherwise).
    const closeReserve = Math.min(CLOSE_RESERVE_MS, (this.options.shutdownTimeoutMs ?? 20_000) / 5);
    await withDeadline(
      this.consumer.disconnect().catch((err) => this.log.warn(`leaving the group: ${describeError(err)}`)),
      Math.max(Date.now(), deadline - closeReserve),
      () => this.log.warn('shutdown: leaving the consumer group did not finish in time'),
    );
  }

  private async eachBatch({
    batch,
    heartbeat,
    isRunning,
    isStale,
    resolveOffset,
  }: EachBatchPayload): Promise<void> {
    if (this.refused || batch.messages.length === 0) return;
    const { topic, partition } = batch;
    const startedAt = performance.now();
    const key = `${topic}:${partition}`;
    this.undispatched.set(key, Number(batch.messages[0].timestamp) || Date.now());
    const decoded = batch.messages.map((m) => ({
      m,
      record: this.options.format.decodeEvent(m.key, m.value, m.timestamp, m.offset),
    }));
    // Lookups and sinks may wait a long time (an outage): keep the group membership alive meanwhile.
    const beat = setInterval(() => void heartbeat().catch(() => undefined), 2_000);
    try {
      try {
        await this.ensureContent(decoded.map((d) => d.record));
      } catch (err) {
        // stop() ended a lookup that was still failing (DimensionClosedError, or the failure of
        // the attempt in progress): nothing of this batch was handed to a sink.
        if (!this.stopping.signal.aborted) throw err;
        this.log.warn(
          { partition, messages: batch.messages.length },
          `shutdown: ${batch.messages.length} messages of ${topic}/${partition} were waiting for a content lookup; their offsets stay uncommitted and the group re-reads them`,
        );
        return;
      }
      await this.deliver(topic, partition, decoded);
    } finally {
      clearInterval(beat);
      this.undispatched.delete(key);
    }
    this.log.debug(
      { partition, messages: batch.messages.length, ms: Math.round(performance.now() - startedAt) },
      'partition batch delivered',
    );
    if (!isRunning() || isStale()) return; // revoked meanwhile: the next owner re-reads, sinks dedupe
    const last = batch.messages[batch.messages.length - 1].offset;
    resolveOffset(last); // this process's fetch position; the group's position is the commit below
    try {
      await this.consumer.commitOffsets([{ topic, partition, offset: (BigInt(last) + 1n).toString() }]);
    } catch (err) {
      // A rebalance took the partition: the new owner re-reads from the last commit (a no-op in every sink).
      this.log.warn({ partition }, `offset commit failed, partition will be re-read: ${describeError(err)}`);
    }
  }

  /** Enriches one partition batch and waits until every sink accepted it (bad messages dead-lettered). */
  private async deliver(
    topic: string,
    partition: number,
    decoded: { m: KafkaMessage; record: WorkerRecord }[],
  ): Promise<void> {
    const events: EnrichedEvent[] = [];
    const positions: string[] = [];
    // Copies dropped, the rest in runs of one source cluster (see SourceRuns).
    const runs = new SourceRuns();
    const bad: DeadLetterEntry[] = [];
    const processedAt = dateToIso(new Date());
    for (const { m, record } of decoded) {
      if (record.kind === 'event') {
        const position = record.position ?? offsetPosition(m.offset);
        if (!runs.keep(position, record.source)) {
          this.options.metrics.ignoredChanges.inc({ kind: 'kafka-duplicate' });
          continue;
        }
        events.push(this.enrichOne(record, processedAt));
        positions.push(position);
      } else if (record.kind === 'ignored') {
        this.options.metrics.ignoredChanges.inc({ kind: record.what });
      } else if (record.kind === 'bad') {
        bad.push(this.deadLetter(topic, partition, m, record.reason));
      }
    }

    const writes: Promise<void>[] = [];
    const max = this.options.batchMaxRows;
    for (const { from, to, source } of runs.runs()) {
      for (let i = from; i < to; i += max) {
        const end = Math.min(to, i + max);
        // Waits for a write slot: at most maxInFlightBatches chunks are being written at once.
        const { accepted } = await this.dispatcher.submit((seq) => ({
          seq,
          stream: `kafka:${topic}:${partition}`,
          events: events.slice(i, end),
          positions: positions.slice(i, end),
          ackLsn: null,
          ...(source === undefined ? {} : { sourceId: source }),
        }));
        writes.push(accepted);
      }
    }
    if (bad.length > 0) writes.push(this.recordBadMessages(bad));
    // Every event is now with the sinks (their own lag counts from here), or dead-lettered.
    if (bad.length === 0) this.undispatched.delete(`${topic}:${partition}`);
    await Promise.all(writes);
    this.delivered += events.length;
  }

  private enrichOne(record: Extract<WorkerRecord, { kind: 'event' }>, processedAt: string): EnrichedEvent {
    this.options.metrics.eventsReceived.inc();
    const { dimension, metrics } = this.options;
    return enrichCounted(record.row, dimension, record.committedAt, processedAt, metrics, this.log);
  }

  /** Unknown content ids: first let the content topic catch up, then ask Postgres. */
  private async ensureContent(records: WorkerRecord[]): Promise<void> {
    const unknown = () =>
      records.flatMap((r) =>
        r.kind === 'event' &&
        r.row.content_id !== null &&
        this.options.dimension.peek(r.row.content_id) === undefined
          ? [r.row.content_id]
          : [],
      );
    if (unknown().length === 0) return;
    await this.options.feed.catchUp();
    const missing = unknown();
    if (missing.length === 0) return;
    // The dimension (built with `retry`) retries a failing lookup until it succeeds or stop()
    // closes it: an event is never enriched without content because Postgres was unreachable,
    // and the partition's offset stays where it is meanwhile.
    await this.options.dimension.lookup(missing);
  }

  private deadLetter(topic: string, partition: number, m: KafkaMessage, reason: string): DeadLetterEntry {
    const where = `${topic}/${partition}@${m.offset}`;
    this.options.metrics.badRows.inc();
    this.log.error({ topic, partition, offset: m.offset }, `malformed message dead-lettered: ${reason}`);
    return {
      sink: 'source',
      eventId: null,
      idempotencyKey: where,
      event: {
        topic,
        partition,
        offset: m.offset,
        ...storableBytes('key', m.key),
        ...storableBytes('value', m.value?.subarray(0, 100_000)),
      },
      source: where,
      lastError: reason,
      attempts: 1,
    };
  }

  /** Dead letters must be durable before the offset moves past them; retried like a sink, until stop(). */
  private async recordBadMessages(entries: DeadLetterEntry[]): Promise<void> {
    await retry(() => this.options.deadLetters.record(entries), {
      backoff: TRANSIENT_BACKOFF,
      signal: this.stopping.signal,
      onFailure: (err, { attempt }) => {
        if (attempt === 1) this.log.error(`dead-letter write failed, retrying: ${describeError(err)}`);
      },
    });
  }
}

/**
 * A message's bytes as the dead-letter row (jsonb) can hold them: `{value: text}` for UTF-8
 * text, else `{valueBase64: ...}`. jsonb refuses a NUL character (22P05), and a dead letter that
 * cannot be written was retried for ever, holding every partition of the worker.
 */
export function storableBytes(name: string, bytes: Buffer | null | undefined): Record<string, string | null> {
  if (!bytes) return { [name]: null };
  const text = bytes.toString('utf8');
  // Invalid UTF-8 decodes to U+FFFD: such bytes (and a real U+FFFD) are kept exactly as base64.
  if (!text.includes('\u0000') && !text.includes('\uFFFD')) return { [name]: text };
  return { [`${name}Base64`]: bytes.toString('base64') };
}
