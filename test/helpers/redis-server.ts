import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { freePort, freePorts } from '../../src/ports.js';

/** Waits (up to ~5 s) until a redis-server that is starting on `port` answers PING. */
async function waitForPing(port: number): Promise<void> {
  const probe = new Redis(port, '127.0.0.1', {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  probe.on('error', () => undefined);
  for (let i = 0; i < 100; i++) {
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  probe.disconnect();
}

/**
 * A private redis-server on a free loopback port, so a test can stop and restart it.
 * `args` are appended (later ones win), e.g. `--appendonly yes --dir D` to survive a restart.
 */
export async function startRedisServer(
  port?: number,
  args: string[] = [],
): Promise<{
  url: string;
  port: number;
  stop(): Promise<void>;
  /** SIGSTOP: connections are still accepted (by the kernel's backlog), nothing is answered. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
}> {
  const p = port ?? (await freePort());
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...args],
    {
      stdio: 'ignore',
    },
  );
  const url = `redis://127.0.0.1:${p}`;
  await waitForPing(p);
  return {
    url,
    port: p,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    pause: () => void child.kill('SIGSTOP'),
    resume: () => void child.kill('SIGCONT'),
  };
}

/**
 * A private Redis Cluster: `masters` redis-servers in cluster mode on free loopback ports,
 * joined by `redis-cli --cluster create` (no replicas), ready when every node reports
 * cluster_state:ok. `url` is the pipeline's `redis+cluster://` form.
 */
export async function startRedisCluster(
  dir: string,
  masters = 3,
): Promise<{ url: string; ports: number[]; stop(): Promise<void> }> {
  // All picked at once: ports asked for one by one may repeat.
  const ports = await freePorts(masters);
  const children: ChildProcess[] = [];
  for (const port of ports) {
    children.push(
      spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `${dir}/nodes-${port}.conf`,
          '--dir',
          dir,
        ],
        { stdio: 'ignore' },
      ),
    );
  }
  const stop = async () => {
    await Promise.all(
      children.map((child) => {
        if (child.exitCode !== null) return Promise.resolve();
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        return exited;
      }),
    );
  };
  try {
    for (const port of ports) await waitForPing(port);
    const create = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...ports.map((p) => `127.0.0.1:${p}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (create.status !== 0)
      throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
    for (const port of ports) {
      const node = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
      try {
        for (let i = 0; ; i++) {
          if (/cluster_state:ok/.test(await node.cluster('INFO'))) break;
          if (i > 300) throw new Error(`cluster node ${port} not ok after 30 s`);
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        node.disconnect();
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`, ports, stop };
}
