/**
 * The block translator: turns a straight-line run of guest instructions (a basic block) into a JavaScript
 * function built with `new Function`, so V8 compiles hot guest code to machine code.
 *
 * A block starts at any instruction and runs to the first branch or jump (included), to the end of its 4 KiB
 * page, or to the first instruction the translator leaves to the interpreter (excluded): SYSTEM (ECALL, EBREAK,
 * xRET, WFI, SFENCE.VMA, CSRs), FENCE.I, PAUSE and anything illegal. Those either change state a block assumes
 * constant (privilege, translation context, interrupt enables) or are rare, so the interpreter stays the one
 * implementation of them.
 *
 * The generated code is position independent: the block's virtual pc is an argument (`pc0`), so one translation
 * serves every virtual alias of the physical code it came from. Registers the block touches live in locals and are
 * written back once, at its single exit. Loads and stores inline the interpreter's TLB fast path (same tags, same
 * deltas) and call the interpreter's own slow paths otherwise, so page walks, MMIO, misaligned accesses and traps
 * behave exactly as in the interpreter. A trap ends the block with the hart's pc at the handler and the faulting
 * instruction counted, as the interpreter counts it. A block whose last instruction branches back to its first
 * loops inside the function while the caller's instruction budget allows another full pass.
 */
import { CAUSE_MISALIGNED_FETCH } from './csr.ts';

/** What translated code calls on its hart (the hart implements it; the members exist for translated code). */
export interface BlockHost {
  /** The pc; translated code sets it before a slow path (trap pc) and at its exit (next pc). */
  pc: number;
  /** Set when the last slow path took a trap. */
  readonly trapped: boolean;
  /** Translation context of data accesses, folded into TLB tags. Constant within a block. */
  readonly dataCtx: number;
  /** The interpreter's load slow path: value zero-extended (size 4: int32); `trapped` set on a trap. */
  loadSlow(gva: number, size: 1 | 2 | 4): number;
  /** The store slow path. True when the block must end here: a trap, or the store hit translated code. */
  blockStore(gva: number, value: number, size: 1 | 2 | 4): boolean;
  /** An A-extension instruction on the register file (`x`). True when the block must end here. */
  blockAtomic(insn: number): boolean;
  /** A FENCE that orders anything (`fenceOrders`): the host's full barrier. */
  fullFence(): void;
  /** Take a trap at the current pc. */
  trap(cause: number, tval: number): void;
}

/** The arrays translated code works on: the hart's registers, guest RAM views and data TLBs. */
export interface BlockEnvironment {
  readonly host: BlockHost;
  readonly x: Int32Array;
  readonly mem8: Uint8Array;
  readonly mem16: Uint16Array;
  readonly mem32: Int32Array;
  readonly readTag: Int32Array;
  readonly readDelta: Int32Array;
  readonly writeTag: Int32Array;
  readonly writeDelta: Int32Array;
  /** TLB index mask (TLB size - 1). */
  readonly tlbMask: number;
}

/**
 * A translated block: run it at virtual pc `pc0` with at most `avail` instructions allowed (at least the block's
 * length). Returns the instructions executed (a trapping one included) and leaves the next pc in the hart's pc.
 */
export type BlockFunction = (pc0: number, avail: number) => number;

/** Longest block, in instructions (bounds generated code size and the budget a block needs to start). */
export const MAX_BLOCK_INSNS = 64;

/** How an instruction takes part in a block. */
const BODY = 0;
/** Ends the block and is part of it (jumps). Conditional branches are BODY: the block goes on after them. */
const END = 1;
/** Ends the block before it: the interpreter executes it. */
const STOP = 2;

/** PAUSE (Zihintpause): the interpreter counts them to detect spinning, so blocks leave them to it. */
const PAUSE_INSN = 0x0100000f;

/** FENCE's predecessor set (insn[27:24]: PI PO PR PW). */
const FENCE_PRED = 0x0f000000;
/** FENCE's successor set (insn[23:20]: SI SO SR SW). */
const FENCE_SUCC = 0x00f00000;

/**
 * True when a FENCE (MISC-MEM, funct3 0) orders anything: both its sets are non-empty. PAUSE (pred W, succ
 * empty) and other hints order nothing. See `Hart.fullFence` for what the host must do for the others.
 */
export function fenceOrders(insn: number): boolean {
  return (insn & FENCE_PRED) !== 0 && (insn & FENCE_SUCC) !== 0;
}

/** The valid AMO funct5 values of RV32A with funct3 = 2 (LR.W needs rs2 = 0). */
const AMO_FUNCT5 = new Set([0x00, 0x01, 0x02, 0x03, 0x04, 0x08, 0x0c, 0x10, 0x14, 0x18, 0x1c]);

function classify(insn: number): number {
  const f3 = (insn >> 12) & 7;
  const f7 = insn >>> 25;
  switch (insn & 0x7f) {
    case 0x13: // OP-IMM
      if (f3 === 1) return f7 === 0 ? BODY : STOP;
      if (f3 === 5) return f7 === 0 || f7 === 0x20 ? BODY : STOP;
      return BODY;
    case 0x33: // OP
      return f7 === 0 || f7 === 1 || (f7 === 0x20 && (f3 === 0 || f3 === 5)) ? BODY : STOP;
    case 0x37: // LUI
    case 0x17: // AUIPC
      return BODY;
    case 0x03: // LOAD
      return f3 === 3 || f3 >= 6 ? STOP : BODY;
    case 0x23: // STORE
      return f3 <= 2 ? BODY : STOP;
    case 0x63: // BRANCH
      return f3 === 2 || f3 === 3 ? STOP : BODY;
    case 0x6f: // JAL
      return END;
    case 0x67: // JALR
      return f3 === 0 ? END : STOP;
    case 0x2f: {
      // AMO
      const funct5 = insn >>> 27;
      if (f3 !== 2 || !AMO_FUNCT5.has(funct5)) return STOP;
      return funct5 === 0x02 && ((insn >> 20) & 31) !== 0 ? STOP : BODY;
    }
    case 0x0f: // MISC-MEM: plain FENCE is a no-op, as in the interpreter
      return f3 === 0 && insn !== PAUSE_INSN ? BODY : STOP;
    default:
      return STOP;
  }
}

/** The extent of a block: which words it covers and which it depends on. */
export interface BlockPlan {
  /** Instructions in the block (0: the first instruction is one the interpreter must execute). */
  readonly len: number;
  /**
   * The instruction words the translation was made from: the block's own, plus the word that ended it when
   * that one was left to the interpreter (so a changed word there is noticed too).
   */
  readonly words: Int32Array;
  /** Some branch or jump in the block goes back to its first instruction: the function loops by itself. */
  readonly loops: boolean;
}

/** Plan the block starting at word `wordIndex` of `mem32` (a host offset / 4); it never leaves its 4 KiB page. */
export function planBlock(mem32: Int32Array, wordIndex: number): BlockPlan {
  let len = 0;
  let seen = 0;
  for (;;) {
    const insn = mem32[wordIndex + len];
    seen++;
    const kind = classify(insn);
    if (kind === STOP) break;
    len++;
    if (kind === END || len === MAX_BLOCK_INSNS || ((wordIndex + len) & 1023) === 0) break;
  }
  let loops = false;
  for (let i = 0; i < len; i++) {
    const insn = mem32[wordIndex + i];
    const opcode = insn & 0x7f;
    if ((opcode === 0x63 && immB(insn) === -4 * i) || (opcode === 0x6f && immJ(insn) === -4 * i))
      loops = true;
  }
  return { len, words: mem32.slice(wordIndex, wordIndex + seen), loops };
}

/** Sign-extended immediates (unprivileged spec section 2.3). */
function immI(insn: number): number {
  return insn >> 20;
}

function immS(insn: number): number {
  return ((insn >> 25) << 5) | ((insn >> 7) & 31);
}

function immB(insn: number): number {
  return (
    ((insn >> 31) << 12) |
    (((insn >> 7) & 1) << 11) |
    (((insn >> 25) & 0x3f) << 5) |
    (((insn >> 8) & 0xf) << 1)
  );
}

function immJ(insn: number): number {
  return ((insn >> 31) << 20) | (insn & 0xff000) | (((insn >> 20) & 1) << 11) | (((insn >> 21) & 0x3ff) << 1);
}

/** JavaScript for `pc0 + offset` as an int32. */
function pcAt(offset: number): string {
  return offset === 0 ? 'pc0' : `(pc0 + ${offset}) | 0`;
}

/** A load's value from the raw access result `t` (u8/u16 zero-extended, or int32), per funct3. */
const LOAD_EXTEND = ['(t << 24) >> 24', '(t << 16) >> 16', 't', '', 't & 0xff', 't & 0xffff'];
const LOAD_SIZE = [1, 2, 4, 0, 1, 2];
const SIZE_VIEW: Record<number, string> = { 1: 'm8', 2: 'm16', 4: 'm32' };
const SIZE_SHIFT: Record<number, string> = { 1: '', 2: ' >> 1', 4: ' >> 2' };
const SIZE_ALIGNED: Record<number, string> = { 1: '', 2: ' && (a & 1) === 0', 4: ' && (a & 3) === 0' };

const BRANCH_CONDITION: Record<number, (a: string, b: string) => string> = {
  0: (a, b) => `${a} === ${b}`,
  1: (a, b) => `${a} !== ${b}`,
  4: (a, b) => `${a} < ${b}`,
  5: (a, b) => `${a} >= ${b}`,
  6: (a, b) => `(${a} >>> 0) < (${b} >>> 0)`,
  7: (a, b) => `(${a} >>> 0) >= (${b} >>> 0)`,
};

/** OP (funct7 0 and 0x20) and M-extension expressions on operands `a` and `b`. */
function opExpression(f7: number, f3: number, a: string, b: string): string {
  if (f7 === 1) {
    switch (f3) {
      case 0:
        return `Math.imul(${a}, ${b})`;
      case 1:
        return `mulh(${a}, ${b})`;
      case 2:
        return `mulhsu(${a}, ${b})`;
      case 3:
        return `mulhu(${a}, ${b})`;
      case 4:
        return `${b} === 0 ? -1 : ${a} === -2147483648 && ${b} === -1 ? ${a} : (${a} / ${b}) | 0`;
      case 5:
        return `${b} === 0 ? -1 : ((${a} >>> 0) / (${b} >>> 0)) | 0`;
      case 6:
        return `${b} === 0 ? ${a} : ${a} === -2147483648 && ${b} === -1 ? 0 : (${a} % ${b}) | 0`;
      default:
        return `${b} === 0 ? ${a} : ((${a} >>> 0) % (${b} >>> 0)) | 0`;
    }
  }
  if (f7 === 0x20) return f3 === 0 ? `(${a} - ${b}) | 0` : `${a} >> ${b}`;
  switch (f3) {
    case 0:
      return `(${a} + ${b}) | 0`;
    case 1:
      return `${a} << ${b}`;
    case 2:
      return `${a} < ${b} ? 1 : 0`;
    case 3:
      return `(${a} >>> 0) < (${b} >>> 0) ? 1 : 0`;
    case 4:
      return `${a} ^ ${b}`;
    case 5:
      return `(${a} >>> ${b}) | 0`;
    case 6:
      return `${a} | ${b}`;
    default:
      return `${a} & ${b}`;
  }
}

/** OP-IMM expressions on operand `a` (immediate `imm`). */
function opImmExpression(f3: number, insn: number, a: string): string {
  const imm = immI(insn);
  const shamt = imm & 31;
  switch (f3) {
    case 0:
      return `(${a} + ${imm}) | 0`;
    case 1:
      return `${a} << ${shamt}`;
    case 2:
      return `${a} < ${imm} ? 1 : 0`;
    case 3:
      return `(${a} >>> 0) < ${imm >>> 0} ? 1 : 0`;
    case 4:
      return `${a} ^ ${imm}`;
    case 5:
      return insn >>> 25 === 0 ? `(${a} >>> ${shamt}) | 0` : `${a} >> ${shamt}`;
    case 6:
      return `${a} | ${imm}`;
    default:
      return `${a} & ${imm}`;
  }
}

/**
 * Forward branches that can jump within the block: a target inside it, reached by branches that all lie in one
 * range that nests with the others (JavaScript expresses forward jumps as `break` out of labeled blocks, which
 * nest). Returns, per target index, the index of its first branch; other branches leave the block.
 */
function internalTargets(words: Int32Array, len: number): Map<number, number> {
  const firstSource = new Map<number, number>();
  for (let i = 0; i < len; i++) {
    const insn = words[i];
    if ((insn & 0x7f) !== 0x63) continue;
    const offset = immB(insn);
    if ((offset & 3) !== 0 || offset <= 0) continue;
    const target = i + offset / 4;
    if (target >= len) continue;
    if (!firstSource.has(target)) firstSource.set(target, i);
  }
  // Keep a target's range [first source, target) only if it nests with every range kept before it.
  const kept = new Map<number, number>();
  for (const target of [...firstSource.keys()].sort((a, b) => a - b)) {
    const from = firstSource.get(target)!;
    let nests = true;
    for (const [otherTarget, otherFrom] of kept) {
      const crosses =
        (from < otherFrom && otherFrom < target && target < otherTarget) ||
        (otherFrom < from && from < otherTarget && otherTarget < target);
      if (crosses) nests = false;
    }
    if (nests) kept.set(target, from);
  }
  return kept;
}

/** The register an instruction of a block writes (0: none). */
function destination(insn: number): number {
  switch (insn & 0x7f) {
    case 0x13:
    case 0x33:
    case 0x37:
    case 0x17:
    case 0x03:
    case 0x6f:
    case 0x67:
    case 0x2f:
      return (insn >> 7) & 31;
    default:
      return 0;
  }
}

/** One access of a {@link AccessGroup}: instruction index, offset from the base register, size in bytes. */
interface GroupMember {
  readonly index: number;
  readonly offset: number;
  readonly size: number;
}

/**
 * Loads (or stores) of one block path segment through one base register that holds the same value for all of
 * them: the first one checks the TLB once for the bytes they all touch, and the others reuse its delta.
 */
interface AccessGroup {
  readonly id: number;
  readonly store: boolean;
  readonly members: GroupMember[];
  /** Lowest member offset, and end of the highest member's bytes: the bytes the group touches. */
  low: number;
  high: number;
}

/**
 * Group the loads and stores of a block that can share one TLB check. A group lives in one path segment (from
 * the block start or a join point to the next join point, so every path reaching a member passed its first
 * member in the same pass), holds accesses of one kind (loads use the read TLB, stores the write TLB) through
 * one base register not written in between, and spans less than a page. Returns the groups of two or more.
 */
function accessGroups(words: Int32Array, len: number, joins: Map<number, number>): Map<number, AccessGroup> {
  const open = new Map<number, AccessGroup>();
  const byIndex = new Map<number, AccessGroup>();
  let groups = 0;
  for (let i = 0; i < len; i++) {
    if (joins.has(i)) open.clear();
    const insn = words[i];
    const opcode = insn & 0x7f;
    const base = (insn >> 15) & 31;
    if ((opcode === 0x03 || opcode === 0x23) && base !== 0) {
      const store = opcode === 0x23;
      const f3 = (insn >> 12) & 7;
      const member = {
        index: i,
        offset: store ? immS(insn) : immI(insn),
        size: store ? 1 << f3 : LOAD_SIZE[f3],
      };
      const key = base * 2 + (store ? 1 : 0);
      let group = open.get(key);
      const end = member.offset + member.size;
      if (group !== undefined && Math.max(group.high, end) - Math.min(group.low, member.offset) > 4096)
        group = undefined;
      if (group === undefined) {
        group = { id: groups++, store, members: [], low: member.offset, high: end };
        open.set(key, group);
      }
      group.members.push(member);
      group.low = Math.min(group.low, member.offset);
      group.high = Math.max(group.high, end);
      byIndex.set(i, group);
    }
    const rd = destination(insn);
    if (rd !== 0) {
      open.delete(rd * 2);
      open.delete(rd * 2 + 1);
    }
  }
  for (const [index, group] of byIndex) if (group.members.length < 2) byIndex.delete(index);
  return byIndex;
}

/**
 * JavaScript for a group's check, at its first member: true when every byte its members touch lies in one page
 * the TLB maps (read or write TLB) and every member is aligned to its size. Sets `g<id>` and `d<id>`.
 */
function groupCheck(group: AccessGroup, base: string): string {
  const { low, high } = group;
  const [tag, delta] = group.store ? ['wT', 'wD'] : ['rT', 'rD'];
  const alignments = new Set<string>();
  for (const m of group.members) {
    if (m.size === 1) continue;
    const phase = m.offset & (m.size - 1);
    alignments.add(`((${base}${phase === 0 ? '' : ` + ${phase}`}) & ${m.size - 1}) === 0`);
  }
  const id = group.id;
  return [
    `a = (${base} + ${low}) | 0; vp = a >>> 12; ti = vp & mask;`,
    `g${id} = ${tag}[ti] === (vp | ctx) && ((${base} + ${high - 1}) | 0) >>> 12 === vp${[...alignments].map((c) => ` && ${c}`).join('')};`,
    `d${id} = ${delta}[ti];`,
  ].join(' ');
}

/**
 * JavaScript source of the factory for a block of `len` instructions `words[0..len)`: its parameters are the
 * environment (see {@link compileBlock}); it returns the {@link BlockFunction}.
 *
 * Layout: `out:` is the block (a `for (;;)` when some branch goes back to its first instruction), and each
 * forward branch that stays in the block breaks out of a labeled block `tN` that ends right before its target
 * N. `cnt` counts executed instructions; at compile time `pending` counts those on the current path since `cnt`
 * was last brought up to date, so `cnt` is updated once per path segment, not per instruction.
 */
export function blockSource(words: Int32Array, len: number): string {
  const read = new Set<number>();
  const written = new Set<number>();
  const use = (r: number): string => {
    if (r === 0) return '0';
    read.add(r);
    return `r${r}`;
  };
  const def = (r: number): string => {
    written.add(r);
    read.add(r);
    return `r${r}`;
  };
  const body: string[] = [];
  const emit = (line: string): void => {
    body.push(line);
  };
  let loops = false;
  let usesData = false;
  /** Instructions executed on this path since `cnt` was last updated (known at compile time). */
  let pending = 0;
  /** `cnt += n` for the instructions up to and including instruction i. */
  const count = (extra: number): string => (pending + extra === 0 ? '' : `cnt += ${pending + extra}; `);
  const targets = internalTargets(words, len);
  const groups = accessGroups(words, len, targets);
  /** The group of access `i`, if any; at the group's first member, its check is emitted. */
  const groupAt = (i: number, base: number): AccessGroup | undefined => {
    const group = groups.get(i);
    if (group !== undefined && group.members[0].index === i) emit(groupCheck(group, use(base)));
    return group;
  };
  /** An access: `checked` (TLB check, slow path) alone, or in a group `direct(delta)` while its check holds. */
  const accessCode = (group: AccessGroup | undefined, direct: (delta: string) => string, checked: string) =>
    group === undefined ? checked : `if (g${group.id}) ${direct(`d${group.id}`)} else { ${checked} }`;
  /** Labeled blocks open at each index, closed before their target. */
  const opensAt = new Map<number, number[]>();
  for (const [target, from] of targets) opensAt.set(from, [...(opensAt.get(from) ?? []), target]);

  for (let i = 0; i < len; i++) {
    if (targets.has(i)) {
      // Join point: the fallthrough path brings cnt up to date, the branches did before breaking.
      if (pending > 0) emit(`cnt += ${pending};`);
      pending = 0;
      emit(`} // t${i}`);
    }
    // Outer (farther) targets open first.
    for (const target of (opensAt.get(i) ?? []).sort((a, b) => b - a)) emit(`t${target}: {`);
    const insn = words[i];
    const rd = (insn >> 7) & 31;
    const rs1 = (insn >> 15) & 31;
    const rs2 = (insn >> 20) & 31;
    const f3 = (insn >> 12) & 7;
    const here = 4 * i;
    const exit = `{ ${count(1)}break out; }`;
    switch (insn & 0x7f) {
      case 0x13:
        if (rd !== 0) emit(`${def(rd)} = ${opImmExpression(f3, insn, use(rs1))};`);
        break;
      case 0x33:
        if (rd !== 0) emit(`${def(rd)} = ${opExpression(insn >>> 25, f3, use(rs1), use(rs2))};`);
        break;
      case 0x37:
        if (rd !== 0) emit(`${def(rd)} = ${insn & 0xfffff000};`);
        break;
      case 0x17:
        if (rd !== 0) emit(`${def(rd)} = ${pcAt(here + (insn & 0xfffff000))};`);
        break;
      case 0x03: {
        usesData = true;
        const size = LOAD_SIZE[f3];
        const group = groupAt(i, rs1);
        emit(`a = ${rs1 === 0 ? immI(insn) : `(${use(rs1)} + ${immI(insn)}) | 0`};`);
        const direct = (delta: string): string =>
          `t = ${SIZE_VIEW[size]}[((a + ${delta}) | 0)${SIZE_SHIFT[size]}];`;
        const checked =
          'vp = a >>> 12; ti = vp & mask; ' +
          `if (rT[ti] === (vp | ctx)${SIZE_ALIGNED[size]}) ${direct('rD[ti]')} ` +
          `else { h.pc = ${pcAt(here)}; t = h.loadSlow(a, ${size}); if (h.trapped) ${exit} }`;
        emit(accessCode(group, direct, checked));
        if (rd !== 0) emit(`${def(rd)} = ${LOAD_EXTEND[f3]};`);
        break;
      }
      case 0x23: {
        usesData = true;
        const size = 1 << f3;
        const value = use(rs2);
        const group = groupAt(i, rs1);
        emit(`a = ${rs1 === 0 ? immS(insn) : `(${use(rs1)} + ${immS(insn)}) | 0`};`);
        const direct = (delta: string): string =>
          `${SIZE_VIEW[size]}[((a + ${delta}) | 0)${SIZE_SHIFT[size]}] = ${value};`;
        const checked =
          'vp = a >>> 12; ti = vp & mask; ' +
          `if (wT[ti] === (vp | ctx)${SIZE_ALIGNED[size]}) ${direct('wD[ti]')} ` +
          `else { h.pc = ${pcAt(here)}; if (h.blockStore(a, ${value}, ${size})) ${exit} }`;
        emit(accessCode(group, direct, checked));
        break;
      }
      case 0x2f: {
        // The atomic runs on the register file: sync the registers it reads and may write, reload rd after.
        for (const r of new Set([rs1, rs2, rd])) if (r !== 0) emit(`x[${r}] = ${use(r)};`);
        emit(`h.pc = ${pcAt(here)};`);
        emit(`e = h.blockAtomic(${insn});`);
        if (rd !== 0) emit(`${def(rd)} = x[${rd}];`);
        emit(`if (e) ${exit}`);
        break;
      }
      case 0x0f:
        // FENCE: the host's barrier, as in the interpreter (Hart.fullFence).
        if (fenceOrders(insn)) emit('h.fullFence();');
        break;
      case 0x63: {
        const offset = immB(insn);
        const condition = BRANCH_CONDITION[f3](use(rs1), use(rs2));
        const target = i + offset / 4;
        if ((offset & 3) !== 0) {
          emit(
            `if (${condition}) { h.pc = ${pcAt(here)}; h.trap(${CAUSE_MISALIGNED_FETCH}, ${pcAt(here + offset)}); ${count(1)}break out; }`,
          );
        } else if (offset === -here) {
          // Back to the first instruction: loop while a whole pass still fits in the budget.
          loops = true;
          emit(
            `if (${condition}) { ${count(1)}if (avail - cnt >= ${len}) continue; h.pc = pc0; break out; }`,
          );
        } else if (targets.get(target) !== undefined && target > i) {
          emit(`if (${condition}) { ${count(1)}break t${target}; }`);
        } else {
          emit(`if (${condition}) { h.pc = ${pcAt(here + offset)}; ${count(1)}break out; }`);
        }
        pending++;
        break;
      }
      case 0x6f: {
        const offset = immJ(insn);
        if ((offset & 3) !== 0) {
          emit(
            `h.pc = ${pcAt(here)}; h.trap(${CAUSE_MISALIGNED_FETCH}, ${pcAt(here + offset)}); ${count(1)}break out;`,
          );
          pending = 0;
          break;
        }
        if (rd !== 0) emit(`${def(rd)} = ${pcAt(here + 4)};`);
        if (offset === -here) {
          loops = true;
          emit(`${count(1)}if (avail - cnt >= ${len}) continue; h.pc = pc0; break out;`);
        } else {
          emit(`h.pc = ${pcAt(here + offset)}; ${count(1)}break out;`);
        }
        pending = 0;
        break;
      }
      case 0x67: {
        emit(`t = (${use(rs1)} + ${immI(insn)}) & -2;`);
        emit(`if ((t & 3) !== 0) { h.pc = ${pcAt(here)}; h.trap(${CAUSE_MISALIGNED_FETCH}, t); ${exit} }`);
        if (rd !== 0) emit(`${def(rd)} = ${pcAt(here + 4)};`);
        emit(`h.pc = t; ${count(1)}break out;`);
        pending = 0;
        break;
      }
      default:
        throw new Error(`block translator: instruction 0x${(insn >>> 0).toString(16)} cannot be in a block`);
    }
    if ((insn & 0x7f) !== 0x63 && (insn & 0x7f) !== 0x6f && (insn & 0x7f) !== 0x67) pending++;
  }
  const last = len > 0 ? words[len - 1] & 0x7f : 0;
  if (last !== 0x6f && last !== 0x67) emit(`h.pc = ${pcAt(4 * len)}; ${count(0)}`);

  const regs = [...read].sort((p, q) => p - q);
  const lines = ['return function block(pc0, avail) {'];
  if (regs.length > 0) lines.push(`let ${regs.map((r) => `r${r} = x[${r}]`).join(', ')};`);
  if (usesData) lines.push('const ctx = h.dataCtx;');
  lines.push('let a = 0, vp = 0, ti = 0, t = 0, e = false, cnt = 0;');
  for (const id of new Set([...groups.values()].map((g) => g.id)))
    lines.push(`let g${id} = false, d${id} = 0;`);
  lines.push(loops ? 'out: for (;;) {' : 'out: {');
  lines.push(...body);
  if (loops) lines.push('break;');
  lines.push('}');
  for (const r of [...written].sort((p, q) => p - q)) lines.push(`x[${r}] = r${r};`);
  lines.push('return cnt;', '};');
  return lines.join('\n');
}

/** The factory's parameter names, in the order {@link compileBlock} passes them. */
const FACTORY_PARAMETERS = [
  'h',
  'x',
  'm8',
  'm16',
  'm32',
  'rT',
  'rD',
  'wT',
  'wD',
  'mask',
  'mulh',
  'mulhsu',
  'mulhu',
];

type BlockFactory = (...env: unknown[]) => BlockFunction;

/** Factories by source: the same guest code (at any address, on any hart) is compiled by V8 once. */
const factories = new Map<string, BlockFactory>();
/** Bound on the factory cache (a source is 1-5 KB): a long-running guest does not grow it forever. */
const MAX_FACTORIES = 8192;

let codeGeneration: boolean | undefined;

/**
 * Whether this host lets us build functions from strings. A page whose Content-Security-Policy lacks
 * 'unsafe-eval' (or Node run with --disallow-code-generation-from-strings) throws an EvalError; then harts run on
 * the interpreter alone. Checked once per thread.
 */
export function codeGenerationAllowed(): boolean {
  if (codeGeneration === undefined) {
    try {
      codeGeneration = new Function('return 1')() === 1;
    } catch {
      codeGeneration = false;
    }
  }
  return codeGeneration;
}

/** Compile `source` (from {@link blockSource}) into a block function bound to `env`. */
export function compileBlock(
  source: string,
  env: BlockEnvironment,
  helpers: {
    mulh: (a: number, b: number) => number;
    mulhsu: typeof helpers.mulh;
    mulhu: typeof helpers.mulh;
  },
): BlockFunction {
  let factory = factories.get(source);
  if (factory === undefined) {
    if (factories.size >= MAX_FACTORIES) factories.clear();
    factory = new Function(...FACTORY_PARAMETERS, source) as BlockFactory;
    factories.set(source, factory);
  }
  return factory(
    env.host,
    env.x,
    env.mem8,
    env.mem16,
    env.mem32,
    env.readTag,
    env.readDelta,
    env.writeTag,
    env.writeDelta,
    env.tlbMask,
    helpers.mulh,
    helpers.mulhsu,
    helpers.mulhu,
  );
}
