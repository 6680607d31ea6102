import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import { startMockExternal, type RunningMockExternal } from '../../src/mock-external/server.js';
import { startChdbHttp, type ChdbHttp } from '../helpers/chdb-http.js';
import type { CliProcess } from '../helpers/cli.js';
import { duckdbQuery } from '../helpers/duckdb.js';
import {
  describeTopic,
  realKafkaUnavailable,
  saveOutputs,
  startKafkaCluster,
  type KafkaCluster,
} from '../helpers/kafka-cluster.js';
import { connectUnavailable, startKafkaConnect, type KafkaConnect } from '../helpers/kafka-connect.js';
import { externalStats, insertTraffic, killAll, startWorker, stopCli } from '../helpers/kafka-pipeline.js';
import { CONTENT_IDS, createHarness, seedContent, type Harness } from '../helpers/pipeline.js';
import { waitFor } from '../helpers/wait.js';

const skip = realKafkaUnavailable() || connectUnavailable();

/** The three shapes a Debezium Postgres connector's JsonConverter output takes. */
const SHAPES = {
  // schema envelope (the JsonConverter default)
  dbzs: {},
  // schemaless envelope
  dbzp: { 'value.converter.schemas.enable': 'false', 'key.converter.schemas.enable': 'false' },
  // flattened by ExtractNewRecordState (the row itself, plus __op / __deleted)
  dbzf: {
    'value.converter.schemas.enable': 'false',
    'key.converter.schemas.enable': 'false',
    transforms: 'unwrap',
    'transforms.unwrap.type': 'io.debezium.transforms.ExtractNewRecordState',
    'transforms.unwrap.add.fields': 'op',
    'transforms.unwrap.delete.tombstone.handling.mode': 'rewrite',
  },
} as const;
type Shape = keyof typeof SHAPES;

/**
 * Real Debezium: Kafka Connect (standalone) runs the Debezium Postgres connector three times
 * (three slots, three topic prefixes, one per message shape) against the test database; the
 * workers consume its own messages with `work --format debezium`. The schema-envelope
 * stream goes through 2 workers into ClickHouse, Redis and the external system while the
 * Connect worker is killed -9 (it re-sends from its last flushed offsets) and restarted and
 * one worker is killed -9; the other two shapes go through one worker each into DuckDB + Redis.
 */
describe(
  'real Debezium (Kafka Connect + Debezium Postgres connector) -> work --format debezium',
  { skip },
  () => {
    let cluster: KafkaCluster;
    let connect: KafkaConnect;
    let h: Harness;
    let external: RunningMockExternal;
    let clickhouse: ChdbHttp;
    const procs: CliProcess[] = [];
    const prefixes = {} as Record<Shape, string>;
    const duckdbFiles = {} as Record<Shape, string>;

    before(async () => {
      cluster = await startKafkaCluster(3);
      h = await createHarness();
      await seedContent(h);
      external = await startMockExternal({ port: 0 });
      clickhouse = await startChdbHttp({ user: 'pipeline', password: 'secret' });
      const db = new URL(h.databaseUrl);
      const connectors: Record<string, Record<string, string>> = {};
      const tag = randomBytes(3).toString('hex');
      for (const [shape, extra] of Object.entries(SHAPES) as [Shape, Record<string, string>][]) {
        prefixes[shape] = `${shape}${tag}`;
        duckdbFiles[shape] = `${h.duckdbFile}.${shape}`;
        connectors[shape] = {
          'connector.class': 'io.debezium.connector.postgresql.PostgresConnector',
          'tasks.max': '1',
          'plugin.name': 'pgoutput',
          'database.hostname': db.hostname,
          'database.port': db.port,
          'database.user': decodeURIComponent(db.username),
          'database.password': decodeURIComponent(db.password),
          'database.dbname': db.pathname.slice(1),
          'topic.prefix': prefixes[shape],
          'slot.name': `${shape}_${tag}`,
          'publication.name': `${shape}_${tag}`,
          'publication.autocreate.mode': 'filtered',
          'table.include.list': 'public.engagement_events,public.content',
          'snapshot.mode': 'initial',
          'topic.creation.default.replication.factor': '3',
          'topic.creation.default.partitions': '3',
          'key.converter': 'org.apache.kafka.connect.json.JsonConverter',
          'value.converter': 'org.apache.kafka.connect.json.JsonConverter',
          ...extra,
        };
      }
      connect = await startKafkaConnect(cluster.brokers, connectors);
    });
    afterEach(() => killAll(procs));
    after(async () => {
      await killAll(procs);
      saveOutputs('kafka-real-debezium', procs);
      await connect?.stop();
      await external?.close();
      await clickhouse?.close();
      await h?.cleanup();
      await cluster?.stop();
    });

    const envFor = (shape: Shape): Record<string, string> => ({
      DATABASE_URL: h.databaseUrl,
      KAFKA_BROKERS: cluster.brokers,
      REDIS_URL: h.redis.url,
      REDIS_PREFIX: `${h.redis.prefix}${shape}:`,
      ANALYTICS_URL:
        shape === 'dbzs'
          ? `clickhouse://pipeline:secret@127.0.0.1:${clickhouse.port}/engagement`
          : `duckdb:${duckdbFiles[shape]}`,
      ...(shape === 'dbzs' ? { EXTERNAL_URL: external.url } : {}),
      BATCH_MAX_ROWS: '200',
    });
    const work = (shape: Shape) =>
      startWorker(envFor(shape), [
        '--group',
        `g-${shape}`,
        '--format',
        'debezium',
        '--topic-prefix',
        prefixes[shape],
      ]);
    const redisTotal = async (shape: Shape) => {
      const counts = await Promise.all(
        CONTENT_IDS.map((id) => h.redis.client.get(`${h.redis.prefix}${shape}:content:count:${id}`)),
      );
      return counts.reduce((sum, c) => sum + Number(c ?? 0), 0);
    };
    const clickhouseCounts = async () => {
      const [row] = await clickhouse.rows<{ n: string; d: string }>(
        'SELECT count() AS n, uniqExact(event_id) AS d FROM engagement.events_enriched FINAL',
      );
      return { rows: Number(row.n), distinct: Number(row.d) };
    };

    const n = 4000;
    const redisCounts = {} as Record<Shape, number>;

    it("delivers the connector's own messages (all three shapes) exactly once through a Connect kill -9 + restart and a worker kill -9", async () => {
      // The connector creates a topic with its first record: traffic first, then the workers.
      await insertTraffic(h, 1000, 100);
      const eventsTopic = `${prefixes.dbzs}.public.engagement_events`;
      const topic = await waitFor(
        `${eventsTopic} created by Connect`,
        async () => {
          const t = await describeTopic(cluster.brokers, eventsTopic);
          return t.partitions > 0 ? t : null;
        },
        120_000,
        500,
      );
      process.stdout.write(
        `# ${eventsTopic} (created by Connect): ${JSON.stringify({ partitions: topic!.partitions, replicationFactor: topic!.replicationFactor })}\n`,
      );
      const a = await work('dbzs');
      procs.push(a);
      const b = await work('dbzs');
      procs.push(b);
      const plain = await work('dbzp');
      procs.push(plain);
      const flat = await work('dbzf');
      procs.push(flat);
      await waitFor('first part in Redis', async () => (await redisTotal('dbzs')) >= 1000, 120_000, 250);

      // kill -9 Kafka Connect while traffic flows; restarted, the connectors re-send what they
      // had not flushed offsets for.
      const traffic = insertTraffic(h, 1500, 50);
      await new Promise((r) => setTimeout(r, 500));
      await connect.kill();
      await traffic;
      await connect.restart();

      // kill -9 one worker while traffic flows.
      const more = insertTraffic(h, 1000, 50);
      await new Promise((r) => setTimeout(r, 300));
      a.child.kill('SIGKILL');
      await a.exited;
      await more;
      await insertTraffic(h, 500, 100);

      await waitFor(
        'every event in ClickHouse',
        async () => (await clickhouseCounts()).distinct >= n,
        180_000,
        250,
      );
      await waitFor(
        'every event at the external system',
        async () => (await externalStats(external.url)).uniqueEventIds >= n,
        120_000,
        250,
      );
      for (const shape of ['dbzp', 'dbzf'] as const)
        await waitFor(
          `every ${shape} event in Redis`,
          async () => (await redisTotal(shape)) >= n,
          120_000,
          250,
        );
      await new Promise((r) => setTimeout(r, 2_000));
      for (const p of [b, plain, flat]) assert.equal(await stopCli(p), 0, p.output().slice(-2000));

      const ch = await clickhouseCounts();
      const stats = await externalStats(external.url);
      for (const shape of Object.keys(SHAPES) as Shape[]) redisCounts[shape] = await redisTotal(shape);
      const duck = {} as Record<string, number>;
      for (const shape of ['dbzp', 'dbzf'] as const) {
        const [row] = await duckdbQuery(
          duckdbFiles[shape],
          'SELECT count(DISTINCT event_id)::INTEGER AS n FROM engagement.events_enriched',
        );
        duck[shape] = Number(row.n);
      }
      process.stdout.write(
        `# real Debezium: ${n} events; schema envelope -> ClickHouse ${ch.rows} rows / ${ch.distinct} distinct, external unique ${stats.uniqueEventIds} (redelivered ${stats.duplicates}), Redis ${redisCounts.dbzs}; ` +
          `schemaless -> DuckDB ${duck.dbzp}, Redis ${redisCounts.dbzp}; flattened -> DuckDB ${duck.dbzf}, Redis ${redisCounts.dbzf}\n`,
      );
      assert.deepEqual([ch.rows, ch.distinct], [n, n], 'ClickHouse: one row per event');
      assert.equal(stats.uniqueEventIds, n, 'external: every event');
      assert.equal(duck.dbzp, n, 'schemaless: every event in DuckDB');
      assert.equal(duck.dbzf, n, 'flattened: every event in DuckDB');
    });

    it(
      // Positions come from the source's LSNs, and every effect is guarded by the event's seen-bit.
      'Redis counts each event once across the connector re-sends',
      () => {
        for (const shape of Object.keys(SHAPES) as Shape[])
          assert.equal(redisCounts[shape], n, `Redis ${shape}`);
      },
    );
  },
);
