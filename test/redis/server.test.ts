import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { windowBuckets } from '../../src/domain/windows.js';
import { silentLogger } from '../../src/logger.js';
import { buildApp, type AppDeps } from '../../src/server/app.js';
import { DASHBOARD_HTML } from '../../src/server/dashboard.js';
import { startServer } from '../../src/server/listen.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { sinkStatsFromMetrics, type PipelineStats } from '../../src/observability/stats.js';
import { testRedis } from '../helpers/redis.js';

// Five content ids: alpha..echo as the last hex digit.
const ids = ['a', 'b', 'c', 'd', 'e'].map((c) => `00000000-0000-4000-8000-00000000000${c}`);

describe('HTTP server', () => {
  const redis = testRedis();
  const metrics = createMetrics();
  let isReady = false;
  const stats = async (): Promise<PipelineStats> => ({
    eventsPerSecond: 12.5,
    totalEvents: 1234,
    sinks: await sinkStatsFromMetrics(metrics, ['analytics', 'redis']),
    deadLetters: 3,
    replicationLagBytes: 4096,
    confirmedLsn: '0/16B3748',
    startedAt: '2026-11-23T12:00:00.000Z',
  });
  const deps = (extra: Partial<AppDeps> = {}): AppDeps => ({
    redis: redis.client,
    redisPrefix: redis.prefix,
    metrics,
    logger: silentLogger(),
    stats,
    ready: () => isReady,
    streamIntervalMs: 100,
    ...extra,
  });
  const app = buildApp(
    deps({
      contentTitles: async (list) =>
        new Map(list.filter((id) => id !== ids[4]).map((id) => [id, `Title ${id.slice(-1)}`])),
    }),
  );

  before(async () => {
    const p = redis.prefix;
    // events: alpha 50, bravo 40, charlie 30, delta 20, echo 10; seconds rank the other way round.
    await redis.client.zadd(
      `${p}top:content:10m`,
      50,
      ids[0],
      40,
      ids[1],
      30,
      ids[2],
      20,
      ids[3],
      10,
      ids[4],
    );
    await redis.client.zadd(
      `${p}top:content:seconds:10m`,
      1.1,
      ids[0],
      2.2,
      ids[1],
      3.3,
      ids[2],
      4.4,
      ids[3],
      123.30000000000001,
      ids[4],
    );
    await redis.client.zadd(`${p}top:device:10m`, 70, 'ios', 50, 'android', 30, 'tv');
    // As if a running pipeline kept the window current (readers fall back to the buckets otherwise).
    await redis.client.hset(`${p}top:meta:10m`, 'from', '999912312350', 'to', '999912312359');
    for (const [i, id] of ids.entries()) {
      await redis.client.set(
        `${p}content:last:${id}`,
        JSON.stringify({ event_id: i, content_id: id, content_type: i % 2 ? 'video' : 'podcast' }),
      );
    }
    const [minute] = windowBuckets(Date.now(), 1);
    await redis.client.zadd(`${p}top:content:bucket:${minute}`, 7, ids[3], 9, ids[2]);
    metrics.sinkUp.set({ sink: 'redis' }, 1);
    metrics.sinkLastSuccess.set({ sink: 'redis' }, Date.parse('2026-11-23T12:05:00Z') / 1000);
    for (const s of [0.004, 0.008, 0.015, 0.03, 0.04])
      metrics.commitToSinkSeconds.observe({ sink: 'redis' }, s);
  });
  after(async () => {
    await app.close();
    await redis.cleanup();
  });

  const get = (url: string, headers: Record<string, string> = {}) =>
    app.inject({ method: 'GET', url, headers });

  it('answers /healthz while alive and /readyz by ready()', async () => {
    assert.equal((await get('/healthz')).statusCode, 200);
    isReady = false;
    assert.equal((await get('/readyz')).statusCode, 503);
    isReady = true;
    assert.equal((await get('/readyz')).statusCode, 200);
    const throwing = buildApp(deps({ ready: () => Promise.reject(new Error('boom')) }));
    assert.equal((await throwing.inject({ url: '/readyz' })).statusCode, 503);
    await throwing.close();
  });

  it('serves Prometheus text with the engagement_ metrics', async () => {
    const res = await get('/metrics');
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] as string, /^text\/plain/);
    assert.match(res.body, /^engagement_commit_to_sink_seconds_bucket\{le="0\.005",sink="redis"\} 1$/m);
    assert.match(res.body, /^# TYPE engagement_events_received_total counter$/m);
    assert.match(res.body, /^engagement_process_cpu_seconds_total \d/m);
  });

  it('ranks content by events with titles, types and both scores', async () => {
    const res = await get('/api/top?limit=3');
    assert.equal(res.statusCode, 200);
    const body = res.json();
    assert.equal(body.window, '10m');
    assert.equal(body.by, 'events');
    assert.deepEqual(
      body.items.map((i: { content_id: string; score: number }) => [i.content_id, i.score]),
      [
        [ids[0], 50],
        [ids[1], 40],
        [ids[2], 30],
      ],
    );
    assert.deepEqual(body.items[1], {
      content_id: ids[1],
      score: 40,
      events: 40,
      engagement_seconds: 2.2,
      title: 'Title b',
      content_type: 'video',
    });
    assert.equal((await get('/api/top')).json().items.length, 5);
  });

  it('ranks by engagement seconds with by=seconds (rounded to ms)', async () => {
    const body = (await get('/api/top?by=seconds&limit=2')).json();
    assert.equal(body.by, 'seconds');
    assert.deepEqual(body.items[0], {
      content_id: ids[4],
      score: 123.3,
      events: 10,
      engagement_seconds: 123.3,
      content_type: 'podcast',
    });
    assert.equal(body.items[1].content_id, ids[3]);
  });

  it('ranks devices and reads shorter windows from the minute buckets', async () => {
    const devices = (await get('/api/top?dim=device&limit=2')).json();
    assert.deepEqual(devices.items, [
      { device: 'ios', score: 70 },
      { device: 'android', score: 50 },
    ]);
    const fiveMinutes = (await get('/api/top?window=5m')).json();
    assert.deepEqual(
      fiveMinutes.items.map((i: { content_id: string; score: number }) => [i.content_id, i.score]),
      [
        [ids[2], 9],
        [ids[3], 7],
      ],
    );
  });

  it("answers a client's malformed or oversized body with its 4xx, not 500", async () => {
    const post = (url: string, payload: string) =>
      app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload });
    const bad = await post('/api/top', '{bad');
    assert.equal(bad.statusCode, 400, bad.body);
    assert.match(bad.json().error, /not valid JSON/);
    const large = await post('/api/top', JSON.stringify({ x: 'x'.repeat(2 * 1024 * 1024) }));
    assert.equal(large.statusCode, 413, large.body);
  });

  it('rejects bad queries with 400 and a clear message', async () => {
    for (const [query, pattern] of [
      ['limit=0', /limit/],
      ['limit=abc', /limit/],
      ['limit=0x10', /limit: must be an integer from 1 to 100 \(decimal digits only\)/],
      ['limit=1e1', /limit/],
      ['limit=%20%205', /limit/],
      ['limit=%2B3', /limit/],
      ['limit=1000', /limit/],
      ['by=likes', /by/],
      ['dim=user', /dim/],
      ['window=2h', /window must be from 1m to 10m/],
      ['window=ten', /window must be whole minutes from 1m to 10m/],
      ['dim=device&by=seconds', /dim=content only/],
    ] as const) {
      const res = await get(`/api/top?${query}`);
      assert.equal(res.statusCode, 400, query);
      assert.match(res.json().error, pattern, query);
    }
  });

  it('serves /api/stats with per-sink latency from the histogram', async () => {
    const body = (await get('/api/stats')).json();
    assert.equal(body.totalEvents, 1234);
    const redisSink = body.sinks.find((s: { name: string }) => s.name === 'redis');
    assert.equal(redisSink.up, true);
    assert.equal(redisSink.lastSuccessAt, '2026-11-23T12:05:00.000Z');
    // 5 observations, 3rd in the (10, 20] ms bucket: p50 interpolates to 15 ms.
    assert.equal(redisSink.p50Ms, 15);
    assert.ok(redisSink.p99Ms > 20 && redisSink.p99Ms <= 50);
    const analytics = body.sinks.find((s: { name: string }) => s.name === 'analytics');
    assert.deepEqual(analytics, {
      name: 'analytics',
      p50Ms: null,
      p99Ms: null,
      lastSuccessAt: null,
      up: false,
      // Never written: shown down, nothing handed to it, no lag.
      state: 'down',
      lagSeconds: 0,
      received: 0,
      delivered: 0,
      deadLettered: 0,
    });
  });

  it('serves the dashboard with stable test ids and a script that parses', async () => {
    const res = await get('/');
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] as string, /text\/html/);
    for (const id of [
      'top-content-table',
      'top-device-list',
      'events-per-second',
      'throughput-sparkline',
      'dead-letters',
      'replication-lag',
      'sink-table',
    ]) {
      assert.ok(res.body.includes(`data-testid="${id}"`), id);
    }
    assert.ok(!/<script[^>]+src=|<link[^>]+href="http/.test(res.body), 'no external assets');
    const script = /<script>([\s\S]*)<\/script>/.exec(DASHBOARD_HTML)![1];
    assert.doesNotThrow(() => new Function(script));
  });

  it('pushes {top, devices, stats} frames over SSE and closes open streams on shutdown', async () => {
    const server = buildApp(deps());
    const { port } = await startServer(server, { port: 0 });
    const frames: Record<string, unknown>[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/api/stream' }, (res) => {
        assert.equal(res.statusCode, 200);
        assert.match(res.headers['content-type'] as string, /^text\/event-stream/);
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
            const frame = buffer.slice(0, i);
            buffer = buffer.slice(i + 2);
            const data = /^data: (.*)$/m.exec(frame);
            if (data) frames.push(JSON.parse(data[1]));
          }
          if (frames.length >= 2) resolve();
        });
        res.on('end', () => (frames.length >= 2 ? resolve() : reject(new Error('stream ended early'))));
      });
      req.on('error', reject);
      setTimeout(() => reject(new Error(`only ${frames.length} frames in 3 s`)), 3000);
    });
    const frame = frames[0] as {
      top: { content_id: string }[];
      devices: { device: string }[];
      stats: PipelineStats;
    };
    assert.equal(frame.top[0].content_id, ids[0]);
    assert.equal(frame.top.length, 5);
    assert.equal(frame.devices[0].device, 'ios');
    assert.equal(frame.stats.deadLetters, 3);
    // The stream is still open; close must not wait for it.
    const started = Date.now();
    await server.close();
    assert.ok(Date.now() - started < 10_000, `close took ${Date.now() - started} ms`);
  });

  it('requires the bearer token on /api/* and /metrics when set, and never logs it', async () => {
    const token = 'sekret-token-123';
    const logs: string[] = [];
    const logger = pino(
      { level: 'trace' },
      new Writable({ write: (chunk, _enc, cb) => (logs.push(String(chunk)), cb()) }),
    );
    const secured = buildApp(
      deps({ apiToken: token, logger, stats: () => Promise.reject(new Error('down')) }),
    );
    const req = (url: string, authorization?: string) =>
      secured.inject({ url, headers: authorization ? { authorization } : {} });
    // Percent-encoded paths reach the same handlers: the check is on the matched route.
    const paths = [
      '/api/top',
      '/api/stats',
      '/api/stream',
      '/metrics',
      '/api/nope',
      '/%61pi/stats',
      '/%6detrics',
    ];
    for (const url of paths) {
      const res = await req(url);
      assert.equal(res.statusCode, 401, url);
      assert.equal(res.headers['www-authenticate'], 'Bearer realm="engagement"');
      assert.equal((await req(url, 'Bearer wrong-token')).statusCode, 401, url);
    }
    assert.equal((await req('/api/top', `Bearer ${token}`)).statusCode, 200);
    assert.equal((await req('/metrics', `bearer ${token}`)).statusCode, 200);
    assert.equal((await req('/api/stats', `Bearer ${token}`)).statusCode, 503);
    assert.equal((await req('/healthz')).statusCode, 200);
    assert.equal((await req('/readyz')).statusCode, 200);
    assert.equal((await req('/')).statusCode, 200);
    // An absolute-form request target (`GET http://host/api/stats`), over a real socket.
    await secured.listen({ port: 0, host: '127.0.0.1' });
    const { port } = secured.server.address() as AddressInfo;
    const status = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () =>
        socket.write(
          'GET http://example.test/api/stats HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n',
        ),
      );
      let text = '';
      socket.on('data', (d) => (text += String(d)));
      socket.on('end', () => resolve(text.split('\r\n')[0]));
      socket.on('error', reject);
    });
    assert.match(status, /^HTTP\/1\.1 401/, status);
    await secured.close();
    assert.ok(!logs.join('').includes(token), 'token appeared in the logs');
  });

  it('answers 503 when Redis is unreachable', async () => {
    const dead = new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
    });
    const broken = buildApp(deps({ redis: dead }));
    const res = await broken.inject({ url: '/api/top' });
    assert.equal(res.statusCode, 503);
    assert.match(res.json().error, /redis unavailable/);
    await broken.close();
    dead.disconnect();
  });
});
