import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { createHarness, insertEvents, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const control = (mock: RunningMockExternal, body: object) =>
  fetch(`${mock.url}_control`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('backpressure: a stalled sink pauses the replication stream', () => {
  let h: Harness;
  let mock: RunningMockExternal;
  before(async () => {
    h = await createHarness();
    await seedContent(h);
    mock = await startMockExternal({ port: 0 });
  });
  after(async () => {
    await mock.close();
    await h.cleanup();
  });

  it('reads at most the in-flight bound while the external system is down, then catches up', async () => {
    const maxRows = 500;
    const maxInFlight = 2;
    const runtime = await h.start({
      externalUrl: mock.url,
      externalPolicy: 'block',
      externalBatchSize: 50,
      batchMaxRows: maxRows,
      maxInFlightBatches: maxInFlight,
    });
    const received = async () => (await runtime.metrics.eventsReceived.get()).values[0]?.value ?? 0;
    try {
      await control(mock, { mode: 'fail500' });
      await insertEvents(h, 20_000);
      await new Promise((r) => setTimeout(r, 3000));
      const read = await received();
      // In flight + one batch waiting for room + one being assembled, plus the library's queue.
      const bound = (maxInFlight + 3) * maxRows;
      assert.ok(read > 0 && read <= bound, `read ${read} events while stalled; bound ${bound}`);
      await control(mock, { mode: 'ok' });
      await waitFor(
        'all events at the external system',
        async () =>
          ((await (await fetch(`${mock.url}_stats`)).json()) as { uniqueEventIds: number }).uniqueEventIds ===
          20_000,
        60_000,
        200,
      );
      assert.equal(await received(), 20_000);
    } finally {
      await runtime.stop();
    }
  });
});
