import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import type pg from 'pg';
import { clientConfig } from '../db/postgres.js';
import { wallNow } from './latency-probe.js';

/**
 * The two yardsticks the benchmark compares the pipeline with:
 * - a bare pgoutput consumer that only counts inserts (the ceiling for decoding on this box);
 * - a polling reader, `WHERE id > last` once a second (the seeds' approach), for latency.
 */

const RAW_SLOT = 'engagement_bench_raw';

/** Creates the raw consumer's slot now, so it holds whatever is inserted next. */
export async function createRawSlot(pool: pg.Pool): Promise<void> {
  await pool.query(
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`,
    [RAW_SLOT],
  );
  await pool.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [RAW_SLOT]);
}

/**
 * Streams the raw slot until `expected` inserts were decoded; returns events/s from the first
 * message to the last. No enrichment, no sinks: pg-logical-replication's decoder alone.
 */
export async function measureRawDecode(
  databaseUrl: string,
  pool: pg.Pool,
  publication: string,
  expected: number,
  /** Called the moment the last event is decoded (before the connection closes). */
  onDone?: () => void,
): Promise<{ events: number; seconds: number; eventsPerSecond: number }> {
  const service = new LogicalReplicationService(clientConfig(databaseUrl, 'engagement-bench-raw'), {
    acknowledge: { auto: false, timeoutSeconds: 0 },
  });
  let count = 0;
  let first = 0;
  let last = 0;
  const done = new Promise<void>((resolve) => {
    service.on('data', (_lsn: string, message: Pgoutput.Message) => {
      if (message.tag !== 'insert' || message.relation.name !== 'engagement_events') return;
      if (count === 0) first = performance.now();
      count += 1;
      if (count >= expected) {
        last = performance.now();
        onDone?.();
        resolve();
      }
    });
  });
  service.on('error', () => undefined);
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [publication] });
  const streaming = service.subscribe(plugin, RAW_SLOT, '0/00000000').catch(() => undefined);
  // A busy machine decodes far slower than an idle one: 10 minutes, or 1 ms per event.
  const limitMs = Math.max(600_000, expected);
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(
      () => reject(new Error(`raw decode did not finish within ${Math.round(limitMs / 1000)} s`)),
      limitMs,
    ).unref(),
  );
  try {
    await Promise.race([done, timeout]);
  } finally {
    await service.destroy().catch(() => undefined);
    await streaming;
    await pool.query(`SELECT pg_drop_replication_slot($1)`, [RAW_SLOT]).catch(() => undefined);
  }
  const seconds = (last - first) / 1000;
  return { events: count, seconds: round3(seconds), eventsPerSecond: Math.round(count / seconds) };
}

/**
 * The polling baseline: every `intervalMs`, `SELECT ... WHERE id > last`. For each marker
 * content id it records when a poll first returned the marker's row: INSERT acknowledged ->
 * seen by the poller. It stops there (no enrichment, no Redis), so it flatters the baseline.
 */
export class PollingBaseline {
  private lastId = '0';
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly watched = new Map<string, number>();
  readonly latenciesMs: number[] = [];

  constructor(
    private readonly pool: pg.Pool,
    private readonly intervalMs = 1000,
  ) {}

  async start(): Promise<void> {
    const { rows } = await this.pool.query<{ id: string | null }>(
      'SELECT max(id)::text AS id FROM engagement_events',
    );
    this.lastId = rows[0]?.id ?? '0';
    this.running = true;
    this.loop = this.run();
  }

  /** A marker INSERT for `contentId` was acknowledged at `ackedAt` (wall ms). */
  watch(contentId: string, ackedAt: number): void {
    this.watched.set(contentId, ackedAt);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async run(): Promise<void> {
    while (this.running) {
      const started = Date.now();
      const { rows } = await this.pool.query<{ id: string; content_id: string }>(
        'SELECT id::text AS id, content_id::text AS content_id FROM engagement_events WHERE id > $1 ORDER BY id',
        [this.lastId],
      );
      const now = wallNow();
      for (const row of rows) {
        const ackedAt = this.watched.get(row.content_id);
        if (ackedAt !== undefined) {
          this.latenciesMs.push(Math.max(0, now - ackedAt));
          this.watched.delete(row.content_id);
        }
      }
      if (rows.length > 0) this.lastId = rows[rows.length - 1]!.id;
      const wait = this.intervalMs - (Date.now() - started);
      if (wait > 0 && this.running) await new Promise((r) => setTimeout(r, wait));
    }
  }
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
