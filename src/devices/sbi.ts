import type { Firmware, SbiCallContext } from '../common/firmware.ts';
import type { HartLines } from '../common/shared-block.ts';
import type { AddressSpace } from '../mem/address-space.ts';
import {
  FENCE_INSTRUCTIONS,
  FENCE_TLB,
  HART_FENCE,
  HART_SBI_IPI,
  HART_START_ADDR,
  HART_START_OPAQUE,
  HART_STATE,
  HART_STATE_CRASHED,
  HART_STATE_START_PENDING,
  HART_STATE_STOPPED,
  MIP_SSIP,
  POWER_FAIL,
  POWER_NONE,
  POWER_OFF,
  POWER_REBOOT,
  RUN_STOP,
  VM_EVENT,
  VM_POWER,
  VM_POWER_CODE,
  VM_RUN_CONTROL,
  hartWord,
  notifyWord,
} from '../common/shared-block.ts';
import { SpinLock } from '../common/spin-lock.ts';

/** SBI error codes (SBI spec v2.0, section 3.2 "Standard SBI Errors"). */
export const SBI_SUCCESS = 0;
export const SBI_ERR_FAILED = -1;
export const SBI_ERR_NOT_SUPPORTED = -2;
export const SBI_ERR_INVALID_PARAM = -3;
export const SBI_ERR_DENIED = -4;
export const SBI_ERR_INVALID_ADDRESS = -5;
export const SBI_ERR_ALREADY_AVAILABLE = -6;

/** Extension ids (SBI spec v2.0: chapters 4 BASE, 5 legacy, 6 TIME, 7 IPI, 8 RFENCE, 9 HSM, 10 SRST, 12 DBCN). */
export const SBI_EXT_BASE = 0x10;
export const SBI_EXT_TIME = 0x5449_4d45;
export const SBI_EXT_IPI = 0x0073_5049;
export const SBI_EXT_RFENCE = 0x5246_4e43;
export const SBI_EXT_HSM = 0x0048_534d;
export const SBI_EXT_SRST = 0x5352_5354;
export const SBI_EXT_DBCN = 0x4442_434e;
/** Legacy extensions 0x00..0x08 (chapter 5): the extension id is the function. */
export const SBI_LEGACY_SET_TIMER = 0x00;
export const SBI_LEGACY_CONSOLE_PUTCHAR = 0x01;
export const SBI_LEGACY_CONSOLE_GETCHAR = 0x02;
export const SBI_LEGACY_CLEAR_IPI = 0x03;
export const SBI_LEGACY_SEND_IPI = 0x04;
export const SBI_LEGACY_REMOTE_FENCE_I = 0x05;
export const SBI_LEGACY_REMOTE_SFENCE_VMA = 0x06;
export const SBI_LEGACY_REMOTE_SFENCE_VMA_ASID = 0x07;
export const SBI_LEGACY_SHUTDOWN = 0x08;

/** What `get_spec_version` reports: major 2 in bits 30:24, minor 0 in bits 23:0. */
export const SBI_SPEC_VERSION = (2 << 24) | 0;
/**
 * Our `get_impl_id`. The registered ids are small integers (0 BBL, 1 OpenSBI, 2 Xvisor, 3 KVM, 4 RustSBI, ...);
 * this one is unregistered and chosen far from them: ASCII "TV" (tabvisor).
 */
export const SBI_IMPL_ID = 0x5456;
/** Our `get_impl_version`: 0.1 as (major << 16) | minor. */
export const SBI_IMPL_VERSION = (0 << 16) | 1;

/** HSM hart states as the SBI reports them (section 9, table "HSM Hart States"). */
export const SBI_HSM_STARTED = 0;
export const SBI_HSM_STOPPED = 1;
export const SBI_HSM_START_PENDING = 2;

/** HSM suspend types (section 9.4). */
const SUSPEND_DEFAULT_RETENTIVE = 0x0000_0000;
const SUSPEND_DEFAULT_NON_RETENTIVE = 0x8000_0000;
/** SRST reset types and reasons (section 10.1). */
const RESET_SHUTDOWN = 0;
const RESET_COLD_REBOOT = 1;
const RESET_WARM_REBOOT = 2;
const REASON_NONE = 0;
const REASON_SYSTEM_FAILURE = 1;

/**
 * Most bytes one DBCN read or write moves. The spec lets the implementation move fewer than asked and report the
 * count, so a guest asking for gigabytes costs at most this much work per call.
 */
export const DBCN_MAX_BYTES_PER_CALL = 4096;

/** The console the SBI writes to and reads from: the UART's helpers ({@link Uart16550} satisfies it). */
export interface SbiConsole {
  /** Append one byte of output; false when the console cannot take it now (nothing written). */
  consolePut(byte: number): boolean;
  /** The next input byte, or -1 when there is none. */
  consoleGet(): number;
}

/** What the SBI needs from the board. */
export interface SbiDeps {
  /** The VM's harts (interrupt lines, wake words, timer compare); also gives the control block and hart count. */
  readonly lines: HartLines;
  /** Guest-physical memory, for DBCN and for checking HSM start addresses. */
  readonly memory: AddressSpace;
  /** The console for the legacy console calls and DBCN. */
  readonly console: SbiConsole;
}

/**
 * Shared-state layout of the SBI's region (int32 word offsets from `base`):
 *   [0] HSM lock: serialises hart_start requests so a start address is never overwritten mid-start.
 */
const HSM_LOCK = 0;
const REGION_WORDS = 1;

/** Argument registers in SbiCallContext.x. */
const A0 = 10;
const A1 = 11;
const A2 = 12;
const A6 = 16;
const A7 = 17;

/**
 * The SBI (spec v2.0) implemented by the emulator in place of M-mode firmware: BASE, TIME, IPI, RFENCE, HSM,
 * SRST, DBCN and the legacy extensions. Every argument is a guest value and is checked; a call never throws.
 *
 * The legacy `console_putchar` cannot block (a hart must never spin on the I/O thread): when the console ring is
 * full it returns SBI_ERR_FAILED and writes nothing. Linux's hvc and earlycon drivers ignore that result, so the
 * I/O thread must keep the ring drained (the ring is large enough to absorb boot bursts).
 *
 * Remote fences only set bits in the target's HART_FENCE word and wake it; the hart checks that word at every
 * block boundary (with the block translator) or slice start (interpreter only), before running further guest code.
 */
export class Sbi implements Firmware {
  private readonly block: Int32Array;
  private readonly lines: HartLines;
  private readonly memory: AddressSpace;
  private readonly console: SbiConsole;
  private readonly hartCount: number;
  private readonly hsmLock: SpinLock;

  /** Control-block words the SBI needs. */
  static words(): number {
    return REGION_WORDS;
  }

  constructor(block: Int32Array, base: number, deps: SbiDeps) {
    this.block = block;
    this.lines = deps.lines;
    this.memory = deps.memory;
    this.console = deps.console;
    this.hartCount = deps.lines.hartCount;
    this.hsmLock = new SpinLock(block, base + HSM_LOCK);
  }

  ecall(ctx: SbiCallContext): void {
    const x = ctx.x;
    const eid = x[A7] >>> 0;
    const fid = x[A6] >>> 0;
    if (eid <= SBI_LEGACY_SHUTDOWN) {
      x[A0] = this.legacy(ctx, eid);
      return;
    }
    let error = SBI_ERR_NOT_SUPPORTED;
    let value = 0;
    const ret = (e: number, v = 0): void => {
      error = e;
      value = v;
    };
    switch (eid) {
      case SBI_EXT_BASE:
        this.base(x, fid, ret);
        break;
      case SBI_EXT_TIME:
        if (fid === 0) {
          this.lines.setTimecmp(ctx.hartId, x[A0], x[A1]);
          ret(SBI_SUCCESS);
        }
        break;
      case SBI_EXT_IPI:
        if (fid === 0) ret(this.forEachTarget(x[A0], x[A1], (hart) => this.sendIpi(hart)));
        break;
      case SBI_EXT_RFENCE:
        // 0 remote_fence_i, 1 remote_sfence_vma, 2 remote_sfence_vma_asid; the hfence calls need the H extension.
        // The target flushes its whole TLB: the address range and the ASID only narrow what must be flushed.
        if (fid <= 2) {
          const kind = fid === 0 ? FENCE_INSTRUCTIONS : FENCE_TLB;
          ret(this.forEachTarget(x[A0], x[A1], (hart) => this.fence(ctx, hart, kind)));
        }
        break;
      case SBI_EXT_HSM:
        this.hsm(ctx, fid, ret);
        break;
      case SBI_EXT_SRST:
        if (fid === 0) ret(this.systemReset(ctx, x[A0] >>> 0, x[A1] >>> 0));
        break;
      case SBI_EXT_DBCN:
        this.debugConsole(x, fid, ret);
        break;
    }
    x[A0] = error;
    x[A1] = value;
  }

  /** True for the extensions `probe_extension` reports as available. */
  static supports(eid: number): boolean {
    switch (eid >>> 0) {
      case SBI_EXT_BASE:
      case SBI_EXT_TIME:
      case SBI_EXT_IPI:
      case SBI_EXT_RFENCE:
      case SBI_EXT_HSM:
      case SBI_EXT_SRST:
      case SBI_EXT_DBCN:
        return true;
      default:
        return eid >>> 0 <= SBI_LEGACY_SHUTDOWN;
    }
  }

  private base(x: Int32Array, fid: number, ret: (e: number, v?: number) => void): void {
    switch (fid) {
      case 0:
        return ret(SBI_SUCCESS, SBI_SPEC_VERSION);
      case 1:
        return ret(SBI_SUCCESS, SBI_IMPL_ID);
      case 2:
        return ret(SBI_SUCCESS, SBI_IMPL_VERSION);
      case 3:
        return ret(SBI_SUCCESS, Sbi.supports(x[A0]) ? 1 : 0);
      case 4: // mvendorid
      case 5: // marchid
      case 6: // mimpid
        return ret(SBI_SUCCESS, 0);
    }
  }

  private hsm(ctx: SbiCallContext, fid: number, ret: (e: number, v?: number) => void): void {
    const x = ctx.x;
    switch (fid) {
      case 0:
        return ret(this.hartStart(x[A0] >>> 0, x[A1] >>> 0, x[A2]));
      case 1:
        ctx.stopAfterCall();
        return ret(SBI_SUCCESS);
      case 2: {
        const hart = x[A0] >>> 0;
        if (hart >= this.hartCount) return ret(SBI_ERR_INVALID_PARAM);
        return ret(SBI_SUCCESS, this.hsmStatus(hart));
      }
      case 3: {
        const type = x[A0] >>> 0;
        if (type === SUSPEND_DEFAULT_RETENTIVE) {
          ctx.waitAfterCall();
          return ret(SBI_SUCCESS);
        }
        // Non-retentive suspend would need a resume path through the boot protocol: valid but not implemented.
        if (type === SUSPEND_DEFAULT_NON_RETENTIVE) return ret(SBI_ERR_NOT_SUPPORTED);
        // 0x10000000-0x7fffffff and 0x90000000-0xffffffff are platform-specific (we define none): invalid
        // like the reserved ranges, per the spec's error table.
        return ret(SBI_ERR_INVALID_PARAM);
      }
    }
  }

  private hartStart(hart: number, startGpa: number, opaque: number): number {
    if (hart >= this.hartCount) return SBI_ERR_INVALID_PARAM;
    if (!this.memory.isRam(startGpa, 4)) return SBI_ERR_INVALID_ADDRESS;
    this.hsmLock.acquire();
    try {
      const state = Atomics.load(this.block, hartWord(hart, HART_STATE));
      if (state === HART_STATE_CRASHED) return SBI_ERR_FAILED;
      if (state !== HART_STATE_STOPPED) return SBI_ERR_ALREADY_AVAILABLE;
      // The arguments are read by the target only after it sees START_PENDING, which only this lock's holder sets.
      Atomics.store(this.block, hartWord(hart, HART_START_ADDR), startGpa | 0);
      Atomics.store(this.block, hartWord(hart, HART_START_OPAQUE), opaque | 0);
      const before = Atomics.compareExchange(
        this.block,
        hartWord(hart, HART_STATE),
        HART_STATE_STOPPED,
        HART_STATE_START_PENDING,
      );
      if (before !== HART_STATE_STOPPED) return SBI_ERR_ALREADY_AVAILABLE;
    } finally {
      this.hsmLock.release();
    }
    this.lines.wake(hart);
    return SBI_SUCCESS;
  }

  private hsmStatus(hart: number): number {
    switch (Atomics.load(this.block, hartWord(hart, HART_STATE))) {
      case HART_STATE_STOPPED:
      case HART_STATE_CRASHED: // cannot run: the guest sees it as stopped (and hart_start then fails)
        return SBI_HSM_STOPPED;
      case HART_STATE_START_PENDING:
        return SBI_HSM_START_PENDING;
      default: // running, in WFI (a retentive suspend returns at once when woken), or paused by the VMM
        return SBI_HSM_STARTED;
    }
  }

  private systemReset(ctx: SbiCallContext, type: number, reason: number): number {
    if (type !== RESET_SHUTDOWN && type !== RESET_COLD_REBOOT && type !== RESET_WARM_REBOOT) {
      return SBI_ERR_INVALID_PARAM;
    }
    if (reason !== REASON_NONE && reason !== REASON_SYSTEM_FAILURE) return SBI_ERR_INVALID_PARAM;
    let power = type === RESET_SHUTDOWN ? POWER_OFF : POWER_REBOOT;
    if (reason === REASON_SYSTEM_FAILURE) power = POWER_FAIL;
    this.requestPower(ctx, power, reason);
    return SBI_SUCCESS;
  }

  /** Record a power request (the first one wins), tell the VMM, stop every hart. */
  private requestPower(ctx: SbiCallContext, power: number, code: number): void {
    const block = this.block;
    if (Atomics.compareExchange(block, VM_POWER, POWER_NONE, power) === POWER_NONE) {
      Atomics.store(block, VM_POWER_CODE, code | 0);
    }
    Atomics.add(block, VM_EVENT, 1);
    notifyWord(block, VM_EVENT);
    Atomics.store(block, VM_RUN_CONTROL, RUN_STOP);
    for (let hart = 0; hart < this.hartCount; hart++) this.lines.wake(hart);
    ctx.stopAfterCall();
  }

  private debugConsole(x: Int32Array, fid: number, ret: (e: number, v?: number) => void): void {
    if (fid === 2) {
      // console_write_byte: cannot block (see the class comment), so a full console is reported as a failure.
      return ret(this.console.consolePut(x[A0] & 0xff) ? SBI_SUCCESS : SBI_ERR_FAILED);
    }
    if (fid !== 0 && fid !== 1) return;
    const requested = x[A0] >>> 0;
    const gpa = x[A1] >>> 0;
    // The high half of the physical address (a2) must be 0: all of our RAM lies below 4 GiB.
    if (x[A2] !== 0) return ret(SBI_ERR_INVALID_PARAM);
    const count = Math.min(requested, DBCN_MAX_BYTES_PER_CALL);
    if (!this.memory.isRam(gpa, count)) return ret(SBI_ERR_INVALID_PARAM);
    if (fid === 0) {
      const bytes = new Uint8Array(count);
      this.memory.read(gpa, bytes);
      let written = 0;
      while (written < count && this.console.consolePut(bytes[written])) written++;
      return ret(SBI_SUCCESS, written);
    }
    let read = 0;
    while (read < count) {
      const byte = this.console.consoleGet();
      if (byte < 0) break;
      this.memory.writeU8((gpa + read) >>> 0, byte);
      read++;
    }
    return ret(SBI_SUCCESS, read);
  }

  /** Legacy extensions (chapter 5): the result goes to a0 only. */
  private legacy(ctx: SbiCallContext, eid: number): number {
    const x = ctx.x;
    switch (eid) {
      case SBI_LEGACY_SET_TIMER:
        this.lines.setTimecmp(ctx.hartId, x[A0], x[A1]);
        return SBI_SUCCESS;
      case SBI_LEGACY_CONSOLE_PUTCHAR:
        return this.console.consolePut(x[A0] & 0xff) ? SBI_SUCCESS : SBI_ERR_FAILED;
      case SBI_LEGACY_CONSOLE_GETCHAR:
        return this.console.consoleGet();
      case SBI_LEGACY_CLEAR_IPI:
        Atomics.store(this.block, hartWord(ctx.hartId, HART_SBI_IPI), 0);
        this.lines.lower(ctx.hartId, MIP_SSIP);
        return SBI_SUCCESS;
      case SBI_LEGACY_SEND_IPI:
      case SBI_LEGACY_REMOTE_FENCE_I:
      case SBI_LEGACY_REMOTE_SFENCE_VMA:
      case SBI_LEGACY_REMOTE_SFENCE_VMA_ASID: {
        // a0 is the guest-virtual address of an unsigned long hart mask (hart_mask_base 0). A null pointer means
        // every hart, as BBL, the original legacy implementation, treats it.
        const maskGva = x[A0];
        let mask = -1;
        let maskBase = -1;
        if (maskGva !== 0) {
          const loaded = ctx.loadVirtualU32(maskGva);
          if (loaded === undefined) return SBI_ERR_INVALID_ADDRESS;
          mask = loaded;
          maskBase = 0;
        }
        if (eid === SBI_LEGACY_SEND_IPI)
          return this.forEachTarget(mask, maskBase, (hart) => this.sendIpi(hart));
        const kind = eid === SBI_LEGACY_REMOTE_FENCE_I ? FENCE_INSTRUCTIONS : FENCE_TLB;
        return this.forEachTarget(mask, maskBase, (hart) => this.fence(ctx, hart, kind));
      }
      default: {
        // SBI_LEGACY_SHUTDOWN
        this.requestPower(ctx, POWER_OFF, 0);
        return SBI_SUCCESS;
      }
    }
  }

  /**
   * Apply `action` to every hart named by (hart_mask, hart_mask_base) (section 3.1: base -1 means all harts and
   * the mask is ignored). Every named hart is checked first, so an invalid mask changes nothing.
   */
  private forEachTarget(mask: number, maskBase: number, action: (hart: number) => void): number {
    if (maskBase === -1) {
      for (let hart = 0; hart < this.hartCount; hart++) action(hart);
      return SBI_SUCCESS;
    }
    const first = maskBase >>> 0;
    const bits = mask >>> 0;
    for (let bit = 0; bit < 32; bit++) {
      if ((bits & (1 << bit)) !== 0 && first + bit >= this.hartCount) return SBI_ERR_INVALID_PARAM;
    }
    for (let bit = 0; bit < 32; bit++) {
      if ((bits & (1 << bit)) !== 0) action(first + bit);
    }
    return SBI_SUCCESS;
  }

  private sendIpi(hart: number): void {
    Atomics.store(this.block, hartWord(hart, HART_SBI_IPI), 1);
    this.lines.wake(hart);
  }

  /** A remote fence of `kind` (FENCE_TLB or FENCE_INSTRUCTIONS) on `hart`; the caller's own is done at once. */
  private fence(ctx: SbiCallContext, hart: number, kind: number): void {
    if (hart === ctx.hartId) {
      ctx.flushTlb();
      if (kind === FENCE_INSTRUCTIONS) ctx.flushInstructionCache();
      return;
    }
    Atomics.or(this.block, hartWord(hart, HART_FENCE), kind);
    this.lines.wake(hart);
  }
}
