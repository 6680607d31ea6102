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
 * After a clean drain everything durable is done; a Kafka client still re-joining a group or
 * reconnecting to a broker that died (kafkajs keeps such timers) must not keep the process
 * alive past the shutdown budget. Exits 2 s later with the exit code already set, only if
 * something still holds the event loop (the timer itself does not).
 */
export function exitSoonIfHeld(logger: { warn(msg: string): void }): void {
  setTimeout(() => {
    logger.warn('shutdown: open handles left after draining; exiting');
    process.exit();
  }, 2_000).unref();
}
