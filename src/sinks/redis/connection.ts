import type { Command, Redis } from 'ioredis';
import { configError, describeError, ErrorCodes, PipelineError } from '../../errors.js';

/**
 * Makes a refused database final for a client. ioredis sends `SELECT <n>` (REDIS_URL's `/n`)
 * while connecting; when the server refuses it (n past its `databases` setting, 16 by default)
 * ioredis only emits an error and goes on with database 0, where we would then read and write
 * someone else's keys. Here the refusal ends the client instead: it stops reconnecting,
 * `connect()` rejects with one EP_ERR_REDIS_DATABASE error and so does every command sent after
 * it, so nothing runs on database 0. Works on any client that connects through the handshake
 * (plain clients; a Redis Cluster has no database to select).
 */
export function refuseUnselectedDatabase<T extends Redis>(redis: T, url: string): T {
  let refused: PipelineError | null = null;
  redis.on('error', (err: Error & { command?: { name?: string; args?: unknown[] } }) => {
    if (refused || err.command?.name !== 'select') return;
    refused = new PipelineError(
      ErrorCodes.REDIS_DATABASE,
      `Redis at ${hostOf(url)} refused database ${String(err.command.args?.[0])}: ${describeError(err)}`,
      'config',
      "set REDIS_URL's /N to a database the server has (0 .. its `databases` setting - 1; 16 by default)",
    );
    redis.disconnect();
  });
  const sendCommand = redis.sendCommand.bind(redis);
  redis.sendCommand = (command: Command, stream?: Parameters<T['sendCommand']>[1]) => {
    if (!refused) return sendCommand(command, stream);
    command.reject(refused);
    return command.promise;
  };
  const connect = redis.connect.bind(redis);
  redis.connect = async (callback) => {
    try {
      await connect(callback);
    } catch (err) {
      throw refused ?? err;
    }
    if (refused) throw refused;
  };
  return redis;
}

/** A refused database (refuseUnselectedDatabase): configuration that no retry cures. */
export function isRefusedDatabase(err: unknown): err is PipelineError {
  return err instanceof PipelineError && err.code === ErrorCodes.REDIS_DATABASE;
}

/**
 * The one line for a Redis that did not let a one-shot command (`top`) connect, from the last
 * error the client emitted: a refused database, refused credentials (the server answered, so
 * "cannot reach" would send the operator the wrong way; the password is never printed), or no
 * answer at all.
 */
export function redisConnectFailure(url: string, err: unknown, lastEmitted: unknown): PipelineError {
  if (isRefusedDatabase(err)) return err;
  const text = lastEmitted instanceof Error ? lastEmitted.message : '';
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password|AUTH failed/i.test(text))
    return new PipelineError(
      ErrorCodes.REDIS_AUTH,
      `Redis at ${hostOf(url)} refused authentication: ${describeError(lastEmitted)}`,
      'config',
      'check the user and password in REDIS_URL',
    );
  return configError(`cannot reach Redis at ${hostOf(url)}`, 'start Redis or set REDIS_URL');
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'REDIS_URL';
  }
}
