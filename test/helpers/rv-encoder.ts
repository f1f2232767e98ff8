/**
 * A tiny RV32 instruction encoder for tests (unprivileged spec chapter 2 formats), so tests state programs as
 * mnemonics instead of hex.
 */
const reg = (r: number): number => r & 31;

export function rType(opcode: number, f3: number, f7: number, rd: number, rs1: number, rs2: number): number {
  return ((f7 << 25) | (reg(rs2) << 20) | (reg(rs1) << 15) | (f3 << 12) | (reg(rd) << 7) | opcode) >>> 0;
}

export function iType(opcode: number, f3: number, rd: number, rs1: number, imm: number): number {
  return (((imm & 0xfff) << 20) | (reg(rs1) << 15) | (f3 << 12) | (reg(rd) << 7) | opcode) >>> 0;
}

export function sType(opcode: number, f3: number, rs1: number, rs2: number, imm: number): number {
  return (
    ((((imm >> 5) & 0x7f) << 25) |
      (reg(rs2) << 20) |
      (reg(rs1) << 15) |
      (f3 << 12) |
      ((imm & 0x1f) << 7) |
      opcode) >>>
    0
  );
}

export function bType(f3: number, rs1: number, rs2: number, offset: number): number {
  const imm =
    (((offset >> 12) & 1) << 31) |
    (((offset >> 5) & 0x3f) << 25) |
    (((offset >> 1) & 0xf) << 8) |
    (((offset >> 11) & 1) << 7);
  return (imm | (reg(rs2) << 20) | (reg(rs1) << 15) | (f3 << 12) | 0x63) >>> 0;
}

export function uType(opcode: number, rd: number, imm20: number): number {
  return (((imm20 & 0xfffff) << 12) | (reg(rd) << 7) | opcode) >>> 0;
}

export function jType(rd: number, offset: number): number {
  const imm =
    (((offset >> 20) & 1) << 31) |
    (((offset >> 1) & 0x3ff) << 21) |
    (((offset >> 11) & 1) << 20) |
    (((offset >> 12) & 0xff) << 12);
  return (imm | (reg(rd) << 7) | 0x6f) >>> 0;
}

export const addi = (rd: number, rs1: number, imm: number): number => iType(0x13, 0, rd, rs1, imm);
export const slti = (rd: number, rs1: number, imm: number): number => iType(0x13, 2, rd, rs1, imm);
export const sltiu = (rd: number, rs1: number, imm: number): number => iType(0x13, 3, rd, rs1, imm);
export const xori = (rd: number, rs1: number, imm: number): number => iType(0x13, 4, rd, rs1, imm);
export const ori = (rd: number, rs1: number, imm: number): number => iType(0x13, 6, rd, rs1, imm);
export const andi = (rd: number, rs1: number, imm: number): number => iType(0x13, 7, rd, rs1, imm);
export const slli = (rd: number, rs1: number, sh: number): number => iType(0x13, 1, rd, rs1, sh);
export const srli = (rd: number, rs1: number, sh: number): number => iType(0x13, 5, rd, rs1, sh);
export const srai = (rd: number, rs1: number, sh: number): number => iType(0x13, 5, rd, rs1, 0x400 | sh);
export const add = (rd: number, rs1: number, rs2: number): number => rType(0x33, 0, 0, rd, rs1, rs2);
export const sub = (rd: number, rs1: number, rs2: number): number => rType(0x33, 0, 0x20, rd, rs1, rs2);
export const sll = (rd: number, rs1: number, rs2: number): number => rType(0x33, 1, 0, rd, rs1, rs2);
export const slt = (rd: number, rs1: number, rs2: number): number => rType(0x33, 2, 0, rd, rs1, rs2);
export const sltu = (rd: number, rs1: number, rs2: number): number => rType(0x33, 3, 0, rd, rs1, rs2);
export const xor = (rd: number, rs1: number, rs2: number): number => rType(0x33, 4, 0, rd, rs1, rs2);
export const srl = (rd: number, rs1: number, rs2: number): number => rType(0x33, 5, 0, rd, rs1, rs2);
export const sra = (rd: number, rs1: number, rs2: number): number => rType(0x33, 5, 0x20, rd, rs1, rs2);
export const or = (rd: number, rs1: number, rs2: number): number => rType(0x33, 6, 0, rd, rs1, rs2);
export const and = (rd: number, rs1: number, rs2: number): number => rType(0x33, 7, 0, rd, rs1, rs2);
export const mul = (rd: number, rs1: number, rs2: number): number => rType(0x33, 0, 1, rd, rs1, rs2);
export const mulh = (rd: number, rs1: number, rs2: number): number => rType(0x33, 1, 1, rd, rs1, rs2);
export const mulhsu = (rd: number, rs1: number, rs2: number): number => rType(0x33, 2, 1, rd, rs1, rs2);
export const mulhu = (rd: number, rs1: number, rs2: number): number => rType(0x33, 3, 1, rd, rs1, rs2);
export const div = (rd: number, rs1: number, rs2: number): number => rType(0x33, 4, 1, rd, rs1, rs2);
export const divu = (rd: number, rs1: number, rs2: number): number => rType(0x33, 5, 1, rd, rs1, rs2);
export const rem = (rd: number, rs1: number, rs2: number): number => rType(0x33, 6, 1, rd, rs1, rs2);
export const remu = (rd: number, rs1: number, rs2: number): number => rType(0x33, 7, 1, rd, rs1, rs2);
export const lb = (rd: number, rs1: number, imm: number): number => iType(0x03, 0, rd, rs1, imm);
export const lh = (rd: number, rs1: number, imm: number): number => iType(0x03, 1, rd, rs1, imm);
export const lw = (rd: number, rs1: number, imm: number): number => iType(0x03, 2, rd, rs1, imm);
export const lbu = (rd: number, rs1: number, imm: number): number => iType(0x03, 4, rd, rs1, imm);
export const lhu = (rd: number, rs1: number, imm: number): number => iType(0x03, 5, rd, rs1, imm);
export const sb = (rs2: number, rs1: number, imm: number): number => sType(0x23, 0, rs1, rs2, imm);
export const sh = (rs2: number, rs1: number, imm: number): number => sType(0x23, 1, rs1, rs2, imm);
export const sw = (rs2: number, rs1: number, imm: number): number => sType(0x23, 2, rs1, rs2, imm);
export const beq = (rs1: number, rs2: number, off: number): number => bType(0, rs1, rs2, off);
export const bne = (rs1: number, rs2: number, off: number): number => bType(1, rs1, rs2, off);
export const blt = (rs1: number, rs2: number, off: number): number => bType(4, rs1, rs2, off);
export const bge = (rs1: number, rs2: number, off: number): number => bType(5, rs1, rs2, off);
export const bltu = (rs1: number, rs2: number, off: number): number => bType(6, rs1, rs2, off);
export const bgeu = (rs1: number, rs2: number, off: number): number => bType(7, rs1, rs2, off);
export const lui = (rd: number, imm20: number): number => uType(0x37, rd, imm20);
export const auipc = (rd: number, imm20: number): number => uType(0x17, rd, imm20);
export const jal = (rd: number, off: number): number => jType(rd, off);
export const jalr = (rd: number, rs1: number, imm: number): number => iType(0x67, 0, rd, rs1, imm);
export const csrrw = (rd: number, csr: number, rs1: number): number => iType(0x73, 1, rd, rs1, csr);
export const csrrs = (rd: number, csr: number, rs1: number): number => iType(0x73, 2, rd, rs1, csr);
export const csrrc = (rd: number, csr: number, rs1: number): number => iType(0x73, 3, rd, rs1, csr);
export const csrrwi = (rd: number, csr: number, uimm: number): number => iType(0x73, 5, rd, uimm, csr);
export const csrrsi = (rd: number, csr: number, uimm: number): number => iType(0x73, 6, rd, uimm, csr);
export const csrrci = (rd: number, csr: number, uimm: number): number => iType(0x73, 7, rd, uimm, csr);
export const ecall = (): number => 0x00000073;
export const ebreak = (): number => 0x00100073;
export const mret = (): number => 0x30200073;
export const sret = (): number => 0x10200073;
export const wfi = (): number => 0x10500073;
export const sfenceVma = (rs1 = 0, rs2 = 0): number => rType(0x73, 0, 0x09, 0, rs1, rs2);
export const fence = (): number => 0x0ff0000f;
export const fenceI = (): number => 0x0000100f;
export const amo = (funct5: number, rd: number, rs1: number, rs2: number): number =>
  rType(0x2f, 2, funct5 << 2, rd, rs1, rs2);
export const lrW = (rd: number, rs1: number): number => amo(0x02, rd, rs1, 0);
export const scW = (rd: number, rs1: number, rs2: number): number => amo(0x03, rd, rs1, rs2);
export const amoswapW = (rd: number, rs1: number, rs2: number): number => amo(0x01, rd, rs1, rs2);
export const amoaddW = (rd: number, rs1: number, rs2: number): number => amo(0x00, rd, rs1, rs2);
export const amominW = (rd: number, rs1: number, rs2: number): number => amo(0x10, rd, rs1, rs2);
export const amomaxuW = (rd: number, rs1: number, rs2: number): number => amo(0x1c, rd, rs1, rs2);

/** Load a full 32-bit constant into `rd` (LUI + ADDI). */
export function li(rd: number, value: number): number[] {
  const lo = (value << 20) >> 20;
  const hi = ((value - lo) >>> 12) & 0xfffff;
  return hi === 0 ? [addi(rd, 0, lo)] : [lui(rd, hi), addi(rd, rd, lo)];
}
