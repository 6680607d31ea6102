import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildCatalog, LENGTH_RANGES, NULL_LENGTH_SHARE } from '../../src/generator/catalog.js';
import { createTraffic, DEVICES, DURATION_RULES, type GeneratedEvent } from '../../src/generator/traffic.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);

function sample(
  n: number,
  seed = 7,
  startMs = T0,
  stepMs = 10,
): { events: GeneratedEvent[]; catalog: ReturnType<typeof buildCatalog> } {
  const catalog = buildCatalog();
  const traffic = createTraffic({ catalog, seed });
  return { catalog, events: Array.from({ length: n }, (_, i) => traffic.next(startMs + i * stepMs)) };
}

function topContent(events: GeneratedEvent[]): string {
  const counts = new Map<string, number>();
  for (const e of events) counts.set(e.content_id, (counts.get(e.content_id) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
}

describe('catalog', () => {
  const catalog = buildCatalog({ size: 1000 });

  it('has every type, unique ids and slugs, lengths inside the documented ranges', () => {
    assert.equal(new Set(catalog.map((c) => c.id)).size, catalog.length);
    assert.equal(new Set(catalog.map((c) => c.slug)).size, catalog.length);
    for (const type of ['podcast', 'newsletter', 'video'] as const) {
      const ofType = catalog.filter((c) => c.content_type === type);
      assert.ok(ofType.length > 200, `${type}: ${ofType.length}`);
      for (const c of ofType) {
        assert.match(c.id, UUID);
        assert.match(c.slug, /^[a-z0-9-]+$/);
        assert.ok(c.title.length > 5);
        assert.ok(!Number.isNaN(Date.parse(c.publish_ts)));
        if (c.length_seconds === null) continue;
        assert.ok(Number.isInteger(c.length_seconds));
        const [min, max] = LENGTH_RANGES[type];
        assert.ok(c.length_seconds >= min && c.length_seconds <= max, `${type} ${c.length_seconds}`);
      }
    }
  });

  it('leaves a few lengths NULL', () => {
    const nulls = catalog.filter((c) => c.length_seconds === null).length / catalog.length;
    assert.ok(nulls > NULL_LENGTH_SHARE / 2 && nulls < NULL_LENGTH_SHARE * 2, `null share ${nulls}`);
  });

  it('is deterministic for a seed and differs between seeds', () => {
    assert.deepEqual(buildCatalog({ seed: 3 }), buildCatalog({ seed: 3 }));
    assert.notEqual(buildCatalog({ seed: 3 })[0].id, buildCatalog({ seed: 4 })[0].id);
  });
});

describe('traffic', () => {
  const { catalog, events } = sample(20_000);
  const byId = new Map(catalog.map((c) => [c.id, c]));

  it('uses the four event types, the seven devices and catalogue content', () => {
    assert.deepEqual(new Set(events.map((e) => e.event_type)), new Set(['play', 'pause', 'finish', 'click']));
    assert.deepEqual(new Set(events.map((e) => e.device)), new Set(DEVICES));
    for (const e of events) assert.ok(byId.has(e.content_id));
  });

  it('gives durations consistent with the event type and the content length', () => {
    let nullPauses = 0;
    for (const e of events) {
      const item = byId.get(e.content_id)!;
      if (e.duration_ms === null) {
        assert.ok(e.event_type === 'click' || e.event_type === 'pause', `NULL duration on ${e.event_type}`);
        if (e.event_type === 'pause') nullPauses++;
        continue;
      }
      assert.notEqual(e.event_type, 'click');
      assert.ok(Number.isInteger(e.duration_ms) && e.duration_ms > 0);
      if (item.length_seconds === null) continue;
      const fraction = e.duration_ms / (item.length_seconds * 1000);
      const rule = DURATION_RULES[e.event_type as 'play' | 'pause' | 'finish'];
      // play/pause have a 1 s floor, which can exceed `max` only for very short items (none here).
      assert.ok(fraction >= rule.min - 0.001 && fraction <= rule.max + 0.001, `${e.event_type} ${fraction}`);
    }
    const pauses = events.filter((e) => e.event_type === 'pause').length;
    assert.ok(nullPauses > 0 && nullPauses < pauses, 'some, not all, pauses have NULL duration');
  });

  it('never puts a newsletter on a TV; only logged-out clicks lack a user', () => {
    for (const e of events) {
      if (byId.get(e.content_id)!.content_type === 'newsletter') assert.notEqual(e.device, 'tv');
      if (e.user_id === null) assert.equal(e.event_type, 'click');
      else assert.match(e.user_id, UUID);
    }
  });

  it('draws most events from returning users', () => {
    const perUser = new Map<string, number>();
    for (const e of events) if (e.user_id) perUser.set(e.user_id, (perUser.get(e.user_id) ?? 0) + 1);
    const repeat = [...perUser.values()].filter((n) => n > 1).reduce((a, b) => a + b, 0);
    assert.ok(repeat / events.length > 0.8, `repeat share ${repeat / events.length}`);
  });

  it('carries client details in raw_payload', () => {
    for (const e of events.slice(0, 500)) {
      for (const key of ['app_version', 'os', 'locale', 'referrer', 'session_id', 'network']) {
        assert.equal(typeof e.raw_payload[key], 'string', key);
      }
    }
  });

  it('stamps events at or a little before the requested time', () => {
    const e = createTraffic({ catalog, seed: 1 }).next(T0);
    const ts = Date.parse(e.event_ts);
    assert.ok(ts <= T0 && ts >= T0 - 400);
  });

  it('is Zipf-skewed: the top 10% of content gets a large share of events', () => {
    const counts = new Map<string, number>();
    for (const e of events) counts.set(e.content_id, (counts.get(e.content_id) ?? 0) + 1);
    const sorted = [...counts.values()].sort((a, b) => b - a);
    const top = sorted.slice(0, catalog.length / 10).reduce((a, b) => a + b, 0);
    assert.ok(top / events.length > 0.4, `top-10% share ${top / events.length}`);
    assert.ok(sorted[0] > 5 * sorted[Math.floor(sorted.length / 2)], 'head far above the median');
  });

  it('drifts: the most popular item changes over an hour, and sampled events follow it', () => {
    const traffic = createTraffic({ catalog, seed: 7 });
    const leaderAt = (ms: number) => {
      const weights = traffic.popularity(ms);
      return catalog[weights.indexOf(Math.max(...weights))].id;
    };
    const times = Array.from({ length: 13 }, (_, i) => T0 + i * 5 * 60_000);
    const leaders = times.map(leaderAt);
    assert.ok(new Set(leaders).size >= 2, 'the top item never changed');
    // Two moments with different leaders: the events drawn around each are led by that item.
    const j = leaders.findIndex((id) => id !== leaders[0]);
    for (const t of [times[0], times[j]]) {
      const around = Array.from({ length: 3000 }, (_, i) => traffic.next(t + (i % 1000)));
      assert.equal(topContent(around), leaderAt(t));
    }
    const still = createTraffic({ catalog, seed: 7, drift: 0 });
    assert.deepEqual(still.popularity(T0), still.popularity(T0 + 40 * 60_000));
  });

  it('is deterministic for a seed', () => {
    assert.deepEqual(sample(300, 11).events, sample(300, 11).events);
    assert.notDeepEqual(sample(300, 11).events, sample(300, 12).events);
  });

  it('can inject negative durations for bad-input tests', () => {
    const traffic = createTraffic({ catalog, seed: 2, negativeDurationShare: 0.5 });
    const negatives = Array.from({ length: 1000 }, (_, i) => traffic.next(T0 + i)).filter(
      (e) => e.duration_ms !== null && e.duration_ms < 0,
    );
    assert.ok(negatives.length > 100);
  });
});
