import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { minuteBucketOfMs } from '../../src/domain/windows.js';
import { spawnCli } from '../helpers/cli.js';
import { testRedis } from '../helpers/redis.js';

/**
 * `engagement top | head -1`: the reader closes the pipe before the CLI wrote everything. The
 * output it wanted is out; the CLI ends quietly with its own exit code, not an EPIPE stack trace.
 */
describe('the CLI writing into a closed pipe', () => {
  const redis = testRedis();
  after(() => redis.cleanup());

  it('top ends with exit 0 and no stack trace when stdout is closed early', async () => {
    const bucket = `${redis.prefix}top:content:bucket:${minuteBucketOfMs(Date.now())}`;
    for (let i = 1; i <= 100; i++) await redis.client.zadd(bucket, i, `content-${i}`);
    for (let run = 0; run < 3; run++) {
      const p = spawnCli(['top', '--window', '2m', '--limit', '100'], {
        REDIS_URL: redis.url,
        REDIS_PREFIX: redis.prefix,
      });
      p.child.stdout!.destroy(); // the reader is gone before the first line
      const { code } = await p.exited;
      assert.equal(code, 0, p.output());
      assert.doesNotMatch(p.output(), /EPIPE|Unhandled/);
    }
  });
});
