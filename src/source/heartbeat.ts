import type pg from 'pg';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { HEARTBEAT_PREFIX } from './pgoutput-decoder.js';

/**
 * Keeps the slot advancing on a database where our tables are idle. Postgres only moves a
 * slot's confirmed position when the consumer confirms one, and the pipeline confirms only
 * commits it delivered; with no events, WAL written by other tables (or other databases)
 * piles up behind the slot. A non-transactional logical message is decoded into the stream
 * right away; the decoder turns it into an empty commit and the checkpoint confirms it like
 * any other position (after every earlier batch is durable).
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | null = null;
  private failing = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly intervalMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => void this.beat(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Emits one heartbeat message; returns its LSN. */
  async beat(): Promise<string | null> {
    try {
      const { rows } = await this.pool.query<{ lsn: string }>(
        `SELECT pg_logical_emit_message(false, $1, now()::text)::text AS lsn`,
        [HEARTBEAT_PREFIX],
      );
      if (this.failing) this.logger.info('slot heartbeat recovered');
      this.failing = false;
      return rows[0].lsn;
    } catch (err) {
      if (!this.failing) this.logger.warn(`slot heartbeat failed: ${describeError(err)}`);
      this.failing = true;
      return null;
    }
  }
}
