import { Worker } from 'node:worker_threads';
import { JsonText } from '../../../domain/json-text.js';
import type { Batch } from '../../../domain/types.js';
import { ErrorCodes } from '../../../errors.js';
import { DuckDbTransientError, errorFromRecord, type ErrorRecord } from './errors.js';
import { ANALYTICS_TABLE } from './schema.js';
import type { DuckDbWriterOptions, WarnLog } from './writer.js';

type Request =
  | { op: 'start' }
  | { op: 'write'; batch: Batch; sourceId: string | null; jsonTexts: Uint8Array | null }
  | { op: 'query'; sql: string }
  | { op: 'stop' };

/** What the sink asks of the writer's thread; `id` matches the reply. */
export type ThreadRequest = { id: number } & Request;

/** A request's outcome, or a log line of the writer's. */
export type ThreadReply =
  | { id: number; ok: true; value: unknown; tableName: string }
  | { id: number; ok: false; error: ErrorRecord; tableName: string }
  | { log: string; fields?: Record<string, unknown> };

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * A DuckDbWriter on a worker thread of its own, with the writer's interface. Why: building
 * DataChunks and the Appender's flush (a synchronous call) are the largest share of the
 * pipeline's JS thread in catch-up, and they ran in series with decoding and the other sinks;
 * here they run beside them. The rows are copied to the thread once (structured clone), and
 * each write's promise settles only when the thread's COMMIT did, so the fan-out's checkpoint
 * is as exact as with the writer in this thread.
 *
 * If the thread dies (an uncaught error), every pending call fails as a transient DuckDB
 * failure and the next call starts a new thread, which reopens the file and reloads the
 * positions: the same recovery as after any failed write.
 */
export class DuckDbThread {
  tableName = ANALYTICS_TABLE;
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;

  constructor(
    private readonly options: DuckDbWriterOptions,
    private readonly warn: WarnLog,
  ) {}

  async start(): Promise<void> {
    await this.call({ op: 'start' });
  }

  async write(batch: Batch, sourceId: string | null): Promise<void> {
    await this.call({ op: 'write', batch, sourceId, jsonTexts: jsonTextRows(batch) });
  }

  async query(sql: string): Promise<Record<string, unknown>[]> {
    return (await this.call({ op: 'query', sql })) as Record<string, unknown>[];
  }

  async stop(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    try {
      await this.call({ op: 'stop' });
    } finally {
      this.worker = null;
      await worker.terminate();
    }
  }

  private call(request: Request): Promise<unknown> {
    const worker = (this.worker ??= this.spawn());
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // The thread keeps the process alive only while it owes an answer.
      worker.ref();
      worker.postMessage({ ...request, id } satisfies ThreadRequest);
    });
  }

  private spawn(): Worker {
    const worker = startWorker(this.options);
    worker.unref();
    worker.on('message', (reply: ThreadReply) => {
      if ('log' in reply) {
        this.warn(reply.log, reply.fields);
        return;
      }
      this.tableName = reply.tableName;
      const waiting = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if (!waiting) return;
      if (reply.ok) waiting.resolve(reply.value);
      else waiting.reject(errorFromRecord(reply.error));
    });
    const lost = (why: string): void => {
      if (this.worker === worker) this.worker = null;
      const failure = new DuckDbTransientError(
        `the DuckDB thread ${why}`,
        ErrorCodes.ANALYTICS_UNAVAILABLE,
        'the write is retried on a new thread',
      );
      for (const waiting of this.pending.values()) waiting.reject(failure);
      this.pending.clear();
    };
    worker.on('error', (err) => lost(`failed: ${err.message}`));
    worker.on('exit', (code) => lost(`exited (code ${code})`));
    return worker;
  }
}

/**
 * Which events' payloads are JsonText (1) rather than another value (0), or null when none is:
 * a structured clone keeps an object's fields but not its class, so the thread rebuilds them
 * (restoreJsonTexts). Without it a payload kept as exact JSON text arrived as `{"text": ...}`.
 */
function jsonTextRows(batch: Batch): Uint8Array | null {
  let marks: Uint8Array | null = null;
  const events = batch.events;
  for (let i = 0; i < events.length; i++) {
    if (events[i].raw_payload instanceof JsonText) (marks ??= new Uint8Array(events.length))[i] = 1;
  }
  return marks;
}

/** In the thread: the JsonText payloads of a cloned batch, as they were sent (see jsonTextRows). */
export function restoreJsonTexts(batch: Batch, marks: Uint8Array | null): Batch {
  if (marks === null) return batch;
  const events = batch.events;
  for (let i = 0; i < events.length; i++) {
    if (marks[i] === 1) events[i].raw_payload = new JsonText((events[i].raw_payload as JsonText).text);
  }
  return batch;
}

/**
 * The built thread-main.js; from the TypeScript sources (tests run them through tsx), its .ts
 * file behind tsx's loader, which a worker thread does not inherit from `--import tsx`.
 */
function startWorker(workerData: DuckDbWriterOptions): Worker {
  const young = Number(process.env.EXP_YOUNG ?? 0);
  const old = Number(process.env.EXP_OLD ?? 0);
  const resourceLimits = {
    ...(young > 0 ? { maxYoungGenerationSizeMb: young } : {}),
    ...(old > 0 ? { maxOldGenerationSizeMb: old } : {}),
  };
  if (!import.meta.url.endsWith('.ts')) {
    return new Worker(new URL('./thread-main.js', import.meta.url), { workerData, resourceLimits });
  }
  const main = new URL('./thread-main.ts', import.meta.url).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(main)}); });`;
  return new Worker(bootstrap, { eval: true, workerData });
}
