import type { Command } from 'commander';
import { Option } from 'commander';
import { parseWindow } from '../domain/windows.js';
import { configError } from '../errors.js';
import { redisConnectFailure, refuseUnselectedDatabase } from '../sinks/redis/connection.js';
import { leaderboardQueryProblem, readLeaderboard } from '../sinks/redis/leaderboard-reader.js';
import { assertClusterPrefix, clusterClient, parseClusterUrl } from '../sinks/redis/redis-sink.js';
import { Redis, type RedisOptions } from 'ioredis';
import { action, configFrom, integerOption, withConfigOptions } from './common.js';

export function registerTop(program: Command): void {
  withConfigOptions(
    program
      .command('top')
      .description('print the live leaderboard from Redis')
      .option('--window <w>', 'time window, 1m to 10m (the 10-minute leaderboard is kept live)', '10m')
      .addOption(new Option('--by <what>', 'rank by').choices(['events', 'seconds']).default('events'))
      .addOption(
        new Option('--dim <what>', 'rank content or devices')
          .choices(['content', 'device'])
          .default('content'),
      )
      .option('--limit <n>', 'rows', '10')
      .option('--json', 'print JSON'),
    ['redisUrl', 'redisPrefix'],
  ).action(
    action(async (options: Record<string, unknown>) => {
      const config = configFrom(options);
      const limit = integerOption(options.limit, '--limit', 1, 1000);
      const problem = leaderboardQueryProblem({
        by: options.by as 'events' | 'seconds',
        dim: options.dim as 'content' | 'device',
      });
      if (problem) throw configError(`--by ${problem.replace('dim=content', '--dim content')}`);
      const minutes = (() => {
        try {
          return parseWindow(String(options.window));
        } catch (err) {
          throw configError(`--window: ${(err as Error).message}`);
        }
      })();
      // One read and exit: no reconnecting (a client that retries keeps the process alive after
      // the error is printed), and a bounded wait for a Redis that does not answer at all.
      const clientOptions: RedisOptions = {
        lazyConnect: true,
        connectTimeout: 3_000,
        // A Redis that accepts the connection but does not answer (stopped, frozen): the ready
        // check and the read fail after this instead of waiting for ever.
        commandTimeout: 3_000,
        maxRetriesPerRequest: 0,
        enableOfflineQueue: false,
        retryStrategy: () => null,
        // ioredis's disconnect waits this long for a 'close' that a refused socket already emitted.
        disconnectTimeout: 200,
      };
      const cluster = parseClusterUrl(config.redisUrl);
      assertClusterPrefix(config.redisUrl, config.redisPrefix);
      // A Redis Cluster URL (README, REDIS_URL) reads through a cluster client, as `run` writes.
      const redis = cluster
        ? (clusterClient(cluster, clientOptions, () => null) as unknown as Redis)
        : new Redis(config.redisUrl, clientOptions);
      let lastError: unknown = null;
      redis.on('error', (err) => (lastError = err)); // reported below, as one line
      if (!cluster) refuseUnselectedDatabase(redis, config.redisUrl);
      try {
        await redis.connect();
      } catch (err) {
        redis.disconnect();
        throw redisConnectFailure(config.redisUrl, err, lastError);
      }
      try {
        const { rows } = await readLeaderboard(redis, config.redisPrefix, {
          minutes,
          by: options.by as 'events' | 'seconds',
          dim: options.dim as 'content' | 'device',
          limit,
        });
        if (options.json) {
          process.stdout.write(`${JSON.stringify(rows)}\n`);
          return;
        }
        const label = options.dim === 'device' ? 'device' : 'content_id';
        process.stdout.write(`rank  ${options.by === 'seconds' ? 'seconds' : 'events'}  ${label}\n`);
        rows.forEach((row, i) =>
          process.stdout.write(
            `${String(i + 1).padStart(4)}  ${String(row.score).padStart(6)}  ${row.member}\n`,
          ),
        );
        if (rows.length === 0) process.stdout.write('(no events in the window)\n');
      } finally {
        redis.disconnect();
      }
    }),
  );
}
