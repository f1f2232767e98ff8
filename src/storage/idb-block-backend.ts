/**
 * VM disks in IndexedDB through idb-keyval, for browsers without OPFS sync access handles. A disk is stored in
 * fixed 64 KiB blocks under `vm/<vmId>/disk/<n>/<blockIndex>` and its size under `vm/<vmId>/disk/<n>/size`;
 * the store is sparse: a missing block reads as zeroes.
 *
 * Durability: idb-keyval commits every write in its own transaction; Chromium commits those "relaxed" (not
 * synced to the device). `flush()` therefore commits one transaction with `durability: 'strict'`, which syncs
 * the database's log and with it every transaction committed before it.
 */
import {
  createStore,
  delMany,
  get,
  getMany,
  keys,
  promisifyRequest,
  set,
  setMany,
  type UseStore,
} from 'idb-keyval';
import { UserError } from '../common/errors.ts';
import { BLOCK_SECTOR_SIZE, BlockIoError } from '../devices/block-backend.ts';
import { describeStorageFailure, type DiskStore, type StoredDisk } from './disk-store.ts';
import { checkDiskName } from './storage-protocol.ts';

/** Bytes per stored block: large enough that a sequential guest write is a few transactions, small enough that a 4 KiB write rewrites little. */
export const IDB_BLOCK_SIZE = 64 << 10;
/** Requests one IndexedDB disk accepts at once (they run one after another; see {@link IdbBlockBackend}). */
export const IDB_QUEUE_DEPTH = 8;

/** The few key-value operations the disk needs: idb-keyval in the page, a Map in unit tests. */
export interface KeyValueStore {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown): Promise<void>;
  getMany(keys: readonly string[]): Promise<unknown[]>;
  setMany(entries: readonly (readonly [string, unknown])[]): Promise<void>;
  delMany(keys: readonly string[]): Promise<void>;
  /** Every key that starts with `prefix`. */
  keysWithPrefix(prefix: string): Promise<string[]>;
  /** Make every completed `set`/`setMany`/`delMany` durable. */
  sync(): Promise<void>;
}

/** A {@link KeyValueStore} over an idb-keyval store in database `dbName`, object store `storeName`. */
export function idbKeyValueStore(dbName = 'tabvisor-disks', storeName = 'blocks'): KeyValueStore {
  const store = createStore(dbName, storeName);
  // A strict-durability transaction on the same object store: idb-keyval's UseStore shape, our options.
  const strict: UseStore = (mode, callback) =>
    store('readonly', (s) => s.transaction.db).then((db) => {
      const tx = db.transaction(storeName, mode, { durability: 'strict' });
      return Promise.resolve(callback(tx.objectStore(storeName))).then(async (result) => {
        await promisifyRequest(tx);
        return result;
      });
    });
  return {
    get: (key) => get(key, store),
    set: (key, value) => set(key, value, store),
    getMany: (list) => getMany([...list], store),
    setMany: (entries) =>
      setMany(
        entries.map(([k, v]) => [k, v]),
        store,
      ),
    delMany: (list) => delMany([...list], store),
    keysWithPrefix: async (prefix) =>
      (await keys<IDBValidKey>(store)).filter(
        (k): k is string => typeof k === 'string' && k.startsWith(prefix),
      ),
    sync: () =>
      strict('readwrite', (s) => promisifyRequest(s.put(Date.now(), '.sync')).then(() => undefined)),
  };
}

/** A {@link KeyValueStore} in a Map (unit tests, and pages without IndexedDB). */
export class MemoryKeyValueStore implements KeyValueStore {
  readonly map = new Map<string, unknown>();
  syncCount = 0;
  async get(key: string): Promise<unknown> {
    return this.map.get(key);
  }
  async set(key: string, value: unknown): Promise<void> {
    this.map.set(key, value);
  }
  async getMany(list: readonly string[]): Promise<unknown[]> {
    return list.map((key) => this.map.get(key));
  }
  async setMany(entries: readonly (readonly [string, unknown])[]): Promise<void> {
    for (const [key, value] of entries) this.map.set(key, value);
  }
  async delMany(list: readonly string[]): Promise<void> {
    for (const key of list) this.map.delete(key);
  }
  async keysWithPrefix(prefix: string): Promise<string[]> {
    return [...this.map.keys()].filter((key) => key.startsWith(prefix));
  }
  async sync(): Promise<void> {
    this.syncCount++;
  }
}

/** The key prefix of VM `vmId`'s disk `index` (and with no index, of all its disks). */
export function idbDiskPrefix(vmId: string, index?: number): string {
  return index === undefined ? `vm/${vmId}/` : `vm/${vmId}/disk/${index}/`;
}

/** VM disks in a {@link KeyValueStore}. */
export class IdbDiskStore implements DiskStore {
  readonly kind = 'indexeddb';
  constructor(private readonly kv: KeyValueStore = idbKeyValueStore()) {}

  async openDisk(vmId: string, index: number, sizeBytes: number): Promise<StoredDisk> {
    checkDiskName(vmId, index);
    const prefix = idbDiskPrefix(vmId, index);
    const stored = await this.kv.get(`${prefix}size`);
    const size = typeof stored === 'number' ? stored : 0;
    const disk = new IdbBlockBackend(this.kv, prefix, size, `disk ${index} of VM ${vmId}`);
    if (size < sizeBytes) {
      try {
        await disk.resize(sizeBytes);
      } catch (error) {
        throw new UserError(error instanceof Error ? error.message : String(error));
      }
    }
    return disk;
  }

  async deleteVm(vmId: string): Promise<void> {
    checkDiskName(vmId, 0);
    await this.kv.delMany(await this.kv.keysWithPrefix(idbDiskPrefix(vmId)));
    await this.kv.sync();
  }

  dispose(): void {}
}

/**
 * One disk as 64 KiB blocks in a key-value store. Operations run one after another (a partial-block write is
 * read-modify-write, so two overlapping writes must not interleave); the device still sees a queue depth of
 * {@link IDB_QUEUE_DEPTH}, so it keeps requests flowing.
 */
export class IdbBlockBackend implements StoredDisk {
  readonly readOnly = false;
  readonly queueDepth = IDB_QUEUE_DEPTH;
  /** A discard deletes the whole blocks it covers (see {@link discard}). */
  readonly discardGranularity = IDB_BLOCK_SIZE;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly kv: KeyValueStore,
    private readonly prefix: string,
    public sizeBytes: number,
    /** Names the disk in error messages. */
    private readonly what = prefix,
  ) {}

  read(offset: number, dst: Uint8Array): Promise<void> {
    return this.serial(async () => {
      this.check(offset, dst.length);
      const first = Math.floor(offset / IDB_BLOCK_SIZE);
      const last = Math.floor((offset + dst.length - 1) / IDB_BLOCK_SIZE);
      if (dst.length === 0) return;
      const blocks = await this.kv.getMany(this.keys(first, last));
      for (let b = first; b <= last; b++) {
        const block = blocks[b - first];
        const start = Math.max(offset, b * IDB_BLOCK_SIZE);
        const end = Math.min(offset + dst.length, (b + 1) * IDB_BLOCK_SIZE);
        const target = dst.subarray(start - offset, end - offset);
        if (block instanceof Uint8Array)
          target.set(block.subarray(start - b * IDB_BLOCK_SIZE, end - b * IDB_BLOCK_SIZE));
        else target.fill(0);
      }
    });
  }

  write(offset: number, src: Uint8Array): Promise<void> {
    return this.serial(async () => {
      this.check(offset, src.length);
      if (src.length === 0) return;
      const first = Math.floor(offset / IDB_BLOCK_SIZE);
      const last = Math.floor((offset + src.length - 1) / IDB_BLOCK_SIZE);
      // Only the edge blocks can be partial; read them (the rest is replaced whole).
      const edges = [...new Set([first, last])].filter((b) => !this.covers(b, offset, src.length));
      const old = await this.kv.getMany(edges.map((b) => this.key(b)));
      const entries: [string, Uint8Array][] = [];
      for (let b = first; b <= last; b++) {
        const at = edges.indexOf(b);
        const previous = at >= 0 ? old[at] : undefined;
        const block =
          previous instanceof Uint8Array ? new Uint8Array(previous) : new Uint8Array(IDB_BLOCK_SIZE);
        const start = Math.max(offset, b * IDB_BLOCK_SIZE);
        const end = Math.min(offset + src.length, (b + 1) * IDB_BLOCK_SIZE);
        block.set(src.subarray(start - offset, end - offset), start - b * IDB_BLOCK_SIZE);
        entries.push([this.key(b), block]);
      }
      await this.kv.setMany(entries);
    });
  }

  flush(): Promise<void> {
    return this.serial(() => this.kv.sync());
  }

  /**
   * Discarded ranges read back as zeroes: whole blocks are deleted (which frees their space), the parts of
   * blocks at either edge are zeroed in place.
   */
  discard(offset: number, length: number): Promise<void> {
    return this.serial(async () => {
      this.check(offset, length);
      if (length === 0) return;
      const end = offset + length;
      const first = Math.floor(offset / IDB_BLOCK_SIZE);
      const last = Math.floor((end - 1) / IDB_BLOCK_SIZE);
      const whole: string[] = [];
      const edges: number[] = [];
      for (let b = first; b <= last; b++) {
        if (
          this.covers(b, offset, length) ||
          (b === last && end === this.sizeBytes && b * IDB_BLOCK_SIZE >= offset)
        )
          whole.push(this.key(b));
        else edges.push(b);
      }
      const old = await this.kv.getMany(edges.map((b) => this.key(b)));
      const zeroed: [string, Uint8Array][] = [];
      edges.forEach((b, i) => {
        const previous = old[i];
        if (!(previous instanceof Uint8Array)) return; // a missing block reads as zeroes already
        const block = new Uint8Array(previous);
        block.fill(
          0,
          Math.max(offset, b * IDB_BLOCK_SIZE) - b * IDB_BLOCK_SIZE,
          Math.min(end, (b + 1) * IDB_BLOCK_SIZE) - b * IDB_BLOCK_SIZE,
        );
        zeroed.push([this.key(b), block]);
      });
      if (zeroed.length > 0) await this.kv.setMany(zeroed);
      if (whole.length > 0) await this.kv.delMany(whole);
    });
  }

  /** The range reads as zeroes: the same as {@link discard} (deleting a block is cheaper than writing it). */
  writeZeroes(offset: number, length: number): Promise<void> {
    return this.discard(offset, length);
  }

  async resize(sizeBytes: number): Promise<void> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0 || sizeBytes % BLOCK_SECTOR_SIZE !== 0) {
      throw new RangeError(
        `a disk is a whole number of ${BLOCK_SECTOR_SIZE}-byte sectors, not ${sizeBytes} bytes`,
      );
    }
    await this.serial(async () => {
      // Forget blocks past the new end so growing again reads zeroes there.
      const lastBlock = Math.ceil(sizeBytes / IDB_BLOCK_SIZE);
      const stale = (await this.kv.keysWithPrefix(this.prefix)).filter((key) => {
        const index = Number(key.slice(this.prefix.length));
        return Number.isInteger(index) && index >= lastBlock;
      });
      await this.kv.delMany(stale);
      const tail = sizeBytes % IDB_BLOCK_SIZE;
      if (tail !== 0) {
        const key = this.key(lastBlock - 1);
        const [block] = await this.kv.getMany([key]);
        if (block instanceof Uint8Array) {
          const trimmed = new Uint8Array(block);
          trimmed.fill(0, tail);
          await this.kv.set(key, trimmed);
        }
      }
      await this.kv.set(`${this.prefix}size`, sizeBytes);
      this.sizeBytes = sizeBytes;
    });
  }

  async close(): Promise<void> {
    await this.flush();
  }

  private covers(block: number, offset: number, length: number): boolean {
    return offset <= block * IDB_BLOCK_SIZE && (block + 1) * IDB_BLOCK_SIZE <= offset + length;
  }

  private key(block: number): string {
    return `${this.prefix}${block}`;
  }

  private keys(first: number, last: number): string[] {
    const list: string[] = [];
    for (let b = first; b <= last; b++) list.push(this.key(b));
    return list;
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new BlockIoError(
        `range [${offset}, ${offset + length}) is outside the ${this.sizeBytes}-byte disk`,
      );
    }
  }

  /**
   * Run `operation` after the ones before it. A store failure becomes a {@link BlockIoError} that says what to
   * do (a full quota: how to free space); the guest gets an I/O error for that request only.
   */
  private serial<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.chain.then(operation).catch((error: unknown) => {
      if (error instanceof BlockIoError) throw error;
      const failure =
        error instanceof Error
          ? { name: error.name, message: error.message }
          : { name: 'Error', message: String(error) };
      throw new BlockIoError(describeStorageFailure(failure, this.what), { cause: error });
    });
    this.chain = run.catch(() => {});
    return run;
  }
}
