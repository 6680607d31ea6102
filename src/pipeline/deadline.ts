/**
 * Waits for `work` until `deadline` (epoch ms); past it, calls `late` and returns without
 * waiting further (shutdown must be bounded even when a connection hangs). Never throws.
 */
export async function withDeadline(
  work: Promise<unknown>,
  deadline: number,
  late: () => void = () => undefined,
): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), Math.max(0, deadline - Date.now()));
  });
  const outcome = await Promise.race([
    work.then(
      () => 'done' as const,
      () => 'done' as const,
    ),
    timeout,
  ]);
  clearTimeout(timer);
  if (outcome === 'late') late();
  return outcome === 'done';
}

/** The times a stop() works to: waiting for the destinations ends at `drainBy`, everything at `deadline`. */
export interface ShutdownTimes {
  started: number;
  drainBy: number;
  deadline: number;
}

/** Keeps time after draining to close the source and the destinations (SHUTDOWN_TIMEOUT_MS in all). */
export function shutdownTimes(timeoutMs = 20_000): ShutdownTimes {
  const started = Date.now();
  return {
    started,
    drainBy: started + Math.max(timeoutMs / 2, timeoutMs - 5_000),
    deadline: started + timeoutMs,
  };
}

/**
 * When closing connections must end, once a stop() that began at `started` returned: what is
 * left of SHUTDOWN_TIMEOUT_MS, but at least 0.5 s (a clean close saves work on the next start)
 * and at most 3 s.
 */
export function closingDeadline(started: number, timeoutMs: number): number {
  const now = Date.now();
  return now + Math.min(3_000, Math.max(500, started + timeoutMs - now));
}
