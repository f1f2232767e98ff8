/**
 * The interface virtio-blk talks to storage through (STYLE.md rule 2: the device owns it; storage and the CLI
 * implement it, and the device never imports them).
 *
 * Contract:
 * - Offsets and lengths are bytes, always multiples of {@link BLOCK_SECTOR_SIZE}, and the device never asks for
 *   a range outside `[0, sizeBytes)`.
 * - An operation either returns (synchronous backend) or returns a promise (asynchronous backend: OPFS,
 *   IndexedDB, node:fs). Both kinds may be mixed freely; the device awaits nothing on a hart thread.
 * - Failure is explicit: throw, or reject the promise (a {@link BlockIoError} when the backend knows why). The
 *   device answers the guest with VIRTIO_BLK_S_IOERR for that request and carries on; the VM is not stopped.
 * - Requests may complete in any order. The device never has more than {@link BlockBackend.queueDepth}
 *   operations outstanding; further guest requests stay in the guest's available ring (back-pressure, not a
 *   hidden queue).
 * - Buffers belong to the backend only until its operation settles: `read` fills all of `dst`, `write` reads
 *   all of `src`, and neither may touch them afterwards.
 */
export interface BlockBackend {
  /** Disk size in bytes: a positive multiple of {@link BLOCK_SECTOR_SIZE}, fixed for the backend's life. */
  readonly sizeBytes: number;
  /** True when writes, discards and write-zeroes must be refused (the device then offers VIRTIO_BLK_F_RO). */
  readonly readOnly: boolean;
  /** The most operations the backend accepts at once (at least 1). */
  readonly queueDepth: number;
  /**
   * Fill all of `dst` with the bytes at `[offset, offset + dst.length)` (zeroes where the disk holds none: `dst`
   * may hold a previous request's bytes). `dst` is the caller's again once the read settles.
   */
  read(offset: number, dst: Uint8Array): Promise<void> | void;
  /** Store `src` at `[offset, offset + src.length)`. Never called when `readOnly`. */
  write(offset: number, src: Uint8Array): Promise<void> | void;
  /** Make every write that has completed so far durable. */
  flush(): Promise<void> | void;
  /**
   * Optional: the range `[offset, offset + length)` is no longer needed; its contents become undefined. When
   * absent the device does not offer VIRTIO_BLK_F_DISCARD.
   */
  discard?(offset: number, length: number): Promise<void> | void;
  /**
   * Optional: make `[offset, offset + length)` read as zeroes, more cheaply than writing zeroes (a hole, a
   * zero bit, deleted blocks). When absent the device carries out WRITE_ZEROES as writes of zeroes.
   */
  writeZeroes?(offset: number, length: number): Promise<void> | void;
}

/** Bytes per sector: the unit of every virtio-blk offset and length (virtio 1.2, section 5.2.4). */
export const BLOCK_SECTOR_SIZE = 512;

/** A backend operation failed; the device reports VIRTIO_BLK_S_IOERR for the request. */
export class BlockIoError extends Error {
  override readonly name = 'BlockIoError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
