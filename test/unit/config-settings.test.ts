import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { PipelineError } from '../../src/errors.js';

describe('DuckDB, BigQuery and role settings in configSpec', () => {
  it('keep their env names and defaults', () => {
    const config = loadConfig({}, {});
    assert.equal(config.duckdbMemoryLimit, '64MB');
    assert.equal(config.bigqueryApiEndpoint, undefined);
    assert.equal(config.bigqueryAccessToken, undefined);
    assert.equal(config.pipelineRolePassword, undefined);
    const set = loadConfig(
      {},
      {
        DUCKDB_MEMORY_LIMIT: '1GiB',
        BIGQUERY_API_ENDPOINT: 'http://127.0.0.1:9050',
        BIGQUERY_ACCESS_TOKEN: 'ya29.token-value',
        PIPELINE_ROLE_PASSWORD: 'role-password-value',
      },
    );
    assert.equal(set.duckdbMemoryLimit, '1GiB');
    assert.equal(set.bigqueryApiEndpoint, 'http://127.0.0.1:9050');
    assert.equal(set.bigqueryAccessToken?.reveal(), 'ya29.token-value');
    assert.equal(set.pipelineRolePassword?.reveal(), 'role-password-value');
  });

  it('wraps the BigQuery token and the role password so they never print', () => {
    const config = loadConfig(
      {},
      { BIGQUERY_ACCESS_TOKEN: 'ya29.token-value', PIPELINE_ROLE_PASSWORD: 'role-password-value' },
    );
    for (const shown of [
      JSON.stringify(config),
      inspect(config, { depth: 5 }),
      `${config.bigqueryAccessToken}`,
    ]) {
      assert.doesNotMatch(shown, /token-value|role-password-value/);
    }
  });

  it('refuses a bad DUCKDB_MEMORY_LIMIT with one line naming the variable', () => {
    assert.throws(
      () => loadConfig({}, { DUCKDB_MEMORY_LIMIT: 'lots' }),
      (err: unknown) =>
        err instanceof PipelineError &&
        err.kind === 'config' &&
        /^DUCKDB_MEMORY_LIMIT \/ --duckdb-memory-limit: expected a size like 256MB or 1GiB \(got "lots"\)$/.test(
          err.message,
        ),
    );
  });
});

describe('settings read as timers', () => {
  // Node fires a timer longer than 2^31 - 1 ms after 1 ms: such values are refused, not inverted.
  const cases: [string, number][] = [
    ['EXTERNAL_TIMEOUT_MS', 2_147_483_647],
    ['BATCH_MAX_WAIT_MS', 2_147_483_647],
    ['HEARTBEAT_INTERVAL_MS', 2_147_483_647],
    ['SHUTDOWN_TIMEOUT_MS', 2_147_478_647],
  ];
  for (const [env, max] of cases) {
    it(`${env} takes up to ${max} ms and refuses more with one line`, () => {
      assert.doesNotThrow(() => loadConfig({}, { [env]: String(max) }));
      assert.throws(
        () => loadConfig({}, { [env]: String(max + 1) }),
        (err: unknown) =>
          err instanceof PipelineError &&
          err.kind === 'config' &&
          err.message.startsWith(`${env} / --`) &&
          err.message.includes(`to ${max}`),
      );
    });
  }
});
