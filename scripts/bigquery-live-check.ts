// Manual check of the BigQuery sink against the real service (not run in CI: no credentials there).
//
//   ANALYTICS_URL=bigquery://YOUR_PROJECT/engagement_check node --import tsx scripts/bigquery-live-check.ts
//
// Uses Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth
// application-default login`). Creates the dataset/table/view if absent, streams 1,000 events,
// replays them (same batch, then cut at other boundaries, as after a crash), and checks that
// events_enriched_unique has exactly one row per event_id. Dead letters are printed, not stored.
import { BigQuery } from '@google-cloud/bigquery';
import type { Batch, EnrichedEvent } from '../src/domain/types.js';
import { createLogger } from '../src/logger.js';
import { BigQuerySink, parseBigQueryUrl } from '../src/sinks/analytics/bigquery-sink.js';

const url = process.env.ANALYTICS_URL ?? '';
if (!url.startsWith('bigquery://')) {
  console.error('set ANALYTICS_URL=bigquery://PROJECT/DATASET');
  process.exit(2);
}
const target = parseBigQueryUrl(url);
const base = Date.now();
const firstId = base * 1000; // unique per run, so runs do not mix
const events: EnrichedEvent[] = Array.from({ length: 1000 }, (_, i) => {
  const ts = new Date(base - i * 1000).toISOString();
  return {
    event_id: firstId + i,
    content_id: '00000000-0000-4000-8000-00000000000a',
    user_id: null,
    event_type: ['play', 'pause', 'finish', 'click'][i % 4],
    event_ts: ts,
    duration_ms: 7000,
    device: 'ios',
    raw_payload: { check: true },
    content_type: 'video',
    length_seconds: 300,
    engagement_seconds: 7,
    engagement_pct: 0.02,
    committed_at: ts,
    processed_at: ts,
  };
});
const batch = (from: number, to: number): Batch => ({
  seq: 1,
  stream: 'live-check',
  events: events.slice(from, to),
  positions: events.slice(from, to).map((e) => String(e.event_id)),
  ackLsn: null,
});
const sink = new BigQuerySink({
  target,
  logger: createLogger('info'),
  deadLetters: {
    record: async (entries) => (
      console.error('dead letters:', entries.length, entries[0]?.lastError),
      entries.length
    ),
  },
});
await sink.start();
const signal = new AbortController().signal;
await sink.write(batch(0, 1000), signal);
await sink.write(batch(0, 1000), signal);
await sink.write(batch(300, 700), signal);
const [rows] = await new BigQuery({ projectId: target.projectId }).query({
  query: `SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM \`${target.projectId}.${target.datasetId}.events_enriched_unique\` WHERE event_id >= @first`,
  params: { first: firstId },
});
const { n, d } = rows[0] as { n: number; d: number };
console.log(JSON.stringify({ written: 1000, unique_view_rows: n, distinct_event_ids: d }));
process.exit(n === 1000 && d === 1000 ? 0 : 1);
