import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCli } from '../helpers/cli.js';

describe('bad configuration exits 2 with one clear line', () => {
  it('unknown analytics URL scheme', async () => {
    const { code, output } = await runCli(['run'], {
      DATABASE_URL: 'postgres://u@127.0.0.1:1/db',
      ANALYTICS_URL: 'mysql://x',
    });
    assert.equal(code, 2);
    assert.equal(output.trim().split('\n').length, 1, output);
    assert.match(output, /EP_ERR_CONFIG: ANALYTICS_URL/);
  });
  it('unreachable Postgres, without printing the password', async () => {
    const { code, output } = await runCli(['run'], {
      DATABASE_URL: 'postgres://user:hunter2secret@127.0.0.1:1/db',
    });
    assert.equal(code, 2);
    assert.equal(output.trim().split('\n').length, 1, output);
    assert.match(output, /EP_ERR_POSTGRES_UNREACHABLE/);
    assert.doesNotMatch(output, /hunter2secret/);
  });
  it('an unknown flag', async () => {
    const { code, output } = await runCli(['run', '--no-such-flag']);
    assert.equal(code, 2);
    assert.match(output, /unknown option/);
  });
  it('a non-numeric PORT', async () => {
    const { code, output } = await runCli(['run'], { PORT: 'eighty' });
    assert.equal(code, 2);
    assert.match(output, /PORT/);
  });
  // Node's own recursive mkdir spins forever on such paths, deaf to SIGTERM (make-dirs.ts).
  it('a data directory that cannot be created', async () => {
    const demo = await runCli(['demo', '--data-dir', '/proc/engagement-x']);
    assert.equal(demo.code, 2, demo.output);
    assert.match(demo.output, /EP_ERR_CONFIG: --data-dir: cannot create directory \/proc\/engagement-x/);
  });
  it('a missing DATABASE_URL for migrate', async () => {
    const { code, output } = await runCli(['migrate'], { DATABASE_URL: '' });
    assert.equal(code, 2);
    assert.match(output, /DATABASE_URL is not set/);
  });
});
