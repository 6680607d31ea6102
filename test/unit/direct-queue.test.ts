import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { LogicalReplicationService } from 'pg-logical-replication';
import { handleQueueDirectly } from '../../src/source/direct-queue.js';

// The replication service as the source builds it, fed as its copyData handler feeds it:
// push { lsn, data } on the queue, then call _processQueue (flow control enabled).
interface Internals {
  _stop: boolean;
  _processing: boolean;
  _messageQueue: { lsn: string; data: unknown }[];
  _connection: unknown;
  _processQueue(): void;
}

function service(auto = false) {
  const svc = new LogicalReplicationService(
    {},
    { acknowledge: { auto, timeoutSeconds: 0 }, flowControl: { enabled: true } },
  );
  const s = svc as unknown as Internals;
  const socket = { pauses: 0, resumes: 0 };
  s._stop = false;
  s._connection = {
    stream: { pause: () => socket.pauses++, resume: () => socket.resumes++ },
    removeAllListeners: () => undefined,
  };
  const receive = (...lsns: string[]) => {
    for (const lsn of lsns) {
      s._messageQueue.push({ lsn, data: { lsn } });
      s._processQueue();
    }
  };
  return { svc, s, socket, receive };
}

describe('the replication queue handled directly', () => {
  it('hands one read’s messages on in order in one microtask, pausing the socket once', async () => {
    const { svc, s, socket, receive } = service();
    const seen: string[] = [];
    assert.equal(
      handleQueueDirectly(svc, (lsn) => void seen.push(lsn)),
      true,
    );
    receive('0/1', '0/2', '0/3');
    assert.deepEqual(seen, [], 'not inside the read');
    assert.equal(s._processing, true);
    await Promise.resolve();
    assert.deepEqual(seen, ['0/1', '0/2', '0/3']);
    assert.deepEqual(socket, { pauses: 1, resumes: 1 });
    assert.equal(s._processing, false);
  });

  it('a handler’s promise holds the next message (and the socket) until it settles', async () => {
    const { svc, s, socket, receive } = service();
    const seen: string[] = [];
    let release!: () => void;
    handleQueueDirectly(svc, (lsn) => {
      seen.push(lsn);
      if (lsn === '0/1') return new Promise<void>((r) => (release = r));
    });
    receive('0/1', '0/2');
    await tick();
    assert.deepEqual(seen, ['0/1']);
    receive('0/3'); // arrives while paused (already read): queued behind
    await tick();
    assert.deepEqual(seen, ['0/1']);
    assert.equal(socket.resumes, 0);
    assert.ok(s._processing);
    release();
    await tick();
    assert.deepEqual(seen, ['0/1', '0/2', '0/3']);
    assert.deepEqual(socket, { pauses: 1, resumes: 1 });
  });

  it('a throw or a rejection is the library’s error event, and the queue goes on', async () => {
    const { svc, receive } = service();
    const errors: string[] = [];
    svc.on('error', (err) => errors.push(err.message));
    const seen: string[] = [];
    handleQueueDirectly(svc, (lsn) => {
      seen.push(lsn);
      if (lsn === '0/1') throw new Error('thrown');
      if (lsn === '0/2') return Promise.reject(new Error('rejected'));
    });
    receive('0/1', '0/2', '0/3');
    await tick();
    assert.deepEqual(seen, ['0/1', '0/2', '0/3']);
    assert.deepEqual(errors, ['thrown', 'rejected']);
  });

  it('stop() empties the queue; nothing after it is handed on and the socket stays paused', async () => {
    const { svc, socket, receive } = service();
    const seen: string[] = [];
    handleQueueDirectly(svc, (lsn) => {
      seen.push(lsn);
      if (lsn === '0/1') void svc.stop();
    });
    receive('0/1', '0/2');
    await tick();
    assert.deepEqual(seen, ['0/1']);
    assert.equal(socket.resumes, 0);
  });

  it('changes nothing for a service that acknowledges by itself', () => {
    const { svc, s } = service(true);
    const before = s._processQueue;
    assert.equal(
      handleQueueDirectly(svc, () => undefined),
      false,
    );
    assert.equal(s._processQueue, before);
  });
});
