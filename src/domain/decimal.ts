/**
 * Exact decimal helpers for the enrichment rules. Everything is integer arithmetic on
 * values far below 2^53, so no binary floating point rounding can leak into results.
 */

/**
 * Divides two integers and rounds to an integer half away from zero, exactly as
 * Postgres's round(numeric) does. `denominator` must be non-zero.
 */
export function divideRoundHalfAwayFromZero(numerator: number, denominator: number): number {
  const negative = numerator < 0 !== denominator < 0 && numerator !== 0;
  const n = Math.abs(numerator);
  const d = Math.abs(denominator);
  let quotient = Math.floor(n / d);
  let remainder = n - quotient * d;
  // Math.floor(n / d) can be off by one when n / d is not representable; fix it exactly.
  while (remainder < 0) {
    quotient -= 1;
    remainder += d;
  }
  while (remainder >= d) {
    quotient += 1;
    remainder -= d;
  }
  if (remainder * 2 >= d) quotient += 1;
  return negative ? -quotient : quotient;
}

/** Integer `units` of 10^-scale as the shortest exact JS number (e.g. 7001, 3 -> 7.001). */
export function fromScaled(units: number, scale: number): number {
  // The double nearest to the decimal units * 10^-scale, whose shortest printed form is that
  // decimal: "7.001" round-trips. IEEE 754 division is correctly rounded, so for integers below
  // 2^53 (and 10^scale exact) units / 10^scale is that same nearest double, the one
  // Number("7.001") parses to, without building the text. (0 and -0 both give 0, as the text did.)
  if (units === 0) return 0;
  if (Number.isSafeInteger(units) && scale >= 0 && scale <= 22) return units / POWERS_OF_TEN[scale];
  return fromScaledText(units, scale);
}

const POWERS_OF_TEN = Array.from({ length: 23 }, (_, i) => 10 ** i);

/** fromScaled through the decimal text (any other input). */
export function fromScaledText(units: number, scale: number): number {
  const negative = units < 0;
  const digits = Math.abs(units)
    .toString()
    .padStart(scale + 1, '0');
  const text = scale === 0 ? digits : `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  return Number(negative ? `-${text}` : text);
}
