/**
 * Seeded randomness for property tests (fast-check is not a dependency): mulberry32, a small
 * PRNG whose failing seed can be replayed by running the same test again.
 */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [min, max], both included. */
export function intBetween(random: () => number, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

/** One element of a non-empty list. */
export function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

/** The seeds a property runs with: PROPERTY_SEEDS=n runs more (a soak), PROPERTY_SEED=s replays one. */
export function seeds(count: number): number[] {
  const one = process.env.PROPERTY_SEED;
  if (one) return [Number(one)];
  const n = Number(process.env.PROPERTY_SEEDS ?? count);
  return Array.from({ length: n }, (_, i) => i + 1);
}
