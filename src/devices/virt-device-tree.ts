import { FdtNode, encodeFdt } from './fdt.ts';
import { CLINT_SIZE } from './clint.ts';
import { PLIC_SIZE, VIRT_PLIC_SOURCES } from './plic.ts';
import { UART_SIZE } from './uart-16550.ts';
import { VIRTIO_MMIO_SLOT_SIZE } from './virtio-mmio-empty.ts';
import { TIMEBASE_HZ } from '../common/shared-block.ts';

/**
 * The QEMU riscv32 `virt` memory map (DESIGN.md section 2). Ranges are `[base, base + size)`.
 */
export const VIRT_CLINT_BASE = 0x0200_0000;
export const VIRT_PLIC_BASE = 0x0c00_0000;
export const VIRT_UART_BASE = 0x1000_0000;
/** The UART's PLIC source. */
export const VIRT_UART_IRQ = 10;
/** Number of virtio-mmio slots; slot n (1..8) is at {@link virtioSlotBase}(n) with PLIC source n. */
export const VIRT_VIRTIO_SLOTS = 8;
/**
 * The virtio console's own slot, after the eight general ones (disks and NICs keep all eight): `0x10009000`,
 * PLIC source 9. QEMU's virt machine leaves that address and that source unused.
 */
export const VIRT_CONSOLE_SLOT = 9;
/** Guest-physical base of RAM. */
export const VIRT_RAM_BASE = 0x8000_0000;
/** The UART's input clock as QEMU advertises it (1.8432 MHz * 2); only baud-rate arithmetic depends on it. */
export const VIRT_UART_CLOCK_HZ = 3_686_400;

/** mip/mie bit numbers the CPU interrupt controller's cells name (privileged spec 3.1.9). */
const IRQ_M_SOFT = 3;
const IRQ_M_TIMER = 7;
const IRQ_S_EXT = 9;
const IRQ_M_EXT = 11;

/**
 * riscv,isa of every hart. Zihintpause makes Linux spin with PAUSE, which the hart turns into a pause-loop exit
 * (the host core is yielded to a lock holder); without it Linux spins with `div x, x, zero`.
 */
export const DEFAULT_ISA = 'rv32ima_zicsr_zifencei_zihintpause';

/** Base of virtio-mmio slot `slot` (1..8, and {@link VIRT_CONSOLE_SLOT}). */
export function virtioSlotBase(slot: number): number {
  return VIRT_UART_BASE + slot * VIRTIO_MMIO_SLOT_SIZE;
}

/** What the generated device tree describes. */
export interface VirtDeviceTreeConfig {
  /** Harts 0..hartCount-1. */
  readonly hartCount: number;
  /** Guest-physical RAM `[ramBase, ramBase + ramSize)`; must be the RAM really provided (GUEST-NOTES). */
  readonly ramBase: number;
  readonly ramSize: number;
  /** Kernel command line (/chosen/bootargs). */
  readonly bootargs: string;
  /** Guest-physical initrd `[start, end)`, listed as linux,initrd-start/-end. */
  readonly initrd?: { readonly start: number; readonly end: number };
  /** riscv,isa of every hart; default {@link DEFAULT_ISA} (never list sstc without stimecmp). */
  readonly isa?: string;
  /** mmu-type of every hart; default `riscv,sv32`. */
  readonly mmuType?: 'riscv,sv32';
  /** /cpus/timebase-frequency; default the VM clock's 10 MHz. */
  readonly timebaseHz?: number;
  /** /chosen/stdout-path; default the UART. */
  readonly stdoutPath?: string;
  /** Root `model`; default `riscv-virtio,qemu` (what kernels built for QEMU expect). */
  readonly model?: string;
}

/** Phandles: hart h's interrupt controller is h + 1; the PLIC follows them. */
function intcPhandle(hart: number): number {
  return hart + 1;
}

/** Build the device tree for `config` as a tree (for inspection) and return its root. */
export function buildVirtTree(config: VirtDeviceTreeConfig): FdtNode {
  const { hartCount, ramBase, ramSize } = config;
  if (!Number.isInteger(hartCount) || hartCount < 1 || hartCount > 32) {
    throw new RangeError('hartCount must be an integer in [1, 32]');
  }
  if (!Number.isInteger(ramBase) || !Number.isInteger(ramSize) || ramBase < 0 || ramSize <= 0) {
    throw new RangeError('ramBase and ramSize must be non-negative integers (ramSize > 0)');
  }
  const plicPhandle = hartCount + 1;
  const uartPath = `/soc/serial@${VIRT_UART_BASE.toString(16)}`;

  const root = new FdtNode('');
  root.u32('#address-cells', 2).u32('#size-cells', 2);
  root.string('compatible', 'riscv-virtio').string('model', config.model ?? 'riscv-virtio,qemu');

  const chosen = root.child('chosen');
  chosen.string('bootargs', config.bootargs).string('stdout-path', config.stdoutPath ?? uartPath);
  if (config.initrd !== undefined) {
    const { start, end } = config.initrd;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start) {
      throw new RangeError('initrd must be an integer range [start, end) with start <= end');
    }
    chosen.u64('linux,initrd-start', start).u64('linux,initrd-end', end);
  }

  root.child('aliases').string('serial0', uartPath);

  const cpus = root.child('cpus');
  cpus.u32('#address-cells', 1).u32('#size-cells', 0);
  cpus.u32('timebase-frequency', config.timebaseHz ?? TIMEBASE_HZ);
  for (let hart = 0; hart < hartCount; hart++) {
    const cpu = cpus.child(`cpu@${hart.toString(16)}`);
    cpu.string('device_type', 'cpu').u32('reg', hart).string('status', 'okay');
    cpu.string('compatible', 'riscv');
    cpu.string('riscv,isa', config.isa ?? DEFAULT_ISA);
    cpu.string('mmu-type', config.mmuType ?? 'riscv,sv32');
    const intc = cpu.child('interrupt-controller');
    intc.u32('#address-cells', 0).u32('#interrupt-cells', 1).empty('interrupt-controller');
    intc.string('compatible', 'riscv,cpu-intc');
    intc.phandle(intcPhandle(hart));
  }

  root
    .child(`memory@${ramBase.toString(16)}`)
    .string('device_type', 'memory')
    .cells('reg', [...pair(ramBase), ...pair(ramSize)]);

  const soc = root.child('soc');
  soc.u32('#address-cells', 2).u32('#size-cells', 2).string('compatible', 'simple-bus').empty('ranges');

  const clintCells: number[] = [];
  const plicCells: number[] = [];
  for (let hart = 0; hart < hartCount; hart++) {
    clintCells.push(intcPhandle(hart), IRQ_M_SOFT, intcPhandle(hart), IRQ_M_TIMER);
    // Context 2h is hart h's M mode, 2h + 1 its S mode, in the order interrupts-extended lists them.
    plicCells.push(intcPhandle(hart), IRQ_M_EXT, intcPhandle(hart), IRQ_S_EXT);
  }
  soc
    .child(`clint@${VIRT_CLINT_BASE.toString(16)}`)
    .strings('compatible', ['sifive,clint0', 'riscv,clint0'])
    .cells('reg', region(VIRT_CLINT_BASE, CLINT_SIZE))
    .cells('interrupts-extended', clintCells);

  soc
    .child(`plic@${VIRT_PLIC_BASE.toString(16)}`)
    .strings('compatible', ['sifive,plic-1.0.0', 'riscv,plic0'])
    .u32('#address-cells', 0)
    .u32('#interrupt-cells', 1)
    .empty('interrupt-controller')
    .cells('reg', region(VIRT_PLIC_BASE, PLIC_SIZE))
    .u32('riscv,ndev', VIRT_PLIC_SOURCES)
    .cells('interrupts-extended', plicCells)
    .phandle(plicPhandle);

  soc
    .child(`serial@${VIRT_UART_BASE.toString(16)}`)
    .string('compatible', 'ns16550a')
    .cells('reg', region(VIRT_UART_BASE, UART_SIZE))
    .u32('clock-frequency', VIRT_UART_CLOCK_HZ)
    .u32('interrupts', VIRT_UART_IRQ)
    .u32('interrupt-parent', plicPhandle);

  for (const slot of [...Array.from({ length: VIRT_VIRTIO_SLOTS }, (_, i) => i + 1), VIRT_CONSOLE_SLOT]) {
    const base = virtioSlotBase(slot);
    soc
      .child(`virtio_mmio@${base.toString(16)}`)
      .string('compatible', 'virtio,mmio')
      .cells('reg', region(base, VIRTIO_MMIO_SLOT_SIZE))
      .u32('interrupts', slot)
      .u32('interrupt-parent', plicPhandle);
  }
  return root;
}

/** Build the DTB for `config` (boot CPU 0, no reservations). */
export function buildVirtDeviceTree(config: VirtDeviceTreeConfig): Uint8Array {
  return encodeFdt(buildVirtTree(config));
}

/** A 64-bit value as two cells, high first. */
function pair(value: number): [number, number] {
  return [Math.floor(value / 0x1_0000_0000), value % 0x1_0000_0000];
}

/** A `reg` entry with 2 address cells and 2 size cells. */
function region(base: number, size: number): number[] {
  return [...pair(base), ...pair(size)];
}
