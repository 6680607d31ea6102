import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { freePort } from '../../src/demo/ports.js';
import { spawnCli } from '../helpers/cli.js';

describe('the first commands a new user runs', () => {
  it('`top` with an unreachable Redis prints one line and exits 2 within 5 s', async () => {
    const port = await freePort(); // nothing listens there
    const top = spawnCli(['top'], { REDIS_URL: `redis://127.0.0.1:${port}` });
    // The limit covers process start-up through tsx on a busy machine; the bug was "never".
    const timer = setTimeout(() => top.child.kill('SIGKILL'), 30_000);
    let errorAt = Date.now();
    const onOutput = () => {
      if (/cannot reach Redis/.test(top.output())) errorAt = Date.now();
    };
    top.child.stdout!.once('data', onOutput);
    top.child.stderr!.once('data', onOutput);
    const { code } = await top.exited;
    clearTimeout(timer);
    assert.equal(code, 2, top.output());
    assert.equal(top.output().trim().split('\n').length, 1, top.output());
    assert.match(top.output(), /EP_ERR_CONFIG: cannot reach Redis at 127\.0\.0\.1:\d+/);
    // From the error line to exit: nothing may keep the process alive (ioredis reconnecting).
    assert.ok(Date.now() - errorAt < 5_000, `exited ${Date.now() - errorAt} ms after the error`);
  });
});
