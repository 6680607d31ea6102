import { createServer, type AddressInfo, type Server } from 'node:net';

/**
 * Free ports on 127.0.0.1, for a child process (Postgres, Redis, a broker, the mock) that must be
 * told its port before it starts. A port is only free when asked: bind the port 0 instead
 * wherever the listener is our own.
 */

/** A port the OS says is free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0];
}

/**
 * `count` distinct free ports: each stays bound until all are picked (a port closed at once may
 * be handed out again by the next bind: a broker once got the same port for both listeners).
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((server) => (server.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

/** Whether nothing listens on host:port (0 is always "free"). */
export function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  if (port === 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}
