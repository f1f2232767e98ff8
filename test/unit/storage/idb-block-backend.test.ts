import { describe, expect, it } from 'vitest';
import { BlockIoError } from '../../../src/devices/block-backend.ts';
import { IDB_BLOCK_SIZE, IdbDiskStore, MemoryKeyValueStore } from '../../../src/storage/idb-block-backend.ts';

describe('IdbBlockBackend over a key-value store', () => {
  it('stores sparse 64 KiB blocks under vm/<id>/disk/<n>/<block>; missing blocks read as zeroes', async () => {
    const kv = new MemoryKeyValueStore();
    const disk = await new IdbDiskStore(kv).openDisk('7', 0, 4 * IDB_BLOCK_SIZE);
    const got = new Uint8Array(IDB_BLOCK_SIZE);
    await disk.read(IDB_BLOCK_SIZE, got);
    expect(got.every((b) => b === 0)).toBe(true);
    await disk.write(2 * IDB_BLOCK_SIZE + 512, new Uint8Array(1024).fill(0x5a));
    expect([...kv.map.keys()].sort()).toEqual(['vm/7/disk/0/2', 'vm/7/disk/0/size']);
    await disk.read(2 * IDB_BLOCK_SIZE, got);
    expect(got.subarray(0, 512).every((b) => b === 0)).toBe(true);
    expect(got.subarray(512, 1536).every((b) => b === 0x5a)).toBe(true);
    expect(got.subarray(1536).every((b) => b === 0)).toBe(true);
  });

  it('a write across block edges keeps the untouched bytes of both edge blocks', async () => {
    const kv = new MemoryKeyValueStore();
    const disk = await new IdbDiskStore(kv).openDisk('1', 0, 3 * IDB_BLOCK_SIZE);
    await disk.write(0, new Uint8Array(3 * IDB_BLOCK_SIZE).fill(1));
    await disk.write(IDB_BLOCK_SIZE - 512, new Uint8Array(IDB_BLOCK_SIZE + 1024).fill(2));
    const got = new Uint8Array(3 * IDB_BLOCK_SIZE);
    await disk.read(0, got);
    const expected = new Uint8Array(3 * IDB_BLOCK_SIZE).fill(1);
    expected.fill(2, IDB_BLOCK_SIZE - 512, 2 * IDB_BLOCK_SIZE + 512);
    expect(got).toEqual(expected);
  });

  it('concurrent overlapping partial writes both land (read-modify-write is serialized)', async () => {
    const disk = await new IdbDiskStore(new MemoryKeyValueStore()).openDisk('1', 0, IDB_BLOCK_SIZE);
    await Promise.all([
      disk.write(0, new Uint8Array(512).fill(1)),
      disk.write(512, new Uint8Array(512).fill(2)),
    ]);
    const got = new Uint8Array(1024);
    await disk.read(0, got);
    expect(got.subarray(0, 512).every((b) => b === 1) && got.subarray(512).every((b) => b === 2)).toBe(true);
  });

  it('discard and write zeroes delete whole blocks (freeing them) and zero the edges; the range reads as zeroes', async () => {
    const kv = new MemoryKeyValueStore();
    const disk = await new IdbDiskStore(kv).openDisk('1', 0, 4 * IDB_BLOCK_SIZE);
    await disk.write(0, new Uint8Array(4 * IDB_BLOCK_SIZE).fill(1));
    await disk.discard!(IDB_BLOCK_SIZE - 1024, IDB_BLOCK_SIZE + 2048); // block 1 whole, edges of 0 and 2
    expect([...kv.map.keys()].sort()).toEqual([
      'vm/1/disk/0/0',
      'vm/1/disk/0/2',
      'vm/1/disk/0/3',
      'vm/1/disk/0/size',
    ]);
    await disk.writeZeroes!(3 * IDB_BLOCK_SIZE, IDB_BLOCK_SIZE); // the last block, whole
    expect(kv.map.has('vm/1/disk/0/3')).toBe(false);
    const got = new Uint8Array(4 * IDB_BLOCK_SIZE);
    await disk.read(0, got);
    const expected = new Uint8Array(4 * IDB_BLOCK_SIZE).fill(1);
    expected.fill(0, IDB_BLOCK_SIZE - 1024, 2 * IDB_BLOCK_SIZE + 1024);
    expected.fill(0, 3 * IDB_BLOCK_SIZE);
    expect(got).toEqual(expected);
  });

  it('flush commits a durable transaction; the disk reopens with its size and data', async () => {
    const kv = new MemoryKeyValueStore();
    const store = new IdbDiskStore(kv);
    const disk = await store.openDisk('3', 1, 2 * IDB_BLOCK_SIZE);
    await disk.write(4096, new Uint8Array(512).fill(9));
    await disk.flush();
    expect(kv.syncCount).toBeGreaterThan(0);
    const again = await store.openDisk('3', 1, 0);
    expect(again.sizeBytes).toBe(2 * IDB_BLOCK_SIZE);
    const got = new Uint8Array(512);
    await again.read(4096, got);
    expect(got.every((b) => b === 9)).toBe(true);
  });

  it("deleting a VM removes its keys only, not another VM's whose id shares a prefix", async () => {
    const kv = new MemoryKeyValueStore();
    const store = new IdbDiskStore(kv);
    await (await store.openDisk('1', 0, IDB_BLOCK_SIZE)).write(0, new Uint8Array(512).fill(1));
    await (await store.openDisk('12', 0, IDB_BLOCK_SIZE)).write(0, new Uint8Array(512).fill(1));
    await store.deleteVm('1');
    expect([...kv.map.keys()].every((k) => k.startsWith('vm/12/'))).toBe(true);
  });

  it('refuses VM ids that could escape their prefix and disk numbers past the board', async () => {
    const store = new IdbDiskStore(new MemoryKeyValueStore());
    await expect(store.openDisk('../2', 0, 512)).rejects.toThrow(/bad VM id/);
    await expect(store.openDisk('a/b', 0, 512)).rejects.toThrow(/bad VM id/);
    await expect(store.openDisk('1', 8, 512)).rejects.toThrow(/bad disk/);
  });

  it('a full quota fails that write with a message that says how to free space; earlier data stays readable', async () => {
    const kv = new MemoryKeyValueStore();
    const disk = await new IdbDiskStore(kv).openDisk('q', 0, 2 * IDB_BLOCK_SIZE);
    await disk.write(0, new Uint8Array(512).fill(4));
    kv.setMany = async () => {
      throw new DOMException('quota', 'QuotaExceededError');
    };
    const failure = Promise.resolve(disk.write(IDB_BLOCK_SIZE, new Uint8Array(512).fill(9)));
    await expect(failure).rejects.toBeInstanceOf(BlockIoError);
    await expect(failure).rejects.toThrow(/^disk 0 of VM q: .*quota .*full.*Free space/);
    const got = new Uint8Array(512);
    await disk.read(0, got);
    expect(got.every((b) => b === 4)).toBe(true);
    kv.set = async () => {
      throw new DOMException('quota', 'QuotaExceededError');
    };
    await expect(new IdbDiskStore(kv).openDisk('q', 1, IDB_BLOCK_SIZE)).rejects.toThrow(
      /disk 1 of VM q: .*quota/,
    );
  });

  it('a request outside the disk fails (the guest gets an I/O error)', async () => {
    const disk = await new IdbDiskStore(new MemoryKeyValueStore()).openDisk('1', 0, IDB_BLOCK_SIZE);
    await expect(disk.read(IDB_BLOCK_SIZE, new Uint8Array(512))).rejects.toThrow(/outside/);
  });
});
