import { describe, it, expect } from 'vitest';
import {
  EmptyVirtioSlot,
  TABVISOR_VIRTIO_VENDOR_ID,
  VIRTIO_MAGIC,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_SLOT_SIZE,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VERSION,
} from '../../../src/devices/virtio-mmio-empty.ts';

describe('EmptyVirtioSlot', () => {
  const slot = new EmptyVirtioSlot();

  it('identifies as a version 2 virtio-mmio transport with device id 0', () => {
    expect(slot.size).toBe(0x1000);
    expect(EmptyVirtioSlot.words()).toBe(0);
    expect(slot.read(VIRTIO_MMIO_MAGIC_VALUE, 4)).toBe(0x74726976);
    expect(VIRTIO_MAGIC).toBe(0x74726976);
    expect(slot.read(VIRTIO_MMIO_VERSION, 4)).toBe(2);
    expect(slot.read(VIRTIO_MMIO_DEVICE_ID, 4)).toBe(0);
    expect(slot.read(VIRTIO_MMIO_VENDOR_ID, 4)).toBe(TABVISOR_VIRTIO_VENDOR_ID);
  });

  it('the magic and vendor id spell "virt" and "tbvs" in little-endian byte order', () => {
    const bytes = (offset: number) => [0, 1, 2, 3].map((i) => String.fromCharCode(slot.read(offset + i, 1)));
    expect(bytes(VIRTIO_MMIO_MAGIC_VALUE).join('')).toBe('virt');
    expect(bytes(VIRTIO_MMIO_VENDOR_ID).join('')).toBe('tbvs');
    expect(slot.read(VIRTIO_MMIO_MAGIC_VALUE + 2, 2)).toBe(0x7472);
  });

  it('every other register reads 0, and writes are ignored', () => {
    for (let offset = 0x10; offset < VIRTIO_MMIO_SLOT_SIZE; offset += 4) {
      expect(slot.write(offset, 4, -1)).toBe(true);
      expect(slot.read(offset, 4)).toBe(0);
    }
    slot.write(VIRTIO_MMIO_MAGIC_VALUE, 4, 0);
    expect(slot.read(VIRTIO_MMIO_MAGIC_VALUE, 4)).toBe(VIRTIO_MAGIC);
  });

  it('hostile guest: offsets outside the slot read 0 and never throw', () => {
    for (const offset of [-4, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SLOT_SIZE - 2, 0x7fff_ffff]) {
      expect(slot.read(offset, 4)).toBe(0);
      expect(slot.write(offset, 4, 1)).toBe(true);
    }
  });
});
