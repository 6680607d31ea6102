import { createServer, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy a test puts between a client and a server to break the connection
 * on purpose: `dropAll()` resets every open connection (what a firewall or a failover does),
 * `stall(ms)` stops forwarding in both directions without closing anything (a black-holed
 * network: the peers only notice through their own timeouts), and `refuse` makes new
 * connections fail while set.
 */
export interface TcpProxy {
  port: number;
  /** Connections accepted since start. */
  readonly accepted: number;
  /** Currently open client connections. */
  readonly open: number;
  dropAll(): void;
  /** Stops forwarding for `ms`; bytes sent meanwhile are held and delivered afterwards. */
  stall(ms: number): Promise<void>;
  refuse: boolean;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<{ client: Socket; upstream: Socket }>();
  let accepted = 0;
  let stalled = false;
  const stallWaiters: (() => void)[] = [];

  const pipe = (from: Socket, to: Socket) => {
    from.on('data', (chunk: Buffer) => {
      if (!stalled) {
        to.write(chunk);
        return;
      }
      // Hold the bytes (and stop reading) until the stall ends, like a dead link would.
      from.pause();
      stallWaiters.push(() => {
        to.write(chunk);
        from.resume();
      });
    });
  };

  const server: Server = createServer((client) => {
    accepted += 1;
    if (proxy.refuse) {
      client.resetAndDestroy();
      return;
    }
    const upstream = new (client.constructor as typeof Socket)();
    const pair = { client, upstream };
    pairs.add(pair);
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    upstream.connect(target.port, target.host);
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  const proxy: TcpProxy = {
    port,
    refuse: false,
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    dropAll() {
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
    },
    async stall(ms: number) {
      stalled = true;
      await new Promise((r) => setTimeout(r, ms));
      stalled = false;
      for (const release of stallWaiters.splice(0)) release();
    },
    async close() {
      proxy.dropAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
