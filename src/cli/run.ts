import type { Command } from 'commander';
import { createLogger } from '../logger.js';
import { startHttpServer, startRuntime } from '../runtime.js';
import { action, configFrom, SINK_CONFIG_KEYS, withConfigOptions } from './common.js';
import { waitForShutdownSignal } from './signals.js';

export const RUN_CONFIG_KEYS = [
  'databaseUrl',
  ...SINK_CONFIG_KEYS,
  'slotName',
  'publicationName',
  'port',
  'host',
  'apiToken',
  'batchMaxRows',
  'batchMaxWaitMs',
  'maxInFlightBatches',
  'heartbeatIntervalMs',
  'logLevel',
] as const;

export function registerRun(program: Command): void {
  withConfigOptions(
    program.command('run').description('run the streaming pipeline (direct mode) with its HTTP server'),
    RUN_CONFIG_KEYS,
  ).action(
    action(async (options: Record<string, unknown>) => {
      const config = configFrom(options);
      const logger = createLogger(config.logLevel);
      const runtime = await startRuntime(config, logger);
      const http = await startHttpServer(runtime, config, logger).catch(async (err) => {
        await runtime.stop();
        throw err;
      });
      logger.info({ url: http.url }, 'pipeline running; Ctrl-C drains and stops');
      process.stdout.write(`engagement pipeline running; dashboard and API at ${http.url}\n`);
      const outcome = await Promise.race([waitForShutdownSignal(), runtime.slotLost]);
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
    }),
  );
}
