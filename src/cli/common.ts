import { InvalidArgumentError, type Command } from 'commander';
import { configSpec, loadConfig, type Config, type ConfigKey, type FlagConfigKey } from '../config.js';
import { readDecimal, readInteger } from '../config-values.js';
import { civilToMicros, dateToIso, microsToIso, pgTimestampToMicros } from '../domain/timestamps.js';
import { configError, describeError, PipelineError } from '../errors.js';
import { STATE_SCHEMA } from '../db/schema.js';

/** The settings of the sinks (the sink factory reads them): shared by `run` and `work`. */
export const SINK_CONFIG_KEYS = [
  'redisUrl',
  'redisPrefix',
  'analyticsUrl',
  'duckdbMemoryLimit',
  'duckdbThreads',
  'analyticsWriteIntervalMs',
  'bigqueryApiEndpoint',
  'externalUrl',
  'externalSecret',
  'externalPolicy',
  'externalBatchSize',
  'externalConcurrency',
  'externalMaxAttempts',
  'externalTimeoutMs',
  'externalRetryFor',
  'externalSpillAfter',
  'externalRedriveRate',
  'externalWriteIntervalMs',
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
    } catch (caught) {
      const err = unmigrated(caught) ?? caught;
      process.stderr.write(`engagement: ${describeError(err)}\n`);
      process.exitCode = err instanceof PipelineError && err.kind === 'config' ? 2 : 1;
    }
  };
}

/**
 * A query on the pipeline's own state (`status`, `dlq`, ...) against a database `engagement
 * migrate` never prepared: Postgres's "relation does not exist" becomes the one line that says
 * what to run.
 */
function unmigrated(err: unknown): PipelineError | null {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (code !== '42P01' || typeof message !== 'string' || !message.includes(`relation "${STATE_SCHEMA}.`))
    return null;
  return configError(
    `this database has no pipeline state (${describeError(err)})`,
    'run `engagement migrate` against it first (or check DATABASE_URL)',
  );
}

/**
 * A CLI time (`backfill --from/--to`, `dlq list --since`, `dlq purge --before`): an ISO-8601
 * date (`2026-01-31`, midnight UTC) or date-time (`2026-01-31T12:00`, `…:00.123456Z`,
 * `…+02:00`); a date-time without an offset is UTC, like a date alone, whatever TZ says.
 * `now` where allowed. Returns the canonical UTC text with microseconds, which goes to Postgres
 * as is: never through a JS Date (milliseconds; Date.parse also rolled 2026-02-30 over to
 * March 2 and read an offset-less time as local). Anything else is one config line, exit 2.
 */
export function parseInstant(
  text: string,
  flag: string,
  options: { allowNow?: boolean; allowInfinity?: boolean } = {},
): string {
  if (options.allowNow && text === 'now') return dateToIso(new Date());
  // All of history, whatever its years (Postgres keeps 4713 BC .. 294276): Postgres's own words,
  // passed as they are. As text they sort before and after every four-digit year.
  if (options.allowInfinity && (text === '-infinity' || text === 'infinity')) return text;
  const example = `an ISO-8601 date or date-time like 2026-01-31 or 2026-01-31T12:00:00.000001Z (no offset = UTC)${options.allowNow ? ' or now' : ''}`;
  const m = CLI_TIME.exec(text);
  if (!m) {
    const more = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7,}/.test(text) ? ' (at most 6 fractional digits)' : '';
    throw configError(`${flag} must be ${example}${more}, got ${JSON.stringify(text)}`);
  }
  const [, date, hh = '00', mm = '00', ss = '00', fraction = '', zone = 'Z'] = m;
  const offset = zone.toUpperCase();
  let micros: bigint;
  try {
    micros = pgTimestampToMicros(`${date}T${hh}:${mm}:${ss}${fraction && `.${fraction}`}${offset}`);
  } catch {
    throw configError(
      `${flag} ${JSON.stringify(text)} is not a real date and time (a month, day, hour, minute or offset out of range)`,
    );
  }
  // Postgres reads four-digit years from 0001 (it has no year 0); the canonical text has four
  // digits through 9999.
  if (micros < CLI_TIME_MIN || micros > CLI_TIME_MAX)
    throw configError(
      `${flag} must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z, got ${JSON.stringify(text)}`,
    );
  return microsToIso(micros);
}

/** How --help describes a time flag (see parseInstant). */
export const TIME_HELP = 'ISO-8601 date or date-time, UTC unless it has an offset';

// Date, then optionally T, hours:minutes, optional seconds and up to six fractional digits, and
// an optional offset (Z, ±HH, ±HHMM, ±HH:MM).
// A space for the T and a lower-case t or z are taken too: psql prints `2026-01-31 12:00:00+00`.
const CLI_TIME =
  /^(\d{4}-\d\d-\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?([Zz]|[+-]\d\d(?::?\d\d)?)?)?$/;
const CLI_TIME_MIN = civilToMicros(1, 1, 1);
const CLI_TIME_MAX = civilToMicros(9999, 12, 31, 23, 59, 59, 999_999);

/**
 * A commander parser for an integer flag, by the settings' rule (readInteger: an optional sign
 * and decimal digits only). commander prints its one-line usage error, exit 2 (see main.ts);
 * it must be an InvalidArgumentError, any other error would escape as a stack trace.
 */
export function integerFlag(flag: string, min: number, max?: number) {
  return flagReader(flag, (value) => readInteger(value, min, max));
}

/** As integerFlag, for a number with a fraction allowed (rates, seconds). */
export function decimalFlag(flag: string, range: { min: number; max?: number; minExclusive?: boolean }) {
  return flagReader(flag, (value) => readDecimal(value, range));
}

/** `read`'s refusal (a RangeError saying what is allowed) as commander's usage error for `flag`. */
function flagReader(flag: string, read: (value: string) => number) {
  return (value: string): number => {
    try {
      return read(value);
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
