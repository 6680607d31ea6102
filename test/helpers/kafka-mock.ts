import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

export interface KafkaMock {
  /** bootstrap.servers, comma-separated host:port. */
  brokers: string;
  stop(): Promise<void>;
}

/** Whether Debian's kcat is installed (it carries librdkafka's mock cluster). */
export function kcatAvailable(): boolean {
  return spawnSync('kcat', ['-V'], { stdio: 'ignore' }).status === 0;
}

/**
 * Starts librdkafka's mock cluster through kcat: a Kafka-protocol endpoint with `brokers`
 * brokers, topics auto-created with 4 partitions on first use. It serves until stopped.
 * (It rejects CreateTopics and DescribeGroups: code that creates topics must tolerate that.)
 */
export async function startKafkaMock(brokers = 3): Promise<KafkaMock> {
  const child: ChildProcess = spawn(
    'kcat',
    ['-X', `test.mock.num.brokers=${brokers}`, '-d', 'mock', '-b', 'x', '-C', '-t', 'keepalive'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const servers = await new Promise<string>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(
      () => reject(new Error(`kcat mock cluster did not start: ${buf.slice(-500)}`)),
      10_000,
    );
    child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /bootstrap\.servers=(\S+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        // Keep draining stderr (debug output) so the pipe never fills and blocks kcat.
        buf = '';
        resolve(m[1]);
      }
      if (buf.length > 100_000) buf = buf.slice(-10_000);
    });
    child.once('exit', (code) => reject(new Error(`kcat exited with ${code}: ${buf.slice(-500)}`)));
  });
  return {
    brokers: servers,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}
