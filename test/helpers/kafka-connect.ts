import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { freePort } from '../../src/ports.js';
import { jvmArgs, KAFKA_LIBS } from './kafka-cluster.js';
import { waitFor } from './wait.js';

/** Kafka Connect 4.3 + Debezium jars (test/kafka/connect/pom.xml). */
export const CONNECT_LIBS = path.join(KAFKA_LIBS, '..', 'connect', 'libs');

/** Why the real-Debezium test cannot run here, or false when it can. */
export function connectUnavailable(): string | false {
  return existsSync(path.join(CONNECT_LIBS))
    ? false
    : 'Kafka Connect jars missing: (cd test/kafka/connect && mvn -q dependency:copy-dependencies -DoutputDirectory=libs)';
}

export interface KafkaConnect {
  /** REST base URL of the worker. */
  url: string;
  /** kill -9 the worker: connectors re-send from their last flushed offsets on restart. */
  kill(): Promise<void>;
  /** Starts the worker again with the same offsets file and connectors; waits until they run. */
  restart(): Promise<void>;
  logTail(chars?: number): string;
  stop(): Promise<void>;
}

/**
 * A Kafka Connect worker in standalone mode (offsets in a local file) running the given
 * connectors (name -> connector properties), with the jars of test/kafka/libs on the class
 * path (Debezium's Postgres connector among them). Resolves when every connector's task runs.
 */
export async function startKafkaConnect(
  brokers: string,
  connectors: Record<string, Record<string, string>>,
): Promise<KafkaConnect> {
  const dir = mkdtempSync(path.join(tmpdir(), 'engagement-connect-'));
  const port = await freePort();
  const logFile = path.join(dir, 'connect.log');
  const log4j = path.join(dir, 'log4j2.properties');
  writeFileSync(
    log4j,
    [
      'status = error',
      'appender.out.type = Console',
      'appender.out.name = out',
      'appender.out.layout.type = PatternLayout',
      'appender.out.layout.pattern = [%d] %p %c{1} %m%n',
      'rootLogger.level = WARN',
      'rootLogger.appenderRef.out.ref = out',
      'logger.dbz.name = io.debezium',
      'logger.dbz.level = INFO',
      '',
    ].join('\n'),
  );
  const worker = path.join(dir, 'worker.properties');
  writeFileSync(
    worker,
    Object.entries({
      'bootstrap.servers': brokers,
      'key.converter': 'org.apache.kafka.connect.json.JsonConverter',
      'value.converter': 'org.apache.kafka.connect.json.JsonConverter',
      'offset.storage.file.filename': path.join(dir, 'offsets.dat'),
      'offset.flush.interval.ms': '2000',
      listeners: `http://127.0.0.1:${port}`,
    })
      .map(([k, v]) => `${k}=${v}`)
      .join('\n') + '\n',
  );
  const files = Object.entries(connectors).map(([name, props]) => {
    const file = path.join(dir, `${name}.properties`);
    writeFileSync(
      file,
      Object.entries({ name, ...props })
        .map(([k, v]) => `${k}=${v}`)
        .join('\n') + '\n',
    );
    return file;
  });

  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  const url = `http://127.0.0.1:${port}`;
  const launch = async () => {
    child = spawn(
      'java',
      [
        ...jvmArgs('384m'),
        `-Dlog4j2.configurationFile=${log4j}`,
        '-cp',
        `${CONNECT_LIBS}/*`,
        'org.apache.kafka.connect.cli.ConnectStandalone',
        worker,
        ...files,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const c = child;
    const append = (d: Buffer) => writeFileSync(logFile, d, { flag: 'a' });
    c.stdout!.on('data', append);
    c.stderr!.on('data', append);
    exited = new Promise((resolve) => c.once('exit', () => resolve()));
    await waitFor(
      'Kafka Connect connectors running',
      async () => {
        if (c.exitCode !== null) throw new Error(`Kafka Connect exited: ${tail(logFile, 4000)}`);
        for (const name of Object.keys(connectors)) {
          const res = await fetch(`${url}/connectors/${name}/status`);
          if (!res.ok) return false;
          const status = (await res.json()) as { tasks: { state: string; trace?: string }[] };
          const failed = status.tasks.find((t) => t.state === 'FAILED');
          if (failed) throw new Error(`connector ${name} failed: ${failed.trace?.slice(0, 2000)}`);
          if (status.tasks.length === 0 || status.tasks.some((t) => t.state !== 'RUNNING')) return false;
        }
        return true;
      },
      180_000,
      500,
    );
  };
  process.once('exit', () => child?.kill('SIGKILL'));
  await launch();
  return {
    url,
    kill: async () => {
      child?.kill('SIGKILL');
      await exited;
    },
    restart: launch,
    logTail: (chars = 4000) => tail(logFile, chars),
    stop: async () => {
      if (child && child.exitCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child?.kill('SIGKILL'), 15_000);
      await exited;
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
