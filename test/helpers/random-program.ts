/**
 * Random RV32IMA programs for differential tests (interpreter against block translator). A program runs in
 * M-mode (bare), or in S- or U-mode under Sv32 from an alias of its physical code, and mixes ALU and M ops,
 * aligned, misaligned and faulting loads and stores, MMIO, AMOs and LR/SC, CSR reads and writes, forward
 * branches and jumps (some to misaligned targets), counted loops, calls, ECALL/EBREAK/illegal instructions/WFI/
 * PAUSE/FENCE, and code that rewrites an instruction ahead of itself (with and without FENCE.I). Every trap goes
 * to an M-mode handler that skips the trapping instruction, so the program keeps running.
 */
import * as C from '../../src/cpu/csr.ts';
import type { Hart } from '../../src/cpu/hart.ts';
import type { AddressSpace } from '../../src/mem/address-space.ts';
import * as A from './rv-encoder.ts';

export type ProgramMode = 'machine' | 'supervisor' | 'user';

/** Physical layout (RAM starts at 0x80000000; the test machine has 1 MiB). */
export const PRELUDE = 0x80000000;
export const HANDLER = 0x80000800;
export const BODY = 0x80001000;
export const ROOT = 0x80040000;
const L0_RAM = 0x80041000;
const L0_ALIAS = 0x80042000;
const L0_MMIO = 0x80043000;
export const DATA = 0x80080000;
/** The body runs at this virtual alias of its physical pages under Sv32. */
const ALIAS_VA = 0x40000000;
/** Pages of DATA left unmapped (page faults) and read-only (store page faults) under Sv32. */
const HOLE_PAGE = DATA + 0x8000;
const READ_ONLY_PAGE = DATA + 0x9000;
const UART_SCR = 0x10000007;

/** Registers with fixed roles: data bases, loop counter, scratch, handler. Random code writes x1..x23. */
const LINK = 24;
const BASE_HOLE = 26;
const BASE = 28;
const COUNTER = 29;
const SCRATCH = 30;
const HANDLER_TEMP = 31;
const RANDOM_RD = 23;

const CSRS = [
  C.CSR_MSCRATCH,
  C.CSR_SSCRATCH,
  C.CSR_INSTRET,
  C.CSR_CYCLE,
  C.CSR_TIME,
  C.CSR_MSTATUS,
  C.CSR_MINSTRET,
];

/** A generated program: its words per address and how to prepare a machine for it. */
export interface RandomProgram {
  readonly mode: ProgramMode;
  /** Write the code, page tables and data into `memory` and point the hart at the prelude. */
  install(memory: AddressSpace, hart: Hart): void;
}

function pte(gpa: number, flags: number): number {
  return (((gpa >>> 12) << 10) | flags) >>> 0;
}

/** Generate a program from `random` (a PRNG returning [0, 1)). */
export function randomProgram(random: () => number, mode: ProgramMode, snippets = 120): RandomProgram {
  const int = (n: number): number => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)];
  const anyReg = (): number => int(32);
  const rd = (): number => (random() < 0.05 ? 0 : 1 + int(RANDOM_RD));
  const imm12 = (): number => int(4096) - 2048;
  const body: number[] = [];

  const alu = (): number => {
    const kind = int(26);
    const d = rd();
    const s1 = anyReg();
    const s2 = anyReg();
    switch (kind) {
      case 0:
        return A.addi(d, s1, imm12());
      case 1:
        return A.slti(d, s1, imm12());
      case 2:
        return A.sltiu(d, s1, imm12());
      case 3:
        return A.xori(d, s1, imm12());
      case 4:
        return A.ori(d, s1, imm12());
      case 5:
        return A.andi(d, s1, imm12());
      case 6:
        return A.slli(d, s1, int(32));
      case 7:
        return A.srli(d, s1, int(32));
      case 8:
        return A.srai(d, s1, int(32));
      case 9:
        return A.lui(d, int(0x100000));
      case 10:
        return A.auipc(d, int(0x100000));
      default:
        return pick([
          A.add,
          A.sub,
          A.sll,
          A.slt,
          A.sltu,
          A.xor,
          A.srl,
          A.sra,
          A.or,
          A.and,
          A.mul,
          A.mulh,
          A.mulhsu,
          A.mulhu,
          A.div,
          A.divu,
          A.rem,
          A.remu,
        ])(d, s1, s2);
    }
  };

  const memoryOp = (): number => {
    const base = random() < 0.15 ? BASE_HOLE : random() < 0.05 ? anyReg() : BASE;
    let offset = random() < 0.8 ? (int(1024) - 512) * 4 : imm12();
    if (base === BASE_HOLE) offset = int(0x7ff) - 0x400;
    if (random() < 0.5) return pick([A.lb, A.lh, A.lw, A.lbu, A.lhu])(rd(), base, offset);
    return pick([A.sb, A.sh, A.sw])(anyReg(), base, offset);
  };

  const simple = (): void => {
    const r = random();
    if (r < 0.45) body.push(alu());
    else if (r < 0.8) body.push(memoryOp());
    else if (r < 0.9) {
      // AMO on a data word (sometimes misaligned).
      body.push(A.addi(SCRATCH, BASE, int(64) * 4 + (random() < 0.1 ? 2 : 0)));
      body.push(A.amo(pick([0x00, 0x01, 0x04, 0x08, 0x0c, 0x10, 0x14, 0x18, 0x1c]), rd(), SCRATCH, anyReg()));
    } else if (r < 0.95) {
      // LR/SC, with a store in between now and then.
      body.push(A.addi(SCRATCH, BASE, int(16) * 4));
      body.push(A.lrW(rd(), SCRATCH));
      if (random() < 0.3) body.push(A.sw(anyReg(), SCRATCH, 0));
      body.push(A.scW(rd(), SCRATCH, anyReg()));
    } else {
      body.push(pick([A.fence(), 0x0100000f]));
    }
  };

  /**
   * Loads and stores through one base register at nearby offsets, as copy loops and structure accesses do (the
   * translator checks such a group's page once): the base lands in the middle of a data page, across a page
   * boundary, on the unmapped or read-only page, on code, misaligned, or is rewritten by a member.
   */
  const accessCluster = (): void => {
    const place = int(7);
    if (place === 0) body.push(A.addi(SCRATCH, BASE, int(64) * 4 - 128));
    else if (place === 1)
      body.push(A.addi(SCRATCH, BASE, 0x800 - 16 + int(8) * 4)); // straddles DATA + 0x1000
    else if (place === 2)
      body.push(A.addi(SCRATCH, BASE_HOLE, -16 + int(3) * 8)); // runs into the unmapped page
    else if (place === 3) {
      // Runs from the unmapped page into the read-only one.
      const at = READ_ONLY_PAGE - 8 - int(2) * 8;
      const low = (at << 20) >> 20;
      body.push(A.lui(SCRATCH, ((at - low) >>> 12) & 0xfffff), A.addi(SCRATCH, SCRATCH, low));
    } else if (place === 4)
      body.push(A.addi(SCRATCH, BASE, int(64) * 4 + 1 + int(3))); // misaligned
    else if (place === 5) {
      // Code: loads read the instructions ahead and stores replace them with another ALU instruction.
      const replacement = alu();
      body.push(A.lui(HANDLER_TEMP, ((replacement + 0x800) >>> 12) & 0xfffff));
      body.push(A.addi(HANDLER_TEMP, HANDLER_TEMP, (replacement << 20) >> 20));
      body.push(A.auipc(SCRATCH, 0));
      const members = 2 + int(5);
      for (let i = 0; i < members; i++) {
        const offset = 4 * (members + 1 + int(4)); // one of the four slots after the members
        if (random() < 0.4) body.push(A.sw(HANDLER_TEMP, SCRATCH, offset));
        else body.push(pick([A.lw, A.lh, A.lbu])(rd(), SCRATCH, offset));
      }
      for (let i = 0; i < 4; i++) body.push(alu());
      return;
    } else body.push(A.addi(SCRATCH, anyReg(), int(256) - 128));
    const members = 2 + int(7);
    for (let i = 0; i < members; i++) {
      const offset = int(8) * 4 + (random() < 0.1 ? int(4) : 0);
      const r = random();
      if (r < 0.45) body.push(pick([A.lw, A.lw, A.lw, A.lh, A.lhu, A.lb, A.lbu])(rd(), SCRATCH, offset));
      else if (r < 0.85) body.push(pick([A.sw, A.sw, A.sh, A.sb])(anyReg(), SCRATCH, offset));
      else if (r < 0.9)
        body.push(A.lw(SCRATCH, SCRATCH, offset)); // the base itself is loaded
      else if (r < 0.95)
        body.push(pick([A.beq, A.bne])(anyReg(), anyReg(), 8), alu()); // a join point
      else body.push(alu());
    }
  };

  /** Forward branches over ALU instructions: one, two nested, or two whose ranges cross. */
  const forwardBranches = (): void => {
    const branch = (): ((a: number, b: number, offset: number) => number) =>
      pick([A.beq, A.bne, A.blt, A.bge, A.bltu, A.bgeu]);
    const shape = int(3);
    if (shape === 0) {
      body.push(branch()(anyReg(), anyReg(), 8), alu());
    } else if (shape === 1) {
      body.push(branch()(anyReg(), anyReg(), 16), branch()(anyReg(), anyReg(), 8), alu(), alu());
    } else {
      body.push(branch()(anyReg(), anyReg(), 12), branch()(anyReg(), anyReg(), 12), alu(), alu());
    }
  };

  const emitSnippet = (): void => {
    const r = random();
    if (r < 0.44) {
      simple();
    } else if (r < 0.5) {
      accessCluster();
    } else if (r < 0.53) {
      forwardBranches();
    } else if (r < 0.58) {
      // Forward branch over 1..3 instructions; now and then to a misaligned target (traps if taken).
      const skip = 1 + int(3);
      const offset = 4 * (1 + skip) + (random() < 0.1 ? 2 : 0);
      body.push(pick([A.beq, A.bne, A.blt, A.bge, A.bltu, A.bgeu])(anyReg(), anyReg(), offset));
      for (let i = 0; i < skip; i++) body.push(alu());
    } else if (r < 0.68) {
      // A counted loop of simple instructions, with forward branches inside now and then.
      body.push(A.addi(COUNTER, 0, 1 + int(40)));
      const head = body.length;
      const size = 1 + int(6);
      for (let i = 0; i < size; i++) {
        if (random() < 0.25) forwardBranches();
        else if (random() < 0.2) accessCluster();
        else simple();
      }
      body.push(A.addi(COUNTER, COUNTER, -1));
      body.push(A.bne(COUNTER, 0, 4 * (head - body.length)));
    } else if (r < 0.72) {
      // JAL forward, or JALR through auipc (now and then misaligned).
      const skip = 1 + int(3);
      if (random() < 0.5) {
        body.push(A.jal(rd(), 4 * (1 + skip)));
      } else {
        body.push(A.auipc(SCRATCH, 0));
        body.push(A.jalr(rd(), SCRATCH, 4 * (2 + skip) + (random() < 0.1 ? 2 : 0)));
      }
      for (let i = 0; i < skip; i++) body.push(alu());
    } else if (r < 0.76) {
      // Call a two-instruction function placed after a jump, and return.
      body.push(A.jal(LINK, 8)); // -> function
      body.push(A.jal(0, 12)); // after return: skip the function
      body.push(alu()); // function body
      body.push(A.jalr(0, LINK, 0)); // return
    } else if (r < 0.82) {
      // Rewrite an instruction ahead (stores into code), with or without FENCE.I.
      const replacement = alu();
      body.push(A.auipc(SCRATCH, 0));
      body.push(A.lui(HANDLER_TEMP, ((replacement + 0x800) >>> 12) & 0xfffff));
      body.push(A.addi(HANDLER_TEMP, HANDLER_TEMP, (replacement << 20) >> 20));
      body.push(A.sw(HANDLER_TEMP, SCRATCH, 20));
      body.push(random() < 0.5 ? A.fenceI() : A.addi(0, 0, 0));
      body.push(alu()); // replaced
    } else if (r < 0.88) {
      // CSR access (some are illegal in S or U mode).
      const csr = pick(CSRS);
      const readOnly = csr === C.CSR_INSTRET || csr === C.CSR_CYCLE || csr === C.CSR_TIME;
      if (readOnly || csr === C.CSR_MSTATUS || random() < 0.5) body.push(A.csrrs(rd(), csr, 0));
      else body.push(A.csrrw(rd(), csr, anyReg()));
    } else if (r < 0.92) {
      // MMIO: the UART scratch register.
      body.push(A.lui(SCRATCH, UART_SCR >>> 12));
      body.push(A.sb(anyReg(), SCRATCH, UART_SCR & 0xfff));
      body.push(A.lbu(rd(), SCRATCH, UART_SCR & 0xfff));
    } else {
      body.push(pick([A.ecall(), A.ebreak(), A.wfi(), 0, 0xffffffff, A.csrrw(1, 0x7ff, 2), 0x0000500f]));
    }
  };

  // Start with a loop, so translation starts early.
  body.push(A.addi(COUNTER, 0, 3));
  body.push(alu());
  body.push(A.addi(COUNTER, COUNTER, -1));
  body.push(A.bne(COUNTER, 0, -8));
  for (let i = 0; i < snippets; i++) emitSnippet();
  body.push(A.jal(0, 0));

  const registers = Array.from({ length: 24 }, () =>
    random() < 0.3 ? int(64) : (random() * 0x1_0000_0000) | 0,
  );
  const paged = mode !== 'machine';
  const bodyVa = paged ? ALIAS_VA + (BODY - PRELUDE) : BODY;

  const prelude: number[] = [];
  const li = (r: number, value: number): void => {
    const lo = (value << 20) >> 20;
    prelude.push(A.lui(r, ((value - lo) >>> 12) & 0xfffff), A.addi(r, r, lo));
  };
  li(SCRATCH, HANDLER);
  prelude.push(A.csrrw(0, C.CSR_MTVEC, SCRATCH));
  for (let r = 1; r < registers.length; r++) li(r, registers[r]);
  li(BASE, DATA + 0x800);
  li(BASE_HOLE, HOLE_PAGE);
  li(SCRATCH, bodyVa);
  if (!paged) {
    prelude.push(A.jalr(0, SCRATCH, 0));
  } else {
    prelude.push(A.csrrw(0, C.CSR_MEPC, SCRATCH));
    li(SCRATCH, C.SATP_MODE_SV32 | (ROOT >>> 12));
    prelude.push(A.csrrw(0, C.CSR_SATP, SCRATCH));
    prelude.push(A.sfenceVma());
    li(SCRATCH, C.MSTATUS_MPP);
    prelude.push(A.csrrc(0, C.CSR_MSTATUS, SCRATCH));
    if (mode === 'supervisor') {
      li(SCRATCH, 1 << C.MSTATUS_MPP_SHIFT);
      prelude.push(A.csrrs(0, C.CSR_MSTATUS, SCRATCH));
    }
    prelude.push(A.mret());
  }
  if (PRELUDE + 4 * prelude.length > HANDLER) throw new Error('prelude too long');
  const handler = [
    A.csrrs(HANDLER_TEMP, C.CSR_MEPC, 0),
    A.addi(HANDLER_TEMP, HANDLER_TEMP, 4),
    A.csrrw(0, C.CSR_MEPC, HANDLER_TEMP),
    A.mret(),
  ];
  if (BODY + 4 * body.length > ROOT) throw new Error('body too long');

  return {
    mode,
    install(memory: AddressSpace, hart: Hart): void {
      prelude.forEach((word, i) => memory.writeU32(PRELUDE + 4 * i, word));
      handler.forEach((word, i) => memory.writeU32(HANDLER + 4 * i, word));
      body.forEach((word, i) => memory.writeU32(BODY + 4 * i, word));
      for (let i = 0; i < 256; i++) memory.writeU32(DATA + 4 * i, (i * 0x9e3779b9) >>> 0);
      if (paged) {
        const user = mode === 'user' ? C.PTE_U : 0;
        const V = C.PTE_V;
        const code = V | C.PTE_R | C.PTE_W | C.PTE_X | C.PTE_A | C.PTE_D | user;
        memory.writeU32(ROOT + (0x80000000 >>> 22) * 4, pte(L0_RAM, V));
        memory.writeU32(ROOT + (ALIAS_VA >>> 22) * 4, pte(L0_ALIAS, V));
        memory.writeU32(ROOT + (UART_SCR >>> 22) * 4, pte(L0_MMIO, V));
        memory.writeU32(
          L0_MMIO + ((UART_SCR >>> 12) & 0x3ff) * 4,
          pte(UART_SCR & ~0xfff, V | C.PTE_R | C.PTE_W | user),
        );
        for (let page = 0; page < 256; page++) {
          const gpa = PRELUDE + page * 4096;
          let flags = code;
          if (gpa >= DATA) flags = V | C.PTE_R | C.PTE_W | user; // A and D set by the hardware walk
          if (gpa === HOLE_PAGE) flags = 0;
          if (gpa === READ_ONLY_PAGE) flags = V | C.PTE_R | user;
          memory.writeU32(L0_RAM + page * 4, pte(gpa, flags));
          if (page < 64) memory.writeU32(L0_ALIAS + page * 4, pte(gpa, code));
        }
      }
      hart.reset(PRELUDE);
    },
  };
}
