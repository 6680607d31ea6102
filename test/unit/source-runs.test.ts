import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SourceRuns } from '../../src/pipeline/source-runs.js';

/** Feeds [position, source] pairs; returns the kept positions per run with its source. */
function split(messages: [string, string | undefined][]) {
  const runs = new SourceRuns();
  const kept = messages.filter(([position, source]) => runs.keep(position, source)).map(([p]) => p);
  return runs.runs().map(({ from, to, source }) => [source, kept.slice(from, to)]);
}

describe('SourceRuns: one partition fetch, copies dropped, runs of one cluster', () => {
  it('drops copies at or below what the run kept (a capture restart re-publishing)', () => {
    assert.deepEqual(
      split([
        ['05', 'pg:1'],
        ['06', 'pg:1'],
        ['05', 'pg:1'],
        ['06', 'pg:1'],
        ['07', 'pg:1'],
      ]),
      [['pg:1', ['05', '06', '07']]],
    );
  });

  it('starts a new run for another cluster, where its lower positions are not copies', () => {
    assert.deepEqual(
      split([
        ['50', 'pg:1'],
        ['51', 'pg:1'],
        ['01', 'pg:2'],
        ['02', 'pg:2'],
        ['02', 'pg:2'],
      ]),
      [
        ['pg:1', ['50', '51']],
        ['pg:2', ['01', '02']],
      ],
    );
  });

  it("keeps an earlier capture's messages (no cluster) and the upgraded capture's in one run: its copies still drop", () => {
    assert.deepEqual(
      split([
        ['05', undefined],
        ['06', undefined],
        ['05', 'pg:1'],
        ['06', 'pg:1'],
        ['07', 'pg:1'],
      ]),
      [['pg:1', ['05', '06', '07']]],
    );
    assert.deepEqual(
      split([
        ['05', undefined],
        ['06', undefined],
      ]),
      [[undefined, ['05', '06']]],
    );
  });

  it('gives each run as the range of its kept events', () => {
    const runs = new SourceRuns();
    assert.equal(runs.keep('05', 'pg:1'), true);
    assert.equal(runs.keep('01', 'pg:2'), true);
    assert.equal(runs.keep('01', 'pg:2'), false);
    assert.deepEqual(runs.runs(), [
      { from: 0, to: 1, source: 'pg:1' },
      { from: 1, to: 2, source: 'pg:2' },
    ]);
    assert.deepEqual(new SourceRuns().runs(), []);
  });
});
