/**
 * Stream positions: a string per event that sorts lexicographically in stream order, so
 * sinks (Redis's Lua script included) can compare them without parsing.
 * Direct mode: `<16 hex digits of the commit LSN>:<8 hex digits of the index in the transaction>`.
 */

/** `16/B374D848` -> `00000016B374D848`. */
export function lsnToSortable(lsn: string): string {
  const [hi, lo] = lsn.split('/');
  return hi.padStart(8, '0').toUpperCase() + lo.padStart(8, '0').toUpperCase();
}

export function lsnToBigInt(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

export function bigIntToLsn(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function compareLsn(a: string, b: string): number {
  const x = lsnToBigInt(a);
  const y = lsnToBigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function eventPosition(commitLsn: string, indexInTransaction: number): string {
  return positionInTransaction(transactionPositionPrefix(commitLsn), indexInTransaction);
}

/** The part of eventPosition shared by every event of a transaction (computed once per transaction). */
export function transactionPositionPrefix(commitLsn: string): string {
  return `${lsnToSortable(commitLsn)}:`;
}

/** eventPosition from its transaction's prefix (transactionPositionPrefix). */
export function positionInTransaction(prefix: string, indexInTransaction: number): string {
  return prefix + indexInTransaction.toString(16).padStart(8, '0');
}

/** Kafka mode: the offset zero-padded (offsets are < 2^63, 20 decimal digits suffice). */
export function offsetPosition(offset: string): string {
  return offset.padStart(20, '0');
}
