import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Splits the pipeline child's JS-thread time into components from its V8 CPU profile
 * (`--cpu-prof`, with the idle notifier on so waiting in the event loop is `(idle)`).
 * Each sample goes to the innermost frame whose script belongs to a component (a sink's
 * code and its client library, the pgoutput decoder, enrichment, ...); helper modules
 * shared by several components (timestamps, positions, Node internals, native builtins)
 * are skipped so their time lands on the component that called them.
 */

export const COMPONENTS = [
  'decode',
  'enrich',
  'pipeline core',
  'duckdb',
  'redis',
  'external',
  'metrics+logging',
  'gc',
  'native/event loop',
  'other js',
] as const;
export type Component = (typeof COMPONENTS)[number];

const RULES: [RegExp, Component][] = [
  [/\/(src|dist)\/sinks\/analytics\/|@duckdb/, 'duckdb'],
  [
    /\/(src|dist)\/sinks\/redis\/|\/node_modules\/(ioredis|redis-parser|denque|cluster-key-slot|@ioredis)\//,
    'redis',
  ],
  [/\/(src|dist)\/sinks\/external\/|undici|node:_?http|node:internal\/http/, 'external'],
  [/\/(src|dist)\/domain\/(enrich|decimal)|\/(src|dist)\/pipeline\/enrich-counted/, 'enrich'],
  [
    /\/(src|dist)\/source\/|\/node_modules\/(pg-logical-replication|pg-protocol|pg|pg-types|postgres-[a-z]+|pg-int8)\//,
    'decode',
  ],
  [/\/(src|dist)\/(pipeline|sinks)\//, 'pipeline core'],
  [/prom-client|pino|sonic-boom|\/(src|dist)\/(server|logger)/, 'metrics+logging'],
];

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A time window in the monotonic clock of process.hrtime, microseconds (V8's profile clock). */
export interface Window {
  startUs: number;
  endUs: number;
}

export interface ProfileSplit {
  /** Sampled milliseconds per component (idle excluded). */
  ms: Record<Component, number>;
  idleMs: number;
  samples: number;
}

export function hrtimeUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Reads the one profile a child wrote into `dir`. */
export function readProfile(dir: string): CpuProfile | null {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) return null;
  return JSON.parse(readFileSync(path.join(dir, files[0]), 'utf8')) as CpuProfile;
}

/** Per window: sampled time of each component. */
export function splitProfile(profile: CpuProfile, windows: Window[]): ProfileSplit[] {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const memo = new Map<number, Component | 'idle'>();
  const categorize = (id: number): Component | 'idle' => {
    const known = memo.get(id);
    if (known) return known;
    let result: Component | 'idle' = 'other js';
    const leaf = byId.get(id)!.callFrame.functionName;
    if (leaf === '(idle)') result = 'idle';
    else if (leaf === '(garbage collector)') result = 'gc';
    else if (leaf === '(program)') result = 'native/event loop';
    else {
      let found: Component | null = null;
      for (let cur: number | undefined = id; cur !== undefined && found === null; cur = parent.get(cur)) {
        const url = byId.get(cur)!.callFrame.url;
        if (!url) continue;
        for (const [re, component] of RULES) {
          if (re.test(url)) {
            found = component;
            break;
          }
        }
      }
      result = found ?? 'native/event loop';
    }
    memo.set(id, result);
    return result;
  };
  const out: ProfileSplit[] = windows.map(() => ({
    ms: Object.fromEntries(COMPONENTS.map((c) => [c, 0])) as Record<Component, number>,
    idleMs: 0,
    samples: 0,
  }));
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0;
    t += delta;
    // The sample at t stands for the interval since the previous one.
    const w = windows.findIndex((win) => t > win.startUs && t <= win.endUs);
    if (w < 0) continue;
    const c = categorize(profile.samples[i]);
    const split = out[w];
    split.samples += 1;
    if (c === 'idle') split.idleMs += delta / 1000;
    else split.ms[c] += delta / 1000;
  }
  return out;
}
