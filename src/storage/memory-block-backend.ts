import type { BlockBackend } from '../devices/block-backend.ts';

/** Bytes per sector (virtio 1.2, 5.2.4); storage imports only the device's types, so it names its own. */
const SECTOR_SIZE = 512;

/** Options of a {@link MemoryBlockBackend}. */
export interface MemoryBlockBackendOptions {
  /** Refuse writes (the device offers VIRTIO_BLK_F_RO). Default false. */
  readonly readOnly?: boolean;
  /** Operations accepted at once. Default 32. */
  readonly queueDepth?: number;
  /** Complete every operation asynchronously (a resolved promise) instead of synchronously. Default false. */
  readonly async?: boolean;
}

/**
 * A disk held in a byte array: for tests, and for scratch disks that need not outlive the page. Synchronous by
 * default, so a request completes inside the device's `service()` call.
 */
export class MemoryBlockBackend implements BlockBackend {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly queueDepth: number;
  /** The disk's contents (shared, not copied: tests inspect and prepare it directly). */
  readonly bytes: Uint8Array;
  /** Flushes so far. */
  flushCount = 0;
  private readonly async: boolean;

  /** A disk of `sizeOrBytes` zero bytes, or over the given bytes (their length must be a multiple of 512). */
  constructor(sizeOrBytes: number | Uint8Array, options: MemoryBlockBackendOptions = {}) {
    this.bytes = typeof sizeOrBytes === 'number' ? new Uint8Array(sizeOrBytes) : sizeOrBytes;
    this.sizeBytes = this.bytes.length;
    if (this.sizeBytes <= 0 || this.sizeBytes % SECTOR_SIZE !== 0) {
      throw new RangeError(`a disk is a positive multiple of ${SECTOR_SIZE} bytes, not ${this.sizeBytes}`);
    }
    this.readOnly = options.readOnly ?? false;
    this.queueDepth = options.queueDepth ?? 32;
    this.async = options.async ?? false;
  }

  read(offset: number, dst: Uint8Array): Promise<void> | void {
    return this.settle(() => {
      this.check(offset, dst.length);
      dst.set(this.bytes.subarray(offset, offset + dst.length));
    });
  }

  write(offset: number, src: Uint8Array): Promise<void> | void {
    return this.settle(() => {
      if (this.readOnly) throw new Error('the disk is read-only');
      this.check(offset, src.length);
      this.bytes.set(src, offset);
    });
  }

  flush(): Promise<void> | void {
    return this.settle(() => {
      this.flushCount++;
    });
  }

  /** Discarded ranges read back as zeroes (one valid choice: their contents become undefined). */
  discard(offset: number, length: number): Promise<void> | void {
    return this.settle(() => {
      if (this.readOnly) throw new Error('the disk is read-only');
      this.check(offset, length);
      this.bytes.fill(0, offset, offset + length);
    });
  }

  /** The range reads as zeroes (the same as {@link discard} here). */
  writeZeroes(offset: number, length: number): Promise<void> | void {
    return this.discard(offset, length);
  }

  private check(offset: number, length: number): void {
    if (!Number.isInteger(offset) || offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new Error(`range [${offset}, ${offset + length}) is outside the ${this.sizeBytes}-byte disk`);
    }
  }

  private settle(operation: () => void): Promise<void> | void {
    if (!this.async) return operation();
    return Promise.resolve().then(operation);
  }
}
