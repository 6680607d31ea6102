import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sinkWarnings } from '../../src/cli/status.js';
import type { SinkProgressRow } from '../../src/db/status-queries.js';

const row = (over: Partial<SinkProgressRow>): SinkProgressRow => ({
  sink: 'analytics',
  stream: 'engagement_pipeline',
  lastSuccessAt: new Date().toISOString(),
  lastCommittedAt: null,
  lagSeconds: 0,
  eventsTotal: 1,
  updatedAt: new Date().toISOString(),
  state: 'up',
  lastError: null,
  ...over,
});

describe('status: sink health warnings', () => {
  it('warns about a failed, down or behind sink while the pipeline runs', () => {
    const warnings = sinkWarnings(
      [
        row({
          sink: 'clickhouse',
          state: 'failed',
          lastError: 'ClickHouse error 516 (AUTHENTICATION_FAILED)',
        }),
        row({ sink: 'redis', state: 'down', lastError: 'connect ECONNREFUSED' }),
        row({ sink: 'external', state: 'behind', lagSeconds: 95 }),
        row({ sink: 'analytics' }),
      ],
      30,
    );
    assert.equal(warnings.length, 3);
    assert.match(warnings[0], /clickhouse FAILED .*AUTHENTICATION_FAILED/);
    assert.match(warnings[1], /redis is down/);
    assert.match(warnings[2], /external is behind: lag 95.0 s > LAG_WARN_SECONDS 30/);
  });

  it("names a worker group's sink by its group", () => {
    const warnings = sinkWarnings([row({ sink: 'redis', stream: 'kafka:engagement', state: 'down' })], 30);
    assert.deepEqual(warnings, ['sink redis [kafka:engagement] is down, retrying: ']);
  });

  it('says nothing about rows the pipeline stopped updating (not running) or wrote before states existed', () => {
    const old = new Date(Date.now() - 60_000).toISOString();
    assert.deepEqual(
      sinkWarnings([row({ state: 'failed', updatedAt: old }), row({ state: null, lagSeconds: 99 })], 30),
      [],
    );
  });
});
