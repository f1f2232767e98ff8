/**
 * The storage worker's logic: OPFS files opened with sync access handles, one per open disk. It runs in a
 * dedicated worker (the only place `createSyncAccessHandle` exists); `storage.worker.ts` is the thin shell.
 *
 * Messages come from our own page, but they are still checked (STYLE.md rule 8): ids, offsets and lengths are
 * validated and a VM id is one path segment, so no request reaches outside `vms/<vmId>/`.
 */
import {
  STORAGE_PROTOCOL_VERSION,
  checkDiskName,
  type StorageRequest,
  type StorageResponse,
} from './storage-protocol.ts';

/** The part of FileSystemSyncAccessHandle we use (MDN: read/write with `at`, truncate, getSize, flush, close). */
interface SyncAccessHandle {
  read(buffer: Uint8Array, options: { at: number }): number;
  write(buffer: Uint8Array, options: { at: number }): number;
  truncate(size: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

type SyncFileHandle = FileSystemFileHandle & { createSyncAccessHandle(): Promise<SyncAccessHandle> };

/** Largest single request (the device never asks for more than a request's data length; 64 MiB is plenty). */
const MAX_REQUEST_BYTES = 64 << 20;
/** Zeroes are written from one buffer of this size (a `zero` request writes it as often as needed). */
const ZERO_PIECE_BYTES = 1 << 20;
const ZEROES = new Uint8Array(ZERO_PIECE_BYTES);
/** Largest disk a VM may have (2^53 is where JS offsets stop being exact; 1 TiB is far below it). */
const MAX_DISK_BYTES = 2 ** 40;

/** Serves {@link StorageRequest}s; `post` sends each response (with its bytes transferred). */
export class OpfsDiskServer {
  private readonly handles = new Map<number, { readonly key: string; readonly access: SyncAccessHandle }>();
  private readonly openKeys = new Set<string>();
  private nextHandle = 1;
  /** Requests run one at a time, in arrival order, so a flush follows every write that arrived before it. */
  private queue: Promise<void> = Promise.resolve();

  /**
   * `post` sends each response; `root` is the origin private file system (injected by tests, which run the
   * server in-process over a fake).
   */
  constructor(
    private readonly post: (response: StorageResponse, transfer: Transferable[]) => void,
    private readonly root: () => Promise<FileSystemDirectoryHandle> = () => navigator.storage.getDirectory(),
  ) {}

  /** Take one message from the page. */
  receive(data: unknown): void {
    const request = data as StorageRequest;
    if (typeof request !== 'object' || request === null || typeof request.id !== 'number') return;
    this.queue = this.queue.then(() => this.answer(request));
  }

  private async answer(request: StorageRequest): Promise<void> {
    const { id } = request;
    try {
      if (request.v !== STORAGE_PROTOCOL_VERSION) {
        throw new TypeError(`storage protocol ${String(request.v)} is not ${STORAGE_PROTOCOL_VERSION}`);
      }
      const reply = await this.handle(request);
      const bytes = reply.bytes;
      this.post({ v: STORAGE_PROTOCOL_VERSION, id, ok: true, ...reply }, bytes ? [bytes.buffer] : []);
    } catch (error) {
      const name = error instanceof Error ? error.name : 'Error';
      const message = error instanceof Error ? error.message : String(error);
      this.post({ v: STORAGE_PROTOCOL_VERSION, id, ok: false, error: { name, message } }, []);
    }
  }

  private async handle(
    request: StorageRequest,
  ): Promise<{ value?: number | boolean; size?: number; bytes?: Uint8Array<ArrayBuffer> }> {
    switch (request.op) {
      case 'probe':
        return { value: await probe(this.root) };
      case 'open': {
        checkDiskName(request.vmId, request.disk);
        checkLength(request.sizeBytes, MAX_DISK_BYTES);
        const key = `${request.vmId}/${request.disk}`;
        // One handle per file in this worker; OPFS itself refuses a second one from another tab.
        if (this.openKeys.has(key))
          throw new DOMException(`disk ${key} is open already`, 'InvalidStateError');
        const vms = await (await this.root()).getDirectoryHandle('vms', { create: true });
        const dir = await vms.getDirectoryHandle(request.vmId, { create: true });
        const file = (await dir.getFileHandle(`disk-${request.disk}.img`, {
          create: true,
        })) as SyncFileHandle;
        const access = await file.createSyncAccessHandle();
        try {
          if (access.getSize() < request.sizeBytes) access.truncate(request.sizeBytes);
        } catch (error) {
          access.close();
          throw error;
        }
        const handle = this.nextHandle++;
        this.handles.set(handle, { key, access });
        this.openKeys.add(key);
        return { value: handle, size: access.getSize() };
      }
      case 'read': {
        const { access } = this.get(request.handle);
        checkRange(request.offset, request.length);
        const into = request.into;
        const bytes =
          into instanceof ArrayBuffer && !into.resizable && into.byteLength >= request.length
            ? new Uint8Array(into, 0, request.length)
            : new Uint8Array(request.length);
        const read = access.read(bytes, { at: request.offset });
        // Bytes past the end of the file read as zeroes (a sparse tail); a reused buffer holds old ones there.
        if (read < bytes.length) bytes.fill(0, Math.max(0, read));
        return { bytes };
      }
      case 'write': {
        const { access } = this.get(request.handle);
        if (!(request.bytes instanceof Uint8Array)) throw new TypeError('write without bytes');
        checkRange(request.offset, request.bytes.length);
        const written = access.write(request.bytes, { at: request.offset });
        if (written !== request.bytes.length) {
          throw new DOMException(`wrote ${written} of ${request.bytes.length} bytes`, 'QuotaExceededError');
        }
        // The buffer goes back for the page's next request (a shared one cannot be transferred: nothing back).
        const sent = request.bytes;
        return sent.buffer instanceof ArrayBuffer ? { bytes: sent as Uint8Array<ArrayBuffer> } : {};
      }
      case 'zero': {
        const { access } = this.get(request.handle);
        checkRange(request.offset, request.length);
        for (let done = 0; done < request.length; done += ZERO_PIECE_BYTES) {
          const piece = ZEROES.subarray(0, Math.min(ZERO_PIECE_BYTES, request.length - done));
          const written = access.write(piece, { at: request.offset + done });
          if (written !== piece.length) {
            throw new DOMException(`wrote ${written} of ${piece.length} bytes`, 'QuotaExceededError');
          }
        }
        return {};
      }
      case 'flush':
        this.get(request.handle).access.flush();
        return {};
      case 'truncate':
        checkLength(request.sizeBytes, MAX_DISK_BYTES);
        this.get(request.handle).access.truncate(request.sizeBytes);
        return {};
      case 'close': {
        const open = this.handles.get(request.handle);
        if (open) {
          this.handles.delete(request.handle);
          this.openKeys.delete(open.key);
          open.access.flush();
          open.access.close();
        }
        return {};
      }
      case 'delete-vm': {
        checkDiskName(request.vmId, 0);
        for (const key of this.openKeys) {
          if (key.startsWith(`${request.vmId}/`)) {
            throw new DOMException(`VM ${request.vmId} still has disk ${key} open`, 'InvalidStateError');
          }
        }
        const vms = await (await this.root()).getDirectoryHandle('vms', { create: true });
        try {
          await vms.removeEntry(request.vmId, { recursive: true });
        } catch (error) {
          if (!(error instanceof DOMException && error.name === 'NotFoundError')) throw error;
        }
        return {};
      }
      default:
        throw new TypeError(`unknown storage request ${(request as { op?: unknown }).op as string}`);
    }
  }

  private get(handle: number): { readonly key: string; readonly access: SyncAccessHandle } {
    const open = this.handles.get(handle);
    if (!open) throw new DOMException(`no open disk ${handle}`, 'InvalidStateError');
    return open;
  }
}

/** True when this context can create sync access handles (a dedicated worker with OPFS). */
async function probe(getRoot: () => Promise<FileSystemDirectoryHandle>): Promise<boolean> {
  try {
    const root = await getRoot();
    const file = (await root.getFileHandle('.tabvisor-probe', { create: true })) as SyncFileHandle;
    if (typeof file.createSyncAccessHandle !== 'function') return false;
    const access = await file.createSyncAccessHandle();
    access.close();
    await root.removeEntry('.tabvisor-probe');
    return true;
  } catch {
    return false;
  }
}

function checkLength(length: number, max: number): void {
  if (!Number.isSafeInteger(length) || length < 0 || length > max)
    throw new RangeError(`bad length ${length}`);
}

function checkRange(offset: number, length: number): void {
  checkLength(length, MAX_REQUEST_BYTES);
  checkLength(offset, MAX_DISK_BYTES);
}
