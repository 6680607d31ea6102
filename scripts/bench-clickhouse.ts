// ClickHouse insert throughput through the ClickHouseSink (the pipeline's exact insert path:
// JSONEachRow over HTTP with a deduplication token), then an identical replay of every batch.
//
//   node --import tsx scripts/bench-clickhouse.ts [--rows 200000] [--batch 1000,10000]
//
// Without ANALYTICS_URL it runs ClickHouse 26.x in-process (chdb) behind the test HTTP front,
// so both the client and the engine share this machine's cores; with
// ANALYTICS_URL=clickhouse://user:pass@host:8123/db it measures a real server (the database is
// written to: use a scratch one). Writes bench/results/clickhouse.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from '@clickhouse/client';
import type { Batch, EnrichedEvent } from '../src/domain/types.js';
import { silentLogger } from '../src/logger.js';
import { ClickHouseSink, parseClickHouseUrl } from '../src/sinks/analytics/clickhouse-sink.js';
import { startChdbHttp, type ChdbHttp } from '../test/helpers/chdb-http.js';

const { values } = parseArgs({
  options: { rows: { type: 'string', default: '200000' }, batch: { type: 'string', default: '1000,10000' } },
});
const totalRows = Number(values.rows);
const batchSizes = values.batch.split(',').map(Number);

const DEVICES = ['ios', 'android', 'web', null];
const TYPES = ['play', 'pause', 'finish', 'click'];

/** A realistic row: same shapes and sizes the enrichment produces. */
function event(id: number, base: number): EnrichedEvent {
  const ts = new Date(base + id * 10).toISOString().replace('Z', '123Z');
  const duration = (id * 7919) % 600_000;
  return {
    event_id: id,
    content_id: `00000000-0000-4000-8000-${String(id % 500).padStart(12, '0')}`,
    user_id: `11111111-1111-4111-8111-${String(id % 100_000).padStart(12, '0')}`,
    event_type: TYPES[id % 4],
    event_ts: ts,
    duration_ms: duration,
    device: DEVICES[id % 4],
    raw_payload: { session: id % 977, referrer: 'newsletter', v: 2 },
    content_type: 'video',
    length_seconds: 1200,
    engagement_seconds: duration / 1000,
    engagement_pct: Math.round(duration / 12_000) / 100,
    committed_at: ts,
    processed_at: ts,
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function run(): Promise<void> {
  let front: ChdbHttp | null = null;
  let url = process.env.ANALYTICS_URL ?? '';
  if (!url.startsWith('clickhouse')) {
    front = await startChdbHttp();
    url = `clickhouse://default@127.0.0.1:${front.port}/bench`;
  }
  const target = parseClickHouseUrl(url);
  const engine = front
    ? 'chdb (ClickHouse in-process) behind the test HTTP front'
    : `server at ${target.url}`;
  const admin = createClient({ url: target.url, username: target.username, password: target.password });
  const count = async (sql: string) =>
    Number(
      ((await (await admin.query({ query: sql, format: 'JSONEachRow' })).json()) as { n: string }[])[0].n,
    );
  const runs = [];
  const base = Date.UTC(2026, 10, 1);
  try {
    for (const batchSize of batchSizes) {
      const sink = new ClickHouseSink({ target, logger: silentLogger() });
      await sink.start();
      await admin.command({ query: `TRUNCATE TABLE ${'`'}${target.database}${'`'}.events_enriched` });
      const batches: Batch[] = [];
      for (let from = 1, seq = 1; from <= totalRows; from += batchSize, seq++) {
        const events: EnrichedEvent[] = [];
        for (let id = from; id < Math.min(from + batchSize, totalRows + 1); id++)
          events.push(event(id, base));
        batches.push({ seq, stream: 'bench', events, positions: events.map(String), ackLsn: null });
      }
      const signal = new AbortController().signal;
      const pass = async () => {
        const latencies: number[] = [];
        const started = performance.now();
        for (const b of batches) {
          const t = performance.now();
          await sink.write(b, signal);
          latencies.push(performance.now() - t);
        }
        const seconds = (performance.now() - started) / 1000;
        latencies.sort((a, b) => a - b);
        return {
          rowsPerSecond: Math.round(totalRows / seconds),
          seconds: Number(seconds.toFixed(3)),
          batchMs: {
            p50: Number(percentile(latencies, 50).toFixed(1)),
            p99: Number(percentile(latencies, 99).toFixed(1)),
          },
        };
      };
      const insert = await pass();
      const table = `${'`'}${target.database}${'`'}.events_enriched`;
      const physicalAfterInsert = await count(`SELECT count() AS n FROM ${table}`);
      const replay = await pass(); // identical batches: dropped by insert_deduplication_token
      const physicalAfterReplay = await count(`SELECT count() AS n FROM ${table}`);
      const final = await count(`SELECT count() AS n FROM ${table} FINAL`);
      await sink.stop();
      const result = {
        batchSize,
        rows: totalRows,
        insert,
        replay,
        physicalAfterInsert,
        physicalAfterReplay,
        final,
      };
      console.log(JSON.stringify(result));
      runs.push(result);
    }
  } finally {
    await admin.close();
    await front?.close();
  }
  const report = {
    benchmark: 'clickhouse-insert-throughput',
    command:
      'node --import tsx scripts/bench-clickhouse.ts --rows ' +
      totalRows +
      ' --batch ' +
      batchSizes.join(','),
    date: new Date().toISOString(),
    engine,
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
    notes:
      'Serial writes (the sink contract: one write at a time, in order). rowsPerSecond = rows / wall time of all ' +
      'batches through ClickHouseSink.write (JSON serialization, HTTP, parse and part write). The replay pass ' +
      're-sends every batch unchanged; the deduplication token makes the server drop them.',
    runs,
  };
  const out = path.resolve(import.meta.dirname, '..', 'bench', 'results', 'clickhouse.json');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), out)}`);
}

await run();
