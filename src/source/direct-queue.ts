import type { LogicalReplicationService } from 'pg-logical-replication';

/** A data handler: a promise while it holds the stream (backpressure), nothing when done. */
export type DataHandler = (lsn: string, message: unknown) => void | Promise<void>;

/**
 * The parts of pg-logical-replication 2.5's flow control this replaces (not in its typings);
 * package.json pins the library's exact version because of this and EventInsertPlugin.
 */
interface FlowControlInternals {
  config: { acknowledge: { auto: boolean }; flowControl: { enabled: boolean } };
  _stop: boolean;
  _processing: boolean;
  _messageQueue: { lsn: string; data: unknown }[];
  _connection: { stream?: { pause?: () => void; resume?: () => void } } | null;
  _processQueue: () => void;
  emit(event: string, ...args: unknown[]): boolean;
}

/**
 * Hands the service's queued messages to `handler` the way the library's flow control does
 * (messages in order, one at a time; the socket paused while any wait; the next message only
 * once the handler's promise settled), without the promises the library spends on every
 * message (an emitAsync with its Promise.all, two awaits): a message handled synchronously
 * costs none. The queue of one socket read is worked off in one microtask, as before.
 *
 * Returns false, changing nothing, when the service does not look like the version this was
 * written against (then the caller listens to 'data' as usual). Only for services without
 * automatic acknowledgement (which would need the library's per-message acknowledge).
 */
export function handleQueueDirectly(service: LogicalReplicationService, handler: DataHandler): boolean {
  const s = service as unknown as FlowControlInternals;
  if (
    typeof s._processQueue !== 'function' ||
    !Array.isArray(s._messageQueue) ||
    typeof s._processing !== 'boolean' ||
    typeof s._stop !== 'boolean' ||
    s.config?.acknowledge?.auto !== false ||
    s.config?.flowControl?.enabled !== true
  )
    return false;
  const run = (): void => {
    while (s._messageQueue.length > 0 && !s._stop) {
      const message = s._messageQueue.shift()!;
      let pending: void | Promise<void>;
      try {
        pending = handler(message.lsn, message.data);
      } catch (err) {
        s.emit('error', err);
        continue;
      }
      if (pending) {
        pending.then(run, (err: unknown) => {
          s.emit('error', err);
          run();
        });
        return;
      }
    }
    s._processing = false;
    if (!s._stop) s._connection?.stream?.resume?.();
  };
  s._processQueue = () => {
    if (s._processing || s._stop) return;
    s._processing = true;
    s._connection?.stream?.pause?.();
    queueMicrotask(run);
  };
  return true;
}
