/**
 * The M extension's arithmetic (unprivileged spec chapter 7) on int32 values, shared by the interpreter and the
 * block translator (which calls the high-product helpers from generated code).
 */

/** MUL..REMU by funct3, including the defined results of division by zero and overflow (spec table 7.1). */
export function mulDiv(f3: number, a: number, b: number): number {
  switch (f3) {
    case 0:
      return Math.imul(a, b);
    case 1:
      return mulhSigned(a, b);
    case 2:
      return mulhsu(a, b);
    case 3:
      return mulhu(a, b);
    case 4:
      if (b === 0) return -1;
      if (a === -0x8000_0000 && b === -1) return a;
      return (a / b) | 0;
    case 5:
      if (b === 0) return -1;
      return ((a >>> 0) / (b >>> 0)) | 0;
    case 6:
      if (b === 0) return a;
      if (a === -0x8000_0000 && b === -1) return 0;
      return (a % b) | 0;
    default:
      if (b === 0) return a;
      return ((a >>> 0) % (b >>> 0)) | 0;
  }
}

/** High 32 bits of the unsigned 64-bit product, from 16-bit partial products (exact in doubles). */
export function mulhu(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const lo = a0 * b0;
  const mid1 = a1 * b0;
  const mid2 = a0 * b1;
  const carry = ((lo >>> 16) + (mid1 & 0xffff) + (mid2 & 0xffff)) >>> 16;
  return (a1 * b1 + (mid1 >>> 16) + (mid2 >>> 16) + carry) | 0;
}

/** MULH: high 32 bits of the signed x signed product. */
export function mulhSigned(a: number, b: number): number {
  let h = mulhu(a, b);
  if (a < 0) h = (h - b) | 0;
  if (b < 0) h = (h - a) | 0;
  return h;
}

/** MULHSU: high 32 bits of the signed x unsigned product. */
export function mulhsu(a: number, b: number): number {
  let h = mulhu(a, b);
  if (a < 0) h = (h - b) | 0;
  return h;
}
