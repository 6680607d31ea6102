import { createRng, deriveSeed, type Rng } from './random.js';

/**
 * The synthetic content catalogue (pure: same seed, same catalogue). Kept stable across
 * runs by default so repeated `engagement generate` runs add traffic to the same content
 * instead of growing the `content` table each time.
 */
export type ContentType = 'podcast' | 'newsletter' | 'video';

export interface CatalogItem {
  id: string;
  slug: string;
  title: string;
  content_type: ContentType;
  /** NULL for a few items, as in real catalogues (live streams, imported rows). */
  length_seconds: number | null;
  /** ISO-8601 UTC. */
  publish_ts: string;
}

/** Documented length ranges in seconds, per type (tests assert against these). */
export const LENGTH_RANGES: Readonly<Record<ContentType, readonly [number, number]>> = {
  podcast: [10 * 60, 90 * 60],
  newsletter: [2 * 60, 15 * 60],
  video: [60, 30 * 60],
};

/** Share of items with an unknown length. */
export const NULL_LENGTH_SHARE = 0.05;
export const DEFAULT_CATALOG_SEED = 20261123;
export const DEFAULT_CATALOG_SIZE = 200;

const TYPE_MIX: Record<ContentType, number> = { podcast: 0.4, newsletter: 0.3, video: 0.3 };

const WORDS = {
  podcast: {
    shows: [
      'The Daily Signal',
      'Deep Dive',
      'Off the Record',
      'Founders Hour',
      'Night Shift',
      'Field Notes',
      'The Long Game',
    ],
    topics: [
      'climate tech',
      'the chip war',
      'remote work',
      'urban farming',
      'jazz history',
      'sleep science',
      'open source',
      'space mining',
      'fermentation',
      'city budgets',
    ],
  },
  newsletter: {
    shows: [
      'Morning Brief',
      'Market Memo',
      'The Weekly Digest',
      'Culture Notes',
      'Tech Roundup',
      'Policy Wire',
    ],
    topics: [
      'rate cuts',
      'AI regulation',
      'housing supply',
      'festival season',
      'battery recycling',
      'transit strikes',
      'book prizes',
      'data privacy',
      'heat waves',
      'chess openings',
    ],
  },
  video: {
    shows: [
      'Explained',
      'In 5 Minutes',
      'Behind the Scenes',
      'Street Food',
      'Lab Tour',
      'Match Highlights',
      'How It Works',
    ],
    topics: [
      'volcanoes',
      'bread baking',
      'electric ferries',
      'the Champions League',
      'tiny houses',
      'quantum dots',
      'bike lanes',
      'coral reefs',
      'vinyl pressing',
      'robot arms',
    ],
  },
} as const;

/** Log-uniform-ish lengths: most items sit in the lower part of the range, like real catalogues. */
function lengthFor(rng: Rng, type: ContentType): number {
  const [min, max] = LENGTH_RANGES[type];
  const skewed = Math.pow(rng.next(), 1.6);
  return Math.round(min + skewed * (max - min));
}

function slugify(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}

export interface CatalogOptions {
  seed?: number;
  size?: number;
  /** Publish dates fall in the 2 years before this instant (ms). Fixed default keeps it pure. */
  nowMs?: number;
}

export function buildCatalog(options: CatalogOptions = {}): CatalogItem[] {
  const seed = options.seed ?? DEFAULT_CATALOG_SEED;
  const size = options.size ?? DEFAULT_CATALOG_SIZE;
  const nowMs = options.nowMs ?? Date.UTC(2026, 0, 1);
  const rng = createRng(deriveSeed(seed, 'catalog'));
  const counters: Record<ContentType, number> = { podcast: 0, newsletter: 0, video: 0 };
  const items: CatalogItem[] = [];
  for (let i = 0; i < size; i++) {
    const type = rng.weighted(TYPE_MIX);
    const episode = ++counters[type];
    const words = WORDS[type];
    const show = rng.pick(words.shows);
    const topic = rng.pick(words.topics);
    const title =
      type === 'podcast'
        ? `${show} #${episode}: ${capitalize(topic)}`
        : type === 'newsletter'
          ? `${show}: ${capitalize(topic)} (issue ${episode})`
          : `${capitalize(topic)} — ${show}`;
    const id = rng.uuid();
    items.push({
      id,
      // The id suffix keeps slugs unique across catalogues built from different seeds.
      slug: `${slugify(`${type}-${show}-${topic}`)}-${id.slice(0, 8)}`,
      title,
      content_type: type,
      length_seconds: rng.chance(NULL_LENGTH_SHARE) ? null : lengthFor(rng, type),
      publish_ts: new Date(nowMs - Math.floor(rng.next() * 730 * 86_400_000)).toISOString(),
    });
  }
  return items;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
