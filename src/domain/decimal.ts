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
  // Number(string) of a decimal literal yields the double nearest to it, whose shortest
  // printed form is that same literal: "7.001" round-trips.
  const negative = units < 0;
  const digits = Math.abs(units)
    .toString()
    .padStart(scale + 1, '0');
  const text = scale === 0 ? digits : `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  return Number(negative ? `-${text}` : text);
}
