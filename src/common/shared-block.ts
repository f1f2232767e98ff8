/**
 * The VM control block: one shared Int32Array holding everything the VM's threads exchange besides guest RAM:
 * the VM header, one slot per hart (interrupt lines, wake word, timer compare, HSM requests), and the device
 * state regions the board allocates. Every thread builds the same views over it from the same layout.
 *
 * Layout (int32 word indices):
 *   [0, HEADER_WORDS)                       VM header (VM_* below)
 *   [HART_BASE + h * HART_WORDS, +HART_WORDS) hart h (HART_* below)
 *   [deviceBase, ...)                        device regions, handed out by {@link SharedLayout.alloc}
 */

import { afterMs } from './host.ts';

/** Words in the VM header. */
export const HEADER_WORDS = 16;
/** Header: layout version, so a thread never misreads a block built by other code. */
export const VM_MAGIC = 0;
/** Header: power request from the guest: 0 none, see POWER_*. */
export const VM_POWER = 1;
/** Header: exit code that goes with the power request (SRST reason, HTIF code). */
export const VM_POWER_CODE = 2;
/** Header: futex word bumped whenever a power request is made, so the VMM can wait on it. */
export const VM_EVENT = 3;
/** Header: run control for all harts: 0 run, 1 pause requested, 2 stop requested. */
export const VM_RUN_CONTROL = 4;
/**
 * Header: vCPU threads still copying their share of a boot snapshot's pages into guest RAM (see Vm.start); each
 * subtracts one when done, and no vCPU runs and no device touches guest RAM until it is 0.
 */
export const VM_RAM_PENDING = 5;
/** Header: the shared clock epoch as a float64 at this byte offset (words 6 and 7). */
export const VM_EPOCH_BYTE_OFFSET = 24;

export const MAGIC_VALUE = 0x7476_0001;

export const POWER_NONE = 0;
export const POWER_OFF = 1;
export const POWER_REBOOT = 2;
/** The guest reported a failure (SBI SRST system failure reason, HTIF nonzero exit). */
export const POWER_FAIL = 3;

export const RUN_CONTINUE = 0;
export const RUN_PAUSE = 1;
export const RUN_STOP = 2;

/** First hart slot. */
export const HART_BASE = HEADER_WORDS;
/** Words per hart slot. */
export const HART_WORDS = 32;

/** Hart slot: interrupt lines driven by other agents, as mip bit positions (MSIP, SSIP, MEIP, SEIP). */
export const HART_LINES = 0;
/** Hart slot: futex word; bumped and notified whenever anything the hart should look at changes. */
export const HART_WAKE = 1;
/** Hart slot: run state, one of HART_STATE_*. Written by the hart, and by HSM to start a stopped hart. */
export const HART_STATE = 2;
/** Hart slot: timer compare (mtimecmp), low and high words. Written by CLINT and SBI set_timer. */
export const HART_TIMECMP_LO = 3;
export const HART_TIMECMP_HI = 4;
/** Hart slot: HSM hart_start arguments. */
export const HART_START_ADDR = 5;
export const HART_START_OPAQUE = 6;
/**
 * Hart slot: remote fence requests, FENCE_* bits set with Atomics.or; the hart takes them (exchange with 0) at
 * its next block boundary. Any request flushes its TLB; FENCE_INSTRUCTIONS also makes it recheck translated code.
 */
export const HART_FENCE = 7;
/** HART_FENCE bit: remote SFENCE.VMA (flush address translations). */
export const FENCE_TLB = 1;
/** HART_FENCE bit: remote FENCE.I (instruction fetch must see stores made before it). */
export const FENCE_INSTRUCTIONS = 2;
/** Hart slot: retired instructions, low and high words, published by the hart for statistics. */
export const HART_INSTRET_LO = 8;
export const HART_INSTRET_HI = 9;
/** Hart slot: nonzero when the hart has a pending SBI IPI to turn into SSIP (consumed by the hart). */
export const HART_SBI_IPI = 10;
/**
 * Hart slot: snapshot handshake. The VMM writes SNAPSHOT_SAVE while the VM is paused; the hart writes its state
 * into its state area and answers SNAPSHOT_SAVED.
 */
export const HART_SNAPSHOT = 11;
/**
 * Hart slot: how the hart runs code (published by it): bit 0 ({@link HART_JIT_TRANSLATES}) while it translates
 * hot code to JavaScript, bit 1 ({@link HART_JIT_WASM}) while its common path runs in WebAssembly; 0 when it
 * only interprets in JavaScript.
 */
export const HART_JIT = 12;
export const HART_JIT_TRANSLATES = 1;
export const HART_JIT_WASM = 2;

export const SNAPSHOT_NONE = 0;
export const SNAPSHOT_SAVE = 1;
export const SNAPSHOT_SAVED = 2;

export const HART_STATE_STOPPED = 0;
export const HART_STATE_RUNNING = 1;
export const HART_STATE_WFI = 2;
/** HSM: a start was requested; the hart begins at HART_START_ADDR in S-mode. */
export const HART_STATE_START_PENDING = 3;
export const HART_STATE_PAUSED = 4;
/** The hart's thread failed; see the VMM for the reason. */
export const HART_STATE_CRASHED = 5;
/** A snapshot restore: the hart loads its state from its state area, then runs. */
export const HART_STATE_RESTORE_PENDING = 6;

/** Float64 words of one hart's state area (see machine/hart-state-codec.ts). */
export const HART_STATE_AREA_DOUBLES = 96;

/** mip bit positions used on HART_LINES. */
export const MIP_SSIP = 1 << 1;
export const MIP_MSIP = 1 << 3;
export const MIP_STIP = 1 << 5;
export const MIP_MTIP = 1 << 7;
export const MIP_SEIP = 1 << 9;
export const MIP_MEIP = 1 << 11;

/**
 * True when `buffer` is shared memory. Pages that are not cross-origin isolated have no SharedArrayBuffer
 * global at all, so a bare `instanceof SharedArrayBuffer` would throw there.
 */
export function isSharedBuffer(buffer: ArrayBufferLike): boolean {
  const Shared = (globalThis as { SharedArrayBuffer?: SharedArrayBufferConstructor }).SharedArrayBuffer;
  return Shared !== undefined && buffer instanceof Shared;
}

/**
 * Sleeps on this thread that a {@link notifyWord} ends early. Where the vCPUs, the I/O loops and the host all run
 * on one thread (single-worker mode: time-sliced vCPUs, memory that is not shared), nobody can block in
 * Atomics.wait: they sleep in timers instead, and a notify that woke no Atomics waiter may be meant for one of those.
 */
const localSleepers = new Set<() => void>();

/**
 * Sleep on this thread for at most `ms`, or until the next {@link notifyWord} that wakes no Atomics waiter
 * (whichever word: the sleeper checks what it waits for again). The waiting of single-worker mode, where
 * Atomics.waitAsync has nothing to wait on.
 */
export function sleepLocally(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const wake = (): void => {
      cancel();
      localSleepers.delete(wake);
      resolve();
    };
    const cancel = afterMs(ms, wake);
    localSleepers.add(wake);
  });
}

/**
 * Wake whoever waits on `block[index]`: its Atomics.wait/waitAsync waiters or, when there are none (always so on
 * memory that is not shared, where Atomics.notify returns 0), this thread's {@link sleepLocally} sleeps.
 */
export function notifyWord(block: Int32Array, index: number): void {
  if (Atomics.notify(block, index) > 0 || localSleepers.size === 0) return;
  for (const wake of [...localSleepers]) wake();
}

/** Index of word `word` in hart `hart`'s slot. */
export function hartWord(hart: number, word: number): number {
  return HART_BASE + hart * HART_WORDS + word;
}

/**
 * Hands out word ranges of the control block deterministically, so every thread that replays the same
 * allocation sequence gets the same indices.
 */
export class SharedLayout {
  private next: number;

  constructor(readonly hartCount: number) {
    this.next = HART_BASE + hartCount * HART_WORDS;
  }

  /** Reserve `words` int32 words (rounded up to 2 for float64 alignment) and return the first index. */
  alloc(words: number): number {
    const start = this.next;
    this.next += (words + 1) & ~1;
    return start;
  }

  /** Total words needed so far. */
  get words(): number {
    return this.next;
  }
}

/** Create a zeroed control block of `words` int32 words on shared memory when available. */
export function createControlBlock(words: number, shared: boolean): Int32Array {
  const bytes = words * 4;
  const buffer = shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
  const block = new Int32Array(buffer);
  block[VM_MAGIC] = MAGIC_VALUE;
  return block;
}

/**
 * The interrupt lines and wake words of all harts of one VM. Devices (CLINT, PLIC, SBI) raise and lower lines;
 * the hart folds them into mip and sleeps on its wake word in WFI.
 */
export class HartLines {
  constructor(
    readonly block: Int32Array,
    readonly hartCount: number,
  ) {}

  /** Set `bits` on hart `hart`'s lines, waking it if anything changed. */
  raise(hart: number, bits: number): void {
    const index = hartWord(hart, HART_LINES);
    const before = Atomics.or(this.block, index, bits);
    if ((before & bits) !== bits) this.wake(hart);
  }

  /** Clear `bits` on hart `hart`'s lines. */
  lower(hart: number, bits: number): void {
    Atomics.and(this.block, hartWord(hart, HART_LINES), ~bits);
  }

  /** Current lines of hart `hart`. */
  lines(hart: number): number {
    return Atomics.load(this.block, hartWord(hart, HART_LINES));
  }

  /** Wake hart `hart` if it sleeps (WFI, stopped), so it re-reads its slot. */
  wake(hart: number): void {
    const index = hartWord(hart, HART_WAKE);
    Atomics.add(this.block, index, 1);
    notifyWord(this.block, index);
  }

  /** Write hart `hart`'s timer compare value and wake it so it re-arms its sleep deadline. */
  setTimecmp(hart: number, lo: number, hi: number): void {
    // Store hi as all ones first so a reader never sees a spuriously early deadline mid-update.
    Atomics.store(this.block, hartWord(hart, HART_TIMECMP_HI), -1);
    Atomics.store(this.block, hartWord(hart, HART_TIMECMP_LO), lo);
    Atomics.store(this.block, hartWord(hart, HART_TIMECMP_HI), hi);
    this.wake(hart);
  }

  /** Hart `hart`'s timer compare value as a number of ticks (exact below 2^53, +Infinity when all ones). */
  timecmp(hart: number): number {
    const hi = Atomics.load(this.block, hartWord(hart, HART_TIMECMP_HI));
    const lo = Atomics.load(this.block, hartWord(hart, HART_TIMECMP_LO));
    if (hi === -1 && lo === -1) return Infinity;
    return (hi >>> 0) * 0x1_0000_0000 + (lo >>> 0);
  }
}

/**
 * The VM's clock: 10 MHz ticks since an epoch shared by all of the VM's threads (stored in the control block).
 * mtime and the `time` CSR read it.
 */
export const TIMEBASE_HZ = 10_000_000;

export class VmClock {
  private readonly epoch: Float64Array;

  constructor(
    block: Int32Array,
    private readonly nowMs: () => number,
  ) {
    this.epoch = new Float64Array(block.buffer, block.byteOffset + VM_EPOCH_BYTE_OFFSET, 1);
  }

  /** Set the epoch to now (time reads 0). Called once by the VMM when the VM is created or reset. */
  reset(): void {
    this.epoch[0] = this.nowMs();
  }

  /** Move the epoch so that time reads `ticks` now (used when resuming from a pause or a snapshot). */
  setTicks(ticks: number): void {
    this.epoch[0] = this.nowMs() - ticks / (TIMEBASE_HZ / 1000);
  }

  /** Ticks since the epoch (float, integral part meaningful). */
  ticks(): number {
    return Math.floor((this.nowMs() - this.epoch[0]) * (TIMEBASE_HZ / 1000));
  }

  /** Milliseconds until tick `ticks` is reached (0 when already past). */
  msUntil(ticks: number): number {
    const ms = this.epoch[0] + ticks / (TIMEBASE_HZ / 1000) - this.nowMs();
    return ms > 0 ? ms : 0;
  }
}
