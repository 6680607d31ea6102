/**
 * The DuckDB writer's thread (started by ./thread.ts): one DuckDbWriter, answering the sink's
 * requests in the order they arrive. Writes never overlap (the sink contract); a dashboard
 * query may run beside a write, on the writer's reading connection, as it would in one thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorRecord } from './errors.js';
import type { ThreadReply, ThreadRequest } from './thread.js';
import { DuckDbWriter, type DuckDbWriterOptions } from './writer.js';

const port = parentPort!;
const post = (reply: ThreadReply): void => port.postMessage(reply);
const writer = new DuckDbWriter(workerData as DuckDbWriterOptions, (message, fields) =>
  post({ log: message, fields }),
);

port.on('message', (request: ThreadRequest) => {
  handle(request).then(
    (value) => post({ id: request.id, ok: true, value, tableName: writer.tableName }),
    (err: unknown) =>
      post({ id: request.id, ok: false, error: errorRecord(err), tableName: writer.tableName }),
  );
});

function handle(request: ThreadRequest): Promise<unknown> {
  switch (request.op) {
    case 'start':
      return writer.start();
    case 'write':
      return writer.write(request.batch, request.sourceId);
    case 'query':
      return writer.query(request.sql);
    case 'stop':
      return writer.stop();
  }
}
