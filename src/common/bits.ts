/**
 * Integer helpers. Guest registers are int32 (JS `| 0`); unsigned views use `>>> 0`.
 * 64-bit guest values are either `bigint` or a lo/hi int32 pair, never mixed implicitly.
 */

/** Interpret a number as unsigned 32-bit. */
export function u32(value: number): number {
  return value >>> 0;
}

/** Interpret a number as signed 32-bit. */
export function i32(value: number): number {
  return value | 0;
}

/** Sign-extend the low `bits` bits of `value` to int32. */
export function signExtend(value: number, bits: number): number {
  const shift = 32 - bits;
  return (value << shift) >> shift;
}

/** Combine a lo/hi int32 pair into a JS number (exact below 2^53). */
export function pairToNumber(lo: number, hi: number): number {
  return (hi >>> 0) * 0x1_0000_0000 + (lo >>> 0);
}

/** Low 32 bits of a non-negative integral number below 2^53, as int32. */
export function lo32(value: number): number {
  return (value % 0x1_0000_0000) | 0;
}

/** High 32 bits of a non-negative integral number below 2^53, as int32. */
export function hi32(value: number): number {
  return Math.floor(value / 0x1_0000_0000) | 0;
}

/** Hex string of an unsigned 32-bit value, `0x` prefixed and zero padded. */
export function hex32(value: number): string {
  return '0x' + (value >>> 0).toString(16).padStart(8, '0');
}
