import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCodes, PipelineError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { createRedis, RedisSink } from '../../src/sinks/redis/redis-sink.js';
import { runCli } from '../helpers/cli.js';
import { testRedis } from '../helpers/redis.js';

/** REDIS_URL with another path: `redis://host:port/<db>` (credentials as given). */
function withDb(url: string, db: string, auth = ''): string {
  const u = new URL(url);
  return `redis://${auth}${u.host}/${db}`;
}

const refusedDatabase = (err: unknown) =>
  err instanceof PipelineError &&
  err.code === ErrorCodes.REDIS_DATABASE &&
  /refused database/.test(err.message);

describe('REDIS_URL: a database the server refuses, refused credentials', () => {
  const redis = testRedis();
  let missingDb = '';
  before(async () => {
    // One past the server's last database: SELECT is refused (16 databases by default).
    const [, databases] = (await redis.client.config('GET', 'databases')) as [string, string];
    missingDb = String(Number(databases));
    await redis.client.set(`${redis.prefix}db0`, 'db0 value');
  });
  after(() => redis.cleanup());

  it('a refused SELECT ends the client: connect and every command fail, nothing runs on db 0', async () => {
    const client = createRedis(withDb(redis.url, missingDb));
    await assert.rejects(client.connect(), refusedDatabase);
    await assert.rejects(client.get(`${redis.prefix}db0`), refusedDatabase);
    await assert.rejects(client.set(`${redis.prefix}written`, 'x'), refusedDatabase);
    await new Promise((resolve) => setTimeout(resolve, 300)); // no reconnect onto db 0 either
    assert.equal(client.status, 'end');
    assert.equal(await redis.client.exists(`${redis.prefix}written`), 0);
    client.disconnect();
  });

  it('the Redis sink refuses to start on it (run, backfill: one line, exit 2)', async () => {
    const sink = new RedisSink({
      url: withDb(redis.url, missingDb),
      prefix: redis.prefix,
      logger: silentLogger(),
    });
    await assert.rejects(
      sink.start(),
      (err: unknown) => refusedDatabase(err) && (err as PipelineError).kind === 'config',
    );
    await sink.stop();
  });

  it('a database the server has is still selected', async () => {
    const client = createRedis(withDb(redis.url, '1'));
    await client.connect();
    assert.equal(await client.get(`${redis.prefix}db0`), null);
    client.disconnect();
  });

  it('engagement top: one line and exit 2 for a refused database, bad path and refused password', async () => {
    const refused = await runCli([
      'top',
      '--redis-url',
      withDb(redis.url, missingDb),
      '--redis-prefix',
      redis.prefix,
    ]);
    assert.equal(refused.code, 2, refused.output);
    assert.equal(refused.output.trim().split('\n').length, 1, refused.output);
    assert.match(refused.output, /EP_ERR_REDIS_DATABASE: Redis at .* refused database/);

    const path = await runCli(['top', '--redis-url', withDb(redis.url, 'abc')]);
    assert.equal(path.code, 2, path.output);
    assert.equal(path.output.trim().split('\n').length, 1, path.output);
    assert.match(path.output, /EP_ERR_CONFIG: REDIS_URL.*database number/);

    const auth = await runCli(['top', '--redis-url', withDb(redis.url, '0', 'nosuchuser:hunter2@')]);
    assert.equal(auth.code, 2, auth.output);
    assert.equal(auth.output.trim().split('\n').length, 1, auth.output);
    assert.match(auth.output, /EP_ERR_REDIS_AUTH: Redis at .* refused authentication/);
    assert.doesNotMatch(auth.output, /hunter2|cannot reach/);
  });

  it('engagement top --dim device --by seconds is refused like GET /api/top', async () => {
    const top = await runCli(['top', '--dim', 'device', '--by', 'seconds', '--redis-url', redis.url]);
    assert.equal(top.code, 2, top.output);
    assert.equal(top.output.trim().split('\n').length, 1, top.output);
    assert.match(top.output, /--by seconds is available for --dim content only/);
  });
});
