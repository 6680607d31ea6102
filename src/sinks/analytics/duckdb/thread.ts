import { Worker } from 'node:worker_threads';
import { ErrorCodes } from '../../../errors.js';
import { DuckDbTransientError, errorFromRecord, type ErrorRecord } from './errors.js';
import { transferablesOf, type EncodedBatch } from './chunks.js';
import { ANALYTICS_TABLE } from './schema.js';
import type { DuckDbWriterOptions, WarnLog } from './writer.js';

type Request =
  | { op: 'start' }
  | { op: 'write'; batch: EncodedBatch; sourceId: string | null }
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
 * A DuckDbWriter on a worker thread of its own, with the writer's interface. Why: the DataChunk
 * calls and the Appender's flush (a synchronous call) were the largest share of the pipeline's
 * JS thread in catch-up, in series with decoding and the other sinks; here they run beside
 * them. The rows cross already encoded (./chunks.ts): their buffers are transferred, not
 * copied, and the thread makes no JS value per row (a structured clone of the events cost
 * more CPU than it saved and 40-60 MB more RSS at 5,000 events/s). Each write's promise
 * settles only when the thread's COMMIT did, so the fan-out's checkpoint is as exact as with
 * the writer in this thread.
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

  async write(batch: EncodedBatch, sourceId: string | null): Promise<void> {
    await this.call({ op: 'write', batch, sourceId }, [
      batch.ids.buffer as ArrayBuffer,
      ...batch.chunks.flatMap(transferablesOf),
    ]);
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

  private call(request: Request, transfer: ArrayBuffer[] = []): Promise<unknown> {
    const worker = (this.worker ??= this.spawn());
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // The thread keeps the process alive only while it owes an answer.
      worker.ref();
      worker.postMessage({ ...request, id } satisfies ThreadRequest, transfer);
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
