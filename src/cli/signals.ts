/** Resolves on the first SIGINT/SIGTERM; a second one exits at once. */
export function waitForShutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
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
export function exitIfStuck(shutdownTimeoutMs: number, graceMs = 5_000): void {
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
export function exitSoon(ms = 2_000): void {
  setTimeout(() => process.exit(), ms).unref();
}
