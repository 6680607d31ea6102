import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { StatusReport } from '../../src/cli/status.js';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { runCli, spawnCli, type CliProcess } from '../helpers/cli.js';
import { cliEnv, createHarness, insertEvents, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

function jsonOf(output: string): StatusReport {
  return JSON.parse(output.slice(output.indexOf('{')));
}

describe('operating the pipeline: dlq, status, heartbeat, slot safety', () => {
  let h: Harness;
  let mock: RunningMockExternal;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    mock = await startMockExternal();
  });
  after(async () => {
    await mock.close();
    await h.cleanup();
  });

  it('dlq replay delivers exactly the dead-lettered events with their original Idempotency-Key', async () => {
    // The external system rejects 7 requests permanently: those events are dead-lettered at once.
    await fetch(`${mock.url}_control`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ mode: 'reject400', count: 7 }),
    });
    const runtime = await h.start({ externalUrl: mock.url, externalConcurrency: 1 });
    try {
      await insertEvents(h, 50);
      await waitFor('7 dead letters', async () => {
        const [{ n }] = await h.sql<{ n: string }>(
          `SELECT count(*)::text AS n FROM engagement_pipeline.dead_letters WHERE sink = 'external' AND replayed_at IS NULL`,
        );
        return n === '7';
      });
      await waitFor('43 delivered', async () => {
        const stats = (await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number };
        return stats.uniqueEventIds === 43;
      });
    } finally {
      await runtime.stop();
    }
    const list = await runCli(['dlq', 'list', '--json'], cliEnv(h));
    assert.equal(list.code, 0, list.output);
    const rows = list.output
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    assert.equal(rows.length, 7);
    const table = await runCli(['dlq', 'list', '--reason', '400'], cliEnv(h));
    assert.match(table.output, /7 row\(s\)/);
    // Times print in full, in UTC with a Z, so one pasted into --since selects from that row on.
    const newest = rows[rows.length - 1].lastFailedAt as string;
    assert.match(newest, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.ok(table.output.includes(newest), table.output);
    const since = await runCli(['dlq', 'list', '--json', '--since', newest], cliEnv(h));
    assert.equal(since.code, 0, since.output);
    const sinceRows = since.output.split('\n').filter((l) => l.startsWith('{'));
    assert.equal(sinceRows.length, rows.filter((r) => r.lastFailedAt >= newest).length);
    // Replays that fail again: exit 1, the rows stay pending.
    await fetch(`${mock.url}_control`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ mode: 'reject400', count: 2 }),
    });
    const failing = await runCli(
      [
        'dlq',
        'replay',
        '--id',
        rows
          .slice(0, 2)
          .map((r) => r.id)
          .join(','),
      ],
      cliEnv(h, { EXTERNAL_URL: mock.url }),
    );
    assert.equal(failing.code, 1, failing.output);
    assert.match(failing.output, /replayed 0 of 2.*2 failed again/);
    await fetch(`${mock.url}_control`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ mode: 'ok' }),
    });
    const requestsBefore = ((await (await fetch(`${mock.url}_stats`)).json()) as { accepted: number })
      .accepted;
    const replay = await runCli(['dlq', 'replay', '--all'], cliEnv(h, { EXTERNAL_URL: mock.url }));
    assert.equal(replay.code, 0, replay.output);
    assert.match(replay.output, /replayed 7 of 7/);
    const stats = (await (await fetch(`${mock.url}_stats`)).json()) as {
      uniqueEventIds: number;
      accepted: number;
      duplicates: number;
      duplicateEvents: number;
    };
    assert.equal(stats.uniqueEventIds, 50);
    assert.equal(stats.accepted - requestsBefore, 7, 'exactly the missing events were sent');
    assert.equal(stats.duplicateEvents, 0);
    const empty = await runCli(['dlq', 'list', '--json'], cliEnv(h));
    assert.equal(
      empty.output
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{')).length,
      0,
    );
    const replayedKeys = rows.map((r) => r.idempotencyKey).sort();
    assert.deepEqual(replayedKeys, rows.map((r) => String(r.eventId)).sort());
    const purge = await runCli(
      ['dlq', 'purge', '--before', new Date(Date.now() + 60_000).toISOString()],
      cliEnv(h),
    );
    assert.match(purge.output, /purged 7 dead letter/);
    const bad = await runCli(['dlq', 'replay'], cliEnv(h, { EXTERNAL_URL: mock.url }));
    assert.equal(bad.code, 2);
    // An id that names no dead letter is a mistake, not a replay of nothing.
    const unknown = await runCli(
      ['dlq', 'replay', '--id', `${rows[0].id},999999`],
      cliEnv(h, { EXTERNAL_URL: mock.url }),
    );
    assert.equal(unknown.code, 2, unknown.output);
    assert.match(unknown.output, /no dead letter with id (\d+, )?999999; nothing replayed/);
    // Ids as Postgres prints them (007 is 7); past BIGINT, the flag's own line.
    const padded = await runCli(['dlq', 'replay', '--id', '007'], cliEnv(h, { EXTERNAL_URL: mock.url }));
    assert.match(padded.output, /no dead letter with id 7; nothing replayed/);
    const huge = await runCli(
      ['dlq', 'replay', '--id', '99999999999999999999'],
      cliEnv(h, { EXTERNAL_URL: mock.url }),
    );
    assert.equal(huge.code, 2, huge.output);
    assert.match(huge.output, /--id must be numeric ids/);
  });

  it('status reports what Postgres reports, and per-sink progress written by the pipeline', async () => {
    // A session TimeZone other than UTC changes how Postgres prints times, not how status does.
    const status = await runCli(['status', '--json'], cliEnv(h, { PGOPTIONS: '-c TimeZone=Asia/Kolkata' }));
    assert.equal(status.code, 0, status.output);
    const report = jsonOf(status.output);
    for (const s of report.sinks) assert.match(s.lastSuccessAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const [slot] = await h.sql<{ confirmed: string; active: boolean; lag: string; current: string }>(
      `SELECT confirmed_flush_lsn::text AS confirmed, active,
              pg_wal_lsn_diff($1::pg_lsn, confirmed_flush_lsn)::text AS lag
         FROM pg_replication_slots WHERE slot_name = 'engagement_pipeline'`,
      [report.slot.currentLsn],
    );
    assert.equal(report.slot.exists, true);
    assert.equal(report.slot.active, slot.active);
    assert.equal(report.slot.confirmedLsn, slot.confirmed);
    assert.equal(report.slot.lagBytes, Number(slot.lag));
    const [{ ahead }] = await h.sql<{ ahead: boolean }>(
      `SELECT pg_current_wal_lsn() >= $1::pg_lsn AS ahead`,
      [report.slot.currentLsn],
    );
    assert.ok(ahead);
    const sinks = new Map(report.sinks.map((s: { sink: string; eventsTotal: number }) => [s.sink, s]));
    assert.ok(sinks.has('analytics') && sinks.has('redis') && sinks.has('external'), status.output);
    assert.equal(report.deadLetters.total, 0);
    const text = await runCli(['status', '--slot-lag-warn-bytes', '1'], cliEnv(h));
    assert.match(text.output, /confirmed LSN/);
    if (Number(slot.lag) > 1) assert.match(text.output, /max_slot_wal_keep_size/);
  });

  it('the heartbeat lets an idle slot advance past WAL written by other tables', async () => {
    const runtime = await h.start({ heartbeatIntervalMs: 200 });
    try {
      await h.sql('CREATE TABLE IF NOT EXISTS unrelated (id int, filler text)');
      await h.sql(`INSERT INTO unrelated SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g`);
      const [{ lsn }] = await h.sql<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      await waitFor('slot to confirm past the unrelated writes', async () => {
        const [row] = await h.sql<{ ok: boolean }>(
          `SELECT confirmed_flush_lsn >= $1::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = 'engagement_pipeline'`,
          [lsn],
        );
        return row.ok;
      });
      // The running pipeline publishes the status figures as Prometheus metrics.
      await waitFor('slot metrics', async () =>
        /engagement_slot_active 1/.test(await runtime.metrics.registry.metrics()),
      );
      assert.match(await runtime.metrics.registry.metrics(), /engagement_slot_lag_bytes \d+/);
    } finally {
      await runtime.stop();
    }
  });

  it('a dropped slot is reported, never silently recreated; --recreate-slot repairs it and prints the backfill', async () => {
    await h.sql(`SELECT pg_drop_replication_slot('engagement_pipeline')`);
    const run = await runCli(['run', '--port', '0'], cliEnv(h));
    assert.equal(run.code, 2, run.output);
    assert.match(run.output, /EP_ERR_SLOT_MISSING/);
    const migrate = await runCli(['migrate'], cliEnv(h));
    assert.notEqual(migrate.code, 0);
    assert.match(migrate.output, /EP_ERR_SLOT_MISSING.*--recreate-slot/);
    assert.equal(
      (await h.sql(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'engagement_pipeline'`)).length,
      0,
    );
    const status = await runCli(['status'], cliEnv(h));
    assert.equal(status.code, 1);
    assert.match(status.output, /MISSING/);
    const repaired = await runCli(['migrate', '--recreate-slot'], cliEnv(h));
    assert.equal(repaired.code, 0, repaired.output);
    assert.match(repaired.output, /slot engagement_pipeline recreated/);
    assert.match(repaired.output, /engagement backfill --from \d{4}-/);
  });

  it('a second run on a slot in use waits for it (a predecessor still stopping), else one line and exit 2', async () => {
    const env = { ...cliEnv(h), PORT: '0', LOG_LEVEL: 'info' };
    const streaming = async (p: CliProcess) =>
      waitFor(
        'replication streaming',
        () => {
          if (p.child.exitCode !== null) throw new Error(`exited ${p.child.exitCode}: ${p.output()}`);
          return /replication streaming/.test(p.output()) && /pipeline running/.test(p.output());
        },
        60_000,
      );
    const first = spawnCli(['run'], env);
    try {
      await streaming(first);
      // SHUTDOWN_TIMEOUT_MS bounds how long a predecessor may still hold the slot (+10 s).
      const second = spawnCli(['run'], { ...env, SHUTDOWN_TIMEOUT_MS: '1000' });
      const exit = await second.exited;
      assert.equal(exit.code, 2, second.output());
      assert.match(
        second.output(),
        /EP_ERR_SLOT_IN_USE: replication slot '[^']+' is in use by another process \(PID \d+, application_name 'engagement-replication'\)/,
      );
      assert.match(second.output(), /waiting up to 11 s/);
      // A restart while the old process drains: it takes the slot once released.
      const third = spawnCli(['run'], env);
      await waitFor(
        'third waiting',
        () => /is in use by another process; waiting/.test(third.output()),
        30_000,
      );
      first.child.kill('SIGTERM');
      assert.equal((await first.exited).code, 0, first.output());
      await streaming(third);
      third.child.kill('SIGTERM');
      assert.equal((await third.exited).code, 0, third.output());
    } finally {
      if (first.child.exitCode === null) first.child.kill('SIGKILL');
    }
  });

  it('a slot that never existed here (Kafka workers fed by Debezium use none) is no alarm: exit 0', async () => {
    const status = await runCli(['status'], { ...cliEnv(h), SLOT_NAME: 'never_created_here' });
    assert.equal(status.code, 0, status.output);
    assert.match(status.output, /slot never_created_here: not created/);
    assert.doesNotMatch(status.output, /EP_ERR_SLOT_MISSING|MISSING/);
  });
});
