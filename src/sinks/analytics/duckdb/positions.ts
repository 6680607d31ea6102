import type { Batch, EnrichedEvent } from '../../../domain/types.js';
import { DEDUPE_HIGH_STREAM } from './schema.js';

interface StoredPosition {
  sourceId: string | null;
  position: string;
}

/** What one write does: the rows to append and what to record with them. */
export interface WritePlan {
  stream: string;
  events: EnrichedEvent[];
  /**
   * Look up which of the rows' event_ids the table already holds (within their id range) and
   * append only the others. Off only for a position-checked stream above every id written
   * another way.
   */
  checkIds: boolean;
  /** The stream's new position (its last event's), or null when the stream is not position-checked. */
  position: string | null;
  sourceId: string | null;
  minId: number;
  maxId: number;
}

/**
 * The sink's memory of `sink_position`, loaded when the file is opened and updated only after
 * a COMMIT succeeded (after any failure the file is reopened and this is reloaded).
 *
 * Replays are recognised two ways:
 * - a position-checked stream (direct mode: the replication slot, whose positions are exact
 *   and whose source identity is known) skips every event at or below its stored position;
 * - any other stream (backfill, Kafka partitions, whose offsets say nothing about event_ids:
 *   a re-published event arrives at a new offset) is checked by event_id, and the highest id
 *   written that way is stored so that position-checked batches reaching down to it are
 *   checked by event_id too.
 */
export class PositionMemory {
  private readonly streams = new Map<string, StoredPosition>();
  private dedupeHigh = 0;
  private dedupeHighStored = false;

  load(rows: readonly { stream: string; sourceId: string | null; position: string }[]): void {
    this.streams.clear();
    this.dedupeHigh = 0;
    this.dedupeHighStored = false;
    for (const row of rows) {
      if (row.stream === DEDUPE_HIGH_STREAM) {
        this.dedupeHigh = Number(row.position);
        this.dedupeHighStored = true;
      } else this.streams.set(row.stream, { sourceId: row.sourceId, position: row.position });
    }
  }

  /** `sourceId` is null for streams whose positions are not trusted to recognise replays. */
  plan(batch: Batch, sourceId: string | null): WritePlan {
    const stored = sourceId === null ? undefined : this.streams.get(batch.stream);
    // A position recorded for another source (a rebuilt cluster restarts its LSNs) is ignored.
    const above = stored !== undefined && stored.sourceId === sourceId ? stored.position : null;
    // Ids above every id kept so far cannot repeat one: the set of kept ids is built only once
    // an id is not (stream batches mostly come in id order).
    let seen: Set<number> | null = null;
    const events: EnrichedEvent[] = [];
    let minId = Infinity;
    let maxId = -Infinity;
    for (let i = 0; i < batch.events.length; i++) {
      const e = batch.events[i];
      if (above !== null && batch.positions[i] <= above) continue;
      if (!(e.event_id > maxId)) {
        seen ??= new Set(events.map((k) => k.event_id));
        if (seen.has(e.event_id)) continue; // the same event twice in one batch (a re-published copy)
      }
      seen?.add(e.event_id);
      events.push(e);
      if (e.event_id < minId) minId = e.event_id;
      if (e.event_id > maxId) maxId = e.event_id;
    }
    const position = sourceId === null ? null : (batch.positions[batch.positions.length - 1] ?? null);
    return {
      stream: batch.stream,
      events,
      // A stream seen for the first time (or from another source) may overlap rows written
      // before: check its first batch by id.
      checkIds: sourceId === null || above === null || minId <= this.dedupeHigh,
      position,
      sourceId,
      minId,
      maxId,
    };
  }

  /** Whether `stream` has a row in the table already (UPDATE it; an upsert costs ~2x). */
  hasRow(stream: string): boolean {
    return stream === DEDUPE_HIGH_STREAM ? this.dedupeHighStored : this.streams.has(stream);
  }

  /** The position rows to write with the plan's rows, as [stream, source_id, position]. */
  updates(plan: WritePlan): [string, string | null, string][] {
    const out: [string, string | null, string][] = [];
    if (plan.position !== null) out.push([plan.stream, plan.sourceId, plan.position]);
    if (plan.position === null && plan.events.length > 0 && plan.maxId > this.dedupeHigh)
      out.push([DEDUPE_HIGH_STREAM, null, String(plan.maxId)]);
    return out;
  }

  /** After COMMIT. */
  committed(plan: WritePlan): void {
    for (const [stream, sourceId, position] of this.updates(plan)) {
      if (stream === DEDUPE_HIGH_STREAM) {
        this.dedupeHigh = Number(position);
        this.dedupeHighStored = true;
      } else this.streams.set(stream, { sourceId, position });
    }
  }
}
