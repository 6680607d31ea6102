import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { clientConfig, withClient } from '../db/postgres.js';
import { readSlot, slotInvalidatedError } from '../db/migrate.js';
import { compareLsn, lsnToBigInt } from '../domain/position.js';
import { describeError, ErrorCodes, PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../server/metrics.js';
import type { ChangeHandler } from './changes.js';
import { decodePgoutput } from './pgoutput-decoder.js';

export interface ReplicationSourceOptions {
  databaseUrl: string;
  slotName: string;
  publicationName: string;
  logger: Logger;
  metrics: Metrics;
  /** Called when the stream broke and will be resumed from the last confirmed position. */
  onDisconnect?: () => Promise<void>;
  /** Silence that counts as a dead connection (the server sends keepalives every ~30 s). */
  receiveTimeoutMs?: number;
}

/**
 * Streams the slot with pgoutput. The only place that talks to Postgres's replication
 * protocol. Confirms nothing by itself: `acknowledge()` is called by the checkpoint once
 * every sink has the data (PITFALLS.md: no auto-ack, no timer ack of received LSNs).
 */
export class ReplicationSource {
  private service: LogicalReplicationService | null = null;
  private confirmedLsn = '0/0';
  private stopping = false;
  private loop: Promise<void> | null = null;
  private lastReceiveAt = Date.now();
  private watchdog: NodeJS.Timeout | null = null;
  private readonly log: Logger;

  constructor(private readonly options: ReplicationSourceOptions) {
    this.log = options.logger.child({ component: 'replication' });
  }

  /** The position last confirmed to Postgres (starts at the slot's confirmed_flush_lsn). */
  get confirmed(): string {
    return this.confirmedLsn;
  }

  /** Checks the slot, then streams until stop(); reconnects on failure. */
  async start(handler: ChangeHandler): Promise<void> {
    const slot = await withClient(this.options.databaseUrl, (client) =>
      readSlot(client, this.options.slotName),
    );
    if (!slot.exists) {
      throw new PipelineError(
        ErrorCodes.SLOT_MISSING,
        `replication slot '${this.options.slotName}' does not exist`,
        'config',
        'run `engagement migrate`; if the slot existed before, `engagement migrate --recreate-slot` then `engagement backfill --from <last delivered time> --to now` for the gap (see `engagement status`)',
      );
    }
    if (slot.walStatus === 'lost') throw slotInvalidatedError(this.options.slotName);
    this.confirmedLsn = slot.confirmedFlushLsn ?? '0/0';
    this.options.metrics.confirmedLsnBytes.set(Number(lsnToBigInt(this.confirmedLsn)));
    const first = this.connect(handler);
    this.loop = this.run(handler, first);
    try {
      await first.started;
    } catch (err) {
      this.stopping = true;
      await this.loop.catch(() => undefined);
      throw err;
    }
    this.startWatchdog();
  }

  /** Confirms `lsn` (a commit's end LSN) as durably processed. Never moves backwards. */
  acknowledge(lsn: string): void {
    if (compareLsn(lsn, this.confirmedLsn) <= 0) return;
    this.confirmedLsn = lsn;
    this.options.metrics.confirmedLsnBytes.set(Number(lsnToBigInt(lsn)));
    void this.service?.acknowledge(lsn).catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.watchdog) clearInterval(this.watchdog);
    // Send the final confirmation before closing, so a clean stop replays nothing.
    await this.service?.acknowledge(this.confirmedLsn).catch(() => undefined);
    await this.service?.destroy().catch(() => undefined);
    await this.loop?.catch(() => undefined);
  }

  private connect(handler: ChangeHandler): { started: Promise<void>; done: Promise<void> } {
    // A new service per connection: subscribe() on a used one resumes from its last
    // *received* LSN and would skip unconfirmed transactions (PITFALLS.md).
    const service = new LogicalReplicationService(
      clientConfig(this.options.databaseUrl, 'engagement-replication'),
      {
        acknowledge: { auto: false, timeoutSeconds: 0 },
        flowControl: { enabled: true },
      },
    );
    this.service = service;
    service.on('data', (_lsn: string, message: Pgoutput.Message) => {
      this.lastReceiveAt = Date.now();
      if (this.stopping) return;
      const change = decodePgoutput(message);
      return change ? handler(change) : undefined;
    });
    service.on('heartbeat', (lsn: string, _timestamp: number, shouldRespond: boolean) => {
      this.lastReceiveAt = Date.now();
      const lag = lsnToBigInt(lsn) - lsnToBigInt(this.confirmedLsn);
      this.options.metrics.replicationLagBytes.set(Number(lag > 0n ? lag : 0n));
      // Answer with our own durable position, never the received one.
      // (A known limit: Postgres's fast shutdown waits for a confirmation of its shutdown
      // checkpoint, which this never sends; see RELIABILITY.md.)
      if (shouldRespond) void service.acknowledge(this.confirmedLsn).catch(() => undefined);
    });
    service.on('error', () => undefined); // surfaced through subscribe()'s rejection below
    let resolveStarted!: () => void;
    const started = new Promise<void>((resolve) => (resolveStarted = resolve));
    service.on('start', () => {
      this.log.info({ slot: this.options.slotName, from: this.confirmedLsn }, 'replication streaming');
      resolveStarted();
    });
    const plugin = new PgoutputPlugin({
      protoVersion: 1,
      publicationNames: [this.options.publicationName],
      // Logical messages carry the heartbeat (source/heartbeat.ts) that lets an idle slot advance.
      messages: true,
    });
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
      await this.service?.destroy().catch(() => undefined);
      await this.options.onDisconnect?.();
      attempt += 1;
      const delay = Math.min(10_000, 250 * 2 ** Math.min(attempt, 6));
      // One warning per outage, not one per reconnect attempt (an outage of a minute would
      // otherwise log a dozen lines for one problem); the retries go to debug.
      this.log[attempt === 1 ? 'warn' : 'debug'](
        { retryInMs: delay, attempt },
        `replication stream lost: ${failure ? describeError(failure) : 'connection closed'}`,
      );
      if (attempt === 1) lostAt = Date.now();
      await sleep(delay);
      if (this.stopping) return;
      current = this.connect(handler);
      try {
        await current.started;
        this.log.info(
          { attempts: attempt },
          `replication stream resumed after ${((Date.now() - lostAt) / 1000).toFixed(1)} s`,
        );
        attempt = 0;
      } catch {
        // the loop logs and retries
      }
    }
  }

  private startWatchdog(): void {
    const timeout = this.options.receiveTimeoutMs ?? 90_000;
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastReceiveAt > timeout && this.service && !this.stopping) {
        this.log.warn(`no data or keepalive for ${timeout} ms; reconnecting`);
        this.lastReceiveAt = Date.now();
        void this.service.stop().catch(() => undefined);
      }
    }, 5_000);
    this.watchdog.unref();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
