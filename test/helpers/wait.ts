/** Polls `check` until it returns a truthy value or the timeout passes (then throws with `what`). */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T> | T,
  timeoutMs = 20_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(last)})`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/**
 * Polls `read` until it reaches `target`. On a busy machine a catch-up can take far longer than
 * any fixed deadline, so this fails only when the value stops moving for `stallMs` (or after
 * `capMs` in all), and the error names the last value reached.
 */
export async function waitForCount(
  what: string,
  read: () => Promise<number> | number,
  target: number,
  {
    stallMs = 60_000,
    capMs = 480_000,
    everyMs = 200,
  }: { stallMs?: number; capMs?: number; everyMs?: number } = {},
): Promise<number> {
  const started = Date.now();
  let best = -Infinity;
  let movedAt = started;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await read();
      if (value >= target) return value;
      if (value > best) {
        best = value;
        movedAt = Date.now();
      }
    } catch (err) {
      lastError = err;
    }
    const now = Date.now();
    if (now - movedAt > stallMs || now - started > capMs)
      throw new Error(
        `timed out waiting for ${what}: reached ${best} of ${target} after ${now - started} ms, ` +
          `no progress for ${now - movedAt} ms${lastError ? ` (last error: ${String(lastError)})` : ''}`,
      );
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
