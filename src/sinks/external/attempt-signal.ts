/**
 * One attempt's signal: aborted when the pipeline's is, or when `timeoutMs` pass first. Its
 * timer is cleared as soon as the attempt ends. (`AbortSignal.any` with `AbortSignal.timeout`
 * left one timer per request to fire seconds after the answer, each building a TimeoutError
 * with its stack, and one more dependent signal on the pipeline's signal until a GC.)
 */
export class AttemptSignal {
  readonly #controller = new AbortController();
  readonly #parent: AbortSignal;
  readonly #timer: NodeJS.Timeout;
  readonly #onAbort = () => this.#controller.abort(this.#parent.reason);
  timedOut = false;

  constructor(parent: AbortSignal, timeoutMs: number) {
    this.#parent = parent;
    if (parent.aborted) this.#controller.abort(parent.reason);
    else parent.addEventListener('abort', this.#onAbort, { once: true });
    this.#timer = setTimeout(() => {
      this.timedOut = true;
      this.#controller.abort(new Error(`timeout after ${timeoutMs} ms`));
    }, timeoutMs);
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  done(): void {
    clearTimeout(this.#timer);
    this.#parent.removeEventListener('abort', this.#onAbort);
  }
}
