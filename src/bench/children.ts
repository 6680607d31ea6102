import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (this file is src/bench/*.ts or dist/bench/*.js). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface CliCommand {
  /** argv before the CLI's own arguments (node flags and entry point). */
  argv: string[];
  /** 'dist' (compiled) or 'tsx' (TypeScript source through tsx). */
  mode: 'dist' | 'tsx';
}

/**
 * How to run the CLI in a child: the compiled build when it is at least as new as every
 * source file, else the source through tsx (a stale dist would benchmark old code).
 */
export function cliCommand(prefer: 'auto' | 'dist' | 'tsx' = 'auto'): CliCommand {
  const distMain = path.join(ROOT, 'dist', 'cli', 'main.js');
  const tsx: CliCommand = {
    argv: ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts')],
    mode: 'tsx',
  };
  const dist: CliCommand = { argv: [path.join(ROOT, 'bin', 'engagement.js')], mode: 'dist' };
  if (prefer === 'tsx') return tsx;
  if (prefer === 'dist') return dist;
  if (!existsSync(distMain)) return tsx;
  const built = statSync(distMain).mtimeMs;
  return newestMtime(path.join(ROOT, 'src')) <= built ? dist : tsx;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : statSync(full).mtimeMs);
  }
  return newest;
}

/** A CLI child process with its output kept (the tail) for the report when it fails. */
export class CliChild {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private out = '';
  private exitedFlag = false;

  constructor(
    command: CliCommand,
    args: string[],
    env: Record<string, string>,
    extraNodeArgs: string[] = [],
  ) {
    this.child = spawn(process.execPath, [...extraNodeArgs, ...command.argv, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d: Buffer) => {
      this.out += d.toString();
      if (this.out.length > 64_000) this.out = this.out.slice(-32_000);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => {
        this.exitedFlag = true;
        resolve({ code, signal });
      }),
    );
  }

  get pid(): number | null {
    return this.exitedFlag ? null : (this.child.pid ?? null);
  }

  get running(): boolean {
    return !this.exitedFlag;
  }

  output(): string {
    return this.out;
  }

  /** SIGTERM (graceful drain), then SIGKILL after `graceMs`. */
  async stop(graceMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.exitedFlag) return this.exited;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Polls an HTTP URL until it answers 2xx; fails with the child's output tail when it exits first. */
export async function waitForHttp(url: string, child: CliChild, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!child.running)
      throw new Error(`child exited before ${url} answered:\n${child.output().slice(-2000)}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${url}:\n${child.output().slice(-2000)}`);
}
