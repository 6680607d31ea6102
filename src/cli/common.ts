import { InvalidArgumentError, type Command } from 'commander';
import {
  configSpec,
  loadConfig,
  readDecimal,
  readInteger,
  type Config,
  type ConfigKey,
  type FlagConfigKey,
} from '../config.js';
import { configError, describeError, PipelineError } from '../errors.js';

/** The settings of the sinks (the sink factory reads them): shared by `run` and `work`. */
export const SINK_CONFIG_KEYS = [
  'redisUrl',
  'redisPrefix',
  'analyticsUrl',
  'externalUrl',
  'externalSecret',
  'externalPolicy',
  'externalBatchSize',
  'externalConcurrency',
  'externalMaxAttempts',
  'externalTimeoutMs',
  'externalRetryFor',
  'externalRedriveRate',
  'kafkaEnrichedTopic',
] as const satisfies readonly FlagConfigKey[];

/** Which of the user's tables to read (discovered from the catalog when unset): every source command. */
export const SOURCE_CONFIG_KEYS = [
  'eventsTable',
  'contentTable',
  'contentKey',
] as const satisfies readonly ConfigKey[];

/** The Kafka connection settings: shared by `capture` and `work`. */
export const KAFKA_CONFIG_KEYS = [
  'kafkaBrokers',
  'kafkaSsl',
  'kafkaSaslMechanism',
  'kafkaSaslUsername',
  'kafkaSaslPassword',
  'kafkaTopicPartitions',
  'kafkaReplicationFactor',
] as const satisfies readonly FlagConfigKey[];

/** Adds the flags of the named config keys to a command; help text comes from configSpec. */
export function withConfigOptions(command: Command, keys: readonly FlagConfigKey[]): Command {
  for (const key of keys) {
    const spec = configSpec[key];
    command.option(`--${spec.flag} <value>`, `${spec.describe} [env ${spec.env}]`);
  }
  return command;
}

/** Flags from commander (camelCase) over env, validated and frozen. */
export function configFrom(options: Record<string, unknown>): Config {
  const flags: Partial<Record<ConfigKey, unknown>> = {};
  for (const key of Object.keys(configSpec) as ConfigKey[]) {
    if (options[key] !== undefined) flags[key] = options[key];
  }
  return loadConfig(flags);
}

/**
 * Runs a command body: config and usage problems print one line and exit 2, other
 * failures print one line and exit 1. Never prints a stack or a secret.
 */
export function action<A extends unknown[]>(body: (...args: A) => Promise<void | number>) {
  return async (...args: A): Promise<void> => {
    try {
      const code = await body(...args);
      if (typeof code === 'number') process.exitCode = code;
    } catch (err) {
      process.stderr.write(`engagement: ${describeError(err)}\n`);
      process.exitCode = err instanceof PipelineError && err.kind === 'config' ? 2 : 1;
    }
  };
}

/** An ISO-8601 time flag (or `now` where allowed), normalized to UTC ISO; one config line when it is not. */
export function parseInstant(text: string, flag: string, options: { allowNow?: boolean } = {}): string {
  if (options.allowNow && text === 'now') return new Date().toISOString();
  const ms = /^\d{4}-\d\d-\d\d/.test(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(ms))
    throw configError(
      `${flag} must be an ISO-8601 time like 2026-01-31T00:00:00Z, got ${JSON.stringify(text)}`,
    );
  return new Date(ms).toISOString();
}

/**
 * A commander parser for an integer flag, by the settings' rule (readInteger: an optional sign
 * and decimal digits only). commander prints its one-line usage error, exit 2 (see main.ts);
 * it must be an InvalidArgumentError, any other error would escape as a stack trace.
 */
export function integerFlag(flag: string, min: number, max?: number) {
  return (value: string): number => {
    try {
      return readInteger(value, min, max);
    } catch (err) {
      throw new InvalidArgumentError(`${flag} ${(err as Error).message}`);
    }
  };
}

/** As integerFlag, for a number with a fraction allowed (rates, seconds). */
export function decimalFlag(flag: string, range: { min: number; max?: number; minExclusive?: boolean }) {
  return (value: string): number => {
    try {
      return readDecimal(value, range);
    } catch (err) {
      throw new InvalidArgumentError(`${flag} ${(err as Error).message}`);
    }
  };
}

/** An integer flag read inside an action (its default given as text): one config line, exit 2. */
export function integerOption(value: unknown, flag: string, min: number, max?: number): number {
  try {
    return readInteger(value, min, max);
  } catch (err) {
    throw configError(`${flag} ${(err as Error).message}, got ${JSON.stringify(value)}`);
  }
}
