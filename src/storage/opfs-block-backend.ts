/**
 * VM disks in the origin private file system, through sync access handles held by a dedicated storage worker
 * (`storage.worker.ts`). The page side sends one message per disk request (protocol: `storage-protocol.ts`).
 *
 * - `flush()` resolves only after the worker's `handle.flush()` returned (the worker answers in order, so the
 *   flush also follows every write that completed before it).
 * - A disk locked by another tab (`NoModificationAllowedError` from `createSyncAccessHandle`) is a
 *   {@link UserError} that says to close the other tab.
 * - A full quota (`QuotaExceededError`) fails that request (the guest gets an I/O error) with a message that
 *   says how to free space; nothing already written is touched.
 */
import { BufferPool } from '../common/buffer-pool.ts';
import { UserError } from '../common/errors.ts';
import { BLOCK_SECTOR_SIZE, BlockIoError } from '../devices/block-backend.ts';
import { describeStorageFailure, type DiskStore, type StoredDisk } from './disk-store.ts';
import {
  STORAGE_PROTOCOL_VERSION,
  checkDiskName,
  type StorageFailure,
  type StorageRequestBody,
  type StorageResponse,
} from './storage-protocol.ts';

/** Requests one OPFS disk accepts at once (they queue in the worker, which runs them one by one). */
export const OPFS_QUEUE_DEPTH = 16;
/** Bytes of zeroes per worker request when discarding or zeroing. */
export const OPFS_ZERO_REQUEST_BYTES = 8 << 20;
/** How long to keep retrying a locked file: a reloaded page's old worker may still be letting go of it. */
const LOCK_RETRY_MS = 3000;

/** The storage worker as the page sees it (a `Worker`, or an in-process server in tests). */
export interface StoragePort {
  postMessage(message: unknown, transfer: Transferable[]): void;
  addEventListener(type: 'message', listener: (event: MessageEvent) => void): void;
  addEventListener(type: 'error', listener: (event: ErrorEvent) => void): void;
  terminate(): void;
}

type Reply = Extract<StorageResponse, { ok: true }>;

class StorageRequestError extends Error {
  constructor(readonly failure: StorageFailure) {
    super(`${failure.name}: ${failure.message}`);
  }
}

/** Smallest buffer a read or write sends to the worker. */
const MIN_TRANSFER_BUFFER_BYTES = 64 << 10;
/** Buffers kept for reuse per store (a guest keeps a few requests in flight). */
const MAX_SPARE_BUFFERS = 4;

/** OPFS disks through one storage worker. Create it with {@link OpfsDiskStore.start}. */
export class OpfsDiskStore implements DiskStore {
  readonly kind = 'opfs';
  private readonly pending = new Map<number, { resolve(reply: Reply): void; reject(error: Error): void }>();
  private nextId = 1;
  private broken: Error | undefined;

  private constructor(
    private readonly worker: StoragePort,
    private readonly lockRetryMs = LOCK_RETRY_MS,
  ) {
    worker.addEventListener('message', (event: MessageEvent) => this.receive(event.data as StorageResponse));
    worker.addEventListener('error', (event) => {
      event.preventDefault();
      this.fail(new Error(`the storage worker failed: ${event.message}`));
    });
  }

  /**
   * Start the storage worker and check that it has OPFS sync access handles. Resolves undefined when it has
   * not (then use IndexedDB).
   */
  static async start(): Promise<OpfsDiskStore | undefined> {
    if (typeof Worker === 'undefined') return undefined;
    const worker = new Worker(new URL('./storage.worker.ts', import.meta.url), {
      type: 'module',
      name: 'tabvisor-storage',
    });
    const store = new OpfsDiskStore(worker);
    try {
      const reply = await store.call({ op: 'probe' });
      if (reply.value === true) return store;
    } catch {
      // fall through: no OPFS here
    }
    store.dispose();
    return undefined;
  }

  /** A store over an already running storage port (tests run the server in-process); no probe. */
  static connect(port: StoragePort, options: { readonly lockRetryMs?: number } = {}): OpfsDiskStore {
    return new OpfsDiskStore(port, options.lockRetryMs);
  }

  async openDisk(vmId: string, index: number, sizeBytes: number): Promise<StoredDisk> {
    checkDiskName(vmId, index);
    const what = `disk ${index} of VM ${vmId}`;
    const deadline = performance.now() + this.lockRetryMs;
    for (;;) {
      try {
        const reply = await this.call({ op: 'open', vmId, disk: index, sizeBytes });
        return new OpfsBlockBackend(this, reply.value as number, reply.size as number, what);
      } catch (error) {
        if (error instanceof StorageRequestError) {
          if (error.failure.name === 'NoModificationAllowedError' && performance.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 100));
            continue;
          }
          throw new UserError(describeStorageFailure(error.failure, what));
        }
        throw error;
      }
    }
  }

  async deleteVm(vmId: string): Promise<void> {
    checkDiskName(vmId, 0);
    await this.call({ op: 'delete-vm', vmId });
  }

  dispose(): void {
    this.fail(new Error('the storage worker was stopped'));
    this.worker.terminate();
  }

  /**
   * @internal Buffers that read and write requests transfer to the worker and its replies bring back (see the
   * `read` request), for the next requests.
   */
  readonly buffers = new BufferPool(MAX_SPARE_BUFFERS, MIN_TRANSFER_BUFFER_BYTES);

  /** @internal One request to the worker. */
  call(body: StorageRequestBody, transfer: Transferable[] = []): Promise<Reply> {
    if (this.broken) return Promise.reject(this.broken);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...body, v: STORAGE_PROTOCOL_VERSION, id }, transfer);
    });
  }

  private receive(response: StorageResponse): void {
    const waiter = this.pending.get(response.id);
    if (!waiter) return;
    this.pending.delete(response.id);
    if (response.ok) waiter.resolve(response);
    else waiter.reject(new StorageRequestError(response.error));
  }

  private fail(error: Error): void {
    this.broken = error;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }
}

/** One open OPFS disk (a handle number in the storage worker). */
export class OpfsBlockBackend implements StoredDisk {
  readonly readOnly = false;
  readonly queueDepth = OPFS_QUEUE_DEPTH;
  private closed = false;

  /** @internal Made by {@link OpfsDiskStore.openDisk}. */
  constructor(
    private readonly store: OpfsDiskStore,
    private readonly handle: number,
    public sizeBytes: number,
    private readonly what: string,
  ) {
    if (sizeBytes % BLOCK_SECTOR_SIZE !== 0) this.sizeBytes = sizeBytes - (sizeBytes % BLOCK_SECTOR_SIZE);
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    const into = this.store.buffers.take(dst.length);
    const reply = await this.request({ op: 'read', handle: this.handle, offset, length: dst.length, into }, [
      into,
    ]);
    if (!reply.bytes || reply.bytes.length !== dst.length) throw new BlockIoError(`${this.what}: short read`);
    dst.set(reply.bytes);
    this.store.buffers.give(reply.bytes.buffer as ArrayBuffer);
  }

  async write(offset: number, src: Uint8Array): Promise<void> {
    // A copy we can transfer (src may be a view of shared guest memory), in a buffer the reply brings back.
    const buffer = this.store.buffers.take(src.length);
    const bytes = new Uint8Array(buffer, 0, src.length);
    bytes.set(src);
    const reply = await this.request({ op: 'write', handle: this.handle, offset, bytes }, [buffer]);
    if (reply.bytes) this.store.buffers.give(reply.bytes.buffer as ArrayBuffer);
  }

  async flush(): Promise<void> {
    await this.request({ op: 'flush', handle: this.handle });
  }

  /**
   * The range reads as zeroes. OPFS has no way to punch a hole in a file (and its quota counts a file's
   * length), so the worker writes zeroes, one request per {@link OPFS_ZERO_REQUEST_BYTES} so that other
   * disks' requests queue between them. That frees nothing, so this disk declares no `discardGranularity`:
   * the copy-on-write overlay, whose zero bits already make its blocks read zero, does not discard here.
   */
  async writeZeroes(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length; done += OPFS_ZERO_REQUEST_BYTES) {
      const piece = Math.min(OPFS_ZERO_REQUEST_BYTES, length - done);
      await this.request({ op: 'zero', handle: this.handle, offset: offset + done, length: piece });
    }
  }

  /** Discarded ranges read back as zeroes, as on every other store ({@link writeZeroes}). */
  discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length);
  }

  async resize(sizeBytes: number): Promise<void> {
    await this.request({ op: 'truncate', handle: this.handle, sizeBytes });
    this.sizeBytes = sizeBytes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.store.call({ op: 'close', handle: this.handle });
  }

  private async request(body: StorageRequestBody, transfer: Transferable[] = []): Promise<Reply> {
    if (this.closed) throw new BlockIoError(`${this.what} is closed`);
    try {
      return await this.store.call(body, transfer);
    } catch (error) {
      if (error instanceof StorageRequestError) {
        throw new BlockIoError(describeStorageFailure(error.failure, this.what), { cause: error });
      }
      throw new BlockIoError(`${this.what}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}
