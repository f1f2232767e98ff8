import {
  HART_STATE,
  HART_STATE_AREA_DOUBLES,
  HART_STATE_RUNNING,
  HART_STATE_STOPPED,
  HART_TIMECMP_HI,
  HART_TIMECMP_LO,
  HartLines,
  SharedLayout,
  VmClock,
  createControlBlock,
  hartWord,
} from '../common/shared-block.ts';
import { wallClockMs } from '../common/host.ts';
import { Hart } from '../cpu/hart.ts';
import { Clint } from '../devices/clint.ts';
import { MmioBus } from '../devices/mmio.ts';
import { Plic, VIRT_PLIC_SOURCES } from '../devices/plic.ts';
import { Sbi } from '../devices/sbi.ts';
import { Uart16550 } from '../devices/uart-16550.ts';
import {
  VIRT_CLINT_BASE,
  VIRT_PLIC_BASE,
  VIRT_UART_BASE,
  VIRT_CONSOLE_SLOT,
  VIRT_UART_IRQ,
  VIRT_VIRTIO_SLOTS,
  virtioSlotBase,
} from '../devices/virt-device-tree.ts';
import { EmptyVirtioSlot } from '../devices/virtio-mmio-empty.ts';
import { VirtioBlkDevice, type VirtioBlkOptions } from '../devices/virtio-blk.ts';
import { VirtioNetDevice, type VirtioNetOptions } from '../devices/virtio-net.ts';
import { VirtioConsoleDevice } from '../devices/virtio-console.ts';
import { VirtioMmioTransport } from '../devices/virtio-mmio.ts';
import { UserError } from '../common/errors.ts';
import { AddressSpace, type AddressSpaceInit } from '../mem/address-space.ts';

/** Where each device's state sits in the control block. Plain data: it crosses thread boundaries. */
export interface BoardLayout {
  readonly plic: number;
  readonly uart: number;
  readonly sbi: number;
  /** The virtio console's region: its transport, then the device's own words. */
  readonly console: number;
  /** One virtio-mmio transport region per disk, in slot order. */
  readonly disks: readonly number[];
  /** One virtio-mmio transport region per NIC, in slot order (NICs sit in the slots after the disks). */
  readonly nics?: readonly number[];
  /** Float64-aligned hart state areas for snapshots (HART_STATE_AREA_DOUBLES doubles per hart). */
  readonly hartStates: number;
  readonly words: number;
}

/**
 * Everything a thread needs to rebuild the board: structured-clone safe (shared buffers and numbers), so the
 * VMM sends it to every vCPU worker.
 */
export interface BoardInit {
  readonly hartCount: number;
  readonly block: Int32Array;
  readonly memory: AddressSpaceInit;
  readonly layout: BoardLayout;
  /** True when the emulator provides the SBI firmware (Linux boot); false for bare M-mode programs. */
  readonly firmware: boolean;
  /** virtio-blk disks in slots 1, 2, ... (their back-ends live on the VMM's I/O side only). */
  readonly disks?: readonly VirtioBlkOptions[];
  /** virtio-net NICs in the slots after the disks (their I/O side lives on the VMM's thread only). */
  readonly nics?: readonly VirtioNetOptions[];
  /** Translate hot guest code to JavaScript (default: see jitByDefault in cpu/hart.ts). */
  readonly jit?: boolean;
  /**
   * Byte offsets in host RAM of each hart's area (its registers and TLB, for the WebAssembly tier; see
   * HostRam.allocateHartAreas), by hart id; used with `memory.memory`. A hart without one runs without the tier.
   */
  readonly hartAreas?: readonly number[];
}

/** Allocate the control-block regions of the board's devices, in a fixed order. */
export function planBoard(hartCount: number, diskCount = 0, nicCount = 0): BoardLayout {
  if (diskCount > VIRT_VIRTIO_SLOTS) {
    throw new UserError(`a VM can have at most ${VIRT_VIRTIO_SLOTS} disks, not ${diskCount}`);
  }
  if (diskCount + nicCount > VIRT_VIRTIO_SLOTS) {
    throw new UserError(
      `a VM has ${VIRT_VIRTIO_SLOTS} virtio slots for disks and NICs together, not ${diskCount} + ${nicCount}; remove a disk or a NIC`,
    );
  }
  const layout = new SharedLayout(hartCount);
  const plic = layout.alloc(Plic.words(hartCount, VIRT_PLIC_SOURCES));
  const uart = layout.alloc(Uart16550.words());
  const sbi = layout.alloc(Sbi.words());
  const hartStates = layout.alloc(hartCount * HART_STATE_AREA_DOUBLES * 2);
  const console = layout.alloc(VirtioConsoleDevice.regionWords(VirtioMmioTransport.words(2)));
  const disks = Array.from({ length: diskCount }, () => layout.alloc(VirtioMmioTransport.words(1)));
  if (nicCount === 0) return { plic, uart, sbi, console, disks, hartStates, words: layout.words };
  const nics = Array.from({ length: nicCount }, () => layout.alloc(VirtioMmioTransport.words(2)));
  return { plic, uart, sbi, console, disks, nics, hartStates, words: layout.words };
}

/** Create the shared state of a new board: control block with every hart's timer disarmed. */
export function createBoardState(
  hartCount: number,
  shared: boolean,
  diskCount = 0,
  nicCount = 0,
): { block: Int32Array; layout: BoardLayout } {
  const layout = planBoard(hartCount, diskCount, nicCount);
  const block = createControlBlock(layout.words, shared);
  for (let h = 0; h < hartCount; h++) {
    block[hartWord(h, HART_TIMECMP_LO)] = -1;
    block[hartWord(h, HART_TIMECMP_HI)] = -1;
    block[hartWord(h, HART_STATE)] = h === 0 ? HART_STATE_RUNNING : HART_STATE_STOPPED;
  }
  new VmClock(block, wallClockMs).reset();
  return { block, layout };
}

/**
 * One thread's view of the board: the devices (whose state is in the shared control block), the MMIO bus, the
 * address space and the clock. Every vCPU thread and the I/O side build one from the same {@link BoardInit}.
 */
export class Board {
  readonly init: BoardInit;
  readonly block: Int32Array;
  readonly lines: HartLines;
  readonly clock: VmClock;
  readonly memory: AddressSpace;
  readonly bus = new MmioBus();
  readonly clint: Clint;
  readonly plic: Plic;
  readonly uart: Uart16550;
  /** The virtio console's transport (its own slot, {@link VIRT_CONSOLE_SLOT}); the device is its `device`. */
  readonly console: VirtioMmioTransport;
  /** The virtio-mmio transports of the disks, slot 1 first. */
  readonly disks: readonly VirtioMmioTransport[];
  /** The virtio-mmio transports of the NICs, in slot order after the disks. */
  readonly nics: readonly VirtioMmioTransport[];
  /** The emulator's SBI firmware, when the board boots a kernel in S-mode. */
  readonly sbi: Sbi | undefined;

  /** `nowMs`: the host time the VM clock counts from (tests pass a deterministic one). */
  constructor(init: BoardInit, nowMs: () => number = wallClockMs) {
    this.init = init;
    this.block = init.block;
    this.lines = new HartLines(init.block, init.hartCount);
    this.clock = new VmClock(init.block, nowMs);
    this.memory = new AddressSpace(init.memory);
    this.clint = new Clint(this.lines, this.clock);
    this.plic = new Plic(init.block, init.layout.plic, this.lines, VIRT_PLIC_SOURCES);
    this.uart = new Uart16550(init.block, init.layout.uart, this.plic, VIRT_UART_IRQ);
    this.bus.map(VIRT_CLINT_BASE, this.clint);
    this.bus.map(VIRT_PLIC_BASE, this.plic);
    this.bus.map(VIRT_UART_BASE, this.uart);
    const consoleWords = init.layout.console + VirtioMmioTransport.words(2);
    this.console = new VirtioMmioTransport(
      init.block,
      init.layout.console,
      new VirtioConsoleDevice(init.block, consoleWords, this.memory, {
        fallbackPosition: () => this.uart.txPosition,
      }),
      this.plic,
      VIRT_CONSOLE_SLOT,
    );
    this.bus.map(virtioSlotBase(VIRT_CONSOLE_SLOT), this.console);
    const disks = init.disks ?? [];
    this.disks = disks.map((options, i) => {
      const slot = i + 1;
      const device = new VirtioBlkDevice(options);
      const transport = new VirtioMmioTransport(init.block, init.layout.disks[i], device, this.plic, slot);
      this.bus.map(virtioSlotBase(slot), transport);
      return transport;
    });
    const nics = init.nics ?? [];
    const nicLayout = init.layout.nics ?? [];
    this.nics = nics.map((options, i) => {
      const slot = disks.length + i + 1;
      const device = new VirtioNetDevice(options);
      const transport = new VirtioMmioTransport(init.block, nicLayout[i], device, this.plic, slot);
      this.bus.map(virtioSlotBase(slot), transport);
      return transport;
    });
    // Unused virtio-mmio slots answer with device ID 0, so the guest's driver skips them.
    for (let slot = disks.length + nics.length + 1; slot <= VIRT_VIRTIO_SLOTS; slot++) {
      this.bus.map(virtioSlotBase(slot), new EmptyVirtioSlot());
    }
    this.sbi = init.firmware
      ? new Sbi(init.block, init.layout.sbi, { lines: this.lines, memory: this.memory, console: this.uart })
      : undefined;
  }

  /** A hart wired to this board; `jit` overrides the board's block translator settings (tests). */
  createHart(hartId: number, jit?: { enabled: boolean; threshold?: number }): Hart {
    const area = this.init.hartAreas?.[hartId];
    const wasmMemory = this.init.memory.memory;
    return new Hart({
      hartId,
      memory: this.memory,
      mmio: this.bus,
      block: this.block,
      clock: this.clock,
      firmware: this.sbi,
      jit: jit?.enabled ?? this.init.jit,
      jitThreshold: jit?.threshold,
      ...(area !== undefined && wasmMemory !== undefined
        ? { area: { memory: wasmMemory, offset: area } }
        : {}),
    });
  }
}
