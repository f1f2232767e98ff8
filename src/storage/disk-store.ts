/**
 * Where a page keeps VM disks: OPFS (the default) or IndexedDB (the fallback). Disks are named by VM id and
 * index only; no caller hands storage a path, so a VM's backends can only be its own disks (DESIGN.md
 * section 1, storage).
 */
import type { BlockBackend } from '../devices/block-backend.ts';
import type { StorageFailure } from './storage-protocol.ts';

/** A disk that belongs to one VM; close it once its device is idle. */
export interface StoredDisk extends BlockBackend {
  /** Flush and let go of the disk (OPFS: release the file's lock). */
  close(): Promise<void>;
  /** Set the stored size to `sizeBytes` (zeroes beyond the old end; cut beyond the new one). */
  resize(sizeBytes: number): Promise<void>;
  /**
   * Present when `discard` frees stored space: the size in bytes (a multiple of 512) of the aligned units it
   * frees, each one that a discard covers whole; a discarded range then reads as zeroes. IndexedDB: its 64 KiB
   * blocks, deleted. Absent when a discard frees nothing (OPFS cannot punch holes and writes zeroes), so a
   * layer that discards only to give space back (the copy-on-write overlay) does not ask for that work.
   */
  readonly discardGranularity?: number;
}

/** One kind of persistent disk storage. */
export interface DiskStore {
  /** 'opfs' or 'indexeddb' (shown to the user). */
  readonly kind: string;
  /**
   * Open disk `index` of VM `vmId`, creating it (all zeroes) when missing and growing it to `sizeBytes` when
   * smaller. `sizeBytes` 0 opens an existing disk as it is.
   */
  openDisk(vmId: string, index: number, sizeBytes: number): Promise<StoredDisk>;
  /** Remove every disk of VM `vmId` (they must be closed). */
  deleteVm(vmId: string): Promise<void>;
  /** Release what the store holds (the worker). */
  dispose(): void;
}

/** The message to show when a disk request failed for a reason a person can act on. */
export function describeStorageFailure(failure: StorageFailure, what: string): string {
  if (failure.name === 'QuotaExceededError') {
    return (
      `${what}: the browser's storage quota for this site is full; the write was refused and nothing ` +
      'written before was lost. Free space by deleting a VM or a disk, or grant persistent storage'
    );
  }
  if (failure.name === 'NoModificationAllowedError') {
    return (
      `${what} is open in another tab of this site (OPFS allows one writer per file); ` +
      'close that tab, or its VM, and reload this one'
    );
  }
  return `${what}: ${failure.name}: ${failure.message}`;
}
