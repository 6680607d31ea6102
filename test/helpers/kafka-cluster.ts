import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { freePorts } from '../../src/ports.js';
import { waitFor } from './wait.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
/** Jars copied by `mvn dependency:copy-dependencies` from test/kafka/pom.xml (.ci/run does it). */
export const KAFKA_LIBS = path.join(ROOT, 'test', 'kafka', 'libs');
const CLASSPATH = `${KAFKA_LIBS}/*`;

/** Why the real-cluster tests cannot run here, or false when they can. */
export function realKafkaUnavailable(): string | false {
  if (!existsSync(KAFKA_LIBS) || !readdirSync(KAFKA_LIBS).some((f) => f.startsWith('kafka_2.13-')))
    return 'Kafka jars missing: (cd test/kafka && mvn -q dependency:copy-dependencies -DoutputDirectory=libs)';
  if (spawnSync('java', ['-version'], { stdio: 'ignore' }).status !== 0) return 'java (17+) is not installed';
  return false;
}

/**
 * Small JVMs: the machine has 2 cores and shares them. C1 only (TieredStopAtLevel=1) halves
 * start-up CPU; `KAFKA_TEST_FULL_JIT=1` (the benchmark) keeps C2 for steady-state speed.
 */
export function jvmArgs(heap = '256m'): string[] {
  const args = [`-Xmx${heap}`, '-Xms64m', '-XX:+UseSerialGC', '-Xss512k', '-XX:+ExitOnOutOfMemoryError'];
  if (!process.env.KAFKA_TEST_FULL_JIT) args.push('-XX:TieredStopAtLevel=1');
  return args;
}

function log4jConfig(dir: string, level = 'WARN'): string {
  const file = path.join(dir, 'log4j2.properties');
  writeFileSync(
    file,
    [
      'status = error',
      'appender.out.type = Console',
      'appender.out.name = out',
      'appender.out.layout.type = PatternLayout',
      'appender.out.layout.pattern = [%d] %p %c{1} %m%n',
      `rootLogger.level = ${level}`,
      'rootLogger.appenderRef.out.ref = out',
      '',
    ].join('\n'),
  );
  return file;
}

interface Broker {
  id: number;
  port: number;
  controllerPort: number;
  config: string;
  logFile: string;
  child: ChildProcess | null;
  exited: Promise<void>;
}

export interface KafkaCluster {
  /** bootstrap servers, comma-separated. */
  brokers: string;
  brokerIds: number[];
  /** kill -9 one broker (node id); resolves once the process is gone. */
  kill(id: number): Promise<void>;
  /** Starts a killed broker again on the same ports and log dir; resolves when it is back in the cluster. */
  restart(id: number): Promise<void>;
  /** The last lines of a broker's log (for failure messages). */
  logTail(id: number, chars?: number): string;
  stop(): Promise<void>;
  dir: string;
}

/**
 * A real Kafka cluster on loopback: `size` KRaft nodes, each broker and controller at once
 * (combined mode: a quorum of 3 survives one node killed), free ports, small heaps, a fresh
 * temporary directory. The storage is formatted once and the bootstrap metadata copied to
 * the other nodes (one JVM instead of three for `kafka-storage format`).
 * Auto topic creation is off: topics exist only if the code under test created them.
 */
export async function startKafkaCluster(size = 3, extra: Record<string, string> = {}): Promise<KafkaCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), 'engagement-kafka-'));
  const log4j = log4jConfig(dir);
  const nodes: Broker[] = [];
  const ports = await freePorts(2 * size);
  for (let id = 1; id <= size; id++) {
    nodes.push({
      id,
      port: ports[2 * id - 2],
      controllerPort: ports[2 * id - 1],
      config: path.join(dir, `node${id}.properties`),
      logFile: path.join(dir, `node${id}.log`),
      child: null,
      exited: Promise.resolve(),
    });
  }
  const voters = nodes.map((n) => `${n.id}@127.0.0.1:${n.controllerPort}`).join(',');
  const rf = String(Math.min(3, size));
  for (const n of nodes) {
    const props: Record<string, string> = {
      'process.roles': 'broker,controller',
      'node.id': String(n.id),
      'controller.quorum.voters': voters,
      listeners: `PLAINTEXT://127.0.0.1:${n.port},CONTROLLER://127.0.0.1:${n.controllerPort}`,
      'advertised.listeners': `PLAINTEXT://127.0.0.1:${n.port}`,
      'controller.listener.names': 'CONTROLLER',
      'inter.broker.listener.name': 'PLAINTEXT',
      'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      'log.dirs': path.join(dir, `data${n.id}`),
      'auto.create.topics.enable': 'false',
      'offsets.topic.replication.factor': rf,
      'offsets.topic.num.partitions': '3',
      'transaction.state.log.replication.factor': rf,
      'transaction.state.log.min.isr': String(Math.min(2, size)),
      'transaction.state.log.num.partitions': '3',
      'group.initial.rebalance.delay.ms': '0',
      'num.network.threads': '2',
      'num.io.threads': '2',
      'background.threads': '2',
      'log.cleaner.threads': '1',
      'log.cleaner.dedupe.buffer.size': '4194304',
      // Fail-over within seconds (defaults are tuned for real networks).
      'replica.lag.time.max.ms': '10000',
      'controller.quorum.fetch.timeout.ms': '4000',
      'broker.session.timeout.ms': '6000',
      'broker.heartbeat.interval.ms': '1000',
      ...extra,
    };
    writeFileSync(
      n.config,
      Object.entries(props)
        .map(([k, v]) => `${k}=${v}`)
        .join('\n') + '\n',
    );
  }

  // Format node 1, then give the others the same bootstrap metadata with their own identity.
  // A base64url id may start with '-' (1 in 64), which the tool's argument parser takes for an option.
  let clusterId = randomBytes(16).toString('base64url');
  while (clusterId.startsWith('-')) clusterId = randomBytes(16).toString('base64url');
  const format = spawnSync(
    'java',
    [
      ...jvmArgs('128m'),
      `-Dlog4j2.configurationFile=${log4j}`,
      '-cp',
      CLASSPATH,
      'kafka.tools.StorageTool',
      'format',
      '-t',
      clusterId,
      '-c',
      nodes[0].config,
    ],
    { encoding: 'utf8' },
  );
  if (format.status !== 0) throw new Error(`kafka-storage format failed: ${format.stdout}${format.stderr}`);
  const firstDir = path.join(dir, 'data1');
  for (const n of nodes.slice(1)) {
    const dataDir = path.join(dir, `data${n.id}`);
    mkdirSync(dataDir, { recursive: true });
    const metaDir = path.join(dataDir, '__cluster_metadata-0');
    mkdirSync(metaDir, { recursive: true });
    for (const f of readdirSync(path.join(firstDir, '__cluster_metadata-0')))
      copyFileSync(path.join(firstDir, '__cluster_metadata-0', f), path.join(metaDir, f));
    writeFileSync(
      path.join(dataDir, 'meta.properties'),
      `node.id=${n.id}\ndirectory.id=${randomBytes(16).toString('base64url')}\nversion=1\ncluster.id=${clusterId}\n`,
    );
  }

  const launch = (n: Broker) => {
    const child = spawn(
      'java',
      [...jvmArgs(), `-Dlog4j2.configurationFile=${log4j}`, '-cp', CLASSPATH, 'kafka.Kafka', n.config],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const append = (d: Buffer) => writeFileSync(n.logFile, d, { flag: 'a' });
    child.stdout!.on('data', append);
    child.stderr!.on('data', append);
    n.child = child;
    n.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  };
  nodes.forEach(launch);
  // A test process that dies (or is force-exited) must not leave brokers behind.
  const killAll = () => nodes.forEach((n) => n.child?.exitCode === null && n.child.kill('SIGKILL'));
  process.once('exit', killAll);

  const bootstrap = nodes.map((n) => `127.0.0.1:${n.port}`);
  const admin = new Kafka({ brokers: bootstrap, logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
  const ready = async (ids: number[]) => {
    await waitFor(
      `Kafka brokers ${ids.join(',')} registered`,
      async () => {
        for (const n of nodes)
          if (n.child?.exitCode !== null && n.child?.exitCode !== undefined)
            throw new Error(`broker ${n.id} exited: ${tail(n.logFile, 3000)}`);
        await admin.connect();
        const { brokers } = await admin.describeCluster();
        return ids.every((id) => brokers.some((b) => b.nodeId === id));
      },
      120_000,
      300,
    ).catch(async (err) => {
      await admin.disconnect().catch(() => undefined);
      throw err;
    });
  };
  try {
    await ready(nodes.map((n) => n.id));
  } catch (err) {
    for (const n of nodes) n.child?.kill('SIGKILL');
    throw err;
  }

  const node = (id: number) => {
    const n = nodes.find((b) => b.id === id);
    if (!n) throw new Error(`no broker ${id}`);
    return n;
  };
  return {
    brokers: bootstrap.join(','),
    brokerIds: nodes.map((n) => n.id),
    dir,
    kill: async (id) => {
      const n = node(id);
      n.child?.kill('SIGKILL');
      await n.exited;
    },
    restart: async (id) => {
      const n = node(id);
      if (n.child && n.child.exitCode === null && n.child.signalCode === null)
        throw new Error(`broker ${id} is running`);
      launch(n);
      // The controller must see it registered again; the test then waits for ISR itself.
      await waitFor(
        `broker ${id} unfenced`,
        async () => {
          if (n.child?.exitCode !== null) throw new Error(`broker ${id} exited: ${tail(n.logFile, 3000)}`);
          const probe = new Kafka({
            brokers: [`127.0.0.1:${n.port}`],
            logLevel: logLevel.NOTHING,
            retry: { retries: 0 },
          }).admin();
          try {
            await probe.connect();
            const { brokers } = await probe.describeCluster();
            return brokers.some((b) => b.nodeId === id);
          } finally {
            await probe.disconnect().catch(() => undefined);
          }
        },
        120_000,
        500,
      );
    },
    logTail: (id, chars = 4000) => tail(node(id).logFile, chars),
    stop: async () => {
      await admin.disconnect().catch(() => undefined);
      for (const n of nodes) if (n.child && n.child.exitCode === null) n.child.kill('SIGTERM');
      const all = Promise.all(nodes.map((n) => n.exited));
      const timer = setTimeout(() => nodes.forEach((n) => n.child?.kill('SIGKILL')), 10_000);
      await all;
      clearTimeout(timer);
      if (!process.env.KAFKA_TEST_KEEP) rmSync(dir, { recursive: true, force: true });
    },
  };
}

function tail(file: string, chars: number): string {
  try {
    return readFileSync(file, 'utf8').slice(-chars);
  } catch {
    return '';
  }
}

/** A topic's non-default configs, partition count and replicas, as the cluster reports them. */
export async function describeTopic(
  brokers: string,
  topic: string,
): Promise<{
  partitions: number;
  replicationFactor: number;
  configs: Record<string, string>;
  leaders: Record<number, number>;
}> {
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    const parts = meta.topics[0].partitions;
    const described = await admin.describeConfigs({
      resources: [{ type: 2 /* TOPIC */, name: topic }],
      includeSynonyms: false,
    });
    const configs: Record<string, string> = {};
    for (const entry of described.resources[0].configEntries) {
      if (!entry.isDefault) configs[entry.configName] = entry.configValue;
    }
    return {
      partitions: parts.length,
      replicationFactor: parts[0]?.replicas.length ?? 0,
      configs,
      leaders: Object.fromEntries(parts.map((p) => [p.partitionId, p.leader])),
    };
  } finally {
    await admin.disconnect();
  }
}

/** Writes each process's whole output to test-results/<name>/<i>-<command>.log (read them when a test fails). */
export function saveOutputs(name: string, procs: { child: ChildProcess; output: () => string }[]): void {
  const dir = path.join(ROOT, 'test-results', name);
  mkdirSync(dir, { recursive: true });
  procs.forEach((p, i) => {
    const what =
      (p.child.spawnargs.find((a) => a === 'capture' || a === 'work') ?? 'cli') + `-${p.child.pid}`;
    writeFileSync(path.join(dir, `${i}-${what}.log`), p.output());
  });
}
