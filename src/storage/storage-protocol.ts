/**
 * The message protocol between the page and the storage worker (`storage.worker.ts`), written as types
 * (STYLE.md rule 8). One request message per whole disk request (never per byte); every request gets exactly
 * one response with the same `id`. Bytes travel as transferred ArrayBuffers.
 */

/** Bumped whenever a message changes shape; the worker refuses other versions. */
export const STORAGE_PROTOCOL_VERSION = 2;

/** A VM id as storage accepts it: it becomes one path segment and one key segment, so no `/`, `.` or `..`. */
export const VM_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** Most disks one VM may have (virtio-mmio slots on the board). */
export const MAX_DISKS_PER_VM = 8;

/** Throw unless `vmId` and `disk` name a disk storage may hold (checked on both sides of the boundary). */
export function checkDiskName(vmId: string, disk: number): void {
  if (typeof vmId !== 'string' || !VM_ID_PATTERN.test(vmId)) throw new TypeError(`bad VM id ${String(vmId)}`);
  if (!Number.isInteger(disk) || disk < 0 || disk >= MAX_DISKS_PER_VM)
    throw new TypeError(`bad disk ${disk}`);
}

/** Requests from the page. `handle` is the number an `open` answered with. */
export type StorageRequestBody =
  /** Does this worker have OPFS sync access handles? Answers `{ value: boolean }`. */
  | { readonly op: 'probe' }
  /**
   * Open (creating when missing) disk `disk` of VM `vmId`: `vms/<vmId>/disk-<disk>.img`, grown (sparse) to
   * `sizeBytes` when smaller; `sizeBytes` 0 opens an existing file as it is. Answers `{ value: handle, size }`.
   */
  | { readonly op: 'open'; readonly vmId: string; readonly disk: number; readonly sizeBytes: number }
  /**
   * Answers `{ bytes }`. `into` (transferred) is a buffer to read into and send back, so that neither thread
   * allocates one per read: a fresh buffer costs more than the read (its memory is zeroed and faulted in, ~5 ms
   * per MiB in Chromium here). Without it, or when it is too small, the worker allocates.
   */
  | {
      readonly op: 'read';
      readonly handle: number;
      readonly offset: number;
      readonly length: number;
      readonly into?: ArrayBuffer;
    }
  /** Answers `{ bytes }`: the same bytes (transferred back), so the page can send the buffer again. */
  | { readonly op: 'write'; readonly handle: number; readonly offset: number; readonly bytes: Uint8Array }
  /**
   * Write `length` zero bytes at `offset` (discard and write-zeroes: OPFS cannot punch holes). The worker
   * writes them from one zero buffer; nothing crosses the boundary but the numbers.
   */
  | { readonly op: 'zero'; readonly handle: number; readonly offset: number; readonly length: number }
  /** Resolves only after the sync access handle's `flush()` returned. */
  | { readonly op: 'flush'; readonly handle: number }
  /** Cut or grow the file to `sizeBytes` (reset of an overlay, resize on import). */
  | { readonly op: 'truncate'; readonly handle: number; readonly sizeBytes: number }
  | { readonly op: 'close'; readonly handle: number }
  /** Remove `vms/<vmId>/` and everything in it (its disks must be closed). */
  | { readonly op: 'delete-vm'; readonly vmId: string };

/** A request as sent: the body plus version and id. */
export type StorageRequest = StorageRequestBody & { readonly v: number; readonly id: number };

/** The error of a failed request: the DOMException name (`QuotaExceededError`, `NoModificationAllowedError`, ...). */
export interface StorageFailure {
  readonly name: string;
  readonly message: string;
}

/** The one answer to request `id`. */
export type StorageResponse =
  | {
      readonly v: number;
      readonly id: number;
      readonly ok: true;
      readonly value?: number | boolean;
      readonly size?: number;
      readonly bytes?: Uint8Array;
    }
  | { readonly v: number; readonly id: number; readonly ok: false; readonly error: StorageFailure };
