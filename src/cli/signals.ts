import { SHUTDOWN_GRACE_MS } from '../config.js';

/**
 * Resolves on the first SIGINT/SIGTERM (or, under `npx`, when the npx process is signalled:
 * see onLauncherExit); a second signal exits at once.
 */
export function waitForShutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stopWatching = onLauncherExit(() => onSignal('SIGTERM'));
    const onSignal = (signal: NodeJS.Signals) => {
      stopWatching();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.once('SIGINT', () => process.exit(130));
      process.once('SIGTERM', () => process.exit(143));
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

/**
 * The last guard of a bounded shutdown: every step already has its own deadline, but should
 * anything still hang (a driver ignoring its timeout), the process exits anyway a little
 * after SHUTDOWN_TIMEOUT_MS, saying so. The timer does not keep a finished process alive.
 */
export function exitIfStuck(shutdownTimeoutMs: number, graceMs = SHUTDOWN_GRACE_MS): void {
  setTimeout(() => {
    process.stderr.write(
      `engagement: shutdown did not finish within ${Math.round((shutdownTimeoutMs + graceMs) / 1000)} s; exiting (unconfirmed changes replay on the next start)\n`,
    );
    process.exit(1);
  }, shutdownTimeoutMs + graceMs).unref();
}

/**
 * After a command finished (or failed), a library handle left open (a socket, a timer)
 * must not keep the process alive: exit once the event loop had a moment to flush output.
 */
export function exitSoon(ms = 2_000, by = Infinity): void {
  setTimeout(() => process.exit(), lingerMs(ms, by)).unref();
}

/**
 * `ms`, but never past `by` (epoch ms): after a signal, SHUTDOWN_TIMEOUT_MS from it. A stop that
 * used its whole budget (a sink hung) must not then linger for open handles past the bound a
 * supervisor's grace period is set to.
 */
function lingerMs(ms: number, by: number): number {
  return Math.max(0, Math.min(ms, by - Date.now()));
}

/**
 * `npx engagement ...` runs npm -> `sh -c engagement ...` -> node. npm forwards SIGINT and
 * SIGTERM to that shell only, and dash neither passes them on nor execs the command: SIGTERM
 * kills the shell and leaves this process running, orphaned; SIGINT is held by the shell
 * until its child exits (so it does nothing). Under npm exec the shell going away is
 * therefore taken as a SIGTERM. (The repository's .npmrc runs npm's scripts with bash, which
 * execs the command, so both signals reach this process directly.) Outside npm nothing is
 * watched: `nohup engagement run &` keeps running when its shell exits.
 */
export function onLauncherExit(callback: () => void, pollMs = 500): () => void {
  if (process.env.npm_command !== 'exec') return () => undefined;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    callback();
  }, pollMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * After a clean drain everything durable is done; a Kafka client still re-joining a group or
 * reconnecting to a broker that died (kafkajs keeps such timers) must not keep the process
 * alive past the shutdown budget. Exits 2 s later with the exit code already set, only if
 * something still holds the event loop (the timer itself does not).
 */
export function exitSoonIfHeld(logger: { warn(msg: string): void }, by = Infinity): void {
  setTimeout(
    () => {
      logger.warn('shutdown: open handles left after draining; exiting');
      process.exit();
    },
    lingerMs(2_000, by),
  ).unref();
}
