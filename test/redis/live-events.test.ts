import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { EnrichedEvent } from '../../src/domain/types.js';
import { silentLogger } from '../../src/logger.js';
import { startHttpServer, type Runtime } from '../../src/runtime.js';
import { EnrichedEventStream, parseEventFilter } from '../../src/server/event-stream.js';
import { createHarness, insertEvents, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const TOKEN = 'live-events-token';

interface Frame {
  id?: string;
  event?: string;
  data?: string;
}

/** A real HTTP client on an SSE endpoint: collects parsed frames until closed. */
function openStream(url: string, headers: Record<string, string> = {}) {
  const frames: Frame[] = [];
  let status = 0;
  let buffer = '';
  let ended = false;
  const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
    status = res.statusCode ?? 0;
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffer += chunk;
      let i;
      while ((i = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const frame: Frame = {};
        for (const line of block.split('\n')) {
          const m = /^(id|event|data): ?(.*)$/.exec(line);
          if (m) frame[m[1] as keyof Frame] = m[2];
        }
        if (frame.data !== undefined) frames.push(frame);
      }
    });
    res.on('end', () => (ended = true));
  });
  req.on('error', () => (ended = true));
  return {
    frames,
    status: () => status,
    ended: () => ended,
    events: () =>
      frames
        .filter((f) => f.event === undefined)
        .map((f) => ({ id: f.id!, event: JSON.parse(f.data!) as EnrichedEvent })),
    close: () => req.destroy(),
  };
}

describe('live enriched events and the analytics reads, over HTTP', () => {
  let h: Harness;
  let runtime: Runtime;
  let server: { url: string; close(): Promise<void> };
  const auth = { authorization: `Bearer ${TOKEN}` };

  before(async () => {
    h = await createHarness();
    await seedContent(h);
    runtime = await h.start({ apiToken: TOKEN });
    server = await startHttpServer(runtime, h.config({ apiToken: TOKEN }), silentLogger());
  });

  after(async () => {
    await server?.close();
    await runtime?.stop();
    await h?.cleanup();
  });

  it('GET /api/events streams what the analytics store accepted, filtered, resumable by Last-Event-ID', async () => {
    const denied = await fetch(new URL('api/events', server.url));
    assert.equal(denied.status, 401);
    await denied.body?.cancel();

    const all = openStream(new URL('api/events', server.url).toString(), auth);
    const videos = openStream(new URL('api/events?content_type=video', server.url).toString(), auth);
    const plays = openStream(new URL('api/events?event_type=play,finish', server.url).toString(), auth);
    try {
      await waitFor('the streams to open', () => all.status() === 200 && videos.status() === 200);
      await insertEvents(h, 30); // content 1 of 3 is the video; event types cycle through four
      await waitFor('30 events on the unfiltered stream', () => all.events().length === 30, 30_000);
      const got = all.events();
      // Stream order, each once; ids are the stream positions and sort in that order.
      const ids = got.map((e) => e.id);
      assert.deepEqual([...ids].sort(), ids);
      assert.equal(new Set(ids).size, 30);
      assert.equal(new Set(got.map((e) => e.event.event_id)).size, 30);
      // Enriched, not raw.
      assert.ok(got.every((e) => 'content_type' in e.event && 'engagement_pct' in e.event));

      const expectedVideos = got.filter((e) => e.event.content_type === 'video').map((e) => e.id);
      assert.equal(expectedVideos.length, 10);
      await waitFor('the video-only stream', () => videos.events().length === 10, 10_000);
      assert.deepEqual(
        videos.events().map((e) => e.id),
        expectedVideos,
      );
      const expectedPlays = got
        .filter((e) => ['play', 'finish'].includes(e.event.event_type ?? ''))
        .map((e) => e.id);
      await waitFor('the play/finish stream', () => plays.events().length === expectedPlays.length, 10_000);
      assert.deepEqual(
        plays.events().map((e) => e.id),
        expectedPlays,
      );

      // A client that saw the first 10 resumes with exactly the other 20, in order.
      const resumed = openStream(new URL('api/events', server.url).toString(), {
        ...auth,
        'last-event-id': ids[9]!,
      });
      try {
        await waitFor('the 20 missed events', () => resumed.events().length === 20, 10_000);
        assert.deepEqual(
          resumed.events().map((e) => e.id),
          ids.slice(10),
        );
      } finally {
        resumed.close();
      }

      // An id that cannot be one of this stream's is refused, not answered with silence.
      // (Lower-case hex in the LSN part is spelled out: a real id may have no letters to lower.)
      for (const bad of ['garbage', '000000000000abcd:00000000', `${ids[9]!.split(':')[0]}`]) {
        const refused = await fetch(new URL('api/events', server.url), {
          headers: { ...auth, 'last-event-id': bad },
        });
        assert.equal(refused.status, 400, bad);
        assert.match(((await refused.json()) as { error: string }).error, /not an id of this stream/);
      }
    } finally {
      all.close();
      videos.close();
      plays.close();
    }
  });

  it('GET /api/timeline and /api/recent read the analytics store', async () => {
    await waitFor(
      'DuckDB to hold the 30 events',
      async () => {
        const res = await fetch(new URL('api/timeline?minutes=60', server.url), { headers: auth });
        const body = (await res.json()) as { points: { events: number }[] };
        return res.ok && body.points.reduce((s, p) => s + p.events, 0) === 30;
      },
      20_000,
    );
    const res = await fetch(new URL('api/timeline?minutes=60', server.url), { headers: auth });
    const timeline = (await res.json()) as {
      minutes: number;
      points: { minute: string; content_type: string; events: number; engagement_seconds: number }[];
    };
    assert.equal(timeline.minutes, 60);
    assert.deepEqual(
      new Set(timeline.points.map((p) => p.content_type)),
      new Set(['video', 'podcast', 'newsletter']),
    );
    for (const p of timeline.points) assert.match(p.minute, /^\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z$/);
    const [{ seconds }] = await h.sql<{ seconds: string }>(
      'SELECT coalesce(sum(duration_ms), 0) / 1000.0 AS seconds FROM engagement_events WHERE duration_ms >= 0',
    );
    const shownSeconds = timeline.points.reduce((s, p) => s + p.engagement_seconds, 0);
    assert.ok(Math.abs(shownSeconds - Number(seconds)) < 0.01, `${shownSeconds} vs ${seconds}`);

    const recent = (await (
      await fetch(new URL('api/recent?limit=20', server.url), { headers: auth })
    ).json()) as {
      items: { event_id: string; title?: string; content_type: string }[];
    };
    assert.equal(recent.items.length, 20);
    const [{ max }] = await h.sql<{ max: string }>('SELECT max(id)::text AS max FROM engagement_events');
    assert.equal(recent.items[0]!.event_id, max);
    const eventIds = recent.items.map((r) => Number(r.event_id));
    assert.deepEqual(
      eventIds,
      [...eventIds].sort((a, b) => b - a),
    );
    assert.ok(recent.items.every((r) => typeof r.title === 'string' && r.title.length > 0));

    for (const query of [
      'api/recent?limit=0',
      'api/recent?limit=0x14',
      'api/timeline?minutes=1e1',
      'api/timeline?minutes=%205',
    ]) {
      const bad = await fetch(new URL(query, server.url), { headers: auth });
      assert.equal(bad.status, 400, query);
    }
    const noToken = await fetch(new URL('api/timeline', server.url));
    assert.equal(noToken.status, 401);
  });
});

describe('the event stream under a client that does not read', () => {
  it('drops the slow client instead of buffering without bound or slowing publish()', async () => {
    const stream = new EnrichedEventStream({ capacity: 100, maxBufferedBytes: 64 * 1024 });
    const server = http.createServer((req, res) =>
      stream.open(res, { filter: parseEventFilter({}), onClose: (l) => req.on('close', l) }),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const req = http.get(`http://127.0.0.1:${port}/`, (res) => res.pause()); // never reads
    try {
      await waitFor('the client to connect', () => stream.size === 1);
      const event = {
        event_id: '1',
        content_type: 'video',
        event_type: 'play',
        raw_payload: { pad: 'x'.repeat(2000) },
      } as unknown as EnrichedEvent;
      let n = 0;
      const started = performance.now();
      while (stream.dropped === 0 && n < 100_000) {
        stream.publish([event], [String(++n).padStart(12, '0')]);
        if (n % 100 === 0) await new Promise((r) => setImmediate(r)); // let the socket fill up
      }
      assert.equal(stream.dropped, 1, `not dropped after ${n} events`);
      assert.equal(stream.size, 0);
      // publish() never waited on the client: the whole loop is a few milliseconds of work per event at most.
      assert.ok(performance.now() - started < 60_000);
    } finally {
      req.destroy();
      stream.closeAll();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('resuming from further back than the events held', () => {
  const event = (id: string) =>
    ({ event_id: id, content_type: 'video', event_type: 'play' }) as unknown as EnrichedEvent;
  const publish = (stream: EnrichedEventStream, ...n: number[]) =>
    stream.publish(
      n.map((i) => event(String(i))),
      n.map((i) => `p${i}`),
    );
  /** A client resuming after `lastEventId`; returns what it was written: gaps and ids, in order. */
  function resume(stream: EnrichedEventStream, lastEventId: string) {
    let written = '';
    const res = {
      writeHead: () => undefined,
      write: (chunk: string) => (written += chunk),
      end: () => undefined,
      destroyed: false,
      writableEnded: false,
      writableLength: 0,
    } as unknown as http.ServerResponse;
    stream.open(res, { lastEventId, filter: parseEventFilter({}), onClose: () => undefined });
    return {
      text: () => written,
      seen: () => [...written.matchAll(/^(?:id: (\S+)|event: (gap))$/gm)].map((m) => m[1] ?? m[2]),
    };
  }

  it('says what was missed (event: gap), then sends what it holds', () => {
    const stream = new EnrichedEventStream({ capacity: 3 });
    publish(stream, 1, 2, 3, 4, 5);
    const client = resume(stream, 'p1');
    stream.closeAll();
    assert.match(client.text(), /event: gap\ndata: \{"lastEventId":"p1","missedUpTo":"p2"/);
    assert.deepEqual(client.seen(), ['gap', 'p3', 'p4', 'p5']);
  });

  it('after evictions, a client at or past the newest evicted event missed nothing', () => {
    const stream = new EnrichedEventStream({ capacity: 3 });
    publish(stream, 1, 2, 3, 4, 5);
    const client = resume(stream, 'p2');
    stream.closeAll();
    assert.deepEqual(client.seen(), ['p3', 'p4', 'p5']);
  });

  // After a pipeline restart the stream holds only what this process delivered: a client
  // resuming from before that must not be told "nothing missed" by silence.
  it('after a restart, a resume from before the first event held is a gap', () => {
    const stream = new EnrichedEventStream({ capacity: 10 });
    publish(stream, 5, 6);
    const client = resume(stream, 'p3');
    publish(stream, 7);
    stream.closeAll();
    assert.match(client.text(), /event: gap\ndata: \{"lastEventId":"p3","missedBefore":"p5"/);
    assert.deepEqual(client.seen(), ['gap', 'p5', 'p6', 'p7']);
  });

  it('resuming before anything is held: the first events decide whether it missed any', () => {
    // The replay after a restart begins at or before the client's id: continuous, no gap, and
    // what it already has is not sent again.
    const continuous = new EnrichedEventStream({ capacity: 10 });
    const a = resume(continuous, 'p3');
    publish(continuous, 2, 3);
    publish(continuous, 4, 5);
    // It begins after the client's id: what lay between is unknown here.
    const broken = new EnrichedEventStream({ capacity: 10 });
    const b = resume(broken, 'p3');
    publish(broken, 5, 6);
    // Ahead of everything held (the replay has not reached its id yet): nothing again, no gap.
    const ahead = new EnrichedEventStream({ capacity: 10 });
    publish(ahead, 4, 5, 6);
    const c = resume(ahead, 'p8');
    publish(ahead, 7, 8, 9);
    continuous.closeAll();
    broken.closeAll();
    ahead.closeAll();
    assert.deepEqual(c.seen(), ['p9']);
    assert.deepEqual(a.seen(), ['p4', 'p5']);
    assert.deepEqual(b.seen(), ['gap', 'p5', 'p6']);
    assert.match(b.text(), /"lastEventId":"p3","missedBefore":"p5"/);
  });
});
