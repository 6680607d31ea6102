import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { compareLsn } from '../../src/domain/position.js';
import type { CliProcess } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';
import { confirmedFlush, exactBackToBack } from '../helpers/wal-shapes.js';
import { HEARTBEAT_PREFIX } from '../../src/source/pgoutput-decoder.js';
import {
  createFaultHarness,
  sleep,
  startRun,
  stopRun,
  waitCaughtUp,
  type FaultHarness,
} from './support/harness.js';
import { assertExact, reconcile } from './support/reconcile.js';
import { recordScenario } from './support/report.js';

const ROUNDS = 4;
const BIG = 30_000;

/**
 * kill -9 right after the pipeline confirmed a transaction whose end is exactly where the next
 * (big, still being delivered) transaction's commit record starts — after a one-row commit and
 * after the pipeline's own heartbeat message, alternately. A position confirmed one byte too
 * far loses the whole big transaction on restart.
 */
/** Waits until the pipeline delivered everything (the replay of the last round included). */
async function drained(h: FaultHarness): Promise<void> {
  await waitFor(
    'the previous round delivered',
    async () => {
      const [{ lsn }] = await h.sql<{ lsn: string }>(
        `SELECT pg_logical_emit_message(false, $1, 'x')::text AS lsn`,
        [HEARTBEAT_PREFIX],
      );
      await sleep(300);
      return compareLsn(await confirmedFlush(h.databaseUrl, h.slotName), lsn) >= 0;
    },
    240_000,
    200,
  );
}

describe('fault: kill -9 between back-to-back commits', () => {
  let h: FaultHarness;
  let running: CliProcess | null = null;
  before(async () => {
    h = await createFaultHarness();
  });
  after(async () => {
    running?.child.kill('SIGKILL');
    await h.cleanup();
  });

  it(`loses no transaction across ${ROUNDS} kill -9 at the WAL shape that used to lose one`, async () => {
    // No heartbeat of our own in the rounds: the shapes are made by hand (the final run has one).
    const env = h.env({ HEARTBEAT_INTERVAL_MS: '600000' });
    let confirmedBeforeKill = 0;
    for (let i = 0; i < ROUNDS; i++) {
      running = await startRun(env, `round ${i}`, 60_000);
      const p = running;
      await drained(h);
      const { aEnd, bCommitEnd } = await exactBackToBack(
        h.databaseUrl,
        BIG,
        i % 2 === 0 ? 'commit' : 'heartbeat',
      );
      await waitFor(
        `round ${i}: first one confirmed`,
        async () => compareLsn(await confirmedFlush(h.databaseUrl, h.slotName), aEnd) >= 0,
        60_000,
        10,
      );
      p.child.kill('SIGKILL');
      await p.exited;
      running = null;
      if (compareLsn(await confirmedFlush(h.databaseUrl, h.slotName), bCommitEnd) < 0)
        confirmedBeforeKill += 1;
    }
    // At least one round must have been killed with the big transaction still unconfirmed,
    // or the scenario tested nothing.
    assert.ok(confirmedBeforeKill >= 1, 'the big transaction was in flight at the kill');
    const cleared = Date.now();
    running = await startRun(h.env(), 'final run', 60_000);
    const final = running;
    await waitCaughtUp(h, 180_000);
    const recoveryMs = Date.now() - cleared;
    await stopRun(final);
    running = null;
    const r = await reconcile(h);
    recordScenario({
      id: '01b-back-to-back-commits',
      scenario: `kill -9 between back-to-back commits ×${ROUNDS}`,
      fault: `a ${BIG.toLocaleString('en-US')}-row transaction committed right where a one-row commit (or the heartbeat message) ended, checked with pg_walinspect; \`engagement run\` SIGKILLed as soon as the first was confirmed (${confirmedBeforeKill} of ${ROUNDS} kills with the big one still unconfirmed)`,
      reconciliation: r,
      recoveryMs,
    });
    assertExact(r);
  });
});
