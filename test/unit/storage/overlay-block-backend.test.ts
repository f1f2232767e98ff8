import { describe, expect, it } from 'vitest';
import { MemoryBlockBackend } from '../../../src/storage/memory-block-backend.ts';
import {
  OVERLAY_BLOCK_SIZE,
  OverlayBlockBackend,
  overlaySizeFor,
} from '../../../src/storage/overlay-block-backend.ts';

const BASE_SIZE = 64 * 1024;

function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

async function setup(): Promise<{
  base: MemoryBlockBackend;
  overlay: MemoryBlockBackend;
  disk: OverlayBlockBackend;
}> {
  const base = new MemoryBlockBackend(pattern(BASE_SIZE, 7), { readOnly: true });
  const overlay = new MemoryBlockBackend(overlaySizeFor(BASE_SIZE), { async: true });
  const disk = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
  return { base, overlay, disk };
}

describe('OverlayBlockBackend', () => {
  it('reads the base until a block is written, and never writes the base', async () => {
    const { base, disk } = await setup();
    const before = base.bytes.slice();
    const got = new Uint8Array(BASE_SIZE);
    await disk.read(0, got);
    expect(got).toEqual(before);
    await disk.write(1024, new Uint8Array(512).fill(0xaa));
    expect(base.bytes).toEqual(before);
    await disk.read(0, got);
    const expected = before.slice();
    expected.fill(0xaa, 1024, 1536);
    expect(got).toEqual(expected); // the rest of the copied block keeps the base bytes
    expect(disk.changedBlocks()).toBe(1);
  });

  it('keeps partial writes that straddle blocks merged with the base on both edges', async () => {
    const { base, disk } = await setup();
    const offset = OVERLAY_BLOCK_SIZE - 512;
    const data = pattern(OVERLAY_BLOCK_SIZE + 1024, 99);
    await disk.write(offset, data);
    const got = new Uint8Array(BASE_SIZE);
    await disk.read(0, got);
    const expected = base.bytes.slice();
    expected.set(data, offset);
    expect(got).toEqual(expected);
    expect(disk.changedBlocks()).toBe(3);
  });

  it('brings flushed writes back after reopening, and forgets unflushed bitmap changes (crash before flush)', async () => {
    const { base, overlay, disk } = await setup();
    await disk.write(0, new Uint8Array(512).fill(1));
    await disk.flush();
    await disk.write(8192, new Uint8Array(512).fill(2)); // completed, never flushed
    const reopened = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
    expect(reopened.openResult).toBe('reused');
    const got = new Uint8Array(1024);
    await reopened.read(0, got);
    expect(got.subarray(0, 512).every((b) => b === 1)).toBe(true);
    await reopened.read(8192, got);
    expect(got).toEqual(base.bytes.subarray(8192, 9216)); // the unflushed block reads as the base: consistent
  });

  it('flush flushes the overlay data before it persists the bitmap that points at it', async () => {
    const { overlay, disk } = await setup();
    const order: string[] = [];
    const write = overlay.write.bind(overlay);
    const flush = overlay.flush.bind(overlay);
    overlay.write = (offset, src) => (
      order.push(offset < OVERLAY_BLOCK_SIZE ? 'bitmap' : 'data'),
      write(offset, src)
    );
    overlay.flush = () => (order.push('flush'), flush());
    await disk.write(4096, new Uint8Array(4096).fill(3));
    await disk.flush();
    expect(order).toEqual(['data', 'flush', 'bitmap', 'flush']);
  });

  it('reset returns every block to the base, durably', async () => {
    const { base, overlay, disk } = await setup();
    await disk.write(0, new Uint8Array(4096).fill(5));
    await disk.flush();
    await disk.reset();
    const reopened = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
    const got = new Uint8Array(4096);
    await reopened.read(0, got);
    expect(got).toEqual(base.bytes.subarray(0, 4096));
    expect(reopened.changedBlocks()).toBe(0);
  });

  it('empties an overlay made for another base image instead of patching the wrong file system', async () => {
    const { base, overlay, disk } = await setup();
    await disk.write(0, new Uint8Array(512).fill(9));
    await disk.flush();
    const other = await OverlayBlockBackend.open(base, overlay, 'sha256:other');
    expect(other.openResult).toBe('replaced');
    const got = new Uint8Array(512);
    await other.read(0, got);
    expect(got).toEqual(base.bytes.subarray(0, 512));
  });

  it('random writes and reads agree with a plain in-memory disk', async () => {
    const { base, disk } = await setup();
    const model = base.bytes.slice();
    let seed = 12345;
    const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
    for (let i = 0; i < 200; i++) {
      const sectors = 1 + rand(24);
      const offset = rand(BASE_SIZE / 512 - sectors) * 512;
      if (rand(2) === 0) {
        const data = pattern(sectors * 512, i);
        await disk.write(offset, data);
        model.set(data, offset);
      } else {
        const got = new Uint8Array(sectors * 512);
        await disk.read(offset, got);
        expect(got).toEqual(model.subarray(offset, offset + sectors * 512));
      }
    }
  });

  it('discard and write zeroes of whole blocks read back as zeroes, not the base, without writing data', async () => {
    const { base, overlay, disk } = await setup();
    const writes: number[] = [];
    const write = overlay.write.bind(overlay);
    overlay.write = (offset, src) => (writes.push(offset), write(offset, src));
    await disk.discard(OVERLAY_BLOCK_SIZE, 2 * OVERLAY_BLOCK_SIZE);
    await disk.writeZeroes(4 * OVERLAY_BLOCK_SIZE, OVERLAY_BLOCK_SIZE);
    expect(writes).toEqual([]); // only zero bits changed
    const got = new Uint8Array(BASE_SIZE);
    await disk.read(0, got);
    const expected = base.bytes.slice();
    expected.fill(0, OVERLAY_BLOCK_SIZE, 3 * OVERLAY_BLOCK_SIZE);
    expected.fill(0, 4 * OVERLAY_BLOCK_SIZE, 5 * OVERLAY_BLOCK_SIZE);
    expect(got).toEqual(expected);
    expect(disk.changedBlocks()).toBe(3);
  });

  it('zeroes the partial blocks at the edges of a discard with writes; the rest of those blocks is kept', async () => {
    const { base, disk } = await setup();
    const offset = OVERLAY_BLOCK_SIZE - 1024;
    const length = 2 * OVERLAY_BLOCK_SIZE + 2048;
    await disk.discard(offset, length);
    const got = new Uint8Array(BASE_SIZE);
    await disk.read(0, got);
    const expected = base.bytes.slice();
    expected.fill(0, offset, offset + length);
    expect(got).toEqual(expected);
  });

  it('a discarded block overwritten later reads the new data, also after flush and reopen', async () => {
    const { base, overlay, disk } = await setup();
    await disk.write(0, new Uint8Array(OVERLAY_BLOCK_SIZE).fill(1));
    await disk.flush();
    await disk.discard(0, OVERLAY_BLOCK_SIZE);
    await disk.flush();
    let reopened = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
    const got = new Uint8Array(1024);
    await reopened.read(0, got);
    expect(got.every((b) => b === 0)).toBe(true); // the old data bit is still set; the zero bit wins
    await reopened.write(512, new Uint8Array(512).fill(2));
    await reopened.flush();
    reopened = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
    await reopened.read(0, got);
    expect([...got.subarray(0, 512)].every((b) => b === 0)).toBe(true);
    expect([...got.subarray(512)].every((b) => b === 2)).toBe(true);
  });

  it('never falls back to the base: a cleared zero bit reaches the overlay only after the data bit, each flushed', async () => {
    const { overlay, disk } = await setup();
    await disk.discard(0, OVERLAY_BLOCK_SIZE);
    await disk.flush();
    const order: string[] = [];
    const write = overlay.write.bind(overlay);
    const flush = overlay.flush.bind(overlay);
    const dataMapEnd = OVERLAY_BLOCK_SIZE; // header + data map fit the first block here
    const zeroStart = overlaySizeFor(BASE_SIZE) - 512;
    overlay.write = (offset, src) => (
      order.push(offset < dataMapEnd ? 'data map' : offset >= zeroStart ? 'zero map' : 'data'),
      write(offset, src)
    );
    overlay.flush = () => (order.push('flush'), flush());
    await disk.write(0, new Uint8Array(OVERLAY_BLOCK_SIZE).fill(4));
    await disk.flush();
    expect(order).toEqual(['data', 'flush', 'data map', 'flush', 'zero map', 'flush']);
  });

  it('zeroing that was never flushed is forgotten after a crash: the block reads as before', async () => {
    const { base, overlay, disk } = await setup();
    await disk.writeZeroes(0, OVERLAY_BLOCK_SIZE);
    const reopened = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
    const got = new Uint8Array(OVERLAY_BLOCK_SIZE);
    await reopened.read(0, got);
    expect(got).toEqual(base.bytes.subarray(0, OVERLAY_BLOCK_SIZE));
  });

  it('opens an overlay made before the zero map existed (grown by zeroes) and keeps its blocks', async () => {
    const base = new MemoryBlockBackend(pattern(BASE_SIZE, 7), { readOnly: true });
    const zeroMapBytes = 512;
    const oldSize = overlaySizeFor(BASE_SIZE) - zeroMapBytes;
    const old = new MemoryBlockBackend(oldSize + zeroMapBytes);
    // The old layout: header, data map, data; nothing after the data.
    const first = await OverlayBlockBackend.open(base, old, 'sha256:base');
    await first.write(0, new Uint8Array(512).fill(6));
    await first.flush();
    old.bytes.fill(0, oldSize); // what growing an old overlay file gives
    const reopened = await OverlayBlockBackend.open(base, old, 'sha256:base');
    expect(reopened.openResult).toBe('reused');
    const got = new Uint8Array(512);
    await reopened.read(0, got);
    expect(got.every((b) => b === 6)).toBe(true);
  });

  it('an overlay emptied for another base forgets its zero bits too', async () => {
    const { base, overlay, disk } = await setup();
    await disk.discard(0, OVERLAY_BLOCK_SIZE);
    await disk.flush();
    await OverlayBlockBackend.open(base, overlay, 'sha256:other');
    const again = await OverlayBlockBackend.open(base, overlay, 'sha256:other');
    const got = new Uint8Array(512);
    await again.read(0, got);
    expect(got).toEqual(base.bytes.subarray(0, 512));
  });

  it('random writes, discards, write zeroes, flushes and reopenings agree with a plain in-memory disk', async () => {
    const { base, overlay } = await setup();
    let disk = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
    const model = base.bytes.slice();
    let seed = 777;
    const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
    for (let i = 0; i < 400; i++) {
      const sectors = 1 + rand(40);
      const offset = rand(BASE_SIZE / 512 - sectors) * 512;
      const length = sectors * 512;
      switch (rand(6)) {
        case 0:
        case 1: {
          const data = pattern(length, i);
          await disk.write(offset, data);
          model.set(data, offset);
          break;
        }
        case 2:
          await (rand(2) === 0 ? disk.discard(offset, length) : disk.writeZeroes(offset, length));
          model.fill(0, offset, offset + length);
          break;
        case 3:
          await disk.flush();
          disk = await OverlayBlockBackend.open(base, overlay, 'sha256:base'); // a clean restart
          break;
        default: {
          const got = new Uint8Array(length);
          await disk.read(offset, got);
          expect(got).toEqual(model.subarray(offset, offset + length));
        }
      }
    }
    const all = new Uint8Array(BASE_SIZE);
    await disk.read(0, all);
    expect(all).toEqual(model);
  });
});
