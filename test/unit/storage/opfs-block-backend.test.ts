import { describe, expect, it } from 'vitest';
import { UserError } from '../../../src/common/errors.ts';
import { BlockIoError } from '../../../src/devices/block-backend.ts';
import { OpfsDiskServer } from '../../../src/storage/opfs-disk-server.ts';
import {
  OPFS_ZERO_REQUEST_BYTES,
  OpfsDiskStore,
  type StoragePort,
} from '../../../src/storage/opfs-block-backend.ts';
import { STORAGE_PROTOCOL_VERSION, type StorageResponse } from '../../../src/storage/storage-protocol.ts';

/** An OPFS file with a sync access handle, as MDN describes it: one writer at a time, a quota on growth. */
class FakeFile {
  bytes = new Uint8Array(0);
  locked = false;
  flushes = 0;
  constructor(private readonly fs: FakeOpfs) {}
  async createSyncAccessHandle() {
    if (this.locked) throw new DOMException('the file is locked', 'NoModificationAllowedError');
    this.locked = true;
    const grow = (size: number) => {
      if (size > this.bytes.length) {
        if (this.fs.used() - this.bytes.length + size > this.fs.quota) {
          throw new DOMException('quota', 'QuotaExceededError');
        }
        const bigger = new Uint8Array(size);
        bigger.set(this.bytes);
        this.bytes = bigger;
      }
    };
    return {
      read: (buffer: Uint8Array, { at }: { at: number }) => {
        const part = this.bytes.subarray(at, at + buffer.length);
        buffer.set(part);
        return part.length;
      },
      write: (buffer: Uint8Array, { at }: { at: number }) => {
        grow(at + buffer.length);
        this.bytes.set(buffer, at);
        return buffer.length;
      },
      truncate: (size: number) => {
        grow(size);
        this.bytes = this.bytes.slice(0, size);
      },
      getSize: () => this.bytes.length,
      flush: () => {
        this.flushes++;
        this.fs.log.push('flush');
      },
      close: () => {
        this.locked = false;
      },
    };
  }
}

class FakeDir {
  readonly entries = new Map<string, FakeDir | FakeFile>();
  constructor(private readonly fs: FakeOpfs) {}
  async getDirectoryHandle(name: string, options?: { create?: boolean }) {
    let entry = this.entries.get(name);
    if (!entry && options?.create) this.entries.set(name, (entry = new FakeDir(this.fs)));
    if (!(entry instanceof FakeDir)) throw new DOMException(name, 'NotFoundError');
    return entry;
  }
  async getFileHandle(name: string, options?: { create?: boolean }) {
    let entry = this.entries.get(name);
    if (!entry && options?.create) this.entries.set(name, (entry = new FakeFile(this.fs)));
    if (!(entry instanceof FakeFile)) throw new DOMException(name, 'NotFoundError');
    return entry;
  }
  async removeEntry(name: string) {
    if (!this.entries.delete(name)) throw new DOMException(name, 'NotFoundError');
  }
}

class FakeOpfs {
  quota = Infinity;
  readonly log: string[] = [];
  readonly root = new FakeDir(this);
  used(): number {
    let total = 0;
    const walk = (dir: FakeDir) => {
      for (const entry of dir.entries.values()) {
        if (entry instanceof FakeDir) walk(entry);
        else total += entry.bytes.length;
      }
    };
    walk(this.root);
    return total;
  }
  file(path: string): FakeFile {
    let entry: FakeDir | FakeFile | undefined = this.root;
    for (const part of path.split('/')) entry = (entry as FakeDir).entries.get(part);
    return entry as FakeFile;
  }
}

/** A storage port whose "worker" is an in-process OpfsDiskServer over a fake OPFS (messages cross a task). */
function connect(fs: FakeOpfs): {
  store: OpfsDiskStore;
  port: StoragePort & { raw(message: unknown): Promise<StorageResponse> };
} {
  const listeners: ((event: MessageEvent) => void)[] = [];
  const server = new OpfsDiskServer(
    (response) => setTimeout(() => listeners.forEach((l) => l({ data: response } as MessageEvent))),
    async () => fs.root as unknown as FileSystemDirectoryHandle,
  );
  const port = {
    postMessage: (message: unknown) => {
      fs.log.push(`request ${(message as { op: string }).op}`);
      setTimeout(() => server.receive(message));
    },
    addEventListener: (type: string, listener: (event: MessageEvent) => void) => {
      if (type === 'message') listeners.push(listener);
    },
    terminate: () => {},
    raw: (message: unknown) =>
      new Promise<StorageResponse>((resolve) => {
        listeners.push((event) => {
          if ((event.data as StorageResponse).id === (message as { id: number }).id)
            resolve(event.data as StorageResponse);
        });
        setTimeout(() => server.receive(message));
      }),
  } as unknown as StoragePort & { raw(message: unknown): Promise<StorageResponse> };
  return { store: OpfsDiskStore.connect(port, { lockRetryMs: 50 }), port };
}

/** The buffers the page sends with its `ops` requests (a read's `into`, a write's bytes), in order. */
function buffersSent(port: StoragePort, ops: readonly string[]): (ArrayBufferLike | undefined)[] {
  const sent: (ArrayBufferLike | undefined)[] = [];
  const post = port.postMessage.bind(port);
  port.postMessage = (message: unknown, transfer?: Transferable[]) => {
    const request = message as { op: string; into?: ArrayBuffer; bytes?: Uint8Array };
    if (ops.includes(request.op)) sent.push(request.op === 'read' ? request.into : request.bytes?.buffer);
    post(message, transfer ?? []);
  };
  return sent;
}

describe('OPFS disks through the storage worker protocol (in-process server, fake OPFS)', () => {
  it('keeps each disk in vms/<vmId>/disk-<n>.img, grown sparse to its size, and reads back what was written', async () => {
    const fs = new FakeOpfs();
    const { store } = connect(fs);
    const disk = await store.openDisk('vm-a', 0, 1 << 20);
    expect(disk.sizeBytes).toBe(1 << 20);
    await disk.write(4096, new Uint8Array(1024).fill(7));
    const got = new Uint8Array(2048);
    await disk.read(4096 - 512, got);
    expect(got.subarray(0, 512).every((b) => b === 0)).toBe(true);
    expect(got.subarray(512, 1536).every((b) => b === 7)).toBe(true);
    expect(fs.file('vms/vm-a/disk-0.img').bytes.length).toBe(1 << 20);
  });

  it('a read sends a buffer for the worker to fill and gets it back for the next read; past the end of the file it reads zeroes', async () => {
    const fs = new FakeOpfs();
    const { store, port } = connect(fs);
    const sent = buffersSent(port, ['read']);
    const disk = await store.openDisk('vm-a', 0, 1 << 20);
    await disk.write((1 << 20) - 4096, new Uint8Array(4096).fill(7));
    const full = new Uint8Array(4096);
    await disk.read((1 << 20) - 4096, full);
    expect(full.every((b) => b === 7)).toBe(true);
    // The file ends 2048 bytes into this read: the reused buffer's old 7s must not show there.
    const tail = new Uint8Array(4096);
    await disk.read((1 << 20) - 2048, tail);
    expect(tail.subarray(0, 2048).every((b) => b === 7)).toBe(true);
    expect(tail.subarray(2048).every((b) => b === 0)).toBe(true);
    expect(sent).toHaveLength(2);
    expect(sent[0]).toBeInstanceOf(ArrayBuffer);
    expect(sent[1]).toBe(sent[0]);
  });

  it("a write's copy travels in a buffer the reply brings back, which the next request sends again", async () => {
    const fs = new FakeOpfs();
    const { store, port } = connect(fs);
    const sent = buffersSent(port, ['read', 'write']);
    const disk = await store.openDisk('vm-a', 0, 1 << 20);
    const data = new Uint8Array(4096).map((_, i) => i & 0xff);
    await disk.write(8192, data);
    await disk.write(0, new Uint8Array(512).fill(3));
    const back = new Uint8Array(4096);
    await disk.read(8192, back);
    expect(back).toEqual(data);
    expect(
      fs
        .file('vms/vm-a/disk-0.img')
        .bytes.subarray(0, 512)
        .every((b) => b === 3),
    ).toBe(true);
    expect(sent).toHaveLength(3);
    expect(new Set(sent).size).toBe(1);
  });

  it('the worker reads into a buffer it was sent when it is large enough, else into its own', async () => {
    const fs = new FakeOpfs();
    const { store, port } = connect(fs);
    await store.openDisk('vm-a', 0, 1 << 16);
    const read = (id: number, into?: ArrayBuffer) =>
      port.raw({ v: STORAGE_PROTOCOL_VERSION, id, op: 'read', handle: 1, offset: 0, length: 4096, into });
    const big = new ArrayBuffer(8192);
    const small = new ArrayBuffer(1024);
    const answers = [await read(100, big), await read(101, small), await read(102)];
    const buffers = answers.map((a) => (a.ok ? a.bytes?.buffer : undefined));
    expect(buffers[0]).toBe(big);
    expect(buffers[1]).not.toBe(small);
    expect(answers.every((a) => a.ok && a.bytes?.length === 4096)).toBe(true);
  });

  it('discard and write zeroes zero the range in the worker, a bounded piece per request', async () => {
    const fs = new FakeOpfs();
    const { store } = connect(fs);
    const size = 3 * OPFS_ZERO_REQUEST_BYTES;
    const disk = await store.openDisk('z', 0, size);
    await disk.write(0, new Uint8Array(size).fill(5));
    fs.log.length = 0;
    await disk.discard!(512, 2 * OPFS_ZERO_REQUEST_BYTES + 1024);
    expect(fs.log.filter((entry) => entry === 'request zero')).toHaveLength(3);
    await disk.writeZeroes!(size - 4096, 4096);
    const bytes = fs.file('vms/z/disk-0.img').bytes;
    expect(bytes[511]).toBe(5);
    expect(bytes.subarray(512, 512 + 2 * OPFS_ZERO_REQUEST_BYTES + 1024).every((b) => b === 0)).toBe(true);
    expect(bytes[2 * OPFS_ZERO_REQUEST_BYTES + 1536]).toBe(5);
    expect(bytes.subarray(size - 4096).every((b) => b === 0)).toBe(true);
    expect(bytes.length).toBe(size);
  });

  it('flush resolves only after the sync access handle flushed, and after the writes sent before it', async () => {
    const fs = new FakeOpfs();
    const { store } = connect(fs);
    const disk = await store.openDisk('1', 0, 65536);
    const file = fs.file('vms/1/disk-0.img');
    const write = disk.write(0, new Uint8Array(512).fill(1));
    const flush = Promise.resolve(disk.flush()).then(() => ({ flushes: file.flushes, first: file.bytes[0] }));
    await write;
    expect(await flush).toEqual({ flushes: 1, first: 1 });
  });

  it('a full quota fails that write with an I/O error that says how to free space; earlier data stays', async () => {
    const fs = new FakeOpfs();
    const { store } = connect(fs);
    const disk = await store.openDisk('1', 0, 65536);
    await disk.write(0, new Uint8Array(512).fill(3));
    await disk.flush();
    fs.quota = fs.used();
    const grown = await store.openDisk('1', 1, 0); // an empty file that must grow on write
    const failure = Promise.resolve(grown.write(0, new Uint8Array(512).fill(9)));
    await expect(failure).rejects.toBeInstanceOf(BlockIoError);
    await expect(failure).rejects.toThrow(/quota.*full.*nothing written before was lost.*Free space/);
    const got = new Uint8Array(512);
    await disk.read(0, got);
    expect(got.every((b) => b === 3)).toBe(true);
  });

  it('a disk another tab holds is refused with a message that says to close that tab', async () => {
    const fs = new FakeOpfs();
    const { store } = connect(fs);
    await store.openDisk('1', 0, 4096);
    const other = connect(fs).store; // a second page: the file is locked
    const opening = other.openDisk('1', 0, 4096);
    await expect(opening).rejects.toBeInstanceOf(UserError);
    await expect(opening).rejects.toThrow(/open in another tab of this site.*close that tab/);
  });

  it('the worker refuses requests that would leave vms/<vmId>/, bad versions and unknown handles', async () => {
    const fs = new FakeOpfs();
    const { port } = connect(fs);
    const v = STORAGE_PROTOCOL_VERSION;
    const bad = [
      { v, id: 1, op: 'open', vmId: '..', disk: 0, sizeBytes: 512 },
      { v, id: 2, op: 'open', vmId: 'a/b', disk: 0, sizeBytes: 512 },
      { v, id: 3, op: 'open', vmId: 'a', disk: 99, sizeBytes: 512 },
      { v, id: 4, op: 'open', vmId: 'a', disk: 0, sizeBytes: -1 },
      { v, id: 5, op: 'read', handle: 42, offset: 0, length: 512 },
      { v: v + 1, id: 6, op: 'probe' },
      { v, id: 7, op: 'format-disk' },
    ];
    for (const message of bad) {
      const response = await port.raw(message);
      expect(response.ok, JSON.stringify(message)).toBe(false);
    }
    expect(fs.used()).toBe(0);
    expect((fs.root.entries.get('vms') as FakeDir | undefined)?.entries.size ?? 0).toBe(0);
  });

  it('deleting a VM waits for its disks to be closed, then removes its directory only', async () => {
    const fs = new FakeOpfs();
    const { store } = connect(fs);
    const a = await store.openDisk('a', 0, 4096);
    const b = await store.openDisk('b', 0, 4096);
    await expect(store.deleteVm('a')).rejects.toThrow(/still has disk/);
    await a.close();
    await store.deleteVm('a');
    const vms = fs.root.entries.get('vms') as FakeDir;
    expect([...vms.entries.keys()]).toEqual(['b']);
    await b.close();
  });
});
