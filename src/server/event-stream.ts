import type { ServerResponse } from 'node:http';
import type { EnrichedEvent } from '../domain/types.js';
import { eventJson, TEXT_KEYS } from '../sinks/event-json.js';

/**
 * `GET /api/events`: the enriched events as Server-Sent Events, for consumers other than the
 * dashboard. Fed with each batch the analytics store accepted (so what is streamed is durable
 * there), in stream order. Each event's SSE `id:` is its stream position (commit LSN and index
 * in the transaction, a string that sorts in stream order), so a client that reconnects with
 * `Last-Event-ID` gets exactly what came after it, from the last `capacity` events held in
 * memory; older than that, it first gets an `event: gap` saying what it missed. What this
 * process never held (a resume from before the pipeline restarted) is a gap too, unless the
 * stream shows that nothing lies between: a replayed event at or before the client's id (see
 * `Client.resumeAfter`). A malformed id is refused (400) rather than silently replaying nothing.
 *
 * The pipeline never waits for a client: publish() only appends to each socket's buffer, and a
 * client whose unsent buffer passes `maxBufferedBytes` is disconnected (it can resume).
 * After a pipeline restart, events not yet confirmed to Postgres are streamed again (same
 * position and event_id): consumers that must not double-count dedupe by event_id.
 */
export interface EventFilter {
  contentTypes: Set<string> | null;
  eventTypes: Set<string> | null;
}

interface Held {
  position: string;
  contentType: string | null;
  eventType: string | null;
  event: EnrichedEvent;
  /**
   * The SSE frame, built when first sent: with no client connected (the usual case) no event
   * is serialized at all, which was a measurable share of the per-event CPU. Events are not
   * modified after enrichment, so a late frame is the same text.
   */
  frame: string | null;
}

function frameOf(held: Held): string {
  held.frame ??= `id: ${held.position}\ndata: ${eventJson(held.event, TEXT_KEYS)}\n\n`;
  return held.frame;
}

interface Client {
  res: ServerResponse;
  filter: EventFilter;
  /**
   * The client's Last-Event-ID while the stream has not yet shown whether it missed anything:
   * events at or before it are skipped (it has them: unconfirmed events replay after a
   * restart), and the first event after it is preceded by a gap unless one at or before it came
   * first (then the stream is continuous from the client's position).
   */
  resumeAfter?: string;
  /** An event at or before `resumeAfter` was seen: no gap. */
  anchored?: boolean;
}

/** A direct-mode stream position (see ../domain/position.ts): commit LSN, index in the transaction. */
const POSITION = /^[0-9A-F]{16}:[0-9a-f]{8}$/;

/** Whether `id` can be a Last-Event-ID of this stream. */
export function isEventId(id: string): boolean {
  return POSITION.test(id);
}

function gapFrame(fields: Record<string, string>): string {
  return `event: gap\ndata: ${JSON.stringify(fields)}\n\n`;
}

/** The gap of a resume from before what this process holds (it restarted since). */
function restartGapFrame(lastEventId: string, missedBefore: string): string {
  return gapFrame({
    lastEventId,
    missedBefore,
    reason: 'the pipeline restarted: events after lastEventId and before missedBefore are not held',
  });
}

export interface EventStreamOptions {
  /** Events held for resumption (default 10,000). */
  capacity?: number;
  /** Unsent bytes after which a client is dropped (default 1 MiB). */
  maxBufferedBytes?: number;
  /** Open streams at most; more get 503 (default 100). */
  maxClients?: number;
  /** Comment line interval, so proxies keep idle streams open (default 15 s). */
  keepAliveMs?: number;
}

export class EnrichedEventStream {
  private readonly held: Held[] = [];
  private start = 0; // ring start index into `held` once it is full
  private readonly clients = new Set<Client>();
  /** Position of the newest event evicted from the ring ('' when none yet). */
  private evictedUpTo = '';
  private readonly capacity: number;
  private readonly maxBufferedBytes: number;
  private readonly maxClients: number;
  private readonly keepAlive: NodeJS.Timeout;
  /** Clients dropped for being too slow (for tests and logs). */
  dropped = 0;

  constructor(options: EventStreamOptions = {}) {
    this.capacity = options.capacity ?? 10_000;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1024 * 1024;
    this.maxClients = options.maxClients ?? 100;
    this.keepAlive = setInterval(() => {
      for (const c of this.clients) this.write(c, ': keep-alive\n\n');
    }, options.keepAliveMs ?? 15_000);
    this.keepAlive.unref();
  }

  get size(): number {
    return this.clients.size;
  }

  /** Appends delivered events (positions[i] belongs to events[i]) and pushes them to clients. */
  publish(events: readonly EnrichedEvent[], positions: readonly string[]): void {
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      const position = positions[i];
      if (position === undefined) continue;
      const held: Held = {
        position,
        contentType: e.content_type,
        eventType: e.event_type,
        event: e,
        frame: null,
      };
      this.hold(held);
      for (const c of this.clients) {
        if (c.resumeAfter !== undefined && !this.resumes(c, held)) continue;
        if (matches(c.filter, held)) this.write(c, frameOf(held));
      }
    }
  }

  /** For a client resuming before anything was held: whether `held` is new to it (see Client). */
  private resumes(c: Client, held: Held): boolean {
    const after = c.resumeAfter!;
    if (held.position <= after) {
      c.anchored = true;
      return false;
    }
    c.resumeAfter = undefined;
    if (!c.anchored) {
      this.write(c, restartGapFrame(after, held.position));
    }
    return true;
  }

  /** Serves one client: what it missed after `lastEventId` (if given), then live events. */
  open(
    res: ServerResponse,
    options: { lastEventId?: string; filter: EventFilter; onClose: (listener: () => void) => void },
  ): void {
    if (this.clients.size >= this.maxClients) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
      res.end(JSON.stringify({ error: `too many event streams open (${this.maxClients})` }));
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    const client: Client = { res, filter: options.filter };
    res.write('retry: 2000\n\n');
    const last = options.lastEventId;
    if (last) {
      const first = this.held.length > 0 ? this.oldest().position : null;
      if (first === null) {
        // Nothing held yet (just restarted): the first events decide (see Client.resumeAfter).
        client.resumeAfter = last;
      } else if (last >= this.newest().position) {
        // Ahead of what is held (the replay after a restart has not reached it yet): continuous,
        // and what is replayed up to its id it has already.
        client.resumeAfter = last;
        client.anchored = true;
      } else if (this.evictedUpTo && last < this.evictedUpTo) {
        res.write(
          gapFrame({
            lastEventId: last,
            missedUpTo: this.evictedUpTo,
            reason: 'older than the events held in memory',
          }),
        );
      } else if (!this.evictedUpTo && last < first) {
        res.write(restartGapFrame(last, first));
      }
      for (const held of this.ordered()) {
        if (held.position > last && matches(client.filter, held)) res.write(frameOf(held));
      }
    }
    this.clients.add(client);
    options.onClose(() => this.clients.delete(client));
  }

  closeAll(): void {
    clearInterval(this.keepAlive);
    for (const c of this.clients) c.res.end();
    this.clients.clear();
  }

  private write(client: Client, frame: string): void {
    const { res } = client;
    if (res.destroyed || res.writableEnded) {
      this.clients.delete(client);
      return;
    }
    res.write(frame);
    if (res.writableLength > this.maxBufferedBytes) {
      // Too slow: let it go (and its buffer with it) rather than hold memory or the pipeline.
      this.clients.delete(client);
      this.dropped += 1;
      res.destroy();
    }
  }

  private hold(held: Held): void {
    if (this.held.length < this.capacity) {
      this.held.push(held);
      return;
    }
    this.evictedUpTo = this.held[this.start]!.position;
    this.held[this.start] = held;
    this.start = (this.start + 1) % this.capacity;
  }

  private oldest(): Held {
    return this.held[this.start % this.held.length]!;
  }

  private newest(): Held {
    return this.held[(this.start + this.held.length - 1) % this.held.length]!;
  }

  private *ordered(): Iterable<Held> {
    for (let i = 0; i < this.held.length; i++) yield this.held[(this.start + i) % this.held.length]!;
  }
}

function matches(filter: EventFilter, held: Held): boolean {
  if (filter.contentTypes && !filter.contentTypes.has(held.contentType ?? 'unknown')) return false;
  if (filter.eventTypes && !filter.eventTypes.has(held.eventType ?? '')) return false;
  return true;
}

/** `?content_type=video,podcast&event_type=play` -> a filter; absent or empty = everything. */
export function parseEventFilter(query: unknown): EventFilter {
  const q = (query ?? {}) as Record<string, unknown>;
  const set = (v: unknown): Set<string> | null => {
    const text = Array.isArray(v) ? v.join(',') : typeof v === 'string' ? v : '';
    const items = text
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    return items.length > 0 ? new Set(items) : null;
  };
  return { contentTypes: set(q.content_type), eventTypes: set(q.event_type) };
}
