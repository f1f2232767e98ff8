import type { AccessSize, MmioDevice } from './mmio.ts';

/**
 * virtio-mmio registers an empty slot answers (virtio 1.2, section 4.2.2 "MMIO Device Register Layout").
 */
/** MagicValue: "virt" in little-endian. */
export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
/** Version: 2 for the non-legacy interface. */
export const VIRTIO_MMIO_VERSION = 0x004;
/** DeviceID: 0 means "no device here" (section 4.2.3.1.1: the driver then ignores the slot). */
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
/** VendorID. */
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
/** Bytes of address space one virtio-mmio slot decodes. */
export const VIRTIO_MMIO_SLOT_SIZE = 0x1000;

/** The magic value "virt". */
export const VIRTIO_MAGIC = 0x7472_6976;
/** Our VendorID: the bytes "tbvs" (tabvisor) in little-endian, as QEMU uses "QEMU". */
export const TABVISOR_VIRTIO_VENDOR_ID = 0x7376_6274;

/**
 * An unused virtio-mmio slot: it identifies itself as a version 2 transport with device id 0, so a driver probes
 * it and moves on. Every other register reads 0 and every write is ignored. Stateless, so it needs no region of
 * the control block. Any access width is accepted; narrower reads return the addressed bytes of the register.
 */
export class EmptyVirtioSlot implements MmioDevice {
  readonly size = VIRTIO_MMIO_SLOT_SIZE;

  /** Control-block words an empty slot needs: none. */
  static words(): number {
    return 0;
  }

  read(mmioOffset: number, size: AccessSize): number {
    if (mmioOffset < 0 || mmioOffset + size > VIRTIO_MMIO_SLOT_SIZE) return 0;
    const register = mmioOffset & ~3;
    let word = 0;
    if (register === VIRTIO_MMIO_MAGIC_VALUE) word = VIRTIO_MAGIC;
    else if (register === VIRTIO_MMIO_VERSION) word = 2;
    else if (register === VIRTIO_MMIO_VENDOR_ID) word = TABVISOR_VIRTIO_VENDOR_ID;
    const shifted = word >>> ((mmioOffset & 3) * 8);
    return size === 4 ? shifted >>> 0 : shifted & ((1 << (size * 8)) - 1);
  }

  write(_mmioOffset: number, _size: AccessSize, _value: number): boolean {
    return true;
  }
}
