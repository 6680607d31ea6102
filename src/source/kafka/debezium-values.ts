import { isJsonText, jsonTextOf } from '../../domain/json-text.js';
import { microsToIso, pgTimestampToMicros } from '../../domain/timestamps.js';

/**
 * Debezium's JSON encodings of column values, decoded back to what the pipeline uses.
 * Debezium PostgreSQL connector (JsonConverter): int8/int4 as JSON numbers, uuid and text as
 * strings, jsonb as a string (io.debezium.data.Json), timestamptz as an ISO string
 * (io.debezium.time.ZonedTimestamp); timestamp without time zone as epoch numbers
 * (io.debezium.time.MicroTimestamp µs, org.apache.kafka.connect.data.Timestamp ms,
 * io.debezium.time.NanoTimestamp ns); numeric per decimal.handling.mode: precise = base64
 * big-endian two's-complement unscaled bytes with the scale in the schema parameters,
 * string = decimal text, double = JSON number.
 */

/** A field's Kafka Connect schema, as the schema envelope carries it. */
export interface FieldSchema {
  type?: string;
  name?: string;
  field?: string;
  parameters?: Record<string, string>;
}

export class ValueError extends Error {}

/** timestamptz / timestamp value -> ISO-8601 UTC with microseconds. */
export function decodeTimestamp(value: unknown, schema?: FieldSchema): string {
  if (typeof value === 'string') {
    // ZonedTimestamp: "2026-11-02T10:15:30.123456Z" (offset always Z from Debezium, but accept
    // any); Java writes years past 9999 as "+10000" and BC years astronomically ("-0044"). Read
    // by the same exact parser as the stream (no JavaScript Date: its range ends in year 275760
    // and it rolls 2026-02-30 over into March); nanoseconds are truncated to microseconds.
    const m = /^([+-]?\d{4,6}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}(?::?\d{2})?)$/.exec(
      value,
    );
    if (!m) throw new ValueError(`timestamp '${value}' is not ISO-8601 with a zone`);
    const fraction = m[2] === undefined ? '' : `.${m[2].slice(0, 6)}`;
    try {
      return microsToIso(pgTimestampToMicros(`${m[1]}${fraction}${m[3]}`));
    } catch {
      throw new ValueError(`timestamp '${value}' is not a valid time`);
    }
  }
  if (typeof value === 'number' && Number.isFinite(value)) {
    const name = schema?.name ?? '';
    let micros: bigint;
    if (name === 'io.debezium.time.NanoTimestamp') micros = BigInt(Math.trunc(value / 1000));
    else if (name === 'io.debezium.time.MicroTimestamp') micros = BigInt(Math.trunc(value));
    else if (name === 'org.apache.kafka.connect.data.Timestamp' || name === 'io.debezium.time.Timestamp')
      micros = BigInt(Math.trunc(value)) * 1000n;
    // Schemaless JSON carries no unit: epoch µs are > 1e14 for any date after 1973, ms are not.
    else micros = Math.abs(value) > 1e14 ? BigInt(Math.trunc(value)) : BigInt(Math.trunc(value)) * 1000n;
    return microsToIso(micros);
  }
  throw new ValueError('timestamp is missing or not a string/number');
}

/** An integer column (int2/int4/int8, or numeric with scale 0 in any decimal.handling.mode). */
export function decodeInteger(value: unknown, schema?: FieldSchema): number | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new ValueError(`${value} is not an integer`);
    return value;
  }
  if (typeof value === 'string') {
    if (/^-?\d+(\.0+)?$/.test(value)) return safe(Number(value.split('.')[0]));
    const scale = Number(schema?.parameters?.scale ?? NaN);
    if (schema?.name === 'org.apache.kafka.connect.data.Decimal' && Number.isInteger(scale)) {
      return decimalBytesToInteger(value, scale);
    }
    throw new ValueError(`'${value}' is not an integer`);
  }
  if (typeof value === 'object' && value !== null && 'value' in value && 'scale' in value) {
    // io.debezium.data.VariableScaleDecimal: {"scale": n, "value": base64}
    const v = value as { value: unknown; scale: unknown };
    if (typeof v.value === 'string' && typeof v.scale === 'number')
      return decimalBytesToInteger(v.value, v.scale);
  }
  throw new ValueError('not an integer');
}

/** base64 unscaled two's-complement big-endian bytes + scale -> integer (fraction must be 0). */
function decimalBytesToInteger(base64: string, scale: number): number {
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.length === 0) throw new ValueError('empty decimal bytes');
  let unscaled = 0n;
  for (const b of bytes) unscaled = (unscaled << 8n) | BigInt(b);
  if (bytes[0] & 0x80) unscaled -= 1n << BigInt(bytes.length * 8);
  const divisor = 10n ** BigInt(scale);
  if (unscaled % divisor !== 0n) throw new ValueError(`decimal ${unscaled}e-${scale} is not an integer`);
  return safe(Number(unscaled / divisor));
}

function safe(n: number): number {
  if (!Number.isSafeInteger(n)) throw new ValueError(`${n} is out of the safe integer range`);
  return n;
}

/**
 * jsonb: Debezium sends the JSON text (schema io.debezium.data.Json), kept as text (exact,
 * domain/json-text.ts) once it parses. A text column's string stays a string, as the stream
 * reads it; without a schema (schemaless converter), text that parses as JSON is taken as JSON.
 */
export function decodeJson(value: unknown, schema?: FieldSchema): unknown {
  if (typeof value !== 'string') return value ?? null;
  if (schema !== undefined && schema.name !== JSON_SCHEMA) return value;
  return isJsonText(value) ? jsonTextOf(value) : value;
}

const JSON_SCHEMA = 'io.debezium.data.Json';
