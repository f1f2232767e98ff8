import { describe, it, expect } from 'vitest';
import { MemoryBlockBackend } from '../../../src/storage/memory-block-backend.ts';

describe('MemoryBlockBackend', () => {
  it('reads back what was written and counts flushes', () => {
    const disk = new MemoryBlockBackend(4096);
    disk.write(512, new Uint8Array(512).fill(7));
    const out = new Uint8Array(1024);
    disk.read(0, out);
    expect(out.subarray(0, 512).every((x) => x === 0)).toBe(true);
    expect(out.subarray(512).every((x) => x === 7)).toBe(true);
    disk.flush();
    expect(disk.flushCount).toBe(1);
  });

  it('discarded ranges read back as zeroes; the rest is kept', () => {
    const disk = new MemoryBlockBackend(new Uint8Array(2048).fill(9));
    disk.discard(512, 1024);
    expect(disk.bytes.subarray(512, 1536).every((x) => x === 0)).toBe(true);
    expect(disk.bytes[511]).toBe(9);
    expect(disk.bytes[1536]).toBe(9);
    disk.writeZeroes(0, 512);
    expect(disk.bytes.subarray(0, 1536).every((x) => x === 0)).toBe(true);
    expect(disk.bytes[1536]).toBe(9);
  });

  it('fails explicitly: out-of-range access and writes to a read-only disk throw', () => {
    const disk = new MemoryBlockBackend(1024, { readOnly: true });
    expect(() => disk.read(512, new Uint8Array(1024))).toThrow(/outside|read-only/);
    expect(() => disk.write(0, new Uint8Array(512))).toThrow(/outside|read-only/);
    expect(() => disk.discard(0, 512)).toThrow(/outside|read-only/);
  });

  it('the async variant settles through promises and rejects instead of throwing', async () => {
    const disk = new MemoryBlockBackend(1024, { async: true });
    const pending = disk.write(0, new Uint8Array(512).fill(3));
    expect(pending).toBeInstanceOf(Promise);
    expect(disk.bytes[0]).toBe(0); // not yet
    await pending;
    expect(disk.bytes[0]).toBe(3);
    await expect(disk.read(1024, new Uint8Array(512))).rejects.toThrow(/outside|read-only/);
  });

  it('refuses a size that is not a positive multiple of 512', () => {
    expect(() => new MemoryBlockBackend(1000)).toThrow(RangeError);
    expect(() => new MemoryBlockBackend(0)).toThrow(RangeError);
  });
});
