import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { eventPosition } from '../../src/domain/position.js';
import type { Batch, EnrichedEvent } from '../../src/domain/types.js';
import { silentLogger } from '../../src/logger.js';
import { DuckDbSink } from '../../src/sinks/analytics/duckdb-sink.js';
import { duckdbQuery } from '../helpers/duckdb.js';

function event(id: number): EnrichedEvent {
  const ts = '2026-11-23T10:00:00.000000Z';
  return {
    event_id: id,
    content_id: '00000000-0000-4000-8000-00000000000a',
    user_id: null,
    event_type: 'play',
    event_ts: ts,
    duration_ms: 1500,
    device: 'ios',
    raw_payload: null,
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: 1.5,
    engagement_pct: 0.01,
    committed_at: ts,
    processed_at: ts,
  };
}

// DuckDB names a file's catalog after the file: in engagement.duckdb (the default
// ANALYTICS_URL) a schema `engagement` would make `engagement.events_enriched` ambiguous.
for (const file of ['engagement.duckdb', 'analytics.duckdb']) {
  describe(`DuckDB file ${file}`, () => {
    it('answers `engagement.events_enriched` to a reader that opens the file', async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'ep-duckdb-'));
      const full = path.join(dir, file);
      const sink = new DuckDbSink({ path: full, logger: silentLogger() });
      await sink.start();
      const events = [1, 2, 3].map(event);
      const positions = events.map((_, i) => eventPosition('0/100', i));
      const batch: Batch = { seq: 1, stream: 'test', events, positions, ackLsn: null };
      await sink.write(batch);
      await sink.stop();
      const rows = await duckdbQuery(
        full,
        'SELECT count(*) AS n, sum(engagement_seconds)::VARCHAR AS s FROM engagement.events_enriched',
      );
      assert.deepEqual(rows, [{ n: '3', s: '4.500' }]);
    });
  });
}
