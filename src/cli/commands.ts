import type { Command } from 'commander';

type Register = (program: Command) => void;

/**
 * Every command, with the one-line summary the top-level help lists and a loader for the
 * module that defines it. Only the command being run is imported: the modules pull in
 * DuckDB, Kafka, BigQuery, Fastify and friends (about 0.8 s on an idle machine, several
 * seconds on a busy one), which `engagement --help` or `engagement top` never need.
 * A unit test keeps each summary (and how help lists it) equal to what its module registers.
 */
export const COMMANDS: Record<string, { summary: string; term?: string; load: () => Promise<Register> }> = {
  migrate: {
    summary:
      'create the default source tables (when neither exists; never alters yours), the publication, the replication slot and the state schema',
    load: async () => (await import('./migrate.js')).registerMigrate,
  },
  run: {
    summary: 'run the streaming pipeline (direct mode) with its HTTP server',
    load: async () => (await import('./run.js')).registerRun,
  },
  top: {
    summary: 'print the live leaderboard from Redis',
    load: async () => (await import('./top.js')).registerTop,
  },
  'mock-external': {
    summary: 'run the stand-in external HTTP system (counts deliveries and duplicates; injects failures)',
    load: async () => (await import('./mock-external.js')).registerMockExternal,
  },
  generate: {
    summary: 'insert realistic synthetic engagement events into Postgres at a steady rate',
    load: async () => (await import('./generate.js')).registerGenerate,
  },
  demo: {
    summary:
      'run the whole system on this machine: embedded Postgres, Redis, generator, pipeline, mock external system, dashboard',
    load: async () => (await import('./demo.js')).registerDemo,
  },
  bench: {
    summary:
      'end-to-end benchmark: own embedded Postgres, the real pipeline as a child, all three sinks; JSON + markdown report',
    load: async () => (await import('./bench.js')).registerBench,
  },
  capture: {
    summary:
      'scale-out mode: stream the replication slot into Kafka (engagement.events, engagement.content); workers do the rest',
    load: async () => (await import('./capture.js')).registerCapture,
  },
  work: {
    summary:
      'scale-out mode: one worker of a consumer group (enrich + fan out what capture or Debezium published)',
    load: async () => (await import('./work.js')).registerWork,
  },
  backfill: {
    summary: 're-process engagement_events history (by event_ts) through the same enrichment, idempotently',
    load: async () => (await import('./backfill.js')).registerBackfill,
  },
  dlq: {
    summary: 'dead letters: events a sink gave up on',
    term: 'dlq',
    load: async () => (await import('./dlq.js')).registerDlq,
  },
  status: {
    summary: 'slot, confirmed LSN, lag, WAL retained, per-sink progress, dead letters, backfills',
    load: async () => (await import('./status.js')).registerStatus,
  },
};

/** How the top-level help lists a command: `name [options]` unless the table says otherwise. */
export function commandTerm(name: string): string {
  return COMMANDS[name]?.term ?? `${name} [options]`;
}

/** The command named on the command line (`help <name>` included), if it is one of ours. */
export function commandNamed(argv: readonly string[]): string | null {
  const words = argv.filter((a) => !a.startsWith('-'));
  const name = words[0] === 'help' ? words[1] : words[0];
  return name !== undefined && Object.hasOwn(COMMANDS, name) ? name : null;
}
