import { describe, expect, it } from 'vitest';
import { AddressSpace, RAM_BASE } from '../../../src/mem/address-space.ts';
import { FRAME_SIZE, HART_AREA_BYTES, HART_AREA_SLOTS, HostRam } from '../../../src/mem/host-ram.ts';
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
    // Only the band of vCPU areas is there at first (untouched, so the system commits none of it either).
    const band = HART_AREA_SLOTS * HART_AREA_BYTES;
    expect(ram.buffer.byteLength).toBe(band);
    expect(ram.frameCount).toBe(0);
    expect(ram.freeFrames).toBe((256 * MiB) / FRAME_SIZE);
    spaceFor(ram, 16 * MiB);
    // Grown in a 64 MiB step, not to the maximum.
    expect(ram.frameCount * FRAME_SIZE).toBe(64 * MiB);
    expect(ram.buffer.byteLength).toBe(band + 64 * MiB);
    spaceFor(ram, 100 * MiB);
    expect(ram.frameCount * FRAME_SIZE).toBeGreaterThanOrEqual(116 * MiB);
    expect(ram.buffer.byteLength).toBeLessThanOrEqual(band + 256 * MiB);
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

  it('is a WebAssembly.Memory (shared when asked), whose band of vCPU areas no frame overlaps', () => {
    const shared = new HostRam(4 * MiB, true);
    expect(shared.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(shared.buffer).toBe(shared.memory.buffer);
    const plain = new HostRam(4 * MiB, false);
    expect(plain.buffer).toBeInstanceOf(ArrayBuffer);
    const frames = plain.allocate((4 * MiB) / FRAME_SIZE);
    expect(Math.min(...frames) * FRAME_SIZE).toBe(HART_AREA_SLOTS * HART_AREA_BYTES);
    expect((Math.max(...frames) + 1) * FRAME_SIZE).toBeLessThanOrEqual(plain.buffer.byteLength);
    // Areas: one slot each until the band is full, then none (those vCPUs run without the WebAssembly tier).
    const areas = plain.allocateHartAreas(HART_AREA_SLOTS - 2);
    expect(new Set(areas).size).toBe(HART_AREA_SLOTS - 2);
    expect(plain.allocateHartAreas(5)).toHaveLength(2);
    expect(plain.allocateHartAreas(1)).toEqual([]);
    plain.freeHartAreas(areas.slice(0, 1));
    expect(plain.allocateHartAreas(3)).toEqual(areas.slice(0, 1));
    expect(() => plain.freeHartAreas([HART_AREA_BYTES + 4])).toThrow(/freed twice/);
    expect(() => plain.free(Int32Array.of(0))).toThrow(/freed twice/);
  });

  it('keeps every host offset below 2 GiB: a 2 GiB host RAM has no band of vCPU areas, its VMs run without the tier', () => {
    const full = new HostRam(0, true, 2048 * MiB);
    expect(full.allocateHartAreas(1)).toEqual([]);
    const space = spaceFor(full, 2048 * MiB);
    const frames = space.table;
    expect(frames.reduce((a, b) => Math.min(a, b))).toBe(0);
    expect(frames.reduce((a, b) => Math.max(a, b)) + FRAME_SIZE).toBe(2 ** 31);
    // A 2 GiB VM's address space reaches its last word (views of a 2^31-byte buffer).
    expect(space.i32.length).toBe(2 ** 29);
    space.writeU32(RAM_BASE + 2048 * MiB - 4, 0xfeedf00d);
    expect(space.readU32(RAM_BASE + 2048 * MiB - 4)).toBe(0xfeedf00d);
    // A little less leaves room for some areas, never more than HART_AREA_SLOTS.
    expect(new HostRam(0, true, 2048 * MiB - 4 * HART_AREA_BYTES).allocateHartAreas(10)).toHaveLength(4);
    expect(new HostRam(0, true, 1024 * MiB).allocateHartAreas(100)).toHaveLength(HART_AREA_SLOTS);
    expect(() => new HostRam(0, true, 2048 * MiB + FRAME_SIZE)).toThrow(/2048 MiB/);
  });

  it('a fixed-size host RAM refuses to grow', () => {
    const ram = new HostRam(4 * MiB, false);
    expect(() => ram.allocate((8 * MiB) / FRAME_SIZE)).toThrow(/not enough host memory/);
    expect(ram.allocate((4 * MiB) / FRAME_SIZE)).toHaveLength((4 * MiB) / FRAME_SIZE);
  });
});
