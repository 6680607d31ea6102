import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { PipelineError } from '../../src/errors.js';
import { kafkaUnreachable } from '../../src/kafka/client.js';
import { createLogger } from '../../src/logger.js';
import { ClickHouseSink, parseClickHouseUrl } from '../../src/sinks/analytics/clickhouse-sink.js';

/** A port nothing listens on (taken, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// The CLI exits 2 for errors of kind 'config' (cli/common.ts), as for an unreachable Postgres.
describe('a destination unreachable at start-up is a configuration error (exit 2)', () => {
  it('ClickHouse', async () => {
    const target = parseClickHouseUrl(`clickhouse://u:secret@127.0.0.1:${await closedPort()}/engagement`);
    const sink = new ClickHouseSink({ target, logger: createLogger('silent'), requestTimeoutMs: 5_000 });
    await assert.rejects(sink.start(), (err: unknown) => {
      assert.ok(err instanceof PipelineError);
      assert.equal(err.kind, 'config');
      assert.match(err.message, /cannot prepare .* on ClickHouse at http:\/\/127\.0\.0\.1:\d+/);
      assert.doesNotMatch(err.message, /secret/);
      return true;
    });
  });

  it('Kafka', () => {
    const err = kafkaUnreachable(['127.0.0.1:1'], new Error('connect ECONNREFUSED'));
    assert.equal(err.kind, 'config');
  });
});

describe('a Kafka topic that does not exist is named as such, not as unreachable brokers', () => {
  it('kafkajs UNKNOWN_TOPIC_OR_PARTITION', () => {
    const missing = Object.assign(new Error('This server does not host this topic-partition'), {
      type: 'UNKNOWN_TOPIC_OR_PARTITION',
    });
    const err = kafkaUnreachable(['127.0.0.1:9092'], missing, [
      'nope.public.content',
      'nope.public.engagement_events',
    ]);
    assert.equal(err.code, 'EP_ERR_CONFIG');
    assert.match(
      err.message,
      /does not have the topics nope\.public\.content, nope\.public\.engagement_events/,
    );
    assert.match(err.hint ?? '', /--topic-prefix/);
  });
});
