import type { AccessSize, IrqSink, MmioDevice } from './mmio.ts';
import type { HartLines } from '../common/shared-block.ts';
import { MIP_MEIP, MIP_SEIP } from '../common/shared-block.ts';
import { SpinLock } from '../common/spin-lock.ts';

/**
 * PLIC register map (RISC-V PLIC specification 1.0.0, chapter "Memory Map"; SiFive PLIC as on QEMU `virt`).
 * Offsets are relative to the device base; every register is 32 bits wide.
 */
/** Priority of source s at `PLIC_PRIORITY + 4 * s`, s in [1, 1024). */
export const PLIC_PRIORITY = 0x00_0000;
/** Pending bits, 32 sources per word, at `[PLIC_PENDING, PLIC_PENDING + 0x80)`; read-only. */
export const PLIC_PENDING = 0x00_1000;
/** Enable bits of context c at `PLIC_ENABLE + PLIC_ENABLE_STRIDE * c`, 32 sources per word. */
export const PLIC_ENABLE = 0x00_2000;
export const PLIC_ENABLE_STRIDE = 0x80;
/** Priority threshold of context c at `PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * c`. */
export const PLIC_CONTEXT = 0x20_0000;
export const PLIC_CONTEXT_STRIDE = 0x1000;
/** Claim (read) / complete (write) of context c, 4 bytes after its threshold. */
export const PLIC_CLAIM = 4;
/** Bytes of address space the PLIC decodes. */
export const PLIC_SIZE = 0x60_0000;

/** Highest priority (and threshold) value: 3 priority bits, as QEMU `virt` implements. */
export const PLIC_MAX_PRIORITY = 7;
/** Interrupt sources on QEMU `virt` (`riscv,ndev`): sources 1..95; source 0 does not exist. */
export const VIRT_PLIC_SOURCES = 95;
/** The architectural maximum of sources the register map has room for (ids 1..1023). */
const MAX_SOURCES = 1023;

/**
 * Shared-state layout of the PLIC's region (int32 word offsets from `base`), with `W = ceil((sources + 1) / 32)`
 * bitmap words (bit s of word s >>> 5 is source s; bit 0 is never set):
 *   [0]                          lock word
 *   [1, 1 + sources + 1)         priority[s] (index 0 unused)
 *   [P, P + W)                   pending bits
 *   [P + W, P + 2W)              level bits: the line level last reported by the device (`setLevel`)
 *   [P + 2W, P + 3W)             in-service bits: claimed and not yet completed
 *   then per context c:          W enable words, then threshold
 */
const LOCK = 0;
const PRIORITIES = 1;

/**
 * The platform-level interrupt controller: level-triggered sources, per-source priority, and per-context enable,
 * threshold and claim/complete. Context 2h is hart h's M mode (drives MEIP), 2h + 1 its S mode (drives SEIP).
 *
 * The gateway is level-triggered: a source is pending exactly while its level is high and it is not in service.
 * (A source whose device drops the line before anyone claims it stops being pending, so Linux never claims an
 * interrupt that has gone away; the spec's gateway would leave it pending and the claim would be spurious.)
 * Claiming clears the pending bit and puts the source in service; completing ends service and re-pends it if the
 * level is still high.
 *
 * All state lives in the control block under one spin lock, because harts (claims, register writes) and the I/O
 * thread (`setLevel`) act concurrently. After every change every context's output is recomputed and the harts'
 * MEIP/SEIP lines raised or lowered (raising wakes the hart).
 *
 * Only aligned 32-bit accesses are decoded; others are rejected (the hart raises an access fault). Registers of
 * sources or contexts that do not exist read 0 and ignore writes; the pending array is read-only.
 */
export class Plic implements MmioDevice, IrqSink {
  readonly size = PLIC_SIZE;
  /** Interrupt sources 1..sources exist. */
  readonly sources: number;
  /** Contexts: two per hart. */
  readonly contexts: number;
  private readonly lock: SpinLock;
  /** Bitmap words per bit array. */
  private readonly bitmapWords: number;
  private readonly pendingBase: number;
  private readonly levelBase: number;
  private readonly serviceBase: number;
  private readonly contextBase: number;
  private readonly contextWords: number;

  /** Control-block words a PLIC with `sources` sources and `hartCount` harts needs. */
  static words(hartCount: number, sources: number = VIRT_PLIC_SOURCES): number {
    const w = bitmapWordsFor(sources);
    return PRIORITIES + sources + 1 + 3 * w + 2 * hartCount * (w + 1);
  }

  constructor(
    private readonly block: Int32Array,
    private readonly base: number,
    private readonly lines: HartLines,
    sources: number = VIRT_PLIC_SOURCES,
  ) {
    if (!Number.isInteger(sources) || sources < 1 || sources > MAX_SOURCES) {
      throw new RangeError(`PLIC sources must be an integer in [1, ${MAX_SOURCES}]`);
    }
    this.sources = sources;
    this.contexts = 2 * lines.hartCount;
    this.lock = new SpinLock(block, base + LOCK);
    this.bitmapWords = bitmapWordsFor(sources);
    this.pendingBase = base + PRIORITIES + sources + 1;
    this.levelBase = this.pendingBase + this.bitmapWords;
    this.serviceBase = this.levelBase + this.bitmapWords;
    this.contextBase = this.serviceBase + this.bitmapWords;
    this.contextWords = this.bitmapWords + 1;
  }

  /** Drive source `irq` high or low (from any thread). Sources that do not exist are ignored. */
  setLevel(irq: number, level: boolean): void {
    if (!this.isSource(irq)) return;
    const word = irq >>> 5;
    const bit = 1 << (irq & 31);
    // Fast path: a repeated level changes nothing, so it needs neither the lock nor a recompute.
    const current = (Atomics.load(this.block, this.levelBase + word) & bit) !== 0;
    if (current === level) return;
    this.lock.acquire();
    try {
      if (level) {
        this.block[this.levelBase + word] |= bit;
        if ((this.block[this.serviceBase + word] & bit) === 0) this.block[this.pendingBase + word] |= bit;
      } else {
        this.block[this.levelBase + word] &= ~bit;
        this.block[this.pendingBase + word] &= ~bit;
      }
      this.updateOutputs();
    } finally {
      this.lock.release();
    }
  }

  read(mmioOffset: number, size: AccessSize): number {
    if (size !== 4 || (mmioOffset & 3) !== 0 || mmioOffset < 0 || mmioOffset >= PLIC_SIZE) return -1;
    if (mmioOffset < PLIC_PENDING) {
      const source = (mmioOffset - PLIC_PRIORITY) >>> 2;
      return this.isSource(source) ? Atomics.load(this.block, this.base + PRIORITIES + source) >>> 0 : 0;
    }
    if (mmioOffset < PLIC_ENABLE) {
      const word = (mmioOffset - PLIC_PENDING) >>> 2;
      return word < this.bitmapWords ? Atomics.load(this.block, this.pendingBase + word) >>> 0 : 0;
    }
    if (mmioOffset < PLIC_CONTEXT) {
      const context = Math.floor((mmioOffset - PLIC_ENABLE) / PLIC_ENABLE_STRIDE);
      const word = ((mmioOffset - PLIC_ENABLE) % PLIC_ENABLE_STRIDE) >>> 2;
      if (context >= this.contexts || word >= this.bitmapWords) return 0;
      return Atomics.load(this.block, this.enableIndex(context) + word) >>> 0;
    }
    const context = Math.floor((mmioOffset - PLIC_CONTEXT) / PLIC_CONTEXT_STRIDE);
    const register = (mmioOffset - PLIC_CONTEXT) % PLIC_CONTEXT_STRIDE;
    if (context >= this.contexts) return 0;
    if (register === 0) return Atomics.load(this.block, this.thresholdIndex(context)) >>> 0;
    if (register === PLIC_CLAIM) return this.claim(context);
    return 0;
  }

  write(mmioOffset: number, size: AccessSize, value: number): boolean {
    if (size !== 4 || (mmioOffset & 3) !== 0 || mmioOffset < 0 || mmioOffset >= PLIC_SIZE) return false;
    if (mmioOffset < PLIC_PENDING) {
      const source = (mmioOffset - PLIC_PRIORITY) >>> 2;
      if (this.isSource(source)) this.update(this.base + PRIORITIES + source, value & PLIC_MAX_PRIORITY);
      return true;
    }
    if (mmioOffset < PLIC_ENABLE) return true; // pending bits are read-only
    if (mmioOffset < PLIC_CONTEXT) {
      const context = Math.floor((mmioOffset - PLIC_ENABLE) / PLIC_ENABLE_STRIDE);
      const word = ((mmioOffset - PLIC_ENABLE) % PLIC_ENABLE_STRIDE) >>> 2;
      if (context >= this.contexts || word >= this.bitmapWords) return true;
      this.update(this.enableIndex(context) + word, value & this.validMask(word));
      return true;
    }
    const context = Math.floor((mmioOffset - PLIC_CONTEXT) / PLIC_CONTEXT_STRIDE);
    const register = (mmioOffset - PLIC_CONTEXT) % PLIC_CONTEXT_STRIDE;
    if (context >= this.contexts) return true;
    if (register === 0) this.update(this.thresholdIndex(context), value & PLIC_MAX_PRIORITY);
    else if (register === PLIC_CLAIM) this.complete(value >>> 0);
    return true;
  }

  /** Claim for `context`: the best pending enabled source above threshold (0 when none), now in service. */
  private claim(context: number): number {
    this.lock.acquire();
    try {
      const source = this.best(context);
      if (source !== 0) {
        const word = source >>> 5;
        const bit = 1 << (source & 31);
        this.block[this.pendingBase + word] &= ~bit;
        this.block[this.serviceBase + word] |= bit;
        this.updateOutputs();
      }
      return source;
    } finally {
      this.lock.release();
    }
  }

  /**
   * Complete `source` (from any context). A completion for a source that is not in service is ignored. The spec
   * also lets a PLIC ignore completions of sources not enabled for the context; we do not, as QEMU does not,
   * because a guest that masks a source inside its handler would otherwise leave it in service forever.
   */
  private complete(source: number): void {
    if (!this.isSource(source)) return;
    const word = source >>> 5;
    const bit = 1 << (source & 31);
    this.lock.acquire();
    try {
      if ((this.block[this.serviceBase + word] & bit) === 0) return;
      this.block[this.serviceBase + word] &= ~bit;
      if ((this.block[this.levelBase + word] & bit) !== 0) this.block[this.pendingBase + word] |= bit;
      this.updateOutputs();
    } finally {
      this.lock.release();
    }
  }

  /** Store `value` at `index` under the lock and recompute the outputs. */
  private update(index: number, value: number): void {
    this.lock.acquire();
    try {
      this.block[index] = value;
      this.updateOutputs();
    } finally {
      this.lock.release();
    }
  }

  /**
   * The highest-priority pending source enabled for `context` whose priority exceeds the context's threshold;
   * ties go to the lowest id. 0 when there is none. Caller holds the lock.
   */
  private best(context: number): number {
    const enable = this.enableIndex(context);
    let bestPriority = this.block[this.thresholdIndex(context)];
    let bestSource = 0;
    for (let word = 0; word < this.bitmapWords; word++) {
      let candidates = this.block[this.pendingBase + word] & this.block[enable + word];
      while (candidates !== 0) {
        const bit = 31 - Math.clz32(candidates & -candidates);
        candidates &= candidates - 1;
        const source = word * 32 + bit;
        const priority = this.block[this.base + PRIORITIES + source];
        if (priority > bestPriority) {
          bestPriority = priority;
          bestSource = source;
        }
      }
    }
    return bestSource;
  }

  /** Raise or lower every hart's MEIP/SEIP line from its contexts' state. Caller holds the lock. */
  private updateOutputs(): void {
    for (let context = 0; context < this.contexts; context++) {
      const hart = context >>> 1;
      const line = (context & 1) === 0 ? MIP_MEIP : MIP_SEIP;
      if (this.best(context) !== 0) this.lines.raise(hart, line);
      else this.lines.lower(hart, line);
    }
  }

  private isSource(source: number): boolean {
    return Number.isInteger(source) && source >= 1 && source <= this.sources;
  }

  /** Bits of bitmap word `word` that name existing sources (source 0 never does). */
  private validMask(word: number): number {
    let mask = -1;
    if (word === 0) mask &= ~1;
    const last = this.sources >>> 5;
    if (word === last) mask &= (this.sources & 31) === 31 ? -1 : (1 << ((this.sources & 31) + 1)) - 1;
    return mask;
  }

  private enableIndex(context: number): number {
    return this.contextBase + context * this.contextWords;
  }

  private thresholdIndex(context: number): number {
    return this.contextBase + context * this.contextWords + this.bitmapWords;
  }
}

function bitmapWordsFor(sources: number): number {
  return ((sources + 1 + 31) >>> 5) | 0;
}
