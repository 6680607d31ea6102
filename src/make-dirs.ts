import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * `mkdir -p`, one level at a time. Node's own `mkdir(…, { recursive: true })` never returns
 * under a directory that refuses new entries with ENOENT (e.g. `--data-dir /proc/x`): it
 * retries the parent forever, spinning a core, and the synchronous form blocks the event
 * loop so that even SIGTERM goes unanswered. Here such a path fails at once with the reason.
 */
export function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let at = path.resolve(dir); ; at = path.dirname(at)) {
    const kind = kindOf(at);
    if (kind === 'directory') break;
    if (kind === 'other')
      throw new Error(`cannot create directory ${dir}: ${at} exists and is not a directory`);
    missing.push(at);
    if (path.dirname(at) === at) break;
  }
  for (const at of missing.reverse()) {
    try {
      mkdirSync(at);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && kindOf(at) === 'directory') continue;
      throw new Error(`cannot create directory ${dir}: ${(err as Error).message}`);
    }
  }
}

function kindOf(at: string): 'directory' | 'other' | 'missing' {
  try {
    return statSync(at).isDirectory() ? 'directory' : 'other';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw new Error(`cannot create directory under ${at}: ${(err as Error).message}`);
  }
}
