import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { runGenerator } from '../../src/generator/writer.js';
import { silentLogger } from '../../src/logger.js';
import { startHttpServer, type Runtime } from '../../src/runtime.js';
import { launchChromium } from '../helpers/browser.js';
import { createHarness, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const SCREENSHOT = process.env.DASHBOARD_SCREENSHOT ?? path.resolve('test-results', 'dashboard.png');
const EVENTS = 3000;

interface Row {
  id: string;
  score: number;
}

describe('the dashboard in headless Chromium', () => {
  let h: Harness;
  let runtime: Runtime;
  let http: { url: string; close(): Promise<void> };
  let browser: Browser;

  before(async () => {
    h = await createHarness();
    runtime = await h.start();
    http = await startHttpServer(runtime, h.config(), silentLogger());
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await http?.close();
    await runtime?.stop();
    await h?.cleanup();
  });

  it('shows live data equal to Redis, without a reload', async () => {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    await page.goto(http.url);
    await page.waitForSelector('[data-testid="connection-status"][data-state="live"]', { timeout: 15_000 });

    // Traffic starts after the page is open: what it shows must arrive live.
    await runGenerator({ databaseUrl: h.databaseUrl, rate: 1500, count: EVENTS, seed: 7 });
    const redisTop = async (key: string): Promise<Row[]> => {
      const flat = await h.redis.client.zrevrange(`${h.redis.prefix}${key}`, 0, 9, 'WITHSCORES');
      const rows: Row[] = [];
      for (let i = 0; i < flat.length; i += 2) rows.push({ id: flat[i]!, score: Number(flat[i + 1]) });
      return rows;
    };
    await waitFor('Redis to count every event', async () => {
      const total = await h.redis.client.zcard(`${h.redis.prefix}top:device:10m`);
      const all = await h.redis.client.zrange(`${h.redis.prefix}top:device:10m`, '0', '-1', 'WITHSCORES');
      let sum = 0;
      for (let i = 1; i < all.length; i += 2) sum += Number(all[i]);
      return total > 0 && sum === EVENTS;
    });

    const expectedContent = await redisTop('top:content:10m');
    const expectedDevices = await redisTop('top:device:10m');
    const shownContent = await waitFor<Row[] | undefined>(
      'the dashboard to show what Redis holds',
      async () => {
        const rows = await page.$$eval('[data-testid="top-content-row"]', (els) =>
          els.map((e) => ({
            id: e.getAttribute('data-content-id')!,
            score: Number(e.getAttribute('data-score')),
          })),
        );
        return rows.length === expectedContent.length &&
          rows.every((r, i) => r.score === expectedContent[i]!.score)
          ? rows
          : undefined;
      },
    );
    const shownDevices = await page.$$eval('[data-testid="top-device-row"]', (els) =>
      els.map((e) => ({ id: e.getAttribute('data-device')!, score: Number(e.getAttribute('data-score')) })),
    );

    if (!shownContent) throw new Error('unreachable');
    // Ties may list in any order; compare scores in order and the (id, score) sets.
    const key = (r: Row) => `${r.id}=${r.score}`;
    assert.ok(shownContent.length >= 5, `expected at least 5 rows, got ${shownContent.length}`);
    assert.deepEqual(
      shownContent.map((r) => r.score),
      expectedContent.map((r) => r.score),
    );
    assert.deepEqual(shownContent.map(key).sort(), expectedContent.map(key).sort());
    assert.deepEqual(shownDevices.map(key).sort(), expectedDevices.map(key).sort());

    // Titles come from Postgres's content table, not ids.
    const [row] = await h.sql<{ title: string }>('SELECT title FROM content WHERE id = $1', [
      shownContent[0]!.id,
    ]);
    const firstCell = await page.textContent('[data-testid="top-content-row"] td:nth-child(2)');
    assert.ok(
      firstCell?.includes(row!.title),
      `the first row shows "${firstCell}", not its title "${row!.title}"`,
    );
    const totalShown = await page.textContent('[data-testid="total-events"]');
    assert.equal(Number(totalShown?.replace(/[^0-9]/g, '')), EVENTS);

    // Titles first: no id printed under them (it is in the tooltip).
    assert.doesNotMatch(firstCell ?? '', /[0-9a-f]{8}-[0-9a-f]{4}-/);

    // From the analytics store: every event in the 60-minute timeline, the latest 20 rows, the row count.
    await waitFor('the timeline to count every event', async () => {
      const counts = await page.$$eval('[data-testid="timeline-bar"]', (els) =>
        els.map((e) => Number(e.getAttribute('data-events'))),
      );
      return counts.length === 60 && counts.reduce((a, b) => a + b, 0) === EVENTS;
    });
    const [{ max }] = await h.sql<{ max: string }>('SELECT max(id)::text AS max FROM engagement_events');
    await waitFor('the newest event first in the recent table', async () => {
      const ids = await page.$$eval('[data-testid="recent-row"]', (els) =>
        els.map((e) => e.getAttribute('data-event-id')),
      );
      return ids.length === 20 && ids[0] === max;
    });
    const recentTitle = await page.textContent('[data-testid="recent-row"] td:nth-child(2)');
    assert.doesNotMatch(recentTitle ?? '', /^[0-9a-f]{8}-/, 'recent events show titles');
    await waitFor('the analytics row count', async () => {
      const text = await page.textContent('[data-testid="analytics-rows"]');
      return Number(text?.replace(/[^0-9]/g, '')) === EVENTS;
    });
    // Delivered per sink, from the server's counters.
    await waitFor('every sink to show all events delivered', async () => {
      const delivered = await page.$$eval('[data-testid="sink-delivered"]', (els) =>
        els.map((e) => Number(e.textContent?.replace(/[^0-9]/g, ''))),
      );
      return delivered.length >= 2 && delivered.every((n) => n === EVENTS);
    });
    // Events/s history comes from the server: a page opened now already has it. (First let
    // the server collect a few seconds of samples: on a fast machine the test gets here sooner.)
    await waitFor('a few seconds of throughput history', async () => {
      const d = await page.getAttribute('[data-testid="throughput-sparkline"] path.received', 'd');
      return (d ?? '').split('L').length > 7;
    });
    const fresh = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    await fresh.goto(http.url);
    await fresh.waitForSelector('[data-testid="connection-status"][data-state="live"]', { timeout: 15_000 });
    const spark = await fresh.getAttribute('[data-testid="throughput-sparkline"] path.received', 'd');
    assert.ok((spark ?? '').split('L').length > 5, `a new page shows no history: ${spark}`);
    await fresh.close();
    await waitFor('the timeline to be drawn', () => page.$('[data-testid="timeline-bar"] rect'));

    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  });
});
