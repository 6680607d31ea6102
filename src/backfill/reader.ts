import type pg from 'pg';
import type { EngagementEventRow } from '../domain/types.js';
import { decodeEventRow } from '../source/decode-rows.js';

export interface HistoryChunk {
  rows: EngagementEventRow[];
  /** Source commit time per row (ISO) when track_commit_timestamp is on, else null. */
  committedAt: (string | null)[];
  /** Rows that could not be decoded (e.g. event_ts infinity): skipped and counted. */
  bad: number;
  /** The highest id read (the next chunk starts after it); null when the range is exhausted. */
  lastId: string | null;
}

/**
 * Reads `engagement_events` history by keyset on the primary key (id), filtered to the
 * event_ts range. The id index is the only one we can count on (user tables are never
 * altered, so no index on event_ts is added): each chunk is one index range scan, and the
 * whole backfill reads the table once, however narrow the time range.
 */
export class HistoryReader {
  private commitTimes: boolean | null = null;

  constructor(
    private readonly client: pg.Client,
    private readonly fromTs: string,
    private readonly toTs: string,
    private readonly maxId: string,
  ) {}

  /** Rows in range and the highest id now: the run's fixed upper bound. */
  static async plan(
    client: pg.Client,
    fromTs: string,
    toTs: string,
  ): Promise<{ total: number; maxId: string; minTs: string | null; maxTs: string | null }> {
    const { rows } = await client.query(
      `SELECT (SELECT coalesce(max(id), 0) FROM engagement_events)::text AS max_id, count(*)::text AS n,
              to_json(min(event_ts)) #>> '{}' AS min_ts, to_json(max(event_ts)) #>> '{}' AS max_ts
         FROM engagement_events WHERE event_ts >= $1 AND event_ts < $2`,
      [fromTs, toTs],
    );
    return { total: Number(rows[0].n), maxId: rows[0].max_id, minTs: rows[0].min_ts, maxTs: rows[0].max_ts };
  }

  async next(afterId: string, limit: number): Promise<HistoryChunk> {
    if (this.commitTimes === null) {
      const { rows } = await this.client.query(
        `SELECT current_setting('track_commit_timestamp') = 'on' AS on`,
      );
      this.commitTimes = rows[0].on === true;
    }
    // Text for event_ts (microseconds kept) and raw_payload (parsed once, below, only if needed).
    const { rows } = await this.client.query({
      text: `SELECT id::text AS id, content_id::text, user_id::text, event_type, event_ts::text AS event_ts,
                    duration_ms, device, raw_payload::text AS raw_payload,
                    ${this.commitTimes ? `to_json(pg_xact_commit_timestamp(xmin)) #>> '{}'` : 'NULL::text'} AS committed_at
               FROM engagement_events
              WHERE id > $1 AND id <= $2 AND event_ts >= $3 AND event_ts < $4
              ORDER BY engagement_events.id LIMIT $5`, // the column: ORDER BY id would sort by the text alias
      values: [afterId, this.maxId, this.fromTs, this.toTs, limit],
    });
    const out: HistoryChunk = { rows: [], committedAt: [], bad: 0, lastId: null };
    for (const raw of rows) {
      raw.raw_payload = raw.raw_payload === null ? null : JSON.parse(raw.raw_payload);
      const row = decodeEventRow(raw);
      if (typeof row === 'string') out.bad += 1;
      else {
        out.rows.push(row);
        out.committedAt.push(raw.committed_at ? normalizeIso(raw.committed_at) : null);
      }
    }
    out.lastId = rows.length > 0 ? rows[rows.length - 1].id : null;
    return out;
  }
}

/** to_json gives `2026-11-23T18:00:00.123456+00:00`; sinks expect `...Z` with 6 digits. */
function normalizeIso(text: string): string {
  const m = /^(.{19})(?:\.(\d{1,6}))?(?:\+00:00|Z)$/.exec(text);
  return m ? `${m[1]}.${(m[2] ?? '').padEnd(6, '0')}Z` : text;
}
