import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PipelineError } from '../../src/errors.js';
import type { Change } from '../../src/source/changes.js';
import {
  createHarness,
  harnessSource,
  insertEvents,
  seedContent,
  type Harness,
} from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

/**
 * DATABASE_URL reaching another cluster after a reconnect (a failover to a cluster restored from
 * a dump, a DNS name moved): its slot and LSNs are its own, so resuming would confirm the old
 * cluster's positions to it. The source halts instead, before streaming from it.
 */
describe('the replication source across a reconnect to another cluster', () => {
  const walsenderGone = async (h: Harness) =>
    (
      await h.sql<{ n: string }>(
        `SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name = 'engagement_pipeline' AND active`,
      )
    )[0].n === '0';

  for (const [name, identities, halts] of [
    ['the same cluster: resumes', ['postgres:1', 'postgres:1'], false],
    [
      'another cluster: halts with EP_ERR_SOURCE_CHANGED, streaming nothing from it',
      ['postgres:1', 'postgres:2'],
      true,
    ],
  ] as const) {
    it(name, async () => {
      // A database per case: the first case's events, never confirmed, would replay into the second.
      const h = await createHarness();
      await seedContent(h);
      const seen: number[] = [];
      let reads = 0;
      let halted: PipelineError | null = null;
      const source = harnessSource(h, {
        systemIdentifier: async () => identities[Math.min(reads++, identities.length - 1)],
        onHalt: (error: PipelineError) => (halted = error),
      });
      const handler = async (change: Change): Promise<void> => {
        if (change.kind === 'event') seen.push(change.row.id);
      };
      await source.start(handler);
      try {
        assert.equal(source.sourceId, 'postgres:1');
        const before = seen.length;
        await h.sql(
          `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'engagement_pipeline'`,
        );
        await waitFor('the identity read again', () => reads >= 2, 30_000);
        await insertEvents(h, 3);
        if (halts) {
          await waitFor('halted', () => halted !== null, 30_000);
          assert.equal((halted as PipelineError | null)?.code, 'EP_ERR_SOURCE_CHANGED');
          assert.match(halted!.message, /postgres:1, now postgres:2/);
          await new Promise((r) => setTimeout(r, 1_000));
          assert.equal(seen.length, before, 'nothing streamed from the other cluster');
          assert.ok(await walsenderGone(h), 'no replication connection to it');
        } else {
          await waitFor('streaming again', () => seen.length >= before + 3, 30_000);
          assert.equal(halted, null);
        }
      } finally {
        await source.stop();
        await h.cleanup();
      }
    });
  }
});
