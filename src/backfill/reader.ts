import type pg from 'pg';
import {
  columnOrNull,
  DEFAULT_SHAPE,
  qualifiedName,
  quoteIdent,
  type SourceShape,
} from '../domain/source-shape.js';
import { jsonTextOf } from '../domain/json-text.js';
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
 * Reads the events table's history by keyset on its primary key (the shape's event id), filtered to the
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
    private readonly shape: SourceShape = DEFAULT_SHAPE,
  ) {}

  /** Rows in range and the highest id now: the run's fixed upper bound. */
  static async plan(
    client: pg.Client,
    fromTs: string,
    toTs: string,
    shape: SourceShape = DEFAULT_SHAPE,
  ): Promise<{ total: number; maxId: string; minTs: string | null; maxTs: string | null }> {
    const table = qualifiedName(shape.events);
    const { rows } = await client.query(
      `SELECT (SELECT coalesce(max(${quoteIdent(shape.eventIdColumn)}), 0) FROM ${table})::text AS max_id, count(*)::text AS n,
              to_json(min(event_ts)) #>> '{}' AS min_ts, to_json(max(event_ts)) #>> '{}' AS max_ts
         FROM ${table} WHERE event_ts >= $1 AND event_ts < $2`,
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
    // One JSON document per chunk, parsed by V8's native JSON.parse: ~1.4x faster than pg's
    // per-field row parsing, which otherwise bounds the whole backfill (measured, 1M rows).
    // event_ts as text keeps its microseconds; ids and keys as text stay exact (an int8 key
    // would pass through a JS number otherwise), and so does raw_payload's JSON text (its numbers
    // would pass through doubles; the same JsonText the stream makes). Optional columns the
    // table lacks read as NULL.
    const id = quoteIdent(this.shape.eventIdColumn);
    const col = (column: string) => columnOrNull(this.shape, 'events', column, 'e.');
    const payload = col('raw_payload') === 'NULL' ? 'NULL' : `to_json(${col('raw_payload')})::text`;
    const { rows: result } = await this.client.query({
      text: `SELECT coalesce(json_agg(json_build_array(
                      e.${id}::text, e.content_id::text, ${col('user_id')}::text, ${col('event_type')}::text,
                      e.event_ts::text, e.duration_ms, ${col('device')}::text, ${payload},
                      ${this.commitTimes ? 'pg_xact_commit_timestamp(e.xmin)' : 'NULL'})
                    ORDER BY e.${id}), '[]')::text AS chunk
               FROM (SELECT *, xmin FROM ${qualifiedName(this.shape.events)}
                      WHERE ${id} > $1 AND ${id} <= $2 AND event_ts >= $3 AND event_ts < $4
                      ORDER BY ${id} LIMIT $5) AS e`,
      values: [afterId, this.maxId, this.fromTs, this.toTs, limit],
    });
    const rows = JSON.parse(result[0].chunk as string) as unknown[][];
    const out: HistoryChunk = { rows: [], committedAt: [], bad: 0, lastId: null };
    for (const r of rows) {
      const row = decodeEventRow({
        id: r[0],
        content_id: r[1],
        user_id: r[2],
        event_type: r[3],
        event_ts: r[4],
        duration_ms: r[5],
        device: r[6],
        raw_payload: typeof r[7] === 'string' ? jsonTextOf(r[7]) : null,
      });
      if (typeof row === 'string') out.bad += 1;
      else {
        out.rows.push(row);
        out.committedAt.push(typeof r[8] === 'string' ? normalizeIso(r[8]) : null);
      }
    }
    out.lastId = rows.length > 0 ? (rows[rows.length - 1][0] as string) : null;
    return out;
  }
}

/** JSON gives `2026-11-23T18:00:00.123456+00:00`; sinks expect `...Z` with 6 digits. */
function normalizeIso(text: string): string {
  const m = /^(.{19})(?:\.(\d{1,6}))?(?:\+00:00|Z)$/.exec(text);
  return m ? `${m[1]}.${(m[2] ?? '').padEnd(6, '0')}Z` : text;
}
