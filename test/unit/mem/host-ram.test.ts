import { describe, expect, it } from 'vitest';
import { AddressSpace, RAM_BASE } from '../../../src/mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../../../src/mem/host-ram.ts';
import { HOST_FRAME_BYTES } from '../../../src/machine/vm-limits.ts';

const MiB = 1 << 20;

function spaceFor(ram: HostRam, bytes: number): AddressSpace {
  const frames = ram.allocate(bytes / FRAME_SIZE);
  return new AddressSpace({
    ram: ram.buffer,
    table: AddressSpace.tableFor(frames, true),
    ramBase: RAM_BASE,
    ramSize: bytes,
  });
}

describe('host RAM that grows on demand', () => {
  it('has the frame size the embed reports without the VMM (machine/vm-limits.ts)', () => {
    expect(HOST_FRAME_BYTES).toBe(FRAME_SIZE);
  });

  it('commits nothing up front and grows as VMs are created, up to the maximum', () => {
    const ram = new HostRam(0, true, 256 * MiB);
    expect(ram.buffer.byteLength).toBe(0);
    expect(ram.freeFrames).toBe((256 * MiB) / FRAME_SIZE);
    spaceFor(ram, 16 * MiB);
    // Grown in a 64 MiB step, not to the maximum.
    expect(ram.buffer.byteLength).toBe(64 * MiB);
    spaceFor(ram, 100 * MiB);
    expect(ram.buffer.byteLength).toBeGreaterThanOrEqual(116 * MiB);
    expect(ram.buffer.byteLength).toBeLessThanOrEqual(256 * MiB);
    expect(() => spaceFor(ram, 200 * MiB)).toThrow(/not enough host memory/);
  });

  it('growing leaves the memory of VMs created earlier in place and reachable', () => {
    const ram = new HostRam(0, true, 512 * MiB);
    const first = spaceFor(ram, 8 * MiB);
    first.writeU32(RAM_BASE + 4 * MiB, 0x12345678);
    const second = spaceFor(ram, 200 * MiB);
    second.writeU32(RAM_BASE + 199 * MiB, 0x0badcafe);
    expect(first.readU32(RAM_BASE + 4 * MiB)).toBe(0x12345678);
    expect(second.readU32(RAM_BASE + 199 * MiB)).toBe(0x0badcafe);
    expect(second.readU32(RAM_BASE + 4 * MiB)).toBe(0);
  });

  it('a fixed-size host RAM refuses to grow', () => {
    const ram = new HostRam(4 * MiB, false);
    expect(() => ram.allocate((8 * MiB) / FRAME_SIZE)).toThrow(/not enough host memory/);
    expect(ram.allocate((4 * MiB) / FRAME_SIZE)).toHaveLength((4 * MiB) / FRAME_SIZE);
  });
});
