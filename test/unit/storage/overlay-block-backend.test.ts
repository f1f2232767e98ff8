import { describe, expect, it, vi } from 'vitest';
import {
  IDB_BLOCK_SIZE,
  IdbBlockBackend,
  MemoryKeyValueStore,
} from '../../../src/storage/idb-block-backend.ts';
import { MemoryBlockBackend } from '../../../src/storage/memory-block-backend.ts';
import {
  OVERLAY_BLOCK_SIZE,
  OverlayBlockBackend,
  overlaySizeFor,
  type OverlayOptions,
  type OverlayStore,
} from '../../../src/storage/overlay-block-backend.ts';

const BASE_SIZE = 64 * 1024;

function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

/** A disk over a fresh in-memory overlay; `checkpointWhenIdle: false` to model a crash before the guest flushes. */
async function setup(options: OverlayOptions = {}): Promise<{
  base: MemoryBlockBackend;
  overlay: MemoryBlockBackend;
  disk: OverlayBlockBackend;
}> {
  const base = new MemoryBlockBackend(pattern(BASE_SIZE, 7), { readOnly: true });
  const overlay = new MemoryBlockBackend(overlaySizeFor(BASE_SIZE), { async: true });
  const disk = await OverlayBlockBackend.open(base, overlay, 'sha256:base', options);
  return { base, overlay, disk };
}

/**
 * Log what reaches `overlay` (for the 64 KiB base of {@link setup}): 'data map' (header and data map, in the
 * first block), 'zero map' (the last sector), 'data', and 'flush'.
 */
function logStoreOps(overlay: MemoryBlockBackend): string[] {
  const order: string[] = [];
  const write = overlay.write.bind(overlay);
  const flush = overlay.flush.bind(overlay);
  const zeroMapAt = overlaySizeFor(BASE_SIZE) - 512;
  overlay.write = (offset, src) => (
    order.push(offset < OVERLAY_BLOCK_SIZE ? 'data map' : offset >= zeroMapAt ? 'zero map' : 'data'),
    write(offset, src)
  );
  overlay.flush = () => (order.push('flush'), flush());
  return order;
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

  it('passes a write of whole blocks to the overlay as it is (no copy), and marks those blocks', async () => {
    const { base, overlay, disk } = await setup();
    const sent: Uint8Array[] = [];
    const write = overlay.write.bind(overlay);
    overlay.write = (offset, src) => {
      sent.push(src);
      return write(offset, src);
    };
    const data = pattern(2 * OVERLAY_BLOCK_SIZE, 5);
    await disk.write(OVERLAY_BLOCK_SIZE, data);
    expect(sent).toContain(data);
    expect(disk.changedBlocks()).toBe(2);
    const got = new Uint8Array(BASE_SIZE);
    await disk.read(0, got);
    const expected = base.bytes.slice();
    expected.set(data, OVERLAY_BLOCK_SIZE);
    expect(got).toEqual(expected);
    // A write within one block still merges a copy of that block.
    sent.length = 0;
    const small = new Uint8Array(512).fill(1);
    await disk.write(0, small);
    expect(sent).not.toContain(small);
    expect(sent[0].length).toBe(OVERLAY_BLOCK_SIZE);
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
    const { base, overlay, disk } = await setup({ checkpointWhenIdle: false });
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
    const order = logStoreOps(overlay);
    await disk.write(4096, new Uint8Array(4096).fill(3));
    await disk.flush();
    expect(order).toEqual(['data', 'flush', 'data map', 'flush']);
  });

  it('saves its maps on its own once writes go idle, in flush order: a reopened overlay (a reloaded page) has the writes the guest never flushed', async () => {
    const { base, overlay, disk } = await setup();
    const order = logStoreOps(overlay);
    await disk.write(8192, new Uint8Array(512).fill(2));
    await disk.writeZeroes(4 * OVERLAY_BLOCK_SIZE, OVERLAY_BLOCK_SIZE);
    expect(disk.unsavedBlocks()).toBe(2);
    await vi.waitFor(() => expect(disk.unsavedBlocks()).toBe(0));
    expect(order).toEqual(['data', 'flush', 'data map', 'flush', 'zero map', 'flush']);
    const reopened = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
    const got = new Uint8Array(OVERLAY_BLOCK_SIZE);
    await reopened.read(8192, got);
    expect(got.subarray(0, 512).every((b) => b === 2)).toBe(true);
    expect(got.subarray(512)).toEqual(base.bytes.subarray(8192 + 512, 8192 + OVERLAY_BLOCK_SIZE));
    await reopened.read(4 * OVERLAY_BLOCK_SIZE, got);
    expect(got.every((b) => b === 0)).toBe(true);
    // Rewriting blocks the maps already hold changes no bit: nothing to save, no checkpoint.
    order.length = 0;
    await disk.write(8192, new Uint8Array(512).fill(3));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(order).toEqual(['data']);
  });

  it('checkpoints once after writes queued back to back, not between them, and never after a guest flush', async () => {
    const { overlay, disk } = await setup();
    const order = logStoreOps(overlay);
    await Promise.all([4, 5, 6].map((b) => disk.write(b * OVERLAY_BLOCK_SIZE, new Uint8Array(512).fill(b))));
    await vi.waitFor(() => expect(disk.unsavedBlocks()).toBe(0));
    expect(order).toEqual(['data', 'data', 'data', 'flush', 'data map', 'flush']);
    order.length = 0;
    await disk.write(7 * OVERLAY_BLOCK_SIZE, new Uint8Array(512));
    await disk.flush();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(order).toEqual(['data', 'flush', 'data map', 'flush']);
  });

  it('a failed checkpoint is not retried in a loop; the next flush saves the maps and reports its own failure', async () => {
    const { base, overlay, disk } = await setup();
    const flush = overlay.flush.bind(overlay);
    let flushes = 0;
    let failing = true;
    overlay.flush = () => {
      flushes++;
      return failing ? Promise.reject(new Error('quota')) : flush();
    };
    await disk.write(8192, new Uint8Array(512).fill(2));
    await vi.waitFor(() => expect(flushes).toBe(1));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(flushes).toBe(1);
    expect(disk.unsavedBlocks()).toBe(1);
    await expect(disk.flush()).rejects.toThrow('quota');
    failing = false;
    await disk.flush();
    expect(disk.unsavedBlocks()).toBe(0);
    const reopened = await OverlayBlockBackend.open(base, overlay, 'sha256:base');
    expect(reopened.changedBlocks()).toBe(1);
  });

  it('with checkpointWhenIdle off, only the guest flush saves the maps', async () => {
    const { overlay, disk } = await setup({ checkpointWhenIdle: false });
    const flush = overlay.flush.bind(overlay);
    let flushes = 0;
    overlay.flush = () => (flushes++, flush());
    await disk.write(8192, new Uint8Array(512));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect([flushes, disk.unsavedBlocks()]).toEqual([0, 1]);
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
    const order = logStoreOps(overlay);
    await disk.write(0, new Uint8Array(OVERLAY_BLOCK_SIZE).fill(4));
    await disk.flush();
    expect(order).toEqual(['data', 'flush', 'data map', 'flush', 'zero map', 'flush']);
  });

  it('zeroing that was never flushed is forgotten after a crash: the block reads as before', async () => {
    const { base, overlay, disk } = await setup({ checkpointWhenIdle: false });
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

/**
 * Giving discarded space back to the overlay's store. Geometry with a 512 KiB base: the data area is
 * `[4096, 4096 + 512 KiB)`, so IndexedDB block `u` (64 KiB) holds overlay blocks `16u - 1 .. 16u + 14`; blocks
 * 1-7 lie wholly in the data area, block 0 holds the header and maps, block 8 the zero map.
 */
describe('OverlayBlockBackend over a store whose discards free space', () => {
  const BIG_BASE = 512 * 1024;
  const bs = OVERLAY_BLOCK_SIZE;
  /** First overlay block whose data lies in IndexedDB block `u`. */
  const firstOf = (u: number) => 16 * u - 1;

  async function idbSetup(options: OverlayOptions = {}): Promise<{
    base: MemoryBlockBackend;
    kv: MemoryKeyValueStore;
    store: IdbBlockBackend;
    disk: OverlayBlockBackend;
    discards: string[];
  }> {
    const base = new MemoryBlockBackend(pattern(BIG_BASE, 3), { readOnly: true });
    const kv = new MemoryKeyValueStore();
    const store = new IdbBlockBackend(kv, 'ovl/', overlaySizeFor(BIG_BASE));
    const discards: string[] = [];
    const discard = store.discard.bind(store);
    store.discard = (offset, length) => (discards.push(`${offset}+${length}`), discard(offset, length));
    const disk = await OverlayBlockBackend.open(base, store, 'sha256:big', options);
    return { base, kv, store, disk, discards };
  }

  const blockKeys = (kv: MemoryKeyValueStore) =>
    [...kv.map.keys()].map((k) => Number(k.slice('ovl/'.length))).sort((a, b) => a - b);

  it('discarding overlay blocks that cover whole IndexedDB blocks deletes those keys, in one coalesced discard', async () => {
    const { base, kv, disk, discards } = await idbSetup();
    const first = firstOf(2);
    const end = firstOf(5); // IndexedDB blocks 2, 3 and 4
    await disk.write(first * bs, pattern((end - first) * bs, 1));
    await disk.flush();
    expect(blockKeys(kv)).toEqual([0, 2, 3, 4, 8]);
    await disk.discard(first * bs, (end - first) * bs);
    expect(discards).toEqual([`${2 * IDB_BLOCK_SIZE}+${3 * IDB_BLOCK_SIZE}`]);
    expect(blockKeys(kv)).toEqual([0, 8]);
    const got = new Uint8Array(BIG_BASE);
    await disk.read(0, got);
    const expected = base.bytes.slice();
    expected.fill(0, first * bs, end * bs);
    expectSameBytes(got, expected); // zeroes, not the base
  });

  it('separate discards add up: a store block is freed once none of its overlay blocks is live, never before', async () => {
    const { kv, disk, discards } = await idbSetup();
    const first = firstOf(1);
    await disk.write(first * bs, pattern(16 * bs, 2)); // all of IndexedDB block 1
    const live = firstOf(2) + 5;
    await disk.write(live * bs, pattern(bs, 3)); // one block in IndexedDB block 2
    await disk.discard(first * bs, 8 * bs); // half of IndexedDB block 1: its other half is live
    expect(discards).toEqual([]);
    expect(blockKeys(kv)).toContain(1);
    // The rest of it, and on into IndexedDB block 2, which keeps a live block: only block 1 goes.
    await disk.writeZeroes((first + 8) * bs, 10 * bs);
    expect(discards).toEqual([`${IDB_BLOCK_SIZE}+${IDB_BLOCK_SIZE}`]);
    expect(blockKeys(kv)).toEqual([0, 2, 8]);
    const got = new Uint8Array(bs);
    await disk.read(live * bs, got);
    expect(got).toEqual(pattern(bs, 3));
  });

  it('passes discards down only to a store whose discards free space (OPFS and memory write zeroes)', async () => {
    const { disk, discards } = await idbSetup();
    await disk.write(firstOf(1) * bs, pattern(16 * bs, 4));
    await disk.discard(firstOf(1) * bs, 16 * bs);
    expect(discards).toHaveLength(1);
    const base = new MemoryBlockBackend(pattern(BIG_BASE, 3), { readOnly: true });
    const plain = new MemoryBlockBackend(overlaySizeFor(BIG_BASE), { async: true });
    let plainDiscards = 0;
    plain.discard = () => void plainDiscards++;
    const other = await OverlayBlockBackend.open(base, plain, 'sha256:big');
    await other.write(firstOf(1) * bs, pattern(16 * bs, 4));
    await other.discard(firstOf(1) * bs, 16 * bs);
    expect(plainDiscards).toBe(0);
  });

  it('a block written after its store block was freed reads its data, with zeroes around it, also after flush and reopen', async () => {
    const { base, kv, store, disk } = await idbSetup();
    const first = firstOf(3);
    await disk.write(first * bs, pattern(16 * bs, 5));
    await disk.flush();
    await disk.discard(first * bs, 16 * bs);
    expect(blockKeys(kv)).not.toContain(3);
    const data = pattern(1024, 6);
    await disk.write((first + 4) * bs + 1024, data); // a partial block: the rest must be zeroes, not freed bytes
    const expected = base.bytes.slice();
    expected.fill(0, first * bs, (first + 16) * bs);
    expected.set(data, (first + 4) * bs + 1024);
    const got = new Uint8Array(BIG_BASE);
    await disk.read(0, got);
    expectSameBytes(got, expected);
    await disk.flush();
    const reopened = await OverlayBlockBackend.open(base, store, 'sha256:big');
    await reopened.read(0, got);
    expectSameBytes(got, expected);
  });

  it('a crash after a discard that was never flushed, and after one that was, reopens consistently', async () => {
    const { base, kv, store, disk } = await idbSetup({ checkpointWhenIdle: false });
    const first = firstOf(4);
    await disk.write(first * bs, pattern(16 * bs, 7));
    await disk.flush();
    await disk.discard(first * bs, 16 * bs); // the store block is deleted; the zero map is not on the store yet
    let reopened = await OverlayBlockBackend.open(base, store, 'sha256:big');
    const got = new Uint8Array(16 * bs);
    await reopened.read(first * bs, got);
    // The data bit persisted, the zero bit did not: the freed data reads as zeroes (the discard, unflushed,
    // came back as done), never as the base.
    expect(got.every((b) => b === 0)).toBe(true);
    await reopened.discard(first * bs, 16 * bs);
    await reopened.flush();
    reopened = await OverlayBlockBackend.open(base, store, 'sha256:big');
    await reopened.read(first * bs, got);
    expect(got.every((b) => b === 0)).toBe(true);
    expect(blockKeys(kv)).not.toContain(4);
    expect(reopened.changedBlocks()).toBe(16);
  });

  it('reset, and emptying an overlay made for another base, give the whole data area back', async () => {
    const { base, kv, store, disk } = await idbSetup();
    await disk.write(0, pattern(BIG_BASE, 8));
    await disk.flush();
    expect(blockKeys(kv)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    await disk.reset();
    expect(blockKeys(kv)).toEqual([0, 8]); // header and maps, and the blocks they share with data
    const got = new Uint8Array(BIG_BASE);
    await disk.read(0, got);
    expectSameBytes(got, base.bytes);
    await disk.write(0, pattern(BIG_BASE, 9));
    await disk.flush();
    const other = await OverlayBlockBackend.open(base, store, 'sha256:newer');
    expect(other.openResult).toBe('replaced');
    expect(blockKeys(kv)).toEqual([0, 8]);
    await other.read(0, got);
    expectSameBytes(got, base.bytes);
  });
});

type StoreOp =
  | { readonly kind: 'write'; readonly offset: number; readonly bytes: Uint8Array }
  | { readonly kind: 'discard'; readonly offset: number; readonly length: number }
  | { readonly kind: 'flush' };

/** An overlay store that logs every operation, so a test can rebuild what a crash at any point may leave. */
class LoggingStore implements OverlayStore {
  readonly readOnly = false;
  readonly queueDepth = 4;
  readonly log: StoreOp[] = [];
  readonly bytes: Uint8Array;
  constructor(
    readonly sizeBytes: number,
    readonly discardGranularity: number,
  ) {
    this.bytes = new Uint8Array(sizeBytes);
  }
  async read(offset: number, dst: Uint8Array): Promise<void> {
    dst.set(this.bytes.subarray(offset, offset + dst.length));
  }
  async write(offset: number, src: Uint8Array): Promise<void> {
    this.log.push({ kind: 'write', offset, bytes: src.slice() });
    this.bytes.set(src, offset);
  }
  async discard(offset: number, length: number): Promise<void> {
    if (offset % this.discardGranularity !== 0 || length % this.discardGranularity !== 0)
      throw new Error(`discard ${offset}+${length} is not in whole units`);
    this.log.push({ kind: 'discard', offset, length });
    this.bytes.fill(0, offset, offset + length);
  }
  async flush(): Promise<void> {
    this.log.push({ kind: 'flush' });
  }
}

/**
 * The store after a crash once the first `sent` operations of `log` completed: everything before the last
 * flush among them is durable; of the operations after it, those whose bit is set in `keep` reached the
 * store, in order (a store may lose any of its unflushed operations, but applies what it keeps in order).
 */
function crashImage(size: number, log: readonly StoreOp[], sent: number, keep: number): Uint8Array {
  const image = new Uint8Array(size);
  let lastFlush = -1;
  for (let i = 0; i < sent; i++) if (log[i].kind === 'flush') lastFlush = i;
  let pending = 0;
  for (let i = 0; i < sent; i++) {
    const op = log[i];
    if (op.kind === 'flush') continue;
    if (i > lastFlush && (keep & (1 << pending++)) === 0) continue;
    if (op.kind === 'write') image.set(op.bytes, op.offset);
    else image.fill(0, op.offset, op.offset + op.length);
  }
  return image;
}

describe('OverlayBlockBackend crash consistency with discards reaching the store', () => {
  it('a crash at any point, keeping any of the unflushed store operations, leaves each block a state the guest could see', async () => {
    // 64 KiB base, 16 KiB store units: unit u holds overlay blocks 4u-1 .. 4u+2; units 1-3 lie in the data area.
    const bs = OVERLAY_BLOCK_SIZE;
    const base = new MemoryBlockBackend(pattern(BASE_SIZE, 7), { readOnly: true });
    const store = new LoggingStore(overlaySizeFor(BASE_SIZE), 4 * bs);
    const disk = await OverlayBlockBackend.open(base, store, 'sha256:base');
    // The guest's operations, the disk each one leaves (states[i + 1]) and where each starts and ends in the log.
    const states = [base.bytes.slice()];
    const marks: { start: number; end: number; flush: boolean }[] = [];
    const run = async (flush: boolean, op: () => Promise<void>, apply: (model: Uint8Array) => void) => {
      const start = store.log.length;
      await op();
      const model = states[states.length - 1].slice();
      apply(model);
      states.push(model);
      marks.push({ start, end: store.log.length, flush });
    };
    const write = (offset: number, data: Uint8Array) =>
      run(
        false,
        () => disk.write(offset, data),
        (m) => m.set(data, offset),
      );
    const zero = (offset: number, length: number, how: 'discard' | 'writeZeroes') =>
      run(
        false,
        () => disk[how](offset, length),
        (m) => m.fill(0, offset, offset + length),
      );
    const flush = () =>
      run(
        true,
        () => disk.flush(),
        () => {},
      );
    const opened = store.log.length;

    await write(2 * bs, pattern(7 * bs, 1)); // blocks 2-8
    await flush();
    await zero(3 * bs, 4 * bs, 'discard'); // blocks 3-6: unit 1, freed
    await write(4 * bs + 512, pattern(512, 2)); // into the freed unit
    await zero(7 * bs, 4 * bs, 'discard'); // blocks 7-10 (9 and 10 never written): unit 2, freed
    await flush();
    await zero(11 * bs, 2 * bs, 'writeZeroes'); // no data there: nothing to free
    await write(9 * bs, pattern(bs, 3)); // into freed unit 2
    await vi.waitFor(() => expect(disk.unsavedBlocks()).toBe(0)); // the overlay's own checkpoint, mid-sequence
    await zero(10 * bs, bs, 'discard'); // unit 2 holds live block 9 now: kept
    await zero(2 * bs, bs, 'discard'); // block 2 shares a unit with the maps: never freed
    await flush();
    await write(8 * bs, pattern(bs, 4));
    await flush();

    const discards = store.log.filter((op) => op.kind === 'discard');
    expect(discards).toEqual([
      { kind: 'discard', offset: 4 * bs, length: 4 * bs },
      { kind: 'discard', offset: 8 * bs, length: 4 * bs },
    ]);
    let checked = 0;
    for (let sent = opened; sent <= store.log.length; sent++) {
      // The states the guest may see: from its last completed flush on, up to the last operation it started.
      let lo = 0;
      let hi = 0;
      marks.forEach((mark, i) => {
        if (mark.flush && mark.end <= sent) lo = i + 1;
        if (mark.start < sent || mark.end <= sent) hi = i + 1;
      });
      let lastFlush = -1;
      for (let i = 0; i < sent; i++) if (store.log[i].kind === 'flush') lastFlush = i;
      const pending = store.log.slice(lastFlush + 1, sent).filter((op) => op.kind !== 'flush').length;
      expect(pending).toBeLessThanOrEqual(10);
      for (let keep = 0; keep < 1 << pending; keep++) {
        const image = crashImage(store.sizeBytes, store.log, sent, keep);
        const reopened = await OverlayBlockBackend.open(base, new MemoryBlockBackend(image), 'sha256:base');
        const got = new Uint8Array(BASE_SIZE);
        await reopened.read(0, got);
        for (let b = 0; b < BASE_SIZE / bs; b++) {
          const block = got.subarray(b * bs, (b + 1) * bs);
          const seen = states
            .slice(lo, hi + 1)
            .some((state) => sameBytes(state.subarray(b * bs, (b + 1) * bs), block));
          if (!seen)
            throw new Error(
              `crash after ${sent} store operations (kept ${keep}): block ${b} reads a state the guest never had`,
            );
        }
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(store.log.length - opened);
  });
});

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** `toEqual` for large byte arrays (vitest compares them element by element, slowly): names the first difference. */
function expectSameBytes(got: Uint8Array, expected: Uint8Array): void {
  expect(got.length).toBe(expected.length);
  const at = got.findIndex((b, i) => b !== expected[i]);
  expect(at, `first differing byte at ${at}`).toBe(-1);
}
