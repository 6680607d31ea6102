/**
 * Child of duckdb-crash.test.ts: replays a fixed stream of events into a DuckDbSink from a
 * given event (as a replication slot replays from its confirmed position), in batches of a
 * size that differs per run, and SIGKILLs itself between the appended rows' flush and COMMIT
 * of the `killAt`-th transaction (0-based; batches skipped as replays open none; -1: never). Args: file fromEvent killAt batchSize total.
 */
import { eventPosition } from '../../../src/domain/position.js';
import type { Batch, EnrichedEvent } from '../../../src/domain/types.js';
import { silentLogger } from '../../../src/logger.js';
import { DuckDbSink } from '../../../src/sinks/analytics/duckdb-sink.js';

const [file, fromArg, killAtArg, sizeArg, totalArg, positioned] = process.argv.slice(2);
const from = Number(fromArg);
const killAt = Number(killAtArg);
const size = Number(sizeArg);
const total = Number(totalArg);

function event(id: number): EnrichedEvent {
  const ts = '2026-12-01T08:00:00.000001Z';
  return {
    event_id: id,
    content_id: '00000000-0000-4000-8000-00000000000a',
    user_id: null,
    event_type: 'play',
    event_ts: ts,
    duration_ms: id,
    device: 'ios',
    raw_payload: { id },
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: id / 1000,
    engagement_pct: null,
    committed_at: ts,
    processed_at: ts,
  };
}

let written = 0;
let commits = 0;
const sink = new DuckDbSink({
  path: file,
  logger: silentLogger(),
  memoryLimit: '64MB',
  positionedStream: positioned === 'yes' ? { stream: 'slot', sourceId: async () => 'crash-test' } : undefined,
  beforeCommit: () => {
    if (commits++ === killAt) process.kill(process.pid, 'SIGKILL');
  },
});
await sink.start();
let seq = 0;
for (let id = from; id <= total; id += size) {
  const ids = Array.from({ length: Math.min(size, total - id + 1) }, (_, i) => id + i);
  const batch: Batch = {
    seq: ++seq,
    stream: 'slot',
    events: ids.map(event),
    // Seven events per source transaction, like the real stream's positions.
    positions: ids.map((i) => eventPosition(`0/${(0x10000 + Math.floor(i / 7)).toString(16)}`, i % 7)),
    ackLsn: null,
  };
  await sink.write(batch, new AbortController().signal);
  written++;
}
await sink.stop();
process.stdout.write(`done ${written}\n`);
