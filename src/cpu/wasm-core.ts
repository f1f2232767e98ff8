/**
 * The WebAssembly tier of the interpreter: the common path of RV32IM (integer arithmetic, multiply and divide,
 * branches and jumps, loads and stores that hit the software TLB) as one WebAssembly function, emitted here as
 * bytes (no toolchain) and compiled where the hart runs. A fresh worker runs it at full speed from its first
 * slice, where JavaScript needs hundreds of milliseconds of V8 tiering first (ARCHITECTURE.md, "WebAssembly").
 *
 * It works on the hart's own state in host RAM (a `WasmMemory`): registers and the TLB's tag and delta
 * arrays live in the hart's area ({@link HartArea}), guest RAM in the VM's frames, and the TLB's deltas turn a
 * guest-virtual address into a host offset exactly as in hart.ts. Whatever it does not handle (SYSTEM, atomics,
 * fences, a TLB miss, a misaligned or MMIO access, an illegal encoding, a branch to a misaligned target) it
 * leaves to the JavaScript hart: it stops before that instruction and says so ({@link EXIT_INSN}).
 */

import { wasmApi, type WasmMemory, type WasmModule } from '../common/wasm-api.ts';

/** TLB entries per access kind (direct-mapped on the virtual page number); the hart's TLB has the same shape. */
export const TLB_SIZE = 1024;

// A hart area (mem/host-ram.ts, HART_AREA_BYTES): registers and exit words in the first 4 KiB, then the six TLB
// arrays of 4 KiB each.

/** Byte offsets in a hart area. */
export const AREA_X = 0;
export const AREA_PC = 128;
export const AREA_EXIT = 132;
/** The LR reservation: host offset of the reserved word, or -1; and the value LR read there. */
export const AREA_RESERVATION = 136;
export const AREA_RESERVED_VALUE = 140;
/** Loop-head counters ({@link LOOP_SAMPLE}): 256 words hashed by the loop head's host word address. */
export const AREA_LOOP_COUNTERS = 1024;
/**
 * Loop heads the block translator has code for, hashed as the counters: the host offset, or anything else.
 * A backward branch to one is always reported, so translated loops run translated from their next iteration.
 */
export const AREA_LOOP_HEADS = 2048;
/** Entries of the two loop-head tables. */
export const LOOP_SLOTS = 256;
export const AREA_READ_TAG = 4096;
export const AREA_READ_DELTA = 2 * 4096;
export const AREA_WRITE_TAG = 3 * 4096;
export const AREA_WRITE_DELTA = 4 * 4096;
export const AREA_EXEC_TAG = 5 * 4096;
export const AREA_EXEC_DELTA = 6 * 4096;

/** Why {@link WasmCore.run} returned (the word at AREA_EXIT): the budget is used up. */
export const EXIT_BUDGET = 0;
/** The instruction at the returned pc is left to the JavaScript hart (not executed, not counted). */
export const EXIT_INSN = 1;
/**
 * A taken backward branch or jump within one page was executed; the pc is its target (a loop head). Reported
 * for one in {@link LOOP_SAMPLE} executions of each loop head, so that loops do not leave WebAssembly on every
 * iteration; the block translator counts each report that many times.
 */
export const EXIT_LOOP = 2;
/** One loop-head execution in this many is reported (a power of two). */
export const LOOP_SAMPLE = 16;
/** The instruction PAUSE (a FENCE hint), which the JavaScript hart counts for its pause-loop exit. */
const PAUSE_INSN = 0x0100000f;

/** A hart's state in host RAM: where its area starts, and the memory that holds it. */
export interface HartArea {
  readonly memory: WasmMemory;
  /** Byte offset of the area ({@link HART_AREA_BYTES} long) in `memory`. */
  readonly offset: number;
}

/** The compiled tier, instantiated over one memory. */
export interface WasmCore {
  /**
   * Execute up to `budget` instructions from `pc` with the hart's registers and TLB at `area`. `dataCtx` and
   * `fetchCtx` are the TLB contexts of data accesses and fetches (hart.ts); with `loops` nonzero it returns after
   * a taken backward branch within a page ({@link EXIT_LOOP}). Returns the number executed; the pc to continue
   * from is at AREA_PC and the reason at AREA_EXIT.
   */
  run(area: number, pc: number, budget: number, dataCtx: number, fetchCtx: number, loops: number): number;
}

// ---- a small WebAssembly assembler ----

function uleb(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

function sleb(value: number): number[] {
  const out: number[] = [];
  let v = value | 0;
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

/** Opcodes used below (WebAssembly core spec, section 5.4). */
const OP = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  else: 0x05,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  brTable: 0x0e,
  return: 0x0f,
  select: 0x1b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Load: 0x28,
  i32Load8S: 0x2c,
  i32Load8U: 0x2d,
  i32Load16S: 0x2e,
  i32Load16U: 0x2f,
  i32Store: 0x36,
  i32Store8: 0x3a,
  i32Store16: 0x3b,
  i32Const: 0x41,
  i64Const: 0x42,
  i32Eqz: 0x45,
  i32Eq: 0x46,
  i32Ne: 0x47,
  i32LtS: 0x48,
  i32LtU: 0x49,
  i32GeS: 0x4e,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32Mul: 0x6c,
  i32DivS: 0x6d,
  i32DivU: 0x6e,
  i32RemS: 0x6f,
  i32RemU: 0x70,
  i32And: 0x71,
  i32Or: 0x72,
  i32Xor: 0x73,
  i32Shl: 0x74,
  i32ShrS: 0x75,
  i32ShrU: 0x76,
  i64Mul: 0x7e,
  i64ShrU: 0x88,
  i32WrapI64: 0xa7,
  i64ExtendI32S: 0xac,
  i64ExtendI32U: 0xad,
  /** Prefix of the threads proposal's atomic instructions. */
  atomic: 0xfe,
} as const;

/** Atomic opcodes after the 0xfe prefix (threads proposal). */
const ATOMIC = {
  fence: 0x03,
  i32Load: 0x10,
  rmwAdd: 0x1e,
  rmwAnd: 0x2c,
  rmwOr: 0x33,
  rmwXor: 0x3a,
  rmwXchg: 0x41,
  rmwCmpxchg: 0x48,
} as const;

const VOID = 0x40;
const I32 = 0x7f;

/** Function body under construction, with named labels for structured branches. */
class Body {
  readonly bytes: number[] = [];
  private readonly labels: string[] = [];

  op(...bytes: number[]): this {
    for (const b of bytes) this.bytes.push(b);
    return this;
  }
  get(local: number): this {
    return this.op(OP.localGet, ...uleb(local));
  }
  set(local: number): this {
    return this.op(OP.localSet, ...uleb(local));
  }
  tee(local: number): this {
    return this.op(OP.localTee, ...uleb(local));
  }
  i32(value: number): this {
    return this.op(OP.i32Const, ...sleb(value));
  }
  block(label: string): this {
    this.labels.push(label);
    return this.op(OP.block, VOID);
  }
  loop(label: string): this {
    this.labels.push(label);
    return this.op(OP.loop, VOID);
  }
  if(): this {
    this.labels.push('');
    return this.op(OP.if, VOID);
  }
  end(): this {
    this.labels.pop();
    return this.op(OP.end);
  }
  private depth(label: string): number {
    const at = this.labels.lastIndexOf(label);
    if (at < 0) throw new Error(`wasm-core: no label ${label}`);
    return this.labels.length - 1 - at;
  }
  br(label: string): this {
    return this.op(OP.br, ...uleb(this.depth(label)));
  }
  brIf(label: string): this {
    return this.op(OP.brIf, ...uleb(this.depth(label)));
  }
  brTable(labels: readonly string[], otherwise: string): this {
    this.op(OP.brTable, ...uleb(labels.length));
    for (const label of labels) this.op(...uleb(this.depth(label)));
    return this.op(...uleb(this.depth(otherwise)));
  }
  /** A memory access with natural alignment `align` (log2 bytes) and static `offset`. */
  mem(opcode: number, align: number, offset = 0): this {
    return this.op(opcode, align, ...uleb(offset));
  }
}

// ---- the interpreter function ----

// Parameters, then locals (all i32 except T64).
const AREA = 0;
const PC = 1;
const BUDGET = 2;
const DATA_CTX = 3;
const FETCH_CTX = 4;
const LOOPS = 5;
const N = 6;
const INSN = 7;
const RD = 8;
const A = 9;
const B = 10;
const IMM = 11;
const V = 12;
const ADDR = 13;
const IDX = 14;
const VPN = 15;
const FETCH_VPN = 16;
const FETCH_DELTA = 17;
const F3 = 18;
const TARGET = 19;
const I32_LOCALS = 14; // N .. TARGET

/** Emit the body of `run` (see {@link WasmCore.run}). */
function emitRun(): number[] {
  const c = new Body();

  /** Push the address of register field `shift` of the instruction (rd 7, rs1 15, rs2 20) in the area. */
  const regAddress = (shift: number): Body =>
    c.get(AREA).get(INSN).i32(shift).op(OP.i32ShrU).i32(31).op(OP.i32And).i32(2).op(OP.i32Shl).op(OP.i32Add);
  /** x[rd] = V (then x0 = 0 again: cheaper than a branch). */
  const writeRd = (): void => {
    c.get(AREA).get(RD).op(OP.i32Add).get(V).mem(OP.i32Store, 2, AREA_X);
    c.get(AREA).i32(0).mem(OP.i32Store, 2, AREA_X);
  };
  /** Count the instruction, go to pc + 4 and on to the next. */
  const next = (): void => {
    c.get(N).i32(1).op(OP.i32Add).set(N);
    c.get(PC).i32(4).op(OP.i32Add).set(PC);
    c.br('loop');
  };
  /**
   * ADDR = host offset of guest-virtual ADDR through the TLB arrays at `tagAt` / `deltaAt` in the current data
   * context, or leave the instruction to JavaScript (a miss, or misaligned for `size` bytes).
   */
  const translateData = (tagAt: number, deltaAt: number, size: number): void => {
    if (size > 1)
      c.get(ADDR)
        .i32(size - 1)
        .op(OP.i32And)
        .brIf('insn');
    c.get(ADDR).i32(12).op(OP.i32ShrU).tee(VPN);
    c.i32(TLB_SIZE - 1)
      .op(OP.i32And)
      .i32(2)
      .op(OP.i32Shl)
      .get(AREA)
      .op(OP.i32Add)
      .set(IDX);
    c.get(IDX).mem(OP.i32Load, 2, tagAt).get(VPN).get(DATA_CTX).op(OP.i32Or).op(OP.i32Ne).brIf('insn');
    c.get(ADDR).get(IDX).mem(OP.i32Load, 2, deltaAt).op(OP.i32Add).set(ADDR);
  };

  c.i32(-1).set(FETCH_VPN); // no page fetched yet (a vpn is at most 0xfffff)
  c.block('budget');
  c.block('looped');
  c.block('insn');
  c.loop('loop');

  // The budget.
  c.get(N).get(BUDGET).op(OP.i32GeS).brIf('budget');
  // Fetch through the exec TLB (re-looked-up when the page changes).
  c.get(PC).i32(12).op(OP.i32ShrU).tee(VPN).get(FETCH_VPN).op(OP.i32Ne).if();
  c.get(VPN)
    .i32(TLB_SIZE - 1)
    .op(OP.i32And)
    .i32(2)
    .op(OP.i32Shl)
    .get(AREA)
    .op(OP.i32Add)
    .set(IDX);
  c.get(IDX).mem(OP.i32Load, 2, AREA_EXEC_TAG).get(VPN).get(FETCH_CTX).op(OP.i32Or).op(OP.i32Ne).brIf('insn');
  c.get(IDX).mem(OP.i32Load, 2, AREA_EXEC_DELTA).set(FETCH_DELTA);
  c.get(VPN).set(FETCH_VPN);
  c.end();
  c.get(PC).get(FETCH_DELTA).op(OP.i32Add).mem(OP.i32Load, 2).set(INSN);
  // Fields every format shares.
  c.get(INSN).i32(7).op(OP.i32ShrU).i32(31).op(OP.i32And).i32(2).op(OP.i32Shl).set(RD); // rd * 4
  c.get(INSN).i32(12).op(OP.i32ShrU).i32(7).op(OP.i32And).set(F3);
  regAddress(15).mem(OP.i32Load, 2, AREA_X).set(A);
  regAddress(20).mem(OP.i32Load, 2, AREA_X).set(B);
  c.get(INSN).i32(20).op(OP.i32ShrS).set(IMM); // the I-type immediate
  // 32-bit encodings only (the low two bits 11), then dispatch on opcode bits 6:2.
  c.get(INSN).i32(3).op(OP.i32And).i32(3).op(OP.i32Ne).brIf('insn');
  const cases: Record<number, string> = {
    0x00: 'load',
    0x03: 'miscMem',
    0x04: 'opImm',
    0x05: 'auipc',
    0x08: 'store',
    0x0b: 'amo',
    0x0c: 'op',
    0x0d: 'lui',
    0x18: 'branch',
    0x19: 'jalr',
    0x1b: 'jal',
  };
  const order = ['load', 'miscMem', 'opImm', 'auipc', 'store', 'amo', 'op', 'lui', 'branch', 'jalr', 'jal'];
  for (const name of [...order].reverse()) c.block(name);
  c.get(INSN)
    .i32(2)
    .op(OP.i32ShrU)
    .i32(31)
    .op(OP.i32And)
    .brTable(
      Array.from({ length: 32 }, (_, i) => cases[i] ?? 'insn'),
      'insn',
    );

  // LOAD
  c.end();
  c.get(A).get(IMM).op(OP.i32Add).set(ADDR);
  c.block('lhu').block('lbu').block('lw').block('lh').block('lb');
  c.get(F3).brTable(['lb', 'lh', 'lw', 'insn', 'lbu', 'lhu'], 'insn');
  const load = (opcode: number, size: number, align: number): void => {
    translateData(AREA_READ_TAG, AREA_READ_DELTA, size);
    c.get(ADDR).mem(opcode, align).set(V);
    writeRd();
    next();
  };
  c.end();
  load(OP.i32Load8S, 1, 0);
  c.end();
  load(OP.i32Load16S, 2, 1);
  c.end();
  load(OP.i32Load, 4, 2);
  c.end();
  load(OP.i32Load8U, 1, 0);
  c.end();
  load(OP.i32Load16U, 2, 1);

  // MISC-MEM: FENCE is a full fence (as the JavaScript hart's); PAUSE, FENCE.I and the rest are JavaScript's.
  c.end();
  c.get(F3).brIf('insn');
  c.get(INSN).i32(PAUSE_INSN).op(OP.i32Eq).brIf('insn');
  c.op(OP.atomic, ATOMIC.fence, 0);
  next();

  // OP-IMM: the same ALU as OP with B = the immediate; shifts must have a zero funct7 (srai: 0x20).
  c.end();
  c.block('immShift');
  c.get(F3).i32(1).op(OP.i32Eq).get(F3).i32(5).op(OP.i32Eq).op(OP.i32Or).brIf('immShift');
  c.get(IMM).set(B);
  alu(c, false, writeRd, next);
  c.end(); // immShift: slli (funct7 0), srli (0), srai (0x20)
  c.get(INSN).i32(25).op(OP.i32ShrU).set(V); // funct7
  c.get(V).i32(0).op(OP.i32Ne).if();
  c.get(F3).i32(5).op(OP.i32Ne).get(V).i32(0x20).op(OP.i32Ne).op(OP.i32Or).brIf('insn');
  c.end();
  c.get(IMM).i32(31).op(OP.i32And).set(B);
  c.get(F3).i32(1).op(OP.i32Eq).if();
  c.get(A).get(B).op(OP.i32Shl).set(V);
  c.op(OP.else);
  c.get(A).get(B).op(OP.i32ShrS).get(A).get(B).op(OP.i32ShrU).get(INSN).i32(0x4000_0000).op(OP.i32And);
  c.op(OP.select).set(V);
  c.end();
  writeRd();
  next();

  // AUIPC
  c.end();
  c.get(PC).get(INSN).i32(0xffff_f000).op(OP.i32And).op(OP.i32Add).set(V);
  writeRd();
  next();

  // STORE
  c.end();
  c.get(INSN).i32(25).op(OP.i32ShrS).i32(5).op(OP.i32Shl);
  c.get(INSN).i32(7).op(OP.i32ShrU).i32(31).op(OP.i32And).op(OP.i32Or);
  c.get(A).op(OP.i32Add).set(ADDR);
  c.block('sw').block('sh').block('sb');
  c.get(F3).brTable(['sb', 'sh', 'sw'], 'insn');
  const store = (opcode: number, size: number, align: number): void => {
    translateData(AREA_WRITE_TAG, AREA_WRITE_DELTA, size);
    c.get(ADDR).get(B).mem(opcode, align);
    next();
  };
  c.end();
  store(OP.i32Store8, 1, 0);
  c.end();
  store(OP.i32Store16, 2, 1);
  c.end();
  store(OP.i32Store, 4, 2);

  // AMO (word only): LR, SC and the read-modify-write operations through the TLB, as hart.ts execAtomic.
  c.end();
  amo(c, writeRd, next, translateData);

  // OP: funct7 0 (base), 0x20 (sub, sra), 1 (M extension); anything else is JavaScript's to reject.
  c.end();
  c.get(INSN).i32(25).op(OP.i32ShrU).set(V);
  c.block('mulDiv');
  c.get(V).i32(1).op(OP.i32Eq).brIf('mulDiv');
  c.get(V).i32(0).op(OP.i32Ne).if();
  c.get(V).i32(0x20).op(OP.i32Ne).brIf('insn');
  c.get(F3).i32(0).op(OP.i32Ne).get(F3).i32(5).op(OP.i32Ne).op(OP.i32And).brIf('insn');
  c.end();
  alu(c, true, writeRd, next);
  c.end(); // mulDiv
  mulDiv(c, writeRd, next);

  // LUI
  c.end();
  c.get(INSN).i32(0xffff_f000).op(OP.i32And).set(V);
  writeRd();
  next();

  // BRANCH: B-type immediate, then the comparison by funct3 (2 and 3 are reserved).
  c.end();
  c.get(INSN).i32(31).op(OP.i32ShrS).i32(12).op(OP.i32Shl);
  c.get(INSN).i32(4).op(OP.i32Shl).i32(0x800).op(OP.i32And).op(OP.i32Or);
  c.get(INSN).i32(20).op(OP.i32ShrU).i32(0x7e0).op(OP.i32And).op(OP.i32Or);
  c.get(INSN).i32(7).op(OP.i32ShrU).i32(0x1e).op(OP.i32And).op(OP.i32Or).set(IMM);
  c.block('taken');
  c.block('bgeu').block('bltu').block('bge').block('blt').block('bne').block('beq');
  c.get(F3).brTable(['beq', 'bne', 'insn', 'insn', 'blt', 'bge', 'bltu', 'bgeu'], 'insn');
  for (const compare of [OP.i32Eq, OP.i32Ne, OP.i32LtS, OP.i32GeS, OP.i32LtU, OP.i32GeU]) {
    c.end();
    c.get(A).get(B).op(compare).brIf('taken');
    next();
  }
  c.end(); // taken
  c.get(PC).get(IMM).op(OP.i32Add).set(TARGET);
  jumpTo(c);

  // JALR: funct3 must be 0; the target's bit 0 is cleared, then it must be 4-byte aligned.
  c.end();
  c.get(F3).brIf('insn');
  c.get(A).get(IMM).op(OP.i32Add).i32(-2).op(OP.i32And).set(TARGET);
  c.get(TARGET).i32(3).op(OP.i32And).brIf('insn');
  c.get(PC).i32(4).op(OP.i32Add).set(V);
  writeRd();
  c.get(N).i32(1).op(OP.i32Add).set(N);
  c.get(TARGET).set(PC);
  c.br('loop');

  // JAL: J-type immediate.
  c.end();
  c.get(INSN).i32(31).op(OP.i32ShrS).i32(20).op(OP.i32Shl);
  c.get(INSN).i32(0xff000).op(OP.i32And).op(OP.i32Or);
  c.get(INSN).i32(9).op(OP.i32ShrU).i32(0x800).op(OP.i32And).op(OP.i32Or);
  c.get(INSN).i32(20).op(OP.i32ShrU).i32(0x7fe).op(OP.i32And).op(OP.i32Or).set(IMM);
  c.get(PC).get(IMM).op(OP.i32Add).set(TARGET);
  c.get(TARGET).i32(3).op(OP.i32And).brIf('insn');
  c.get(PC).i32(4).op(OP.i32Add).set(V);
  writeRd();
  jumpTo(c);

  c.end(); // loop (never falls through: every path branches)
  c.end(); // insn: leave this instruction to JavaScript
  c.get(AREA).get(PC).mem(OP.i32Store, 2, AREA_PC);
  c.get(AREA).i32(EXIT_INSN).mem(OP.i32Store, 2, AREA_EXIT);
  c.get(N).op(OP.return);
  c.end(); // looped: a backward branch within the page was taken
  c.get(AREA).get(PC).mem(OP.i32Store, 2, AREA_PC);
  c.get(AREA).i32(EXIT_LOOP).mem(OP.i32Store, 2, AREA_EXIT);
  c.get(N).op(OP.return);
  c.end(); // budget
  c.get(AREA).get(PC).mem(OP.i32Store, 2, AREA_PC);
  c.get(AREA).i32(EXIT_BUDGET).mem(OP.i32Store, 2, AREA_EXIT);
  c.get(N);
  c.op(OP.end);
  return c.bytes;
}

/**
 * A taken branch or JAL to TARGET (IMM is the offset): a misaligned target is JavaScript's to trap on; a
 * backward one within the page ends the run when `loops` asks for loop heads.
 */
function jumpTo(c: Body): void {
  c.get(TARGET).i32(3).op(OP.i32And).brIf('insn');
  c.get(N).i32(1).op(OP.i32Add).set(N);
  c.get(PC).set(V);
  c.get(TARGET).set(PC);
  c.get(LOOPS)
    .get(IMM)
    .i32(0)
    .op(OP.i32LtS)
    .op(OP.i32And)
    .get(TARGET)
    .get(V)
    .op(OP.i32Xor)
    .i32(12)
    .op(OP.i32ShrU)
    .op(OP.i32Eqz)
    .op(OP.i32And)
    .if();
  // A loop head (host offset in ADDR): reported at once if translated, else counted (hashed by host word
  // address, as the block cache does) and reported one time in LOOP_SAMPLE.
  c.get(TARGET).get(FETCH_DELTA).op(OP.i32Add).set(ADDR);
  c.get(ADDR)
    .i32(2)
    .op(OP.i32ShrU)
    .i32(LOOP_SLOTS - 1)
    .op(OP.i32And)
    .i32(2)
    .op(OP.i32Shl)
    .get(AREA)
    .op(OP.i32Add)
    .set(IDX);
  c.get(IDX).mem(OP.i32Load, 2, AREA_LOOP_HEADS).get(ADDR).op(OP.i32Eq).brIf('looped');
  c.get(IDX);
  c.get(IDX).mem(OP.i32Load, 2, AREA_LOOP_COUNTERS).i32(1).op(OP.i32Add).tee(V);
  c.mem(OP.i32Store, 2, AREA_LOOP_COUNTERS);
  c.get(V)
    .i32(LOOP_SAMPLE - 1)
    .op(OP.i32And)
    .op(OP.i32Eqz)
    .brIf('looped');
  c.end();
  c.br('loop');
}

/**
 * AMO.W by funct5 with the word at x[rs1] (A) and operand x[rs2] (B). LR.W needs read permission, everything
 * else write permission (a store's TLB entry); misaligned, missing and MMIO words, AMOMIN/MAX and the reserved
 * encodings are JavaScript's. The reservation is the area's, shared with the JavaScript hart.
 */
function amo(
  c: Body,
  writeRd: () => void,
  next: () => void,
  translateData: (tagAt: number, deltaAt: number, size: number) => void,
): void {
  c.get(F3).i32(2).op(OP.i32Ne).brIf('insn');
  c.get(A).set(ADDR);
  c.get(INSN).i32(27).op(OP.i32ShrU).set(IMM); // funct5
  c.block('rmw');
  c.block('sc');
  c.block('lr');
  c.get(IMM).brTable(
    ['rmw', 'rmw', 'lr', 'sc', 'rmw', 'insn', 'insn', 'insn', 'rmw', 'insn', 'insn', 'insn', 'rmw'],
    'insn',
  );
  c.end(); // LR.W (rs2 must be 0)
  c.get(INSN).i32(20).op(OP.i32ShrU).i32(31).op(OP.i32And).brIf('insn');
  translateData(AREA_READ_TAG, AREA_READ_DELTA, 4);
  c.get(ADDR).op(OP.atomic, ATOMIC.i32Load, 2, 0).set(V);
  c.get(AREA).get(ADDR).mem(OP.i32Store, 2, AREA_RESERVATION);
  c.get(AREA).get(V).mem(OP.i32Store, 2, AREA_RESERVED_VALUE);
  writeRd();
  next();
  c.end(); // SC.W: succeeds only if the reservation is this word's and it still holds the value LR read
  translateData(AREA_WRITE_TAG, AREA_WRITE_DELTA, 4);
  c.i32(1).set(V);
  c.get(AREA).mem(OP.i32Load, 2, AREA_RESERVATION).get(ADDR).op(OP.i32Eq).if();
  c.get(AREA).mem(OP.i32Load, 2, AREA_RESERVED_VALUE).set(TARGET);
  c.get(ADDR).get(TARGET).get(B).op(OP.atomic, ATOMIC.rmwCmpxchg, 2, 0);
  c.get(TARGET).op(OP.i32Ne).set(V);
  c.end();
  c.get(AREA).i32(-1).mem(OP.i32Store, 2, AREA_RESERVATION);
  writeRd();
  next();
  c.end(); // AMOSWAP, AMOADD, AMOXOR, AMOOR, AMOAND
  translateData(AREA_WRITE_TAG, AREA_WRITE_DELTA, 4);
  c.block('and').block('or').block('xor').block('add').block('swap');
  c.get(IMM).brTable(
    ['add', 'swap', 'insn', 'insn', 'xor', 'insn', 'insn', 'insn', 'or', 'insn', 'insn', 'insn', 'and'],
    'insn',
  );
  const rmw = (opcode: number): void => {
    c.end();
    c.get(ADDR).get(B).op(OP.atomic, opcode, 2, 0).set(V);
    c.get(AREA).mem(OP.i32Load, 2, AREA_RESERVATION).get(ADDR).op(OP.i32Eq).if();
    c.get(AREA).i32(-1).mem(OP.i32Store, 2, AREA_RESERVATION);
    c.end();
    writeRd();
    next();
  };
  rmw(ATOMIC.rmwXchg);
  rmw(ATOMIC.rmwAdd);
  rmw(ATOMIC.rmwXor);
  rmw(ATOMIC.rmwOr);
  rmw(ATOMIC.rmwAnd);
}

/** The eight ALU operations by funct3 on A and B (OP: funct7 bit 30 selects sub and sra). */
function alu(c: Body, op: boolean, writeRd: () => void, next: () => void): void {
  const names = ['add', 'sll', 'slt', 'sltu', 'xor', 'sr', 'or', 'and'];
  for (const name of [...names].reverse()) c.block(name);
  c.get(F3).brTable(names, 'and');
  const emit = (compute: () => void): void => {
    c.end();
    compute();
    c.set(V);
    writeRd();
    next();
  };
  const bit30 = (): Body => c.get(INSN).i32(0x4000_0000).op(OP.i32And);
  emit(() => {
    if (op) {
      c.get(A).get(B).op(OP.i32Sub).get(A).get(B).op(OP.i32Add);
      bit30().op(OP.select);
    } else c.get(A).get(B).op(OP.i32Add);
  });
  emit(() => c.get(A).get(B).op(OP.i32Shl));
  emit(() => c.get(A).get(B).op(OP.i32LtS));
  emit(() => c.get(A).get(B).op(OP.i32LtU));
  emit(() => c.get(A).get(B).op(OP.i32Xor));
  emit(() => {
    c.get(A).get(B).op(OP.i32ShrS).get(A).get(B).op(OP.i32ShrU);
    bit30().op(OP.select);
  });
  emit(() => c.get(A).get(B).op(OP.i32Or));
  emit(() => c.get(A).get(B).op(OP.i32And));
}

/** MUL .. REMU by funct3, with the results the spec defines for division by zero and overflow (table 7.1). */
function mulDiv(c: Body, writeRd: () => void, next: () => void): void {
  const names = ['mul', 'mulh', 'mulhsu', 'mulhu', 'div', 'divu', 'rem', 'remu'];
  for (const name of [...names].reverse()) c.block(name);
  c.get(F3).brTable(names, 'remu');
  const emit = (compute: () => void): void => {
    c.end();
    compute();
    c.set(V);
    writeRd();
    next();
  };
  const high = (extendA: number, extendB: number): void => {
    c.get(A).op(extendA).get(B).op(extendB).op(OP.i64Mul).op(OP.i64Const, 32).op(OP.i64ShrU);
    c.op(OP.i32WrapI64);
  };
  /** B is zero: push 1. */
  const zero = (): Body => c.get(B).op(OP.i32Eqz);
  /** A is INT32_MIN and B is -1 (signed overflow): push 1. */
  const overflow = (): Body =>
    c.get(A).i32(-0x8000_0000).op(OP.i32Eq).get(B).i32(-1).op(OP.i32Eq).op(OP.i32And);
  emit(() => c.get(A).get(B).op(OP.i32Mul));
  emit(() => high(OP.i64ExtendI32S, OP.i64ExtendI32S));
  emit(() => high(OP.i64ExtendI32S, OP.i64ExtendI32U));
  emit(() => high(OP.i64ExtendI32U, OP.i64ExtendI32U));
  // div: -1 for a zero divisor, the dividend on overflow.
  emit(() => {
    zero().if();
    c.i32(-1).set(V);
    c.op(OP.else);
    overflow().if();
    c.get(A).set(V);
    c.op(OP.else);
    c.get(A).get(B).op(OP.i32DivS).set(V);
    c.end();
    c.end();
    c.get(V);
  });
  emit(() => {
    zero().if();
    c.i32(-1).set(V);
    c.op(OP.else);
    c.get(A).get(B).op(OP.i32DivU).set(V);
    c.end();
    c.get(V);
  });
  // rem: the dividend for a zero divisor, 0 on overflow (i32.rem_s gives 0 there and traps only on zero).
  emit(() => {
    zero().if();
    c.get(A).set(V);
    c.op(OP.else);
    c.get(A).get(B).op(OP.i32RemS).set(V);
    c.end();
    c.get(V);
  });
  emit(() => {
    zero().if();
    c.get(A).set(V);
    c.op(OP.else);
    c.get(A).get(B).op(OP.i32RemU).set(V);
    c.end();
    c.get(V);
  });
}

// ---- the module ----

function section(id: number, content: number[]): number[] {
  return [id, ...uleb(content.length), ...content];
}

function name(text: string): number[] {
  return [...uleb(text.length), ...Array.from(text, (ch) => ch.charCodeAt(0))];
}

/**
 * The module's bytes: imports `env.memory` (shared or not, as the host RAM is), exports `run`. Exported for
 * tests; {@link wasmCore} compiles and caches it.
 */
export function wasmCoreModule(shared: boolean): Uint8Array<ArrayBuffer> {
  const body = [...uleb(1), ...uleb(I32_LOCALS), I32, ...emitRun()];
  // A shared memory must declare a maximum: the largest a 32-bit memory can have.
  const limits = shared ? [0x03, 0, ...uleb(65536)] : [0x00, 0];
  const bytes = [
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [1, 0x60, 6, I32, I32, I32, I32, I32, I32, 1, I32]),
    ...section(2, [1, ...name('env'), ...name('memory'), 0x02, ...limits]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...name('run'), 0x00, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ];
  return new Uint8Array(bytes);
}

const modules = new Map<boolean, WasmModule | null>();
const instances = new WeakMap<WasmMemory, WasmCore>();

/**
 * Start compiling the tier for memory that is `shared` or not, off this thread, so that the first hart built
 * here finds it compiled (a thread that waits for its VM anyway: a spare vCPU worker, a VM host reading its
 * snapshot). Building a hart before it is done compiles it there and then, as without this. Resolves when done
 * (compiled or not).
 */
export async function precompileWasmCore(shared: boolean): Promise<void> {
  if (modules.has(shared)) return;
  const api = wasmApi();
  if (typeof api.compile !== 'function') return;
  await api.compile(wasmCoreModule(shared)).then(
    (module) => {
      if (!modules.has(shared)) modules.set(shared, module);
    },
    () => undefined, // not compilable here: wasmCore finds out and goes without
  );
}

/**
 * The tier for harts whose state is in `memory`, or undefined where WebAssembly cannot be compiled (a Content
 * Security Policy without 'wasm-unsafe-eval', a page's main thread that refuses synchronous compiles of this
 * size): the hart then interprets in JavaScript only. Compiled once per thread and kind of memory, instantiated
 * once per memory.
 */
export function wasmCore(memory: WasmMemory): WasmCore | undefined {
  const existing = instances.get(memory);
  if (existing) return existing;
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  let module = modules.get(shared);
  if (module === undefined) {
    try {
      module = new (wasmApi().Module)(wasmCoreModule(shared));
    } catch {
      module = null;
    }
    modules.set(shared, module);
  }
  if (module === null) return undefined;
  const instance = new (wasmApi().Instance)(module, { env: { memory } });
  const core = instance.exports as unknown as WasmCore;
  instances.set(memory, core);
  return core;
}
