import type { AccessSize, MmioDevice } from './mmio.ts';
import type { HartLines, VmClock } from '../common/shared-block.ts';
import { HART_TIMECMP_HI, HART_TIMECMP_LO, MIP_MSIP, hartWord } from '../common/shared-block.ts';
import { hi32, lo32 } from '../common/bits.ts';

/**
 * CLINT register map (SiFive CLINT as placed on QEMU's `virt` board; SiFive "Core-Local Interruptor" docs, and
 * the ACLINT spec's MSWI / MTIMER devices, which keep the same offsets). Offsets are relative to the device base.
 */
/** msip[h]: 32-bit word per hart at `[CLINT_MSIP, CLINT_MSIP + 4 * 4095)`; bit 0 is the hart's MSIP. */
export const CLINT_MSIP = 0x0000;
/** mtimecmp[h]: 64-bit per hart at `[CLINT_MTIMECMP, CLINT_MTIMECMP + 8 * 4095)`, low word first. */
export const CLINT_MTIMECMP = 0x4000;
/** mtime: 64-bit at `[CLINT_MTIME, CLINT_MTIME + 8)`, low word first. */
export const CLINT_MTIME = 0xbff8;
/** Bytes of address space the CLINT decodes. */
export const CLINT_SIZE = 0x1_0000;

/** Hart slots the msip and mtimecmp arrays have room for (ACLINT: 4095 harts). */
const MAX_HARTS = 4095;

/**
 * The core-local interruptor: machine software interrupts (msip) and the machine timer (mtime, mtimecmp).
 *
 * The CLINT holds no state of its own: msip is the MSIP line in each hart's slot of the control block and
 * mtimecmp is the slot's timer compare words, so it needs no region ({@link Clint.words} is 0). The CLINT drives
 * no MTIP line: each hart compares the shared clock with its own timecmp.
 *
 * Only aligned 32-bit accesses are decoded (rv32 splits the 64-bit registers into two words); other widths and
 * misaligned offsets are rejected so the hart raises an access fault. Harts that do not exist read 0 and ignore
 * writes. Writes to mtime are ignored: the clock is shared by all of the VM's threads and the VMM owns it.
 */
export class Clint implements MmioDevice {
  readonly size = CLINT_SIZE;
  private readonly block: Int32Array;

  /** Control-block words the CLINT needs: none, its state lives in the hart slots. */
  static words(): number {
    return 0;
  }

  constructor(
    private readonly lines: HartLines,
    private readonly clock: VmClock,
  ) {
    this.block = lines.block;
  }

  read(mmioOffset: number, size: AccessSize): number {
    if (size !== 4 || (mmioOffset & 3) !== 0 || mmioOffset < 0 || mmioOffset >= CLINT_SIZE) return -1;
    if (mmioOffset >= CLINT_MTIME) {
      const ticks = this.clock.ticks();
      return (mmioOffset === CLINT_MTIME ? lo32(ticks) : hi32(ticks)) >>> 0;
    }
    if (mmioOffset >= CLINT_MTIMECMP) {
      const hart = (mmioOffset - CLINT_MTIMECMP) >>> 3;
      if (!this.exists(hart)) return 0;
      const word = (mmioOffset & 4) === 0 ? HART_TIMECMP_LO : HART_TIMECMP_HI;
      return Atomics.load(this.block, hartWord(hart, word)) >>> 0;
    }
    const hart = mmioOffset >>> 2;
    if (!this.exists(hart)) return 0;
    return (this.lines.lines(hart) & MIP_MSIP) !== 0 ? 1 : 0;
  }

  write(mmioOffset: number, size: AccessSize, value: number): boolean {
    if (size !== 4 || (mmioOffset & 3) !== 0 || mmioOffset < 0 || mmioOffset >= CLINT_SIZE) return false;
    if (mmioOffset >= CLINT_MTIME) return true; // mtime is read-only here (see the class comment)
    if (mmioOffset >= CLINT_MTIMECMP) {
      const hart = (mmioOffset - CLINT_MTIMECMP) >>> 3;
      if (!this.exists(hart)) return true;
      const lo = Atomics.load(this.block, hartWord(hart, HART_TIMECMP_LO));
      const hi = Atomics.load(this.block, hartWord(hart, HART_TIMECMP_HI));
      if ((mmioOffset & 4) === 0) this.lines.setTimecmp(hart, value | 0, hi);
      else this.lines.setTimecmp(hart, lo, value | 0);
      return true;
    }
    const hart = mmioOffset >>> 2;
    if (!this.exists(hart)) return true;
    if ((value & 1) !== 0) this.lines.raise(hart, MIP_MSIP);
    else this.lines.lower(hart, MIP_MSIP);
    return true;
  }

  private exists(hart: number): boolean {
    return hart < this.lines.hartCount && hart < MAX_HARTS;
  }
}
