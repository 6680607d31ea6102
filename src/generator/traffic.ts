import { LENGTH_RANGES, type CatalogItem, type ContentType } from './catalog.js';
import { createRng, deriveSeed, type Rng } from './random.js';

/**
 * Synthetic engagement traffic (pure: a seed and the timestamps passed in decide every
 * value). Popularity is Zipf-like over the catalogue and drifts over time so the 10-minute
 * leaderboard moves the way a real one does; events, durations, devices and payloads are
 * kept consistent with the content they refer to.
 */
export const DEVICES = [
  'ios',
  'android',
  'web-safari',
  'web-chrome',
  'web-firefox',
  'tv',
  'desktop-app',
] as const;
export type Device = (typeof DEVICES)[number];
export type EventType = 'play' | 'pause' | 'finish' | 'click';

/** One row for engagement_events (id is assigned by Postgres). */
export interface GeneratedEvent {
  content_id: string;
  user_id: string | null;
  event_type: EventType;
  /** ISO-8601 UTC. */
  event_ts: string;
  duration_ms: number | null;
  device: Device;
  raw_payload: Record<string, unknown>;
}

/** Documented duration rules, as fractions of the content length (tests assert these). */
export const DURATION_RULES = {
  play: { min: 0.01, max: 0.61 },
  pause: { min: 0.01, max: 0.51, nullShare: 0.3 },
  finish: { min: 0.92, max: 1.03 },
} as const;

const EVENT_MIX: Record<ContentType, Record<EventType, number>> = {
  podcast: { play: 45, pause: 28, finish: 12, click: 15 },
  video: { play: 45, pause: 22, finish: 15, click: 18 },
  // For a newsletter "play" is an open/read session and "click" a link in it.
  newsletter: { play: 45, pause: 8, finish: 20, click: 27 },
};

const DEVICE_MIX: Record<ContentType, Record<Device, number>> = {
  podcast: {
    ios: 35,
    android: 30,
    'web-chrome': 10,
    'web-safari': 6,
    'web-firefox': 2,
    tv: 2,
    'desktop-app': 15,
  },
  video: {
    ios: 22,
    android: 22,
    'web-chrome': 16,
    'web-safari': 8,
    'web-firefox': 4,
    tv: 20,
    'desktop-app': 8,
  },
  newsletter: {
    ios: 25,
    android: 20,
    'web-chrome': 25,
    'web-safari': 15,
    'web-firefox': 8,
    tv: 0,
    'desktop-app': 7,
  },
};

const OVERALL_DEVICE_MIX: Record<Device, number> = {
  ios: 28,
  android: 25,
  'web-chrome': 17,
  'web-safari': 9,
  'web-firefox': 4,
  tv: 8,
  'desktop-app': 9,
};

const LOCALES = {
  'en-US': 40,
  'en-GB': 12,
  'de-DE': 10,
  'fr-FR': 9,
  'es-ES': 8,
  'pt-BR': 8,
  'nl-NL': 5,
  'ja-JP': 5,
  'it-IT': 3,
};
const REFERRERS = { home: 30, search: 18, push: 12, email: 12, social: 14, direct: 8, recommendation: 6 };

export interface TrafficOptions {
  catalog: readonly CatalogItem[];
  seed?: number;
  /** Returning users in the pool (default 5000). */
  users?: number;
  /** Share of events from the returning-user pool (default 0.9); the rest are one-off visitors. */
  returningShare?: number;
  /** Zipf exponent of base popularity (default 1.1). */
  zipfExponent?: number;
  /** Strength of the popularity drift: multipliers range over e^±drift (default 1.0; 0 = static). */
  drift?: number;
  /** Share of events with a negative duration_ms, to exercise bad-input handling (default 0). */
  negativeDurationShare?: number;
}

interface User {
  id: string;
  device: Device;
  locale: string;
  appVersion: string;
  session: string;
}

export interface Traffic {
  /** The next event, stamped close to `tsMs` (clients report a little late). */
  next(tsMs: number): GeneratedEvent;
  /** Relative popularity of every catalogue item at `tsMs` (same order as the catalogue). */
  popularity(tsMs: number): number[];
}

/** Popularity is recomputed on this grid; between points it is constant. */
const POPULARITY_STEP_MS = 5_000;

export function createTraffic(options: TrafficOptions): Traffic {
  const { catalog } = options;
  if (catalog.length === 0) throw new RangeError('traffic needs a non-empty catalogue');
  const seed = options.seed ?? 1;
  const rng = createRng(deriveSeed(seed, 'traffic'));
  const shape = createRng(deriveSeed(seed, 'popularity'));
  const zipf = options.zipfExponent ?? 1.1;
  const drift = options.drift ?? 1.0;
  const returningShare = options.returningShare ?? 0.9;
  const negativeShare = options.negativeDurationShare ?? 0;

  // Base Zipf weight by a seeded rank permutation, plus a slow per-item oscillation
  // (periods 8–40 min) that lets items overtake each other within a demo's lifetime.
  const ranks = shuffle(
    shape,
    catalog.map((_, i) => i),
  );
  const base = new Array<number>(catalog.length);
  ranks.forEach((itemIndex, rank) => (base[itemIndex] = 1 / Math.pow(rank + 1, zipf)));
  const periods = catalog.map(() => shape.float(8, 40) * 60_000);
  const phases = catalog.map(() => shape.float(0, 2 * Math.PI));

  const popularity = (tsMs: number): number[] => {
    const t = Math.floor(tsMs / POPULARITY_STEP_MS) * POPULARITY_STEP_MS;
    return base.map((w, i) => w * Math.exp(drift * Math.sin((2 * Math.PI * t) / periods[i] + phases[i])));
  };

  let cachedStep = Number.NaN;
  let cumulative: number[] = [];
  const pickContent = (tsMs: number): CatalogItem => {
    const step = Math.floor(tsMs / POPULARITY_STEP_MS);
    if (step !== cachedStep) {
      cachedStep = step;
      let sum = 0;
      cumulative = popularity(tsMs).map((w) => (sum += w));
    }
    const r = rng.next() * cumulative[cumulative.length - 1];
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid] > r) hi = mid;
      else lo = mid + 1;
    }
    return catalog[lo];
  };

  // Returning users: stable id, primary device and locale; a few are far more active.
  const userRng = createRng(deriveSeed(seed, 'users'));
  const users: User[] = Array.from({ length: options.users ?? 5000 }, () => {
    const device = userRng.weighted(OVERALL_DEVICE_MIX);
    return {
      id: userRng.uuid(),
      device,
      locale: userRng.weighted(LOCALES),
      appVersion: appVersion(userRng, device),
      session: userRng.uuid(),
    };
  });
  let userCumulative = 0;
  const userWeights = users.map((_, i) => (userCumulative += 1 / Math.pow(i + 1, 0.7)));
  const pickUser = (): User => {
    const r = rng.next() * userCumulative;
    let lo = 0;
    let hi = userWeights.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (userWeights[mid] > r) hi = mid;
      else lo = mid + 1;
    }
    return users[lo];
  };

  const next = (tsMs: number): GeneratedEvent => {
    const item = pickContent(tsMs);
    const type = item.content_type;
    const eventType = rng.weighted(EVENT_MIX[type]);
    const returning = users.length > 0 && rng.chance(returningShare);
    let user: User;
    if (returning) {
      user = pickUser();
      // Sessions end now and then; a new one starts with the next event.
      if (rng.chance(0.05)) user.session = rng.uuid();
    } else {
      const device = rng.weighted(OVERALL_DEVICE_MIX);
      user = {
        id: rng.uuid(),
        device,
        locale: rng.weighted(LOCALES),
        appVersion: appVersion(rng, device),
        session: rng.uuid(),
      };
    }
    // Users mostly stay on their own device, unless it does not fit the content (no newsletters on TV).
    const device =
      DEVICE_MIX[type][user.device] > 0 && rng.chance(0.75) ? user.device : rng.weighted(DEVICE_MIX[type]);
    const appVer = device === user.device ? user.appVersion : appVersion(rng, device);
    // Logged-out visitors click without an account.
    const userId = !returning && eventType === 'click' && rng.chance(0.5) ? null : user.id;

    let duration = durationFor(rng, eventType, item);
    if (duration !== null && negativeShare > 0 && rng.chance(negativeShare)) duration = -duration;
    const lengthS = item.length_seconds ?? typicalLength(type);
    const payload: Record<string, unknown> = {
      app_version: appVer,
      os: osFor(rng, device),
      locale: user.locale,
      referrer: rng.weighted(REFERRERS),
      session_id: user.session,
      network:
        device === 'tv' || device === 'desktop-app' ? 'ethernet' : rng.chance(0.6) ? 'wifi' : 'cellular',
    };
    if (eventType === 'play' || eventType === 'pause') {
      payload.position_ms = Math.round(rng.float(0, 0.9) * lengthS * 1000);
    }
    if (eventType === 'click')
      payload.target = type === 'newsletter' ? 'link' : rng.pick(['cover', 'share', 'related']);

    return {
      content_id: item.id,
      user_id: userId,
      event_type: eventType,
      // Clients report a little after the fact (0–400 ms).
      event_ts: new Date(tsMs - rng.int(0, 400)).toISOString(),
      duration_ms: duration,
      device,
      raw_payload: payload,
    };
  };

  return { next, popularity };
}

/** Length assumed for items whose length is unknown: the middle of the type's range. */
function typicalLength(type: ContentType): number {
  const [min, max] = LENGTH_RANGES[type];
  return (min + max) / 2;
}

function durationFor(rng: Rng, eventType: EventType, item: CatalogItem): number | null {
  const lengthMs = (item.length_seconds ?? typicalLength(item.content_type)) * 1000;
  switch (eventType) {
    case 'click':
      return null;
    case 'pause':
      if (rng.chance(DURATION_RULES.pause.nullShare)) return null;
      return Math.max(
        1000,
        Math.round(lengthMs * rng.float(DURATION_RULES.pause.min, DURATION_RULES.pause.max)),
      );
    case 'play': {
      // Most sessions are short; a few listen/watch/read most of the way.
      const { min, max } = DURATION_RULES.play;
      return Math.max(1000, Math.round(lengthMs * (min + Math.pow(rng.next(), 1.5) * (max - min))));
    }
    case 'finish':
      return Math.round(lengthMs * rng.float(DURATION_RULES.finish.min, DURATION_RULES.finish.max));
  }
}

function appVersion(rng: Rng, device: Device): string {
  if (device.startsWith('web-')) return `web-2026.${rng.int(9, 11)}.${rng.int(0, 4)}`;
  if (device === 'tv') return `tv-${rng.int(3, 4)}.${rng.int(0, 9)}`;
  return `${rng.int(7, 8)}.${rng.int(0, 14)}.${rng.int(0, 5)}`;
}

function osFor(rng: Rng, device: Device): string {
  switch (device) {
    case 'ios':
      return `iOS ${rng.pick(['17.6', '18.1', '18.4', '19.0'])}`;
    case 'android':
      return `Android ${rng.int(12, 15)}`;
    case 'tv':
      return rng.pick(['tvOS 18', 'Android TV 14', 'Tizen 8.0', 'webOS 24']);
    case 'desktop-app':
      return rng.pick(['macOS 15', 'Windows 11', 'Windows 10']);
    default:
      return rng.pick(['macOS 15', 'Windows 11', 'Ubuntu 24.04', 'ChromeOS 130']);
  }
}

function shuffle<T>(rng: Rng, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}
