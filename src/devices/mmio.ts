/**
 * The interface between a hart and a memory-mapped device. A hart handles its own MMIO accesses (like a KVM
 * vCPU thread handles an MMIO exit), so device objects exist in every hart thread; their state lives in the VM's
 * shared control block, never in object fields that only one thread would see.
 */
export type AccessSize = 1 | 2 | 4;

export interface MmioDevice {
  /** Bytes of address space the device decodes: `[base, base + size)`. */
  readonly size: number;
  /**
   * Read `size` bytes at `mmioOffset` (relative to the device base). Returns the value zero-extended to
   * uint32 (`>>> 0`), or -1 for an access the device rejects (the hart raises an access fault).
   */
  read(mmioOffset: number, size: AccessSize): number;
  /** Write the low `size` bytes of `value` at `mmioOffset`. Returns false for an access the device rejects. */
  write(mmioOffset: number, size: AccessSize, value: number): boolean;
}

/** Something that takes level-triggered interrupt lines (the PLIC). */
export interface IrqSink {
  /** Drive interrupt source `irq` (1-based, as on the PLIC) high or low. */
  setLevel(irq: number, level: boolean): void;
}

/** One device placed on the physical bus. */
export interface MmioMapping {
  readonly base: number;
  readonly device: MmioDevice;
}

/**
 * The physical bus outside RAM: routes an access to the device whose range contains it. Ranges are half-open
 * and never overlap.
 */
export class MmioBus {
  private readonly mappings: MmioMapping[] = [];

  /** Place `device` at `[base, base + device.size)`. */
  map(base: number, device: MmioDevice): void {
    const start = base >>> 0;
    const end = start + device.size;
    for (const m of this.mappings) {
      if (start < m.base + m.device.size && m.base < end) {
        throw new Error(`MMIO range 0x${start.toString(16)} overlaps a device at 0x${m.base.toString(16)}`);
      }
    }
    this.mappings.push({ base: start, device });
    this.mappings.sort((a, b) => a.base - b.base);
  }

  private find(gpa: number, size: number): MmioMapping | undefined {
    for (const m of this.mappings) {
      const offset = gpa - m.base;
      if (offset >= 0 && offset + size <= m.device.size) return m;
    }
    return undefined;
  }

  /** Read at guest-physical `gpa`; -1 when no device decodes it or the device rejects it. */
  read(gpa: number, size: AccessSize): number {
    const m = this.find(gpa >>> 0, size);
    return m === undefined ? -1 : m.device.read((gpa >>> 0) - m.base, size);
  }

  /** Write at guest-physical `gpa`; false when no device decodes it or the device rejects it. */
  write(gpa: number, size: AccessSize, value: number): boolean {
    const m = this.find(gpa >>> 0, size);
    return m === undefined ? false : m.device.write((gpa >>> 0) - m.base, size, value);
  }
}
