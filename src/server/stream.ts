import type { ServerResponse } from 'node:http';
import { describeError } from '../errors.js';

/**
 * Server-Sent Events fan-out. One timer per open stream, but the payload is memoised for a
 * short time so N dashboards cost about one Redis read per interval, not N. A slow read
 * never stacks up: a tick is skipped while the previous one is still writing.
 */
export interface StreamHub {
  open(res: ServerResponse, onClose: (listener: () => void) => void): void;
  /** Ends every open stream (server shutdown: SSE connections never go idle by themselves). */
  closeAll(): void;
  readonly size: number;
}

export function createStreamHub(snapshot: () => Promise<unknown>, intervalMs: number): StreamHub {
  const open = new Set<ServerResponse>();
  let cached: { at: number; value: Promise<unknown> } | null = null;
  const shared = (): Promise<unknown> => {
    const now = Date.now();
    if (!cached || now - cached.at >= intervalMs / 2) cached = { at: now, value: snapshot() };
    return cached.value;
  };

  return {
    get size() {
      return open.size;
    },
    open(res, onClose) {
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        // Reverse proxies (nginx) must not buffer the stream.
        'x-accel-buffering': 'no',
      });
      res.write('retry: 2000\n\n');
      open.add(res);
      let busy = false;
      const tick = async () => {
        if (busy || res.writableEnded) return;
        busy = true;
        try {
          res.write(`data: ${JSON.stringify(await shared())}\n\n`);
        } catch (err) {
          res.write(`event: problem\ndata: ${JSON.stringify({ error: describeError(err) })}\n\n`);
        } finally {
          busy = false;
        }
      };
      void tick();
      const timer = setInterval(() => void tick(), intervalMs);
      onClose(() => {
        clearInterval(timer);
        open.delete(res);
      });
    },
    closeAll() {
      for (const res of open) res.end();
      open.clear();
    },
  };
}
