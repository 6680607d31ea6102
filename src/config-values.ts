/**
 * How settings and flags read numbers: one rule for env vars, config flags and the commands' own
 * flags (see config.ts and cli/common.ts).
 */

/** Integer text: an optional sign and decimal digits, nothing around them. */
const INTEGER_TEXT = /^[+-]?\d+$/;
/** Decimal text: digits with an optional sign and point; no exponent, no hex, no spaces. */
const DECIMAL_TEXT = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

/**
 * An integer from a setting or flag (text) or from code (a number), in [min, max]; throws a
 * RangeError whose message says what is allowed. Number() and zod's coerce also read
 * `0x7073`, ` 28787 ` and `2.8787e4` (all 28787) and ` ` (0), so the text is checked first.
 */
export function readInteger(value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = numberFrom(value, INTEGER_TEXT);
  if (Number.isSafeInteger(n) && n >= min && n <= max) return n;
  const what =
    max !== Number.MAX_SAFE_INTEGER
      ? `an integer from ${min} to ${max}`
      : min === 1
        ? 'a positive integer'
        : min === 0
          ? 'a non-negative integer'
          : `an integer of at least ${min}`;
  throw new RangeError(`must be ${what} (decimal digits only)`);
}

/** A number with a fraction allowed (rates, seconds), in (min, max] or [min, max]; see readInteger. */
export function readDecimal(
  value: unknown,
  range: { min: number; max?: number; minExclusive?: boolean },
): number {
  const n = numberFrom(value, DECIMAL_TEXT);
  const max = range.max ?? Number.MAX_VALUE;
  if (Number.isFinite(n) && (range.minExclusive ? n > range.min : n >= range.min) && n <= max) return n;
  const what =
    range.max !== undefined
      ? `a number from ${range.min} to ${range.max}`
      : range.minExclusive && range.min === 0
        ? 'a positive number'
        : `a number of at least ${range.min}`;
  throw new RangeError(`must be ${what} (decimal digits and a point only)`);
}

/** A number given as one, or text that matches `pattern` in full; NaN for anything else. */
function numberFrom(value: unknown, pattern: RegExp): number {
  if (typeof value === 'number') return value;
  return typeof value === 'string' && pattern.test(value) ? Number(value) : NaN;
}
