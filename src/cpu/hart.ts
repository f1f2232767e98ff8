import type { Firmware, SbiCallContext } from '../common/firmware.ts';
import {
  HART_FENCE,
  HART_LINES,
  HART_SBI_IPI,
  HART_TIMECMP_HI,
  HART_TIMECMP_LO,
  FENCE_INSTRUCTIONS,
  hartWord,
  type VmClock,
} from '../common/shared-block.ts';
import { hostEnvironment, hostSwitch } from '../common/host.ts';
import type { AddressSpace } from '../mem/address-space.ts';
import { BlockCache, type Block, type BlockCacheStats } from './block-cache.ts';
import {
  blockSource,
  codeGenerationAllowed,
  compileBlock,
  planBlock,
  type BlockEnvironment,
  type BlockHost,
  fenceOrders,
} from './block-translator.ts';
import * as C from './csr.ts';
import { mulDiv, mulhSigned, mulhsu, mulhu } from './muldiv.ts';
import {
  AREA_EXEC_DELTA,
  AREA_EXEC_TAG,
  AREA_EXIT,
  AREA_LOOP_HEADS,
  AREA_PC,
  AREA_READ_DELTA,
  AREA_READ_TAG,
  AREA_RESERVATION,
  AREA_WRITE_DELTA,
  AREA_WRITE_TAG,
  AREA_X,
  EXIT_BUDGET,
  EXIT_LOOP,
  LOOP_SAMPLE,
  LOOP_SLOTS,
  TLB_SIZE,
  precompileWasmCore,
  wasmCore,
  type HartArea,
  type WasmCore,
} from './wasm-core.ts';

/** The physical bus outside RAM, as the hart sees it (the board's MMIO bus satisfies it). */
export interface PhysicalMmio {
  /** Value zero-extended, or -1 when nothing answers (access fault). */
  read(gpa: number, size: 1 | 2 | 4): number;
  /** False when nothing answers (access fault). */
  write(gpa: number, size: 1 | 2 | 4, value: number): boolean;
}

/** Everything a hart is wired to. */
export interface HartOptions {
  readonly hartId: number;
  readonly memory: AddressSpace;
  readonly mmio: PhysicalMmio;
  /** The VM control block (interrupt lines, timer compare, fence requests live in this hart's slot). */
  readonly block: Int32Array;
  readonly clock: VmClock;
  /**
   * Firmware the emulator provides (SBI). When set, ECALL from S-mode is handled by it, the timer drives STIP
   * instead of MTIP, and there is no M-mode software: every delegatable trap is delegated to S-mode.
   */
  readonly firmware?: Firmware;
  /**
   * Translate hot guest blocks to JavaScript (see block-translator.ts). Default: on, unless the host environment
   * sets TABVISOR_JIT=0 (Node); ignored (interpreter only) where the host forbids `new Function`.
   */
  readonly jit?: boolean;
  /**
   * Executions of a block start before it is translated (at least 1; default JIT_THRESHOLD, or
   * TABVISOR_JIT_THRESHOLD in the environment). Tests use 1 to translate everything.
   */
  readonly jitThreshold?: number;
  /**
   * Where the hart keeps its registers and TLB: an area of host RAM (mem/host-ram.ts, allocateHartAreas). With
   * one, the common path runs in WebAssembly (cpu/wasm-core.ts) unless TABVISOR_WASM=0 is set in the
   * environment (Node) or the host forbids compiling WebAssembly; without one, in JavaScript only.
   */
  readonly area?: HartArea;
}

/** Whether harts translate hot blocks when their options do not say: TABVISOR_JIT=0 or =1 in the environment. */
export function jitByDefault(): boolean {
  return hostSwitch('TABVISOR_JIT') ?? JIT_DEFAULT;
}

/** The JIT's default when neither the options nor the environment choose. */
const JIT_DEFAULT = true;

/** Whether harts with an area use the WebAssembly tier: yes, unless TABVISOR_WASM=0 (or false, off) is set. */
function wasmTierEnabled(): boolean {
  return hostSwitch('TABVISOR_WASM') ?? true;
}

/**
 * Start compiling, off this thread, the code harts built here later will run over memory that is `shared` or
 * not (the WebAssembly tier, when it is on): for a thread that has time before its harts exist. Resolves when
 * it is done; a hart built before that compiles the code again itself.
 */
export function prepareHartCode(shared: boolean): Promise<void> {
  return wasmTierEnabled() ? precompileWasmCore(shared) : Promise.resolve();
}

/** Executions of a block start before it is translated. */
export const JIT_THRESHOLD = 20000;

/** A hart's architectural state as plain data; see {@link Hart.saveState}. */
export interface HartState {
  readonly x: number[];
  readonly pc: number;
  readonly priv: number;
  readonly csr: {
    readonly mstatus: number;
    readonly medeleg: number;
    readonly mideleg: number;
    readonly mie: number;
    readonly mipSoft: number;
    readonly mtvec: number;
    readonly stvec: number;
    readonly mepc: number;
    readonly sepc: number;
    readonly mcause: number;
    readonly scause: number;
    readonly mtval: number;
    readonly stval: number;
    readonly mscratch: number;
    readonly sscratch: number;
    readonly satp: number;
    readonly mcounteren: number;
    readonly scounteren: number;
    readonly mcountinhibit: number;
  };
  readonly pmpcfg: number[];
  readonly pmpaddr: number[];
  readonly instret: number;
  readonly cycleOffset: number;
  readonly instretOffset: number;
}

/** Why {@link Hart.run} returned before its budget was spent. */
export const STOP_BUDGET = 0;
/** The hart executed WFI with nothing pending: sleep until an interrupt line or the timer deadline. */
export const STOP_WFI = 1;
/** Firmware asked the hart to stop (HSM hart_stop, system reset). */
export const STOP_HALT = 2;
/** A trap reached M-mode although the emulator is the M-mode firmware: the guest is broken. */
export const STOP_FATAL = 3;

/** The hart spun in a pause loop (Zihintpause PAUSE executed PAUSE_LOOP_LIMIT times): yield the host core. */
export const STOP_PAUSE_LOOP = 4;

/** PAUSE (Zihintpause): FENCE with pred = W, succ = 0, fm = 0. */
const PAUSE_INSN = 0x0100000f;
/** PAUSEs within one slice that count as spinning on a lock. */
const PAUSE_LOOP_LIMIT = 256;

/** Direct-mapped TLB size per access kind: 1024 pages = 4 MiB reach. */
const TLB_MASK = TLB_SIZE - 1;
/**
 * Translation contexts folded into TLB tags above the 20-bit virtual page number (bits 20-21). User-mode
 * contexts also carry satp's ASID, in the same bits as in satp (22-30), so a process's entries survive switches
 * to other processes. Supervisor entries carry no ASID, so the kernel's global mappings survive them too; the
 * few that depend on the address space or on SUM are listed and dropped when those change ({@link dropLocal}).
 */
const CTX_USER = 0;
const CTX_SUPERVISOR = 1 << 20;
const CTX_BARE = 2 << 20;
const CTX_KIND = 3 << 20;
/**
 * Supervisor entries a switch of address space or a cleared SUM must drop, listed by TLB index; past this many,
 * every supervisor entry is dropped instead.
 */
const LOCAL_LIMIT = 64;

/** What a page walk found ({@link Hart.walkFound}): a global mapping, a megapage. */
const WALK_GLOBAL = 1;
const WALK_MEGA = 2;

const ACCESS_READ = 0;
const ACCESS_WRITE = 1;
const ACCESS_EXEC = 2;

/** Returned by translation when the access trapped (the trap has been taken). */
const TRAPPED = -1;
/** Returned by translation for a physical address outside RAM (MMIO). The gpa is left in `mmioGpa`. */
const NOT_RAM = -2;

/** Cause of a page fault and an access fault per access kind. */
const PAGE_FAULT = [C.CAUSE_LOAD_PAGE_FAULT, C.CAUSE_STORE_PAGE_FAULT, C.CAUSE_FETCH_PAGE_FAULT];
const ACCESS_FAULT = [C.CAUSE_LOAD_ACCESS, C.CAUSE_STORE_ACCESS, C.CAUSE_FETCH_ACCESS];

/**
 * Shortest translated loop head (when it does not loop by itself) worth leaving the interpreter for: below it,
 * the round trip between interpreter and dispatcher costs more than the block saves.
 */
const HANDOVER_INSNS = 12;

/** The M extension's high products, called from translated blocks. */
const MUL_HIGH = { mulh: mulhSigned, mulhsu, mulhu };

/** Exceptions delegated to S-mode when the emulator is the firmware (all but ECALL from S and M). */
const FIRMWARE_MEDELEG = C.MEDELEG_WRITABLE & ~(1 << C.CAUSE_SUPERVISOR_ECALL);

/**
 * One RISC-V hart: RV32IMA + Zicsr + Zifencei, M/S/U modes, Sv32 with hardware A/D updates.
 *
 * The interpreter executes straight from guest RAM through a direct-mapped software TLB that maps a virtual
 * page to a host offset (one table per access kind; tags carry the translation context, so switching between
 * U and S needs no flush). Traps are values: a faulting access takes the trap and sets `trapped`, and the
 * interpreter loop moves on from the new pc. Interrupts are checked at the start of each slice and after every
 * instruction that can unmask one.
 */
export class Hart implements SbiCallContext, BlockHost {
  readonly hartId: number;
  /** Integer registers; x[0] is kept 0. */
  readonly x: Int32Array;
  /** Program counter (int32). */
  pc = 0;
  /** Current privilege: PRIV_U, PRIV_S or PRIV_M. */
  priv = C.PRIV_M;

  // CSR state (privileged spec chapter 3-4).
  mstatus = 0;
  medeleg = 0;
  mideleg = 0;
  mie = 0;
  /** Software-writable mip bits (SSIP, STIP, SEIP); the rest come from lines and the timer. */
  mipSoft = 0;
  mtvec = 0;
  stvec = 0;
  mepc = 0;
  sepc = 0;
  mcause = 0;
  scause = 0;
  mtval = 0;
  stval = 0;
  mscratch = 0;
  sscratch = 0;
  satp = 0;
  mcounteren = 0;
  scounteren = 0;
  menvcfg = 0;
  menvcfgh = 0;
  senvcfg = 0;
  mcountinhibit = 0;
  readonly pmpcfg = new Int32Array(4);
  readonly pmpaddr = new Int32Array(16);
  /** Instructions retired since reset (also serves as the cycle count: one cycle per instruction). */
  instret = 0;
  /** Offsets applied by writes to mcycle / minstret. */
  private cycleOffset = 0;
  private instretOffset = 0;

  /** Set when an access or instruction trapped; the interpreter clears it. */
  trapped = false;
  /** Why the last {@link run} stopped (STOP_*). */
  stopReason = STOP_BUDGET;
  /** Message for STOP_FATAL. */
  fatalMessage = '';

  private readonly memory: AddressSpace;
  private readonly mem32: Int32Array;
  private readonly mem16: Uint16Array;
  private readonly mem8: Uint8Array;
  private readonly mmio: PhysicalMmio;
  private readonly block: Int32Array;
  private readonly clock: VmClock;
  private readonly firmware: Firmware | undefined;
  private readonly linesIndex: number;
  private readonly ipiIndex: number;
  private readonly fenceIndex: number;
  private readonly timecmpLoIndex: number;
  private readonly timecmpHiIndex: number;

  // Software TLB: tag = vpn | context, value = host offset of the page minus its virtual address.
  // Views of the hart's area when it has one (the WebAssembly tier reads and fills the same arrays).
  private readonly readTag: Int32Array;
  private readonly readDelta: Int32Array;
  private readonly writeTag: Int32Array;
  private readonly writeDelta: Int32Array;
  private readonly execTag: Int32Array;
  private readonly execDelta: Int32Array;
  /** The WebAssembly tier, with the byte offset of this hart's area and a view of the area's exit words. */
  private readonly core:
    { readonly run: WasmCore['run']; readonly area: number; readonly words: Int32Array } | undefined;
  /** Translation context of data accesses (depends on priv, MPRV/MPP, satp); read by translated blocks. */
  dataCtx = CTX_BARE;
  /** Translation context of instruction fetch. */
  private fetchCtx = CTX_BARE;
  /** Physical address of the last access that hit MMIO. */
  private mmioGpa = 0;
  /**
   * TLB indices of supervisor entries for mappings that are not global or are user pages (reached with SUM):
   * they belong to the current ASID and SUM setting. `localCount` past LOCAL_LIMIT means "too many to list".
   */
  private readonly localIndices = new Uint16Array(LOCAL_LIMIT);
  private localCount = 0;
  /** One bit per 4 MiB region of virtual addresses with TLB entries from a megapage (Sv32 level-1 leaf). */
  private readonly megaRegions = new Int32Array(32);
  /** What the last successful {@link walk} found: WALK_GLOBAL (and not a user page), WALK_MEGA. */
  private walkFound = 0;
  /**
   * The LR reservation: [0] host offset of the reserved word, or -1; [1] the value LR read. In the hart's area
   * when it has one (the WebAssembly tier's LR, SC and AMOs use the same words).
   */
  private readonly reserved: Int32Array;

  private get reservation(): number {
    return this.reserved[0];
  }

  private set reservation(host: number) {
    this.reserved[0] = host;
  }

  private get reservedValue(): number {
    return this.reserved[1];
  }

  private set reservedValue(value: number) {
    this.reserved[1] = value;
  }
  /** Ticks read at the start of the slice, for timer comparisons. */
  private now = 0;
  /** PAUSE instructions executed in the current slice. */
  private pauses = 0;
  /** Set by instructions that end the slice early (WFI, firmware stop). */
  private exitLoop = false;
  /** Interrupts are re-evaluated before the next instruction. */
  private recheck = false;
  /** Translated blocks, or null when the hart only interprets. */
  private readonly blocks: BlockCache | null;
  private readonly jitThreshold: number;
  private readonly blockEnv: BlockEnvironment;
  /** Set when a store dropped translated code (the running block must end after it). */
  private codeWritten = false;

  constructor(options: HartOptions) {
    this.hartId = options.hartId;
    const area = options.area;
    const view = (at: number, length: number): Int32Array =>
      area ? new Int32Array(area.memory.buffer, area.offset + at, length) : new Int32Array(length);
    this.x = view(AREA_X, 32);
    this.readTag = view(AREA_READ_TAG, TLB_SIZE).fill(-1);
    this.readDelta = view(AREA_READ_DELTA, TLB_SIZE);
    this.writeTag = view(AREA_WRITE_TAG, TLB_SIZE).fill(-1);
    this.writeDelta = view(AREA_WRITE_DELTA, TLB_SIZE);
    this.execTag = view(AREA_EXEC_TAG, TLB_SIZE).fill(-1);
    this.execDelta = view(AREA_EXEC_DELTA, TLB_SIZE);
    this.reserved = view(AREA_RESERVATION, 2).fill(-1);
    const core = area && wasmTierEnabled() ? wasmCore(area.memory) : undefined;
    this.core = core
      ? { run: core.run, area: area!.offset, words: new Int32Array(area!.memory.buffer, area!.offset, 1024) }
      : undefined;
    this.memory = options.memory;
    this.mem32 = options.memory.i32;
    this.mem16 = options.memory.u16;
    this.mem8 = options.memory.u8;
    this.mmio = options.mmio;
    this.block = options.block;
    this.clock = options.clock;
    this.firmware = options.firmware;
    this.linesIndex = hartWord(this.hartId, HART_LINES);
    this.ipiIndex = hartWord(this.hartId, HART_SBI_IPI);
    this.fenceIndex = hartWord(this.hartId, HART_FENCE);
    this.timecmpLoIndex = hartWord(this.hartId, HART_TIMECMP_LO);
    this.timecmpHiIndex = hartWord(this.hartId, HART_TIMECMP_HI);
    const jit = (options.jit ?? jitByDefault()) && codeGenerationAllowed();
    this.blocks = jit ? new BlockCache(this.mem8.length >>> 12) : null;
    const threshold =
      options.jitThreshold ?? Number(hostEnvironment('TABVISOR_JIT_THRESHOLD') ?? JIT_THRESHOLD);
    this.jitThreshold = Number.isInteger(threshold)
      ? Math.max(1, Math.min(1_000_000_000, threshold))
      : JIT_THRESHOLD;
    this.blockEnv = {
      host: this,
      x: this.x,
      mem8: this.mem8,
      mem16: this.mem16,
      mem32: this.mem32,
      readTag: this.readTag,
      readDelta: this.readDelta,
      writeTag: this.writeTag,
      writeDelta: this.writeDelta,
      tlbMask: TLB_MASK,
    };
    this.reset(0);
  }

  /** Reset to M-mode at `pc` with every CSR at its reset value. */
  reset(pc: number): void {
    this.x.fill(0);
    this.pc = pc | 0;
    this.priv = C.PRIV_M;
    this.mstatus = 0;
    this.medeleg = 0;
    this.mideleg = 0;
    this.mie = 0;
    this.mipSoft = 0;
    this.mtvec = 0;
    this.stvec = 0;
    this.mepc = 0;
    this.sepc = 0;
    this.mcause = 0;
    this.scause = 0;
    this.mtval = 0;
    this.stval = 0;
    this.mscratch = 0;
    this.sscratch = 0;
    this.satp = 0;
    this.mcounteren = 0;
    this.scounteren = 0;
    this.menvcfg = 0;
    this.menvcfgh = 0;
    this.senvcfg = 0;
    this.mcountinhibit = 0;
    this.pmpcfg.fill(0);
    this.pmpaddr.fill(0);
    this.reservation = -1;
    this.trapped = false;
    this.stopReason = STOP_BUDGET;
    this.fatalMessage = '';
    this.flushTlb();
    this.blocks?.clear();
  }

  /** True when this hart translates hot blocks (see {@link HartOptions.jit}). */
  get jitEnabled(): boolean {
    return this.blocks !== null;
  }

  /** Block translator counters, or undefined when the JIT is off. */
  jitStats(): Readonly<BlockCacheStats> | undefined {
    return this.blocks?.stats;
  }

  /**
   * The hart's architectural state as plain data (structured-clone safe), for snapshots and debugging. The TLB,
   * the translated blocks and the LR reservation are not state a program can rely on across a snapshot, so they
   * are not included (restoring drops them).
   */
  saveState(): HartState {
    return {
      x: Array.from(this.x),
      pc: this.pc,
      priv: this.priv,
      csr: {
        mstatus: this.mstatus,
        medeleg: this.medeleg,
        mideleg: this.mideleg,
        mie: this.mie,
        mipSoft: this.mipSoft,
        mtvec: this.mtvec,
        stvec: this.stvec,
        mepc: this.mepc,
        sepc: this.sepc,
        mcause: this.mcause,
        scause: this.scause,
        mtval: this.mtval,
        stval: this.stval,
        mscratch: this.mscratch,
        sscratch: this.sscratch,
        satp: this.satp,
        mcounteren: this.mcounteren,
        scounteren: this.scounteren,
        mcountinhibit: this.mcountinhibit,
      },
      pmpcfg: Array.from(this.pmpcfg),
      pmpaddr: Array.from(this.pmpaddr),
      instret: this.instret,
      cycleOffset: this.cycleOffset,
      instretOffset: this.instretOffset,
    };
  }

  /** Restore a state from {@link saveState}; throws RangeError on a malformed one (e.g. a corrupt snapshot). */
  restoreState(state: HartState): void {
    if (
      !Array.isArray(state.x) ||
      state.x.length !== 32 ||
      ![C.PRIV_U, C.PRIV_S, C.PRIV_M].includes(state.priv)
    ) {
      throw new RangeError('hart state is malformed: expected 32 registers and a privilege of 0, 1 or 3');
    }
    this.reset(state.pc); // also empties the TLB: its entries belong to the old state
    this.x.set(state.x);
    this.x[0] = 0;
    this.priv = state.priv;
    const c = state.csr;
    this.mstatus = c.mstatus & C.MSTATUS_WRITABLE;
    this.medeleg = c.medeleg & C.MEDELEG_WRITABLE;
    this.mideleg = c.mideleg & C.MIP_S_ALL;
    this.mie = c.mie & C.MIP_ALL;
    this.mipSoft = c.mipSoft & C.MIP_M_WRITABLE;
    this.mtvec = c.mtvec;
    this.stvec = c.stvec;
    this.mepc = c.mepc & ~3;
    this.sepc = c.sepc & ~3;
    this.mcause = c.mcause;
    this.scause = c.scause;
    this.mtval = c.mtval;
    this.stval = c.stval;
    this.mscratch = c.mscratch;
    this.sscratch = c.sscratch;
    this.satp = c.satp & (C.SATP_MODE_SV32 | C.SATP_ASID_MASK | C.SATP_PPN_MASK);
    this.mcounteren = c.mcounteren & 7;
    this.scounteren = c.scounteren & 7;
    this.mcountinhibit = c.mcountinhibit & 5;
    this.pmpcfg.set(state.pmpcfg.slice(0, 4));
    this.pmpaddr.set(state.pmpaddr.slice(0, 16));
    this.instret = state.instret;
    this.cycleOffset = state.cycleOffset;
    this.instretOffset = state.instretOffset;
    this.updateContexts();
  }

  /**
   * Enter S-mode at `pc` as firmware would hand over to a kernel: a0 = hartid, a1 = `a1`, satp = 0, every
   * delegatable trap and supervisor interrupt delegated, counters readable from S and U.
   */
  enterSupervisor(pc: number, a1: number): void {
    this.reset(pc);
    this.x[10] = this.hartId;
    this.x[11] = a1 | 0;
    this.medeleg = FIRMWARE_MEDELEG;
    this.mideleg = C.MIP_S_ALL;
    this.mcounteren = 7;
    this.priv = C.PRIV_S;
    this.updateContexts();
  }

  // ---- SbiCallContext ----

  /** Flush every cached translation (SFENCE.VMA with rs1 = x0, FENCE.I, satp writes). */
  flushTlb(): void {
    this.readTag.fill(-1);
    this.writeTag.fill(-1);
    this.execTag.fill(-1);
    this.localCount = 0;
    this.megaRegions.fill(0);
  }

  /**
   * Drop the supervisor entries that belong to the current address space or need SUM (satp's ASID changed, or
   * SUM was cleared). User entries carry their ASID and stay; the kernel's global mappings stay.
   */
  private dropLocal(): void {
    const count = this.localCount;
    if (count === 0) return;
    this.localCount = 0;
    if (count > LOCAL_LIMIT) {
      this.dropTags((tag) => (tag & CTX_KIND) === CTX_SUPERVISOR);
      return;
    }
    for (let k = 0; k < count; k++) {
      const i = this.localIndices[k];
      this.readTag[i] = -1;
      this.writeTag[i] = -1;
      this.execTag[i] = -1;
    }
  }

  /** Drop every entry of the three TLBs whose tag `matches` (a scan of all of them: for the rare flushes). */
  private dropTags(matches: (tag: number) => boolean): void {
    for (const tags of [this.readTag, this.writeTag, this.execTag]) {
      for (let i = 0; i < TLB_SIZE; i++) if (matches(tags[i])) tags[i] = -1;
    }
  }

  /** FENCE.I on this hart (local, or asked for by another hart through the SBI): translated code is rechecked. */
  flushInstructionCache(): void {
    if (this.blocks !== null) this.blocks.epoch++;
  }

  loadVirtualU32(gva: number): number | undefined {
    const saved = this.trapped;
    const host = this.translateQuiet(gva, ACCESS_READ);
    this.trapped = saved;
    if (host < 0 || (gva & 3) !== 0) return undefined;
    return this.mem32[host >> 2] >>> 0;
  }

  stopAfterCall(): void {
    this.stopReason = STOP_HALT;
    this.exitLoop = true;
  }

  waitAfterCall(): void {
    this.stopReason = STOP_WFI;
    this.exitLoop = true;
  }

  // ---- interrupts ----

  /** mip as software sees it: soft bits, lines from the CLINT/PLIC, and the timer. */
  currentMip(): number {
    let mip =
      this.mipSoft | (Atomics.load(this.block, this.linesIndex) & (C.MIP_MSIP | C.MIP_MEIP | C.MIP_SEIP));
    if (this.now >= this.timecmp()) mip |= this.firmware !== undefined ? C.MIP_STIP : C.MIP_MTIP;
    return mip;
  }

  /** This hart's timer compare value in ticks (Infinity when unset). */
  timecmp(): number {
    const hi = this.block[this.timecmpHiIndex];
    const lo = this.block[this.timecmpLoIndex];
    if (hi === -1) return Infinity;
    return (hi >>> 0) * 0x1_0000_0000 + (lo >>> 0);
  }

  /** Milliseconds from now until the VM clock reaches `ticks` (0 when already past). */
  msUntilTicks(ticks: number): number {
    return this.clock.msUntil(ticks);
  }

  /** True when some interrupt is pending and enabled in mie (what wakes WFI, regardless of global enables). */
  interruptPending(): boolean {
    this.now = this.clock.ticks();
    this.absorbRequests();
    return (this.currentMip() & this.mie) !== 0;
  }

  /**
   * A FENCE that orders anything (`fence rw,rw` is Linux's `smp_mb()`, `fence r,rw` and `fence rw,w` its
   * acquire and release): a full barrier on the host. Guest loads and stores are plain typed-array accesses,
   * which the host's cores may reorder: an x86 core lets a load overtake an earlier store still in its store
   * buffer (and keeps every other order), an ARM core may also reorder loads with loads and stores with
   * stores. A sequentially consistent read-modify-write (a locked instruction on x86, an acquire-release atomic
   * on ARM) orders them all; it changes nothing (OR with 0 on this hart's own fence-request word), so a remote
   * fence request posted meanwhile is kept. Without it, Dekker-style guest code ("store my flag, fence, read
   * yours", as in virtio's notification suppression and the scheduler's wake-ups) could see both sides miss
   * each other. x86 would need it only for fences with a store before and a load after, but the host's kind
   * is not known, and all of them together cost little: Linux runs ~110,000 ordering fences a second on a busy
   * hart, ~0.2-0.5% of its time at 20-50 ns each.
   */
  fullFence(): void {
    Atomics.or(this.block, this.fenceIndex, 0);
  }

  /** Fold requests other threads left in this hart's slot (SBI IPIs, remote fences) into local state. */
  private absorbRequests(): void {
    if (this.block[this.ipiIndex] !== 0 && Atomics.exchange(this.block, this.ipiIndex, 0) !== 0) {
      this.mipSoft |= C.MIP_SSIP;
    }
    if (this.block[this.fenceIndex] !== 0) this.absorbFence();
  }

  /** Carry out the remote fences other harts requested (HART_FENCE bits). */
  private absorbFence(): void {
    const request = Atomics.exchange(this.block, this.fenceIndex, 0);
    if (request === 0) return;
    this.flushTlb();
    if ((request & FENCE_INSTRUCTIONS) !== 0) this.flushInstructionCache();
  }

  /** Take the highest-priority enabled pending interrupt, if any. Returns true when one was taken. */
  private takeInterrupt(): boolean {
    const pending = this.currentMip() & this.mie;
    if (pending === 0) return false;
    const mLevel = pending & ~this.mideleg;
    const mEnabled = this.priv < C.PRIV_M || (this.mstatus & C.MSTATUS_MIE) !== 0;
    let cause = -1;
    if (mLevel !== 0 && mEnabled) {
      cause = pickInterrupt(mLevel);
    } else {
      const sLevel = pending & this.mideleg;
      const sEnabled =
        this.priv < C.PRIV_S || (this.priv === C.PRIV_S && (this.mstatus & C.MSTATUS_SIE) !== 0);
      if (sLevel !== 0 && sEnabled) cause = pickInterrupt(sLevel);
    }
    if (cause < 0) return false;
    this.trap(cause | C.CAUSE_INTERRUPT, 0);
    return true;
  }

  // ---- traps ----

  /** Take a trap (exception or interrupt cause) at the current pc, honouring delegation. */
  trap(cause: number, tval: number): void {
    const interrupt = cause < 0;
    const code = cause & 0x7fff_ffff;
    const delegated = this.priv <= C.PRIV_S && ((interrupt ? this.mideleg : this.medeleg) >>> code) & 1;
    this.reservation = -1;
    if (delegated) {
      this.scause = cause;
      this.sepc = this.pc;
      this.stval = tval | 0;
      let s = this.mstatus & ~(C.MSTATUS_SPIE | C.MSTATUS_SPP | C.MSTATUS_SIE);
      if (this.mstatus & C.MSTATUS_SIE) s |= C.MSTATUS_SPIE;
      if (this.priv === C.PRIV_S) s |= C.MSTATUS_SPP;
      this.mstatus = s;
      this.priv = C.PRIV_S;
      this.pc = (this.stvec & ~3) + (interrupt && (this.stvec & 3) === 1 ? 4 * code : 0);
      this.pc |= 0;
    } else {
      if (this.firmware !== undefined) {
        this.fatalMessage =
          `hart ${this.hartId}: ${interrupt ? 'interrupt' : 'exception'} ${code} at pc 0x${(this.pc >>> 0).toString(16)} ` +
          `(tval 0x${(tval >>> 0).toString(16)}) reached M-mode, where the emulator is the firmware`;
        this.stopReason = STOP_FATAL;
        this.exitLoop = true;
      }
      this.mcause = cause;
      this.mepc = this.pc;
      this.mtval = tval | 0;
      let s = this.mstatus & ~(C.MSTATUS_MPIE | C.MSTATUS_MPP | C.MSTATUS_MIE);
      if (this.mstatus & C.MSTATUS_MIE) s |= C.MSTATUS_MPIE;
      s |= this.priv << C.MSTATUS_MPP_SHIFT;
      this.mstatus = s;
      this.priv = C.PRIV_M;
      this.pc = ((this.mtvec & ~3) + (interrupt && (this.mtvec & 3) === 1 ? 4 * code : 0)) | 0;
    }
    this.updateContexts();
    this.trapped = true;
  }

  /** Recompute the TLB contexts after a change of privilege, satp or mstatus. */
  private updateContexts(): void {
    const bare = (this.satp & C.SATP_MODE_SV32) === 0;
    const user = CTX_USER | (this.satp & C.SATP_ASID_MASK);
    this.fetchCtx =
      bare || this.priv === C.PRIV_M ? CTX_BARE : this.priv === C.PRIV_U ? user : CTX_SUPERVISOR;
    let dataPriv = this.priv;
    if (dataPriv === C.PRIV_M && (this.mstatus & C.MSTATUS_MPRV) !== 0) {
      dataPriv = (this.mstatus & C.MSTATUS_MPP) >>> C.MSTATUS_MPP_SHIFT;
    }
    this.dataCtx = bare || dataPriv === C.PRIV_M ? CTX_BARE : dataPriv === C.PRIV_U ? user : CTX_SUPERVISOR;
  }

  /**
   * Write satp. Like hardware, this flushes nothing the spec makes software flush with SFENCE.VMA; but a new
   * ASID must not see the old one's supervisor entries for non-global pages, which carry no ASID here.
   */
  private setSatp(value: number): void {
    const old = this.satp;
    this.satp = value & (C.SATP_MODE_SV32 | C.SATP_ASID_MASK | C.SATP_PPN_MASK);
    if (((old ^ this.satp) & C.SATP_ASID_MASK) !== 0) this.dropLocal();
    this.updateContexts();
  }

  // ---- address translation ----

  /**
   * Translate `gva` for `access` in the current context and fill the TLB. Returns the host offset, NOT_RAM (gpa
   * in `mmioGpa`), or TRAPPED after taking a page or access fault.
   */
  private translate(gva: number, access: number): number {
    const host = this.translateQuiet(gva, access);
    if (host === TRAPPED) this.trap(this.faultCause, gva);
    return host;
  }

  /** Cause for the fault translateQuiet last reported. */
  private faultCause = 0;

  /** {@link translate} without taking the trap: sets `faultCause` and returns TRAPPED on a fault. */
  private translateQuiet(gva: number, access: number): number {
    const ctx = access === ACCESS_EXEC ? this.fetchCtx : this.dataCtx;
    const kind = ctx & CTX_KIND;
    let gpa: number;
    if (kind === CTX_BARE) {
      gpa = gva >>> 0;
    } else {
      gpa = this.walk(gva, access, kind === CTX_USER ? C.PRIV_U : C.PRIV_S);
      if (gpa < 0) return TRAPPED;
    }
    const host = this.memory.hostOffset(gpa);
    if (host < 0) {
      this.mmioGpa = gpa;
      return NOT_RAM;
    }
    const vpn = gva >>> 12;
    const index = vpn & TLB_MASK;
    if (kind !== CTX_BARE) {
      const found = this.walkFound;
      if ((found & WALK_MEGA) !== 0) this.megaRegions[gva >>> 27] |= 1 << ((gva >>> 22) & 31);
      if (kind === CTX_SUPERVISOR && (found & WALK_GLOBAL) === 0) {
        if (this.localCount < LOCAL_LIMIT) this.localIndices[this.localCount] = index;
        if (this.localCount <= LOCAL_LIMIT) this.localCount++;
      }
    }
    const delta = ((host & ~0xfff) - (vpn << 12)) | 0;
    if (access === ACCESS_READ) {
      this.readTag[index] = vpn | ctx;
      this.readDelta[index] = delta;
    } else if (access === ACCESS_WRITE) {
      // Frames holding translated code stay out of the write TLB: stores to them take the slow path, which
      // drops the translations.
      if (this.blocks === null || !this.blocks.holdsCode(host >>> 12)) {
        this.writeTag[index] = vpn | ctx;
        this.writeDelta[index] = delta;
      }
      // A writable page is readable too (W without R is reserved), and its D bit is now set.
      this.readTag[index] = vpn | ctx;
      this.readDelta[index] = delta;
    } else {
      this.execTag[index] = vpn | ctx;
      this.execDelta[index] = delta;
    }
    return host;
  }

  /**
   * Sv32 page walk (privileged spec section 4.3.2) for an access at effective privilege `priv`. Returns the gpa
   * (as uint32; addresses at or above 2^32 are access faults) or -1 with `faultCause` set.
   */
  private walk(gva: number, access: number, priv: number): number {
    let tableGpa = (this.satp & C.SATP_PPN_MASK) * 4096;
    let level = 1;
    let global = 0;
    for (;;) {
      const vpnPart = level === 1 ? gva >>> 22 : (gva >>> 12) & 0x3ff;
      const pteGpa = tableGpa + vpnPart * 4;
      if (pteGpa >= 0x1_0000_0000) return this.fault(ACCESS_FAULT[access]);
      const pteHost = this.memory.hostOffset(pteGpa);
      if (pteHost < 0) return this.fault(ACCESS_FAULT[access]);
      const pte = Atomics.load(this.mem32, pteHost >> 2);
      if ((pte & C.PTE_V) === 0 || ((pte & C.PTE_R) === 0 && (pte & C.PTE_W) !== 0)) {
        return this.fault(PAGE_FAULT[access]);
      }
      const ppn = pte >>> 10;
      if ((pte & (C.PTE_R | C.PTE_X)) === 0) {
        // Pointer to the next level.
        if (level === 0) return this.fault(PAGE_FAULT[access]);
        level = 0;
        tableGpa = ppn * 4096;
        global = pte & C.PTE_G; // a global pointer makes every mapping below it global
        continue;
      }
      // Leaf: permission checks (section 4.3.2 step 5).
      if (priv === C.PRIV_U) {
        if ((pte & C.PTE_U) === 0) return this.fault(PAGE_FAULT[access]);
      } else if ((pte & C.PTE_U) !== 0) {
        if (access === ACCESS_EXEC || (this.mstatus & C.MSTATUS_SUM) === 0)
          return this.fault(PAGE_FAULT[access]);
      }
      if (access === ACCESS_READ) {
        const readable =
          (pte & C.PTE_R) !== 0 || ((this.mstatus & C.MSTATUS_MXR) !== 0 && (pte & C.PTE_X) !== 0);
        if (!readable) return this.fault(PAGE_FAULT[access]);
      } else if (access === ACCESS_WRITE) {
        if ((pte & C.PTE_W) === 0) return this.fault(PAGE_FAULT[access]);
      } else if ((pte & C.PTE_X) === 0) {
        return this.fault(PAGE_FAULT[access]);
      }
      // Misaligned superpage.
      if (level === 1 && (ppn & 0x3ff) !== 0) return this.fault(PAGE_FAULT[access]);
      // Hardware A/D update, atomically against other harts changing the same PTE.
      const want = pte | C.PTE_A | (access === ACCESS_WRITE ? C.PTE_D : 0);
      if (want !== pte && Atomics.compareExchange(this.mem32, pteHost >> 2, pte, want) !== pte) {
        continue; // The PTE changed under us: walk this level again.
      }
      const pageGpa = level === 1 ? (ppn >>> 10) * 0x40_0000 + (gva & 0x3f_ffff) : ppn * 4096 + (gva & 0xfff);
      if (pageGpa >= 0x1_0000_0000) return this.fault(ACCESS_FAULT[access]);
      // A user page reached from S-mode (SUM) counts as not global: it must go when SUM is cleared.
      const isGlobal = ((global | pte) & C.PTE_G) !== 0 && (pte & C.PTE_U) === 0;
      this.walkFound = (isGlobal ? WALK_GLOBAL : 0) | (level === 1 ? WALK_MEGA : 0);
      return pageGpa;
    }
  }

  private fault(cause: number): number {
    this.faultCause = cause;
    return -1;
  }

  // ---- loads and stores (fast path: TLB hit, aligned) ----

  /** Load a signed/unsigned value of `size` bytes; on a trap returns 0 with `trapped` set. */
  load32(gva: number): number {
    const vpn = gva >>> 12;
    const i = vpn & TLB_MASK;
    if (this.readTag[i] === (vpn | this.dataCtx) && (gva & 3) === 0) {
      return this.mem32[((gva + this.readDelta[i]) | 0) >> 2];
    }
    return this.loadSlow(gva, 4);
  }

  load16(gva: number): number {
    const vpn = gva >>> 12;
    const i = vpn & TLB_MASK;
    if (this.readTag[i] === (vpn | this.dataCtx) && (gva & 1) === 0) {
      return this.mem16[((gva + this.readDelta[i]) | 0) >> 1];
    }
    return this.loadSlow(gva, 2);
  }

  load8(gva: number): number {
    const vpn = gva >>> 12;
    const i = vpn & TLB_MASK;
    if (this.readTag[i] === (vpn | this.dataCtx)) {
      return this.mem8[(gva + this.readDelta[i]) | 0];
    }
    return this.loadSlow(gva, 1);
  }

  store32(gva: number, value: number): void {
    const vpn = gva >>> 12;
    const i = vpn & TLB_MASK;
    if (this.writeTag[i] === (vpn | this.dataCtx) && (gva & 3) === 0) {
      this.mem32[((gva + this.writeDelta[i]) | 0) >> 2] = value;
      return;
    }
    this.storeSlow(gva, value, 4);
  }

  store16(gva: number, value: number): void {
    const vpn = gva >>> 12;
    const i = vpn & TLB_MASK;
    if (this.writeTag[i] === (vpn | this.dataCtx) && (gva & 1) === 0) {
      this.mem16[((gva + this.writeDelta[i]) | 0) >> 1] = value;
      return;
    }
    this.storeSlow(gva, value, 2);
  }

  store8(gva: number, value: number): void {
    const vpn = gva >>> 12;
    const i = vpn & TLB_MASK;
    if (this.writeTag[i] === (vpn | this.dataCtx)) {
      this.mem8[(gva + this.writeDelta[i]) | 0] = value;
      return;
    }
    this.storeSlow(gva, value, 1);
  }

  /** Unsigned load of `size` bytes through translation; misaligned accesses are split into bytes. */
  loadSlow(gva: number, size: 1 | 2 | 4): number {
    if ((gva & (size - 1)) !== 0) {
      // Misaligned: done byte by byte, transparently (Linux 6.1 has no S-mode handler for it).
      let value = 0;
      for (let k = 0; k < size; k++) {
        const byte = this.loadSlow((gva + k) | 0, 1);
        if (this.trapped) return 0;
        value |= byte << (8 * k);
      }
      return value;
    }
    const host = this.translate(gva, ACCESS_READ);
    if (host === TRAPPED) return 0;
    if (host === NOT_RAM) {
      const value = this.mmio.read(this.mmioGpa, size);
      if (value === -1) {
        this.trap(C.CAUSE_LOAD_ACCESS, gva);
        return 0;
      }
      return size === 4 ? value | 0 : value;
    }
    if (size === 4) return this.mem32[host >> 2];
    if (size === 2) return this.mem16[host >> 1];
    return this.mem8[host];
  }

  private storeSlow(gva: number, value: number, size: 1 | 2 | 4): void {
    if ((gva & (size - 1)) !== 0) {
      // Check every byte translates before writing any, so a fault leaves memory untouched.
      for (let k = 0; k < size; k++) {
        if (this.translate((gva + k) | 0, ACCESS_WRITE) === TRAPPED) return;
      }
      for (let k = 0; k < size; k++) this.storeSlow((gva + k) | 0, (value >>> (8 * k)) & 0xff, 1);
      return;
    }
    const host = this.translate(gva, ACCESS_WRITE);
    if (host === TRAPPED) return;
    if (host === NOT_RAM) {
      if (!this.mmio.write(this.mmioGpa, size, value)) this.trap(C.CAUSE_STORE_ACCESS, gva);
      return;
    }
    if (host === this.reservation) this.reservation = -1;
    if (this.blocks !== null && this.blocks.holdsCode(host >>> 12)) this.codeStore(host);
    if (size === 4) this.mem32[host >> 2] = value;
    else if (size === 2) this.mem16[host >> 1] = value;
    else this.mem8[host] = value;
  }

  /** Host offset for an aligned atomic access at `gva` (store permission), or -1 after taking a trap. */
  private atomicHost(gva: number): number {
    if ((gva & 3) !== 0) {
      this.trap(C.CAUSE_MISALIGNED_STORE, gva);
      return -1;
    }
    const host = this.translate(gva, ACCESS_WRITE);
    if (host === TRAPPED) return -1;
    if (host === NOT_RAM) {
      this.trap(C.CAUSE_STORE_ACCESS, gva);
      return -1;
    }
    if (this.blocks !== null && this.blocks.holdsCode(host >>> 12)) this.codeStore(host);
    return host;
  }

  // ---- the interpreter ----

  /**
   * Execute up to `budget` instructions. Returns the number executed; `stopReason` says why it returned early.
   */
  run(budget: number): number {
    this.stopReason = STOP_BUDGET;
    this.exitLoop = false;
    this.pauses = 0;
    this.now = this.clock.ticks();
    this.absorbRequests();
    this.takeInterrupt();
    this.trapped = false;
    return this.blocks !== null ? this.runBlocks(budget, this.blocks) : this.execute(budget);
  }

  /** True when the common path runs in WebAssembly (see {@link HartOptions.area}). */
  get wasmEnabled(): boolean {
    return this.core !== undefined;
  }

  /** Instructions the WebAssembly tier retired since the hart was created. */
  wasmRetired = 0;

  /**
   * Execute up to `budget` instructions from `this.pc` as {@link interpret} does: in the WebAssembly tier where
   * the hart has it, with each instruction the tier leaves (SYSTEM, atomics, fences, TLB misses, MMIO, traps)
   * run by {@link interpret}.
   */
  private execute(budget: number): number {
    const core = this.core;
    if (core === undefined) return this.interpret(budget);
    const words = core.words;
    const loops = this.blocks !== null ? 1 : 0;
    let n = 0;
    while (n < budget) {
      const done = core.run(core.area, this.pc, budget - n, this.dataCtx, this.fetchCtx, loops);
      n += done;
      this.instret += done;
      this.wasmRetired += done;
      const pc = words[AREA_PC >> 2];
      this.pc = pc;
      const exit = words[AREA_EXIT >> 2];
      if (exit === EXIT_BUDGET) break;
      if (exit === EXIT_LOOP) {
        // As in the interpreter: a loop head with translated code goes back to the block dispatcher. The branch
        // was fetched from this page, so the exec TLB holds it.
        const host = (pc + this.execDelta[(pc >>> 12) & TLB_MASK]) | 0;
        const slot = (AREA_LOOP_HEADS >> 2) + ((host >>> 2) & (LOOP_SLOTS - 1));
        const translated = words[slot] === host;
        // A loop head the tier knows is translated was reported at once, the others one time in LOOP_SAMPLE.
        if (this.atLoopHead(host, translated ? 1 : LOOP_SAMPLE)) {
          words[slot] = host;
          break;
        }
        if (translated) words[slot] = -1; // its code was dropped since
        continue;
      }
      n += this.interpret(1);
      if (this.exitLoop) break;
    }
    return n;
  }

  /**
   * The interpreter: execute up to `budget` instructions from `this.pc`. With the block translator on, it also
   * returns when a backward branch or jump (a loop) leads to translated code, or makes its target hot enough to
   * translate. Updates pc and instret; returns the number executed.
   */
  private interpret(budget: number): number {
    const loops = this.blocks !== null;
    const x = this.x;
    const mem32 = this.mem32;
    const start = this.instret;
    let pc = this.pc;
    let n = 0;
    let fetchVpn = -1;
    let fetchDelta = 0;

    // `exitLoop` is only ever set on a path that also forgets the fetch page (a trap, a SYSTEM instruction, a
    // pause-loop exit), so it is checked there instead of on every instruction.
    execute: while (n < budget) {
      const vpn = pc >>> 12;
      if (vpn !== fetchVpn) {
        if (this.exitLoop) break;
        const index = vpn & TLB_MASK;
        if (this.execTag[index] === (vpn | this.fetchCtx)) {
          fetchDelta = this.execDelta[index];
        } else {
          this.pc = pc;
          const host = this.translate(pc, ACCESS_EXEC);
          if (host < 0) {
            if (host === NOT_RAM) this.trap(C.CAUSE_FETCH_ACCESS, pc);
            this.trapped = false;
            pc = this.pc;
            n++;
            continue;
          }
          fetchDelta = ((host & ~0xfff) - (vpn << 12)) | 0;
        }
        fetchVpn = vpn;
      }
      const insn = mem32[((pc + fetchDelta) | 0) >> 2];
      n++;
      const rd = (insn >> 7) & 31;
      const rs1 = (insn >> 15) & 31;
      const rs2 = (insn >> 20) & 31;
      switch (insn & 0x7f) {
        case 0x13: {
          // OP-IMM
          const imm = insn >> 20;
          const a = x[rs1];
          let v: number;
          switch ((insn >> 12) & 7) {
            case 0:
              v = (a + imm) | 0;
              break;
            case 1:
              if (insn >>> 25 !== 0) {
                v = this.illegal(pc, insn);
                pc = this.pc;
                fetchVpn = -1;
                continue;
              }
              v = a << (imm & 31);
              break;
            case 2:
              v = a < imm ? 1 : 0;
              break;
            case 3:
              v = a >>> 0 < imm >>> 0 ? 1 : 0;
              break;
            case 4:
              v = a ^ imm;
              break;
            case 5: {
              const f = insn >>> 25;
              if (f === 0) v = a >>> (imm & 31);
              else if (f === 0x20) v = a >> (imm & 31);
              else {
                this.illegal(pc, insn);
                pc = this.pc;
                fetchVpn = -1;
                continue;
              }
              break;
            }
            case 6:
              v = a | imm;
              break;
            default:
              v = a & imm;
              break;
          }
          if (rd !== 0) x[rd] = v;
          pc = (pc + 4) | 0;
          break;
        }
        case 0x33: {
          // OP
          const a = x[rs1];
          const b = x[rs2];
          const f7 = insn >>> 25;
          const f3 = (insn >> 12) & 7;
          let v: number;
          if (f7 === 0) {
            switch (f3) {
              case 0:
                v = (a + b) | 0;
                break;
              case 1:
                v = a << (b & 31);
                break;
              case 2:
                v = a < b ? 1 : 0;
                break;
              case 3:
                v = a >>> 0 < b >>> 0 ? 1 : 0;
                break;
              case 4:
                v = a ^ b;
                break;
              case 5:
                v = a >>> (b & 31);
                break;
              case 6:
                v = a | b;
                break;
              default:
                v = a & b;
                break;
            }
          } else if (f7 === 0x20 && (f3 === 0 || f3 === 5)) {
            v = f3 === 0 ? (a - b) | 0 : a >> (b & 31);
          } else if (f7 === 1) {
            v = mulDiv(f3, a, b);
          } else {
            this.illegal(pc, insn);
            pc = this.pc;
            fetchVpn = -1;
            continue;
          }
          if (rd !== 0) x[rd] = v;
          pc = (pc + 4) | 0;
          break;
        }
        case 0x03: {
          // LOAD
          const gva = (x[rs1] + (insn >> 20)) | 0;
          this.pc = pc;
          let v: number;
          switch ((insn >> 12) & 7) {
            case 0:
              v = (this.load8(gva) << 24) >> 24;
              break;
            case 1:
              v = (this.load16(gva) << 16) >> 16;
              break;
            case 2:
              v = this.load32(gva);
              break;
            case 4:
              v = this.load8(gva) & 0xff;
              break;
            case 5:
              v = this.load16(gva) & 0xffff;
              break;
            default:
              this.illegal(pc, insn);
              pc = this.pc;
              fetchVpn = -1;
              continue;
          }
          if (this.trapped) {
            this.trapped = false;
            pc = this.pc;
            fetchVpn = -1;
            continue;
          }
          if (rd !== 0) x[rd] = v;
          pc = (pc + 4) | 0;
          break;
        }
        case 0x23: {
          // STORE
          const gva = (x[rs1] + (((insn >> 25) << 5) | ((insn >> 7) & 31))) | 0;
          this.pc = pc;
          switch ((insn >> 12) & 7) {
            case 0:
              this.store8(gva, x[rs2]);
              break;
            case 1:
              this.store16(gva, x[rs2]);
              break;
            case 2:
              this.store32(gva, x[rs2]);
              break;
            default:
              this.illegal(pc, insn);
              pc = this.pc;
              fetchVpn = -1;
              continue;
          }
          if (this.trapped) {
            this.trapped = false;
            pc = this.pc;
            fetchVpn = -1;
            continue;
          }
          pc = (pc + 4) | 0;
          break;
        }
        case 0x63: {
          // BRANCH
          const a = x[rs1];
          const b = x[rs2];
          let taken: boolean;
          switch ((insn >> 12) & 7) {
            case 0:
              taken = a === b;
              break;
            case 1:
              taken = a !== b;
              break;
            case 4:
              taken = a < b;
              break;
            case 5:
              taken = a >= b;
              break;
            case 6:
              taken = a >>> 0 < b >>> 0;
              break;
            case 7:
              taken = a >>> 0 >= b >>> 0;
              break;
            default:
              this.illegal(pc, insn);
              pc = this.pc;
              fetchVpn = -1;
              continue;
          }
          if (taken) {
            const imm =
              ((insn >> 31) << 12) |
              (((insn >> 7) & 1) << 11) |
              (((insn >> 25) & 0x3f) << 5) |
              (((insn >> 8) & 0xf) << 1);
            const target = (pc + imm) | 0;
            if ((target & 3) !== 0) {
              this.pc = pc;
              this.trap(C.CAUSE_MISALIGNED_FETCH, target);
              this.trapped = false;
              pc = this.pc;
              fetchVpn = -1;
              continue;
            }
            pc = target;
            if (imm < 0 && loops && target >>> 12 === vpn && this.atLoopHead((target + fetchDelta) | 0)) {
              break execute;
            }
          } else {
            pc = (pc + 4) | 0;
          }
          break;
        }
        case 0x37:
          // LUI
          if (rd !== 0) x[rd] = insn & 0xfffff000;
          pc = (pc + 4) | 0;
          break;
        case 0x17:
          // AUIPC
          if (rd !== 0) x[rd] = (pc + (insn & 0xfffff000)) | 0;
          pc = (pc + 4) | 0;
          break;
        case 0x6f: {
          // JAL
          const imm =
            ((insn >> 31) << 20) |
            (insn & 0xff000) |
            (((insn >> 20) & 1) << 11) |
            (((insn >> 21) & 0x3ff) << 1);
          const target = (pc + imm) | 0;
          if ((target & 3) !== 0) {
            this.pc = pc;
            this.trap(C.CAUSE_MISALIGNED_FETCH, target);
            this.trapped = false;
            pc = this.pc;
            fetchVpn = -1;
            continue;
          }
          if (rd !== 0) x[rd] = (pc + 4) | 0;
          pc = target;
          if (imm < 0 && loops && target >>> 12 === vpn && this.atLoopHead((target + fetchDelta) | 0)) {
            break execute;
          }
          break;
        }
        case 0x67: {
          // JALR
          const target = ((x[rs1] + (insn >> 20)) & ~1) | 0;
          if ((insn & 0x7000) !== 0) {
            this.illegal(pc, insn);
            pc = this.pc;
            fetchVpn = -1;
            continue;
          }
          if ((target & 3) !== 0) {
            this.pc = pc;
            this.trap(C.CAUSE_MISALIGNED_FETCH, target);
            this.trapped = false;
            pc = this.pc;
            fetchVpn = -1;
            continue;
          }
          if (rd !== 0) x[rd] = (pc + 4) | 0;
          pc = target;
          break;
        }
        case 0x2f: {
          // AMO
          this.pc = pc;
          this.execAtomic(insn, rd, rs1, rs2);
          if (this.trapped) {
            this.trapped = false;
            fetchVpn = -1;
          }
          pc = this.pc;
          break;
        }
        case 0x0f: {
          // MISC-MEM. FENCE: see `fullFence`. FENCE.I: translated code is rechecked.
          const f3 = (insn >> 12) & 7;
          if (f3 === 0 && fenceOrders(insn)) {
            this.fullFence();
          } else if (f3 === 1) {
            fetchVpn = -1;
            this.flushInstructionCache();
          } else if (insn === PAUSE_INSN && ++this.pauses >= PAUSE_LOOP_LIMIT) {
            // Pause-loop exit: this hart spins on a lock whose holder may be descheduled on the host. End the
            // slice so the runner yields the host core (as PLE does on real hypervisors).
            this.pauses = 0;
            this.stopReason = STOP_PAUSE_LOOP;
            this.exitLoop = true;
            fetchVpn = -1;
          } else if (f3 !== 0) {
            this.illegal(pc, insn);
            pc = this.pc;
            fetchVpn = -1;
            continue;
          }
          pc = (pc + 4) | 0;
          break;
        }
        case 0x73: {
          // SYSTEM: rare and state-changing; leave the fast loop state behind.
          this.pc = pc;
          this.instret = start + n;
          this.execSystem(insn, rd, rs1);
          this.trapped = false;
          pc = this.pc;
          fetchVpn = -1;
          if (this.recheck) {
            this.recheck = false;
            this.takeInterrupt();
            this.trapped = false;
            pc = this.pc;
          }
          break;
        }
        default:
          this.illegal(pc, insn);
          pc = this.pc;
          fetchVpn = -1;
          break;
      }
    }
    this.pc = pc;
    this.instret = start + n;
    return n;
  }

  /**
   * The block dispatcher: run translated code where there is some, and the interpreter elsewhere. The interpreter
   * hands over at loop heads that have (or just got) a translation; a translated block hands over to the next
   * translated block directly, and code reached from translated code is counted towards translation too, so a
   * hot loop made of several blocks ends up translated as a whole. Remote fences are honoured between blocks;
   * interrupts, as in the interpreter, at slice starts and after instructions that can unmask one.
   */
  private runBlocks(budget: number, cache: BlockCache): number {
    const execTag = this.execTag;
    const execDelta = this.execDelta;
    const control = this.block;
    const fenceIndex = this.fenceIndex;
    let n = 0;
    while (n < budget) {
      if (this.exitLoop) break;
      if (control[fenceIndex] !== 0) this.absorbFence();
      const pc = this.pc;
      const vpn = pc >>> 12;
      const index = vpn & TLB_MASK;
      if (execTag[index] === (vpn | this.fetchCtx)) {
        const host = (pc + execDelta[index]) | 0;
        const found = cache.lookup(host);
        if (found !== undefined) {
          if (
            found.run !== null &&
            found.len <= budget - n &&
            (found.epoch === cache.epoch || cache.revalidate(found, host, this.mem32))
          ) {
            const done = found.run(pc, budget - n);
            n += done;
            this.instret += done;
            this.trapped = false;
            continue;
          }
        } else if (this.countHot(cache, host)) {
          continue;
        }
      }
      n += this.execute(budget - n);
    }
    return n;
  }

  /**
   * The interpreter took a backward branch to host offset `host` (a loop head): true when the dispatcher should
   * take over there, because the loop head is translated (or just got hot enough to be) and worth leaving the
   * interpreter for: the whole loop is in the block, or enough of it to pay for the round trip. `weight`: how
   * many executions this one report stands for (the WebAssembly tier reports one in LOOP_SAMPLE).
   */
  private atLoopHead(host: number, weight = 1): boolean {
    const cache = this.blocks!;
    const found = cache.lookup(host) ?? (this.countHot(cache, host, weight) ? cache.lookup(host) : undefined);
    return found !== undefined && found.run !== null && (found.loops || found.len >= HANDOVER_INSNS);
  }

  /**
   * Count `weight` executions of the untranslated block start at `host`; translate it when hot. True if
   * translated.
   */
  private countHot(cache: BlockCache, host: number, weight = 1): boolean {
    const counter = (host >>> 2) & cache.hotMask;
    if ((cache.hot[counter] += weight) < this.jitThreshold) return false;
    cache.hot[counter] = 0;
    return this.translateBlock(cache, host);
  }

  /** Translate the block at host offset `host` (or mark it as left to the interpreter); true if translated. */
  private translateBlock(cache: BlockCache, host: number): boolean {
    const plan = planBlock(this.mem32, host >> 2);
    const run =
      plan.len > 0 ? compileBlock(blockSource(plan.words, plan.len), this.blockEnv, MUL_HIGH) : null;
    const block: Block = { len: plan.len, words: plan.words, loops: plan.loops, run, epoch: cache.epoch };
    if (cache.add(host, block)) this.protectFrame(host >>> 12);
    return run !== null;
  }

  /** A frame now holds translated code: drop its write TLB entries, so stores to it take the slow path. */
  private protectFrame(frame: number): void {
    for (let i = 0; i < TLB_SIZE; i++) {
      const tag = this.writeTag[i];
      if (tag !== -1 && ((((tag & 0xfffff) << 12) + this.writeDelta[i]) | 0) >>> 12 === frame) {
        this.writeTag[i] = -1;
      }
    }
  }

  /** This hart stores into a frame holding translated code (host offset `host`): drop the frame's blocks. */
  private codeStore(host: number): void {
    this.blocks?.dropFrame(host >>> 12);
    this.codeWritten = true;
  }

  /** The store slow path for translated code; true when the block must end (a trap, or its code changed). */
  blockStore(gva: number, value: number, size: 1 | 2 | 4): boolean {
    this.codeWritten = false;
    this.storeSlow(gva, value, size);
    if (this.trapped) return true;
    if (!this.codeWritten) return false;
    this.codeWritten = false;
    this.pc = (this.pc + 4) | 0;
    return true;
  }

  /** LR/SC/AMO for translated code (registers in `x`, pc set); true when the block must end. */
  blockAtomic(insn: number): boolean {
    this.codeWritten = false;
    this.execAtomic(insn, (insn >> 7) & 31, (insn >> 15) & 31, (insn >> 20) & 31);
    if (this.trapped) return true;
    const changed = this.codeWritten;
    this.codeWritten = false;
    return changed;
  }

  /** Raise an illegal-instruction trap for `insn` at `pc`; returns 0 for convenience. */
  private illegal(pc: number, insn: number): number {
    this.pc = pc;
    this.trap(C.CAUSE_ILLEGAL_INSTRUCTION, insn);
    this.trapped = false;
    return 0;
  }

  /** LR/SC and AMOs (A extension), atomic across harts through Atomics on the shared RAM. */
  private execAtomic(insn: number, rd: number, rs1: number, rs2: number): void {
    const pc = this.pc;
    if (((insn >> 12) & 7) !== 2) {
      this.illegal(pc, insn);
      return;
    }
    const gva = this.x[rs1];
    const funct5 = insn >>> 27;
    const mem = this.mem32;
    if (funct5 === 0x02) {
      // LR.W
      if (rs2 !== 0) {
        this.illegal(pc, insn);
        return;
      }
      if ((gva & 3) !== 0) {
        this.trap(C.CAUSE_MISALIGNED_LOAD, gva);
        return;
      }
      const host = this.translate(gva, ACCESS_READ);
      if (host === TRAPPED) return;
      if (host === NOT_RAM) {
        this.trap(C.CAUSE_LOAD_ACCESS, gva);
        return;
      }
      const value = Atomics.load(mem, host >> 2);
      this.reservation = host;
      this.reservedValue = value;
      if (rd !== 0) this.x[rd] = value;
      this.pc = (pc + 4) | 0;
      return;
    }
    const host = this.atomicHost(gva);
    if (host < 0) return;
    const index = host >> 2;
    const b = this.x[rs2];
    let old: number;
    switch (funct5) {
      case 0x03: {
        // SC.W: succeeds only if the reservation is ours and the word still holds the value LR saw.
        let ok = false;
        if (this.reservation === host) {
          ok = Atomics.compareExchange(mem, index, this.reservedValue, b) === this.reservedValue;
        }
        this.reservation = -1;
        if (rd !== 0) this.x[rd] = ok ? 0 : 1;
        this.pc = (pc + 4) | 0;
        return;
      }
      case 0x01:
        old = Atomics.exchange(mem, index, b);
        break;
      case 0x00:
        old = Atomics.add(mem, index, b);
        break;
      case 0x04:
        old = Atomics.xor(mem, index, b);
        break;
      case 0x0c:
        old = Atomics.and(mem, index, b);
        break;
      case 0x08:
        old = Atomics.or(mem, index, b);
        break;
      case 0x10:
      case 0x14:
      case 0x18:
      case 0x1c:
        old = atomicMinMax(mem, index, b, funct5);
        break;
      default:
        this.illegal(pc, insn);
        return;
    }
    if (this.reservation === host) this.reservation = -1;
    if (rd !== 0) this.x[rd] = old;
    this.pc = (pc + 4) | 0;
  }

  /** SYSTEM opcode: ECALL, EBREAK, xRET, WFI, SFENCE.VMA and the CSR instructions. */
  private execSystem(insn: number, rd: number, rs1: number): void {
    const pc = this.pc;
    const f3 = (insn >> 12) & 7;
    if (f3 === 0) {
      if (rd !== 0) {
        this.illegal(pc, insn);
        return;
      }
      const f12 = insn >>> 20;
      if (insn >>> 25 === 0x09) {
        // SFENCE.VMA
        if (this.priv === C.PRIV_U || (this.priv === C.PRIV_S && (this.mstatus & C.MSTATUS_TVM) !== 0)) {
          this.illegal(pc, insn);
          return;
        }
        // rs2 names one ASID; an address narrows it to one page. (Flushing more than asked is always allowed.)
        const rs2 = (insn >>> 20) & 31;
        if (rs1 !== 0) this.flushPage(this.x[rs1]);
        else if (rs2 !== 0) this.flushAsid(this.x[rs2]);
        else this.flushTlb();
        this.pc = (pc + 4) | 0;
        return;
      }
      if (rs1 !== 0) {
        this.illegal(pc, insn);
        return;
      }
      switch (f12) {
        case 0x000: // ECALL
          if (this.priv === C.PRIV_S && this.firmware !== undefined) {
            this.firmware.ecall(this);
            this.x[0] = 0;
            this.pc = (pc + 4) | 0;
            this.recheck = true;
            return;
          }
          this.trap(C.CAUSE_USER_ECALL + this.priv, 0);
          return;
        case 0x001: // EBREAK
          this.trap(C.CAUSE_BREAKPOINT, pc);
          return;
        case 0x302: {
          // MRET
          if (this.priv < C.PRIV_M) {
            this.illegal(pc, insn);
            return;
          }
          const mpp = (this.mstatus & C.MSTATUS_MPP) >>> C.MSTATUS_MPP_SHIFT;
          let s = this.mstatus & ~(C.MSTATUS_MIE | C.MSTATUS_MPP);
          if (this.mstatus & C.MSTATUS_MPIE) s |= C.MSTATUS_MIE;
          s |= C.MSTATUS_MPIE;
          if (mpp !== C.PRIV_M) s &= ~C.MSTATUS_MPRV;
          this.mstatus = s;
          this.priv = mpp;
          this.pc = this.mepc & ~3;
          this.reservation = -1;
          this.updateContexts();
          this.recheck = true;
          return;
        }
        case 0x102: {
          // SRET
          if (this.priv === C.PRIV_U || (this.priv === C.PRIV_S && (this.mstatus & C.MSTATUS_TSR) !== 0)) {
            this.illegal(pc, insn);
            return;
          }
          const spp = (this.mstatus & C.MSTATUS_SPP) !== 0 ? C.PRIV_S : C.PRIV_U;
          let s = this.mstatus & ~(C.MSTATUS_SIE | C.MSTATUS_SPP);
          if (this.mstatus & C.MSTATUS_SPIE) s |= C.MSTATUS_SIE;
          s |= C.MSTATUS_SPIE;
          s &= ~C.MSTATUS_MPRV;
          this.mstatus = s;
          this.priv = spp;
          this.pc = this.sepc & ~3;
          this.reservation = -1;
          this.updateContexts();
          this.recheck = true;
          return;
        }
        case 0x105: // WFI
          if (this.priv === C.PRIV_U || (this.priv === C.PRIV_S && (this.mstatus & C.MSTATUS_TW) !== 0)) {
            this.illegal(pc, insn);
            return;
          }
          this.pc = (pc + 4) | 0;
          if (!this.interruptPending()) {
            this.stopReason = STOP_WFI;
            this.exitLoop = true;
          }
          this.recheck = true;
          return;
        default:
          this.illegal(pc, insn);
          return;
      }
    }
    if (f3 === 4) {
      this.illegal(pc, insn);
      return;
    }
    // CSR instructions (Zicsr).
    const csr = insn >>> 20;
    const operand = f3 >= 5 ? rs1 : this.x[rs1];
    const op = f3 & 3; // 1 = RW, 2 = RS, 3 = RC
    // Reading or unmasking interrupt state must see the timer as of now, not as of the slice start.
    if (csr === C.CSR_MIP || csr === C.CSR_SIP || csr === C.CSR_MIE || csr === C.CSR_SIE)
      this.now = this.clock.ticks();
    else if (csr === C.CSR_MSTATUS || csr === C.CSR_SSTATUS) this.now = this.clock.ticks();
    const writes = op === 1 || rs1 !== 0;
    const reads = op !== 1 || rd !== 0;
    if (!this.csrAccessible(csr, writes)) {
      this.illegal(pc, insn);
      return;
    }
    let old = 0;
    if (reads || op !== 1) {
      const value = this.readCsr(csr);
      if (value === undefined) {
        this.illegal(pc, insn);
        return;
      }
      old = value;
    }
    if (writes) {
      const next = op === 1 ? operand : op === 2 ? old | operand : old & ~operand;
      if (!this.writeCsr(csr, next | 0)) {
        this.illegal(pc, insn);
        return;
      }
    }
    if (rd !== 0) this.x[rd] = old;
    this.pc = (pc + 4) | 0;
    this.recheck = true;
  }

  /** Invalidate the non-global TLB entries of one ASID (SFENCE.VMA with rs1 = x0, rs2 != x0). */
  private flushAsid(asid: number): void {
    const user = CTX_USER | ((asid << C.SATP_ASID_SHIFT) & C.SATP_ASID_MASK);
    const mask = CTX_KIND | C.SATP_ASID_MASK;
    this.dropTags((tag) => (tag & mask) === user);
    this.dropLocal(); // supervisor entries of non-global pages are the current ASID's
  }

  /** Invalidate the TLB entries for one virtual page (SFENCE.VMA with rs1 != x0). */
  private flushPage(gva: number): void {
    const vpn = gva >>> 12;
    const region = gva >>> 22;
    const bit = 1 << (region & 31);
    if ((this.megaRegions[region >>> 5] & bit) !== 0) {
      // A megapage is held as one entry per 4 KiB page it was used at: drop every entry in its 4 MiB.
      this.megaRegions[region >>> 5] &= ~bit;
      this.dropTags((tag) => (tag & 0xfffff) >>> 10 === region);
      return;
    }
    const i = vpn & TLB_MASK;
    if ((this.readTag[i] & 0xfffff) === vpn) this.readTag[i] = -1;
    if ((this.writeTag[i] & 0xfffff) === vpn) this.writeTag[i] = -1;
    if ((this.execTag[i] & 0xfffff) === vpn) this.execTag[i] = -1;
  }

  /** Privilege and read-only checks of section 2.1, plus counter-enable and TVM gating. */
  private csrAccessible(csr: number, writes: boolean): boolean {
    if (((csr >>> 8) & 3) > this.priv) return false;
    if (writes && csr >>> 10 === 3) return false;
    if (csr >= 0xc00 && csr <= 0xc9f) {
      const bit = 1 << (csr & 31);
      if (this.priv < C.PRIV_M && (this.mcounteren & bit) === 0) return false;
      if (this.priv === C.PRIV_U && (this.scounteren & bit) === 0) return false;
    }
    if (csr === C.CSR_SATP && this.priv === C.PRIV_S && (this.mstatus & C.MSTATUS_TVM) !== 0) return false;
    return true;
  }

  /** Instructions retired so far, including the running slice. */
  private retired(): number {
    return this.instret;
  }

  /** Read a CSR; undefined when it does not exist. */
  readCsr(csr: number): number | undefined {
    switch (csr) {
      case C.CSR_SSTATUS:
        return this.mstatus & C.SSTATUS_MASK;
      case C.CSR_SIE:
        return this.mie & this.mideleg;
      case C.CSR_STVEC:
        return this.stvec;
      case C.CSR_SCOUNTEREN:
        return this.scounteren;
      case C.CSR_SENVCFG:
        return this.senvcfg;
      case C.CSR_SSCRATCH:
        return this.sscratch;
      case C.CSR_SEPC:
        return this.sepc;
      case C.CSR_SCAUSE:
        return this.scause;
      case C.CSR_STVAL:
        return this.stval;
      case C.CSR_SIP:
        return this.currentMip() & this.mideleg;
      case C.CSR_SATP:
        return this.satp;
      case C.CSR_MVENDORID:
      case C.CSR_MARCHID:
      case C.CSR_MIMPID:
      case C.CSR_MCONFIGPTR:
        return 0;
      case C.CSR_MHARTID:
        return this.hartId;
      case C.CSR_MSTATUS:
        return this.mstatus;
      case C.CSR_MISA:
        return C.MISA_VALUE;
      case C.CSR_MEDELEG:
        return this.medeleg;
      case C.CSR_MIDELEG:
        return this.mideleg;
      case C.CSR_MIE:
        return this.mie;
      case C.CSR_MTVEC:
        return this.mtvec;
      case C.CSR_MCOUNTEREN:
        return this.mcounteren;
      case C.CSR_MENVCFG:
        return this.menvcfg;
      case C.CSR_MENVCFGH:
        return this.menvcfgh;
      case C.CSR_MSTATUSH:
        return 0;
      case C.CSR_MCOUNTINHIBIT:
        return this.mcountinhibit;
      case C.CSR_MSCRATCH:
        return this.mscratch;
      case C.CSR_MEPC:
        return this.mepc;
      case C.CSR_MCAUSE:
        return this.mcause;
      case C.CSR_MTVAL:
        return this.mtval;
      case C.CSR_MIP:
        return this.currentMip();
      case C.CSR_TSELECT:
        return 0;
      case C.CSR_TDATA1:
      case C.CSR_TDATA2:
      case C.CSR_TDATA3:
        return 0;
      case C.CSR_CYCLE:
      case C.CSR_MCYCLE:
        return lo(this.retired() + this.cycleOffset);
      case C.CSR_CYCLEH:
      case C.CSR_MCYCLEH:
        return hi(this.retired() + this.cycleOffset);
      case C.CSR_INSTRET:
      case C.CSR_MINSTRET:
        return lo(this.retired() + this.instretOffset);
      case C.CSR_INSTRETH:
      case C.CSR_MINSTRETH:
        return hi(this.retired() + this.instretOffset);
      case C.CSR_TIME:
        return lo(this.clock.ticks());
      case C.CSR_TIMEH:
        return hi(this.clock.ticks());
    }
    if (csr >= C.CSR_PMPCFG0 && csr < C.CSR_PMPCFG0 + 4) return this.pmpcfg[csr - C.CSR_PMPCFG0];
    if (csr >= C.CSR_PMPADDR0 && csr < C.CSR_PMPADDR0 + 16) return this.pmpaddr[csr - C.CSR_PMPADDR0];
    if (csr >= C.CSR_PMPCFG0 + 4 && csr < C.CSR_PMPCFG0 + 16) return 0;
    if (csr >= C.CSR_PMPADDR0 + 16 && csr < C.CSR_PMPADDR0 + 64) return 0;
    // Unimplemented hardware performance counters and their events read as zero.
    if ((csr >= 0xb03 && csr <= 0xb1f) || (csr >= 0xb83 && csr <= 0xb9f)) return 0;
    if ((csr >= 0xc03 && csr <= 0xc1f) || (csr >= 0xc83 && csr <= 0xc9f)) return 0;
    if (csr >= C.CSR_MHPMEVENT3 && csr <= 0x33f) return 0;
    return undefined;
  }

  /** Write a CSR (WARL fields legalized); false when it does not exist. */
  writeCsr(csr: number, value: number): boolean {
    switch (csr) {
      case C.CSR_SSTATUS:
        this.setMstatus((this.mstatus & ~C.SSTATUS_MASK) | (value & C.SSTATUS_MASK));
        return true;
      case C.CSR_SIE:
        this.mie = (this.mie & ~this.mideleg) | (value & this.mideleg);
        return true;
      case C.CSR_STVEC:
        this.stvec = legalTvec(value);
        return true;
      case C.CSR_SCOUNTEREN:
        this.scounteren = value & 7;
        return true;
      case C.CSR_SENVCFG:
        this.senvcfg = 0;
        return true;
      case C.CSR_SSCRATCH:
        this.sscratch = value;
        return true;
      case C.CSR_SEPC:
        this.sepc = value & ~3;
        return true;
      case C.CSR_SCAUSE:
        this.scause = value;
        return true;
      case C.CSR_STVAL:
        this.stval = value;
        return true;
      case C.CSR_SIP:
        // Only SSIP is writable from S-mode, and only when delegated.
        this.mipSoft = (this.mipSoft & ~(C.MIP_SSIP & this.mideleg)) | (value & C.MIP_SSIP & this.mideleg);
        return true;
      case C.CSR_SATP:
        // Sv32 or Bare, with all 9 ASID bits.
        this.setSatp(value);
        return true;
      case C.CSR_MSTATUS:
        this.setMstatus(value);
        return true;
      case C.CSR_MISA:
        return true;
      case C.CSR_MEDELEG:
        this.medeleg = value & C.MEDELEG_WRITABLE;
        return true;
      case C.CSR_MIDELEG:
        this.mideleg = value & C.MIP_S_ALL;
        return true;
      case C.CSR_MIE:
        this.mie = value & C.MIP_ALL;
        return true;
      case C.CSR_MTVEC:
        this.mtvec = legalTvec(value);
        return true;
      case C.CSR_MCOUNTEREN:
        this.mcounteren = value & 7;
        return true;
      case C.CSR_MENVCFG:
      case C.CSR_MENVCFGH:
      case C.CSR_MSTATUSH:
        return true;
      case C.CSR_MCOUNTINHIBIT:
        this.mcountinhibit = value & 5;
        return true;
      case C.CSR_MSCRATCH:
        this.mscratch = value;
        return true;
      case C.CSR_MEPC:
        this.mepc = value & ~3;
        return true;
      case C.CSR_MCAUSE:
        this.mcause = value;
        return true;
      case C.CSR_MTVAL:
        this.mtval = value;
        return true;
      case C.CSR_MIP:
        this.mipSoft = value & C.MIP_M_WRITABLE;
        return true;
      case C.CSR_TSELECT:
      case C.CSR_TDATA1:
      case C.CSR_TDATA2:
      case C.CSR_TDATA3:
        return true;
      case C.CSR_MCYCLE:
        this.cycleOffset = setLo(this.retired() + this.cycleOffset, value) - this.retired();
        return true;
      case C.CSR_MCYCLEH:
        this.cycleOffset = setHi(this.retired() + this.cycleOffset, value) - this.retired();
        return true;
      case C.CSR_MINSTRET:
        // The write happens instead of this instruction's own increment (section 3.3.1).
        this.instretOffset = setLo(this.retired() + this.instretOffset, value) - this.retired() - 1;
        return true;
      case C.CSR_MINSTRETH:
        this.instretOffset = setHi(this.retired() + this.instretOffset, value) - this.retired() - 1;
        return true;
    }
    if (csr >= C.CSR_PMPCFG0 && csr < C.CSR_PMPCFG0 + 4) {
      this.pmpcfg[csr - C.CSR_PMPCFG0] = value;
      return true;
    }
    if (csr >= C.CSR_PMPADDR0 && csr < C.CSR_PMPADDR0 + 16) {
      this.pmpaddr[csr - C.CSR_PMPADDR0] = value;
      return true;
    }
    return this.readCsr(csr) !== undefined;
  }

  private setMstatus(value: number): void {
    let s = (this.mstatus & ~C.MSTATUS_WRITABLE) | (value & C.MSTATUS_WRITABLE);
    // MPP is WARL: the reserved value 2 becomes U.
    if ((s & C.MSTATUS_MPP) === 2 << C.MSTATUS_MPP_SHIFT) s &= ~C.MSTATUS_MPP;
    const translationBits = C.MSTATUS_MPRV | C.MSTATUS_MPP | C.MSTATUS_SUM | C.MSTATUS_MXR;
    const changed = (s ^ this.mstatus) & translationBits;
    this.mstatus = s;
    // Entries were filled under the old SUM and MXR: clearing SUM must drop those for user pages (listed as
    // local), a change of MXR everything. Setting SUM only permits more, so nothing cached is wrong.
    if ((changed & C.MSTATUS_MXR) !== 0) this.flushTlb();
    else if ((changed & C.MSTATUS_SUM) !== 0 && (s & C.MSTATUS_SUM) === 0) this.dropLocal();
    if (changed) this.updateContexts();
  }
}

/** The highest-priority interrupt among `bits`: MEI, MSI, MTI, SEI, SSI, STI (section 3.1.9). */
function pickInterrupt(bits: number): number {
  if (bits & C.MIP_MEIP) return C.IRQ_M_EXT;
  if (bits & C.MIP_MSIP) return C.IRQ_M_SOFT;
  if (bits & C.MIP_MTIP) return C.IRQ_M_TIMER;
  if (bits & C.MIP_SEIP) return C.IRQ_S_EXT;
  if (bits & C.MIP_SSIP) return C.IRQ_S_SOFT;
  return C.IRQ_S_TIMER;
}

function atomicMinMax(mem: Int32Array, index: number, b: number, funct5: number): number {
  for (;;) {
    const old = Atomics.load(mem, index);
    let next: number;
    if (funct5 === 0x10) next = old < b ? old : b;
    else if (funct5 === 0x14) next = old > b ? old : b;
    else if (funct5 === 0x18) next = old >>> 0 < b >>> 0 ? old : b;
    else next = old >>> 0 > b >>> 0 ? old : b;
    if (Atomics.compareExchange(mem, index, old, next) === old) return old;
  }
}

/** xtvec: MODE 0 (direct) or 1 (vectored); reserved modes become direct. */
function legalTvec(value: number): number {
  return (value & 3) >= 2 ? value & ~3 : value;
}

function lo(value: number): number {
  return (value % 0x1_0000_0000) | 0;
}

function hi(value: number): number {
  return Math.floor(value / 0x1_0000_0000) | 0;
}

function setLo(current: number, value: number): number {
  return Math.floor(current / 0x1_0000_0000) * 0x1_0000_0000 + (value >>> 0);
}

function setHi(current: number, value: number): number {
  return (value >>> 0) * 0x1_0000_0000 + (current % 0x1_0000_0000);
}
