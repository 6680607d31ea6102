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

/**
 * How long a Redis command may wait for its reply: REDIS_REPLY_TIMEOUT_MS, plus
 * REDIS_REPLY_TIMEOUT_PER_ARG_MS for each argument it carries.
 *
 * Why a bound at all: a Redis that accepts connections but does not answer (SIGSTOPped, a
 * frozen VM, a network path dropping packets one way) gives no error: the kernel completes the
 * TCP handshake from its backlog, connectTimeout (which covers only that) passes, and every
 * command, the ready check at start-up included, would wait for ever. Bounded, a hung Redis
 * takes the path of a refusing one: the command fails, the sink is down, the write is retried.
 *
 * Why this bound: a healthy Redis answers a small command in well under a millisecond, so 5 s
 * is only ever reached by a Redis that is not working (its own busy-script threshold is 5 s
 * too). A batch's script costs Redis about 7 µs an event (bench/results/redis-lua.json: 7 ms
 * for 1,000 events) and carries about one argument an event plus a few per content and minute
 * (leaderboard-ops.ts), so 0.5 ms an argument is some 70x what it needs: 2,000 rows (the
 * default BATCH_MAX_ROWS) wait up to about 6 s, the largest merged write of the default
 * settings (18,000 rows) about 15 s. A big batch must never time out while Redis is merely
 * working on it: a batch that always timed out would be retried for ever.
 *
 * A timed-out write is safe to retry: Redis may still run it when it wakes up (it was
 * already in its socket), but each batch is applied atomically together with the stream's
 * watermark, and a batch at or below the watermark is a no-op (apply-batch.lua), while the
 * seen bitmaps count every event once whatever the order (backfill writes too); rolling the
 * window is idempotent (roll-window.lua).
 */
export const REDIS_REPLY_TIMEOUT_MS = 5_000;
export const REDIS_REPLY_TIMEOUT_PER_ARG_MS = 0.5;

/** See REDIS_REPLY_TIMEOUT_MS. */
export function replyTimeoutMs(argCount: number): number {
  return REDIS_REPLY_TIMEOUT_MS + Math.ceil(argCount * REDIS_REPLY_TIMEOUT_PER_ARG_MS);
}

/** The message ioredis rejects a command with when its reply did not come in time. */
const REPLY_TIMEOUT_MESSAGE = 'Command timed out';

/** A command rejected because Redis did not answer in time (replyTimeoutMs). */
export function isReplyTimeout(err: unknown): boolean {
  return err instanceof Error && err.message === REPLY_TIMEOUT_MESSAGE;
}

/**
 * Bounds every command's wait for its reply (replyTimeoutMs, by the command's size), and, on a
 * plain client (`reconnect`), drops a connection on which a reply did not come: the replies
 * owed on it would come in order, so nothing later on it can be answered either. Dropped, the
 * client reconnects (and its ready check, bounded too, fails while Redis still does not answer),
 * so meanwhile it is not `ready`: with the offline queue off every command fails at once, as
 * against a refusing Redis, instead of piling up writes in a socket nobody reads.
 */
export function boundReplies<T extends Redis>(redis: T, { reconnect }: { reconnect: boolean }): T {
  // The connection each command last went out on. ioredis sends a command again after a
  // reconnect (autoResendUnfulfilledCommands), even one that already timed out: its timer and
  // handler are set on the first send only, and a settled command never drops a connection.
  const sentOn = new WeakMap<Command, Redis['stream'] | undefined>();
  const sendCommand = redis.sendCommand.bind(redis) as (command: Command, ...rest: unknown[]) => unknown;
  // (A cluster client's sendCommand takes a third argument, the node: passed on as is.)
  redis.sendCommand = (command: Command, ...rest: unknown[]) => {
    const first = !sentOn.has(command);
    sentOn.set(command, redis.stream);
    if (first) {
      const timeoutMs = replyTimeoutMs(command.args.length);
      command.setTimeout(timeoutMs);
      if (reconnect)
        command.promise.catch((err: unknown) => {
          // Only the connection the command went out on (a late timeout must not drop a new
          // one). Destroyed, not ended: ending waits for a FIN that a stopped server never sends.
          const socket = sentOn.get(command);
          if (isReplyTimeout(err) && socket && redis.stream === socket && !socket.destroyed)
            socket.destroy(new Error(`no reply from Redis within ${timeoutMs} ms`));
        });
    }
    return sendCommand(command, ...rest);
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

/** REDIS_URL's host:port for messages (never its credentials). */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'REDIS_URL';
  }
}
