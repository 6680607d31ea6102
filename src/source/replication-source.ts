import type pg from 'pg';
import { LogicalReplicationService, type Pgoutput } from 'pg-logical-replication';
import { clientConfig, withClient } from '../db/postgres.js';
import {
  readSlot,
  slotInUseError,
  slotInvalidatedError,
  slotOfOtherDatabaseError,
  type SlotState,
} from '../db/migrate.js';
import type { SourceShape } from '../domain/source-shape.js';
import { bigIntToLsn, compareLsn, lsnToBigInt } from '../domain/position.js';
import { describeError, ErrorCodes, PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Change, ChangeHandler } from './changes.js';
import { handleQueueDirectly, type DataHandler } from './direct-queue.js';
import { EventInsertPlugin, isDecodedChange } from './event-insert-plugin.js';
import { decodePgoutputChanges } from './pgoutput-decoder.js';
import { backoffDelay } from '../retry/backoff.js';
import { pause } from '../retry/retry.js';
import { postgresSystemIdentifier } from '../db/system-identifier.js';

/** Reconnects after a lost stream: full jitter up to 0.5 s, 1 s, 2 s, … 10 s. */
const RECONNECT_BACKOFF = { baseMs: 500, maxMs: 10_000 };

export interface ReplicationSourceOptions {
  databaseUrl: string;
  slotName: string;
  publicationName: string;
  /** The user's tables (discovered at start); default: the tables `engagement migrate` creates. */
  shape?: SourceShape;
  logger: Logger;
  metrics: Metrics;
  /** Called when the stream broke and will be resumed from the last confirmed position. */
  onDisconnect?: () => Promise<void>;
  /** Silence that counts as a dead connection (the server sends keepalives every ~30 s). */
  receiveTimeoutMs?: number;
  /**
   * True when every change handed to the handler so far is durably delivered and confirmed
   * (no open transaction, nothing buffered or in flight). Only then may a keepalive's
   * position, past everything received, be confirmed.
   */
  isDrained?: () => boolean;
  /** The stream met something it must not go past (see `halt` changes); it stops taking changes. */
  onHalt?: (error: PipelineError) => void;
  /** Standby status updates are sent at least this often, also while backpressure pauses the socket. */
  statusIntervalMs?: number;
  /** The cluster's identity (default: IDENTIFY_SYSTEM on DATABASE_URL); tests replace it. */
  systemIdentifier?: () => Promise<string>;
  /**
   * How long start() waits for a slot another process streams from (a previous pipeline still
   * stopping, SHUTDOWN_TIMEOUT_MS) before it gives up with one line (default 30 s).
   */
  slotBusyWaitMs?: number;
}

/** SQLSTATE of START_REPLICATION on a slot another walsender holds ("... is active for PID n"). */
const OBJECT_IN_USE = '55006';

/** The parts of pg-logical-replication's flow-control queue the idle rule must see (not in its typings). */
interface FlowControlState {
  _messageQueue?: unknown[];
  _processing?: boolean;
}

/**
 * Streams the slot with pgoutput. The only place that talks to Postgres's replication
 * protocol. Confirms nothing by itself: `acknowledge()` is called by the checkpoint once
 * every sink has the data (no auto-ack, and no timer ack: the library's would confirm the
 * last LSN *received*, not what the sinks hold; see docs/architecture.md, "Positions").
 */
export class ReplicationSource {
  private service: LogicalReplicationService | null = null;
  private confirmedLsn = '0/0';
  /** acknowledge() queued a standby status update for the end of this turn of the event loop. */
  private statusQueued = false;
  private stopping = false;
  private loop: Promise<void> | null = null;
  private lastReceiveAt = Date.now();
  private watchdog: NodeJS.Timeout | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private pausedSince: number | null = null;
  private halted = false;
  private lostAtMs: number | null = null;
  /** The change handler's work still running (it holds the stream), null when none. */
  private handling: Promise<unknown> | null = null;
  private markStopped!: () => void;
  /** Resolved by stop() (declared after markStopped: class fields initialise in order). */
  private readonly stopped = new Promise<void>((resolve) => (this.markStopped = resolve));
  /** The connection serverShuttingDown() closed (once per connection). */
  private released: LogicalReplicationService | null = null;
  /** The cluster streamed from (`postgres:<system identifier>`), read at start. */
  private identity: string | null = null;
  private readonly log: Logger;

  constructor(private readonly options: ReplicationSourceOptions) {
    this.log = options.logger.child({ component: 'replication' });
  }

  /**
   * The position last confirmed to Postgres (starts at the slot's confirmed_flush_lsn), written
   * as Postgres writes LSNs (`0/89C1E70`; the protocol library pads them) for logs and /api/stats.
   */
  get confirmed(): string {
    return bigIntToLsn(lsnToBigInt(this.confirmedLsn));
  }

  /** The cluster the positions belong to (`postgres:<system identifier>`); null before start(). */
  /** Since when (epoch ms) the stream is lost and not yet resumed; null while it streams. */
  get lostSince(): number | null {
    return this.lostAtMs;
  }

  get sourceId(): string | null {
    return this.identity;
  }

  private readIdentity(): Promise<string> {
    return (this.options.systemIdentifier ?? (() => postgresSystemIdentifier(this.options.databaseUrl)))();
  }

  /**
   * Before a reconnect: the same cluster still answers DATABASE_URL? Another one (a failover to
   * a cluster restored from a dump, a DNS name moved) has its own slot and LSNs: resuming would
   * confirm this process's positions, from the old cluster, to the new slot, skipping its
   * transactions. Halts instead; a restart starts from the new slot's own position.
   */
  private async sameCluster(): Promise<boolean> {
    const now = await this.readIdentity();
    if (this.identity === null || now === this.identity) return true;
    this.halt(
      new PipelineError(
        ErrorCodes.SOURCE_CHANGED,
        `DATABASE_URL now reaches another Postgres cluster (${this.identity}, now ${now}); stopped without confirming anything to it`,
        'fatal',
        "restart the pipeline: it then streams from that cluster's slot and stores positions under its identity",
      ),
    );
    return false;
  }

  /** Checks the slot, then streams until stop(); reconnects on failure. */
  async start(handler: ChangeHandler): Promise<void> {
    const read = await withClient(this.options.databaseUrl, async (client) => ({
      slot: await readSlot(client, this.options.slotName),
      senderTimeoutMs: await readSenderTimeoutMs(client),
    }));
    const { senderTimeoutMs } = read;
    const slot =
      read.slot.active && !read.slot.otherDatabase ? await this.slotReleased(read.slot) : read.slot;
    if (!slot.exists) {
      throw new PipelineError(
        ErrorCodes.SLOT_MISSING,
        `replication slot '${this.options.slotName}' does not exist`,
        'config',
        'run `engagement migrate`; if the slot existed before, `engagement migrate --recreate-slot` then `engagement backfill --from <last delivered time> --to now` for the gap (see `engagement status`)',
      );
    }
    if (slot.otherDatabase) throw slotOfOtherDatabaseError(this.options.slotName, slot.database ?? null);
    if (slot.walStatus === 'lost') throw slotInvalidatedError(this.options.slotName);
    this.confirmedLsn = slot.confirmedFlushLsn ?? '0/0';
    this.options.metrics.confirmedLsnBytes.set(Number(lsnToBigInt(this.confirmedLsn)));
    this.identity = await this.readIdentity();
    const first = this.connect(handler);
    this.loop = this.run(handler, first);
    try {
      await first.started;
    } catch (err) {
      this.stopping = true;
      await this.loop.catch(() => undefined);
      throw (await this.slotTakenMeanwhile(err)) ?? err;
    }
    this.startWatchdog();
    // Well inside the server's wal_sender_timeout (0 = disabled), at most every 10 s.
    this.startStatusTimer(
      this.options.statusIntervalMs ??
        Math.max(200, Math.min(10_000, senderTimeoutMs > 0 ? senderTimeoutMs / 4 : 10_000)),
    );
  }

  /**
   * Another process streams from the slot: a pipeline that is still stopping (a supervisor's
   * restart comes while the old process drains) releases it within its SHUTDOWN_TIMEOUT_MS, so
   * wait that long; a second pipeline on the same slot does not, and gets one line.
   */
  private async slotReleased(busy: SlotState): Promise<SlotState> {
    const waitMs = this.options.slotBusyWaitMs ?? 30_000;
    this.log.warn(
      { pid: busy.activePid, application: busy.activeApplication },
      `replication slot '${this.options.slotName}' is in use by another process; waiting up to ${Math.round(waitMs / 1000)} s for it to be released`,
    );
    const until = Date.now() + waitMs;
    let slot = busy;
    while (slot.exists && slot.active) {
      if (this.stopping) throw new Error('stopped while waiting for the replication slot');
      if (Date.now() >= until) throw slotInUseError(this.options.slotName, slot);
      await new Promise((r) => setTimeout(r, 500));
      slot = await withClient(this.options.databaseUrl, (client) => readSlot(client, this.options.slotName));
    }
    return slot;
  }

  /**
   * Postgres refused the stream because another process took the slot after start() found it
   * free (two pipelines started at the same moment): the same one line as a slot found busy,
   * naming the other reader, instead of Postgres's words. Not waited for: the other one has
   * just started, it is not a predecessor stopping.
   */
  private async slotTakenMeanwhile(err: unknown): Promise<PipelineError | null> {
    if ((err as { code?: unknown } | null)?.code !== OBJECT_IN_USE) return null;
    const slot = await withClient(this.options.databaseUrl, (client) =>
      readSlot(client, this.options.slotName),
    ).catch(() => null);
    // The other reader may be gone again already (or the read failed): Postgres's own words name it.
    const pid = /active for PID (\d+)/.exec((err as Error).message ?? '')?.[1];
    const holder =
      slot?.active && slot.activePid != null
        ? slot
        : {
            exists: true,
            active: true,
            confirmedFlushLsn: null,
            walStatus: null,
            activePid: pid ? Number(pid) : null,
          };
    return slotInUseError(this.options.slotName, holder);
  }

  private halt(error: PipelineError): void {
    this.halted = true;
    this.log.error(error.oneLine());
    this.options.onHalt?.(error);
  }

  /**
   * While backpressure pauses the socket, keepalives are neither read nor answered and the
   * server would drop the connection after wal_sender_timeout; any standby status update
   * resets that timer, so one is sent on a timer of our own.
   */
  private startStatusTimer(interval: number): void {
    this.statusTimer = setInterval(() => {
      if (!this.stopping) void this.sendStatus();
    }, interval);
    this.statusTimer.unref();
  }

  /**
   * Confirms `lsn` (a commit's end LSN, or a position past which nothing is pending) as
   * durably processed. Never moves backwards. Returns true when it advanced (and so a
   * standby status update goes out on the current connection, once the batches confirmed
   * together have all been: one DuckDB commit confirms every batch it held at once, and one
   * update for the last of them says what eight did).
   */
  acknowledge(lsn: string): boolean {
    if (compareLsn(lsn, this.confirmedLsn) <= 0) return false;
    this.confirmedLsn = lsn;
    this.options.metrics.confirmedLsnBytes.set(Number(lsnToBigInt(lsn)));
    if (!this.statusQueued) {
      this.statusQueued = true;
      setImmediate(() => {
        this.statusQueued = false;
        if (!this.stopping) void this.sendStatus();
      });
    }
    return true;
  }

  /**
   * Postgres is shutting down (a 57P0x error met by another connection of the pipeline). Its
   * walsender exits only once we confirmed everything it sent, which a stream held by a change
   * the pipeline cannot finish without Postgres (recording a content change, a lookup) never
   * does: the shutdown would wait for us forever. So the connection is closed; the stream
   * resumes from the confirmed position once Postgres is back, as after any lost connection.
   */
  serverShuttingDown(): void {
    const service = this.service;
    if (!service || this.stopping || this.released === service) return;
    this.released = service;
    this.log.warn(
      { resumeFrom: this.confirmed },
      'Postgres is shutting down: closing the replication connection so that it can',
    );
    void service.stop().catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.markStopped();
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.statusTimer) clearInterval(this.statusTimer);
    // Send the final confirmation before closing, so a clean stop replays nothing.
    await this.sendStatus(this.service);
    await this.service?.destroy().catch(() => undefined);
    await this.loop?.catch(() => undefined);
  }

  /**
   * Reports `confirmedLsn` to the server as the flushed position, exactly.
   *
   * Postgres skips, on the next start, every transaction whose commit record *starts*
   * before the confirmed flush position, and a walsender at fast shutdown exits only when
   * the reported flush equals its sent position. pg-logical-replication's acknowledge(lsn)
   * reports `lsn + 1` (it assumes the LSN of the last byte received); handing it a commit's
   * end LSN would confirm one byte into the next record and, with back-to-back commits,
   * silently skip the whole next transaction. So it is handed `lsn - 1`.
   */
  private sendStatus(service = this.service): Promise<unknown> {
    const exact = lsnToBigInt(this.confirmedLsn);
    if (!service || exact === 0n) return Promise.resolve();
    return service.acknowledge(bigIntToLsn(exact - 1n)).catch(() => undefined);
  }

  /** True while the library's flow control holds messages it has not yet handed over (socket paused). */
  private get libraryBusy(): boolean {
    const state = this.service as unknown as FlowControlState | null;
    return Boolean(state && (state._processing || (state._messageQueue?.length ?? 0) > 0));
  }

  private connect(handler: ChangeHandler): { started: Promise<void>; done: Promise<void> } {
    // A new service per connection: subscribe() on a used one resumes from its last
    // *received* LSN and would skip unconfirmed transactions.
    const service = new LogicalReplicationService(
      clientConfig(this.options.databaseUrl, 'engagement-replication'),
      {
        acknowledge: { auto: false, timeoutSeconds: 0 },
        flowControl: { enabled: true },
      },
    );
    this.service = service;
    // Set when a change could not be handled: every later message of this connection is
    // ignored and the stream restarts from the confirmed position, so nothing is skipped.
    let broken = false;
    const fail = (lsn: string, err: unknown): void => {
      if (this.stopping || broken) return;
      broken = true;
      this.log.error(
        { at: lsn, resumeFrom: this.confirmed },
        `change handler failed, restarting the stream from the confirmed position: ${describeError(err)}`,
      );
      void service.stop().catch(() => undefined);
    };
    // Hands the message's changes on in order; returns a promise only while a handler holds the
    // stream (backpressure), so a change handled synchronously costs no promise or microtask.
    const deliver = (lsn: string, changes: Change[], from: number): void | Promise<void> => {
      for (let i = from; i < changes.length; i++) {
        const change = changes[i];
        if (change.kind === 'halt') {
          this.halt(change.error);
          return;
        }
        const pending = handler(change);
        if (pending) return pending.then(() => deliver(lsn, changes, i + 1));
      }
    };
    const onData = (lsn: string, message: Pgoutput.Message | Change): void | Promise<void> => {
      this.lastReceiveAt = Date.now();
      if (this.stopping || this.halted || broken) return;
      // The library would catch a throw or rejection, emit 'error' and go on with the next
      // message: the event would be skipped. Never let it see one.
      try {
        const pending = isDecodedChange(message)
          ? handler(message)
          : deliver(lsn, decodePgoutputChanges(message, this.options.shape), 0);
        if (pending) {
          const settled: Promise<void> = pending
            .catch((err: unknown) => fail(lsn, err))
            .finally(() => {
              if (this.handling === settled) this.handling = null;
            });
          this.handling = settled;
          return settled;
        }
      } catch (err) {
        fail(lsn, err);
      }
    };
    if (!handleQueueDirectly(service, onData as DataHandler)) service.on('data', onData);
    service.on('heartbeat', (lsn: string, _timestamp: number, shouldRespond: boolean) => {
      this.lastReceiveAt = Date.now();
      if (broken || this.halted) return;
      // The keepalive carries the server's sent position. When everything received before it
      // is delivered and confirmed, nothing before that position is pending, so it is
      // confirmed exactly: an idle slot advances, and a fast shutdown completes (the
      // walsender waits for flush == sent).
      const advanced =
        !this.libraryBusy &&
        !this.stopping &&
        (this.options.isDrained?.() ?? false) &&
        this.acknowledge(lsn) &&
        this.service === service;
      // Otherwise answer with our own durable position, never the received one (once:
      // advancing above already sent the update the server asked for).
      if (shouldRespond && !advanced) void this.sendStatus(service);
    });
    service.on('error', () => undefined); // surfaced through subscribe()'s rejection below
    let resolveStarted!: () => void;
    const started = new Promise<void>((resolve) => (resolveStarted = resolve));
    service.on('start', () => {
      this.log.info({ slot: this.options.slotName, from: this.confirmed }, 'replication streaming');
      resolveStarted();
    });
    const plugin = new EventInsertPlugin(
      {
        protoVersion: 1,
        publicationNames: [this.options.publicationName],
        // Logical messages carry the heartbeat (source/heartbeat.ts) that lets an idle slot advance.
        messages: true,
      },
      this.options.shape,
    );
    // '0/00000000' = resume from the slot's confirmed_flush_lsn.
    const done = service.subscribe(plugin, this.options.slotName, '0/00000000').then(() => undefined);
    return {
      started: Promise.race([
        started,
        done.then(() => {
          throw new Error('replication ended before it started');
        }),
      ]),
      done,
    };
  }

  private async run(
    handler: ChangeHandler,
    first: { started: Promise<void>; done: Promise<void> },
  ): Promise<void> {
    let current = first;
    let attempt = 0;
    let lostAt = 0;
    for (;;) {
      let failure: unknown = null;
      try {
        await current.done;
      } catch (err) {
        failure = err;
      }
      if (this.stopping) return;
      // Lost from now (/readyz), also while the handler below still waits on Postgres.
      if (attempt === 0) this.lostAtMs = lostAt = Date.now();
      await this.service?.destroy().catch(() => undefined);
      // A change still being handled (waiting for Postgres, say) finishes first: the open
      // transaction is reset, and the stream replayed, only once nothing of the old one runs.
      while (this.handling && !this.stopping) await Promise.race([this.handling, this.stopped]);
      if (this.stopping) return;
      await this.options.onDisconnect?.();
      attempt += 1;
      const delay = backoffDelay(attempt, RECONNECT_BACKOFF);
      // One warning per outage, not one per reconnect attempt (an outage of a minute would
      // otherwise log a dozen lines for one problem); the retries go to debug.
      this.log[attempt === 1 ? 'warn' : 'debug'](
        { retryInMs: delay, attempt },
        `replication stream lost: ${failure ? describeError(failure) : 'connection closed'}`,
      );
      await pause(delay);
      if (this.stopping) return;
      let same: boolean;
      try {
        same = await this.sameCluster();
      } catch (err) {
        // Not reachable yet: counted as a failed attempt, retried after the next backoff.
        current = { started: Promise.resolve(), done: Promise.reject(err) };
        continue;
      }
      if (!same || this.stopping) return;
      current = this.connect(handler);
      try {
        await current.started;
        this.log.info(
          { attempts: attempt },
          `replication stream resumed after ${((Date.now() - lostAt) / 1000).toFixed(1)} s`,
        );
        attempt = 0;
        this.lostAtMs = null;
      } catch {
        // the loop logs and retries
      }
    }
  }

  private startWatchdog(): void {
    const timeout = this.options.receiveTimeoutMs ?? 90_000;
    this.watchdog = setInterval(() => {
      // A socket paused by backpressure is silent by design (sinks are behind), not dead.
      if (this.libraryBusy) {
        this.pausedSince ??= Date.now();
        this.lastReceiveAt = Date.now();
        return;
      }
      if (this.pausedSince !== null) {
        this.log.debug(
          `stream resumed after ${((Date.now() - this.pausedSince) / 1000).toFixed(1)} s of backpressure`,
        );
        this.pausedSince = null;
      }
      if (Date.now() - this.lastReceiveAt > timeout && this.service && !this.stopping) {
        this.log.warn(`no data or keepalive for ${timeout} ms; reconnecting`);
        this.lastReceiveAt = Date.now();
        void this.service.stop().catch(() => undefined);
      }
    }, 5_000);
    this.watchdog.unref();
  }
}

/** The server's wal_sender_timeout for a session like ours, in ms (0 = disabled). */
async function readSenderTimeoutMs(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ ms: string }>(
    `SELECT setting::bigint * CASE unit WHEN 's' THEN 1000 WHEN 'min' THEN 60000 ELSE 1 END AS ms
       FROM pg_settings WHERE name = 'wal_sender_timeout'`,
  );
  return Number(rows[0]?.ms ?? 60_000);
}
