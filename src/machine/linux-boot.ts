import { UserError } from '../common/errors.ts';
import { buildVirtDeviceTree } from '../devices/virt-device-tree.ts';
import type { AddressSpace } from '../mem/address-space.ts';
import { parseLinuxImage } from './linux-image.ts';

/** What a Linux boot puts into guest RAM. */
export interface LinuxBootImages {
  readonly kernel: Uint8Array;
  readonly kernelName: string;
  readonly initrd?: Uint8Array;
  readonly bootargs: string;
}

/** Where the loader put things, and how hart 0 enters the kernel. */
export interface LinuxBootPlan {
  readonly entry: number;
  readonly dtbGpa: number;
  readonly initrd?: { readonly start: number; readonly end: number };
  readonly dtb: Uint8Array;
}

const MiB = 1 << 20;
/** RAM the kernel needs beyond its image, initrd and device tree to get to a shell (page tables, slab, tasks). */
const RUNTIME_HEADROOM = 16 * MiB;

/**
 * The device the kernel makes /dev/console for `bootargs`: the last `console=` argument's name without its
 * options (`hvc1` for `console=hvc1`, `ttyS0` for `console=ttyS0,115200`), or undefined when there is none
 * (the kernel then uses the device tree's stdout-path, the UART).
 */
export function consoleDevice(bootargs: string): string | undefined {
  let device: string | undefined;
  for (const arg of bootargs.split(/\s+/)) {
    if (!arg.startsWith('console=')) continue;
    const name = arg.slice('console='.length).split(',')[0];
    if (name !== '') device = name;
  }
  return device;
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

/**
 * Place a Linux Image, its initrd and a generated device tree in RAM (GUEST-NOTES "Booting it without
 * firmware"): the Image at the start of RAM (4 MiB aligned; rv32 Linux ignores RAM below its load address),
 * the initrd above the image's memory size, the device tree after the initrd. Throws a UserError when they do
 * not fit, naming the memory needed.
 */
export function loadLinux(memory: AddressSpace, hartCount: number, images: LinuxBootImages): LinuxBootPlan {
  const header = parseLinuxImage(images.kernel, images.kernelName);
  const ramBase = memory.ramBase;
  const ramSize = memory.ramSize;
  const entry = ramBase;
  let next = alignUp(header.imageSize, 2 * MiB);
  let initrd: { start: number; end: number } | undefined;
  if (images.initrd !== undefined) {
    initrd = { start: ramBase + next, end: ramBase + next + images.initrd.length };
    next = alignUp(next + images.initrd.length, 4096);
  }
  // Build once to learn the size; the tree's content does not depend on where it is placed.
  const dtb = buildVirtDeviceTree({
    hartCount,
    ramBase,
    ramSize,
    bootargs: images.bootargs,
    initrd,
  });
  const dtbOffset = next;
  const needed = dtbOffset + dtb.length + RUNTIME_HEADROOM;
  if (needed > ramSize) {
    const neededMiB = Math.ceil(needed / MiB);
    throw new UserError(
      `the kernel (${Math.ceil(header.imageSize / MiB)} MiB in memory)` +
        (images.initrd ? ` and initrd (${Math.ceil(images.initrd.length / MiB)} MiB)` : '') +
        ` need at least ${neededMiB} MiB of guest memory, but the VM has ${Math.floor(ramSize / MiB)} MiB; use --mem ${neededMiB} or more`,
    );
  }
  memory.write(entry, images.kernel);
  if (initrd !== undefined && images.initrd !== undefined) memory.write(initrd.start, images.initrd);
  const dtbGpa = ramBase + dtbOffset;
  memory.write(dtbGpa, dtb);
  return { entry, dtbGpa, initrd, dtb };
}
