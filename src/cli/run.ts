import type { Command } from 'commander';
import { createLogger } from '../logger.js';
import { startHttpServer, startRuntime } from '../runtime.js';
import {
  action,
  configFrom,
  KAFKA_CONFIG_KEYS,
  SINK_CONFIG_KEYS,
  SOURCE_CONFIG_KEYS,
  withConfigOptions,
} from './common.js';
import { exitIfStuck, exitSoon, waitForShutdownSignal } from './signals.js';
import { assertSafeHttpExposure } from '../config.js';
import { assertPortFree } from '../server/listen.js';
import { keepHeapSmall } from './heap.js';

export const RUN_CONFIG_KEYS = [
  'databaseUrl',
  ...SOURCE_CONFIG_KEYS,
  ...SINK_CONFIG_KEYS,
  // The enriched-topic sink's connection (KAFKA_ENRICHED_TOPIC is among the sink settings).
  ...KAFKA_CONFIG_KEYS,
  'slotName',
  'publicationName',
  'port',
  'host',
  'apiToken',
  'batchMaxRows',
  'batchMaxWaitMs',
  'maxInFlightBatches',
  'shutdownTimeoutMs',
  'lagWarnSeconds',
  'heartbeatIntervalMs',
  'logLevel',
] as const;

export function registerRun(program: Command): void {
  withConfigOptions(
    program.command('run').description('run the streaming pipeline (direct mode) with its HTTP server'),
    RUN_CONFIG_KEYS,
  ).action(
    action(async (options: Record<string, unknown>) => {
      keepHeapSmall();
      const config = configFrom(options);
      assertSafeHttpExposure(config);
      const logger = createLogger(config.logLevel);
      // A busy PORT is found before anything is opened: one line, exit 2, nothing left running.
      await assertPortFree(config.host, config.port);
      let stopBy = Infinity;
      try {
        const runtime = await startRuntime(config, logger);
        const http = await startHttpServer(runtime, config, logger).catch(async (err) => {
          exitIfStuck(config.shutdownTimeoutMs);
          await runtime.stop();
          throw err;
        });
        logger.info({ url: http.url }, 'pipeline running; Ctrl-C drains and stops');
        process.stdout.write(`engagement pipeline running; dashboard and API at ${http.url}\n`);
        const outcome = await Promise.race([waitForShutdownSignal(), runtime.slotLost]);
        stopBy = Date.now() + config.shutdownTimeoutMs;
        // Every step below has its own deadline; this is the backstop.
        exitIfStuck(config.shutdownTimeoutMs);
        if (typeof outcome !== 'string') {
          // The slot is gone or invalidated: nothing more can stream; say how to recover.
          await http.close();
          await runtime.stop();
          throw outcome;
        }
        logger.info({ signal: outcome }, 'draining');
        await http.close();
        await runtime.stop();
        logger.info('stopped cleanly');
      } finally {
        // A handle some library left open must not keep a stopped pipeline alive.
        exitSoon(2_000, stopBy);
      }
    }),
  );
}
