/**
 * A copy-on-write disk: a read-only base image (the default root file system, fetched over HTTP) under a
 * writable overlay disk that holds the blocks the guest changed and a bitmap of which blocks those are.
 *
 * Overlay layout (offsets in bytes of the overlay disk):
 * - `[0, 512)`: header: magic `TVOVL001`, u32 block size, f64 base size, then the base id (UTF-8, NUL padded);
 * - `[512, dataStart)`: the bitmap, bit `b % 8` of byte `b / 8` set when block `b` lives in the overlay;
 * - `[dataStart + b * blockSize, ...)`: block `b`'s data, where `dataStart` is the bitmap's end rounded up to a
 *   block.
 *
 * Crash consistency: a block's bit is set in memory only after its data was written; bits reach the overlay
 * only in `flush()`, after the overlay's own flush made that data durable, and are followed by a second
 * flush. So after a crash every persisted bit points at persisted data, and a write the guest never flushed
 * reads back either new or as the base had it.
 */
import { UserError } from '../common/errors.ts';
import type { BlockBackend } from '../devices/block-backend.ts';
import { BlockIoError } from '../devices/block-backend.ts';

/** Copy-on-write granularity: ext2 blocks are 1-4 KiB, so 4 KiB copies little and keeps the bitmap small. */
export const OVERLAY_BLOCK_SIZE = 4096;
const HEADER_SIZE = 512;
const MAGIC = 'TVOVL001';
const MAX_BASE_ID_BYTES = HEADER_SIZE - 24;

/** Bytes the overlay disk must have for a base of `baseSize` bytes. */
export function overlaySizeFor(baseSize: number, blockSize = OVERLAY_BLOCK_SIZE): number {
  return dataStartFor(baseSize, blockSize) + Math.ceil(baseSize / blockSize) * blockSize;
}

function dataStartFor(baseSize: number, blockSize: number): number {
  const bitmapBytes = Math.ceil(Math.ceil(baseSize / blockSize) / 8);
  return Math.ceil((HEADER_SIZE + bitmapBytes) / blockSize) * blockSize;
}

/** What {@link OverlayBlockBackend.open} found. */
export type OverlayOpenResult = 'created' | 'reused' | 'replaced';

/** A copy-on-write disk over a read-only base. Open it with {@link OverlayBlockBackend.open}. */
export class OverlayBlockBackend implements BlockBackend {
  readonly readOnly = false;
  readonly sizeBytes: number;
  readonly queueDepth: number;
  /** Which blocks live in the overlay (live: includes completed writes not yet flushed). */
  private readonly bitmap: Uint8Array;
  /** The bitmap as the overlay holds it. */
  private readonly persisted: Uint8Array;
  private readonly dataStart: number;
  private readonly blockSize: number;
  /** Writes run one after another (a partial block is read-modify-write); flushes too. */
  private writes: Promise<unknown> = Promise.resolve();
  /** How the overlay was found when opened. */
  openResult: OverlayOpenResult = 'reused';

  private constructor(
    private readonly base: BlockBackend,
    private readonly overlay: BlockBackend,
    private readonly baseId: string,
  ) {
    this.sizeBytes = base.sizeBytes;
    this.blockSize = OVERLAY_BLOCK_SIZE;
    this.queueDepth = Math.max(1, Math.min(base.queueDepth, overlay.queueDepth));
    const blocks = Math.ceil(base.sizeBytes / this.blockSize);
    this.bitmap = new Uint8Array(Math.ceil(blocks / 8));
    this.persisted = new Uint8Array(this.bitmap.length);
    this.dataStart = dataStartFor(base.sizeBytes, this.blockSize);
  }

  /**
   * Put `overlay` (at least {@link overlaySizeFor} bytes) over `base`. `baseId` names the base image's
   * contents (its sha256): an overlay made for another base is emptied ('replaced'), since its blocks would
   * patch the wrong file system.
   */
  static async open(base: BlockBackend, overlay: BlockBackend, baseId: string): Promise<OverlayBlockBackend> {
    if (overlay.readOnly) throw new UserError('the overlay of a copy-on-write disk must be writable');
    if (new TextEncoder().encode(baseId).length > MAX_BASE_ID_BYTES) throw new RangeError('base id too long');
    if (overlay.sizeBytes < overlaySizeFor(base.sizeBytes)) {
      throw new RangeError(
        `the overlay has ${overlay.sizeBytes} bytes; it needs ${overlaySizeFor(base.sizeBytes)}`,
      );
    }
    const disk = new OverlayBlockBackend(base, overlay, baseId);
    const head = new Uint8Array(disk.dataStart);
    await overlay.read(0, head);
    const view = new DataView(head.buffer);
    const magic = new TextDecoder().decode(head.subarray(0, 8));
    const id = new TextDecoder().decode(head.subarray(24, HEADER_SIZE)).replace(/\0+$/, '');
    if (
      magic === MAGIC &&
      view.getUint32(8, true) === disk.blockSize &&
      view.getFloat64(16, true) === base.sizeBytes &&
      id === baseId
    ) {
      disk.bitmap.set(head.subarray(HEADER_SIZE, HEADER_SIZE + disk.bitmap.length));
      disk.persisted.set(disk.bitmap);
      disk.openResult = 'reused';
      return disk;
    }
    disk.openResult = magic === MAGIC ? 'replaced' : 'created';
    await disk.writeHeader();
    return disk;
  }

  /** Blocks the overlay holds (changed since the base). */
  changedBlocks(): number {
    let count = 0;
    for (const byte of this.bitmap) for (let v = byte; v !== 0; v &= v - 1) count++;
    return count;
  }

  read(offset: number, dst: Uint8Array): Promise<void> {
    this.check(offset, dst.length);
    // Runs of blocks with the same owner are read in one request each.
    const jobs: (Promise<void> | void)[] = [];
    let at = offset;
    const end = offset + dst.length;
    while (at < end) {
      const inOverlay = this.has(Math.floor(at / this.blockSize));
      let runEnd = Math.min(end, (Math.floor(at / this.blockSize) + 1) * this.blockSize);
      while (runEnd < end && this.has(Math.floor(runEnd / this.blockSize)) === inOverlay) {
        runEnd = Math.min(end, runEnd + this.blockSize);
      }
      const part = dst.subarray(at - offset, runEnd - offset);
      jobs.push(inOverlay ? this.overlay.read(this.dataStart + at, part) : this.base.read(at, part));
      at = runEnd;
    }
    return Promise.all(jobs).then(() => undefined);
  }

  write(offset: number, src: Uint8Array): Promise<void> {
    this.check(offset, src.length);
    return this.serial(async () => {
      const bs = this.blockSize;
      const start = Math.floor(offset / bs) * bs;
      const end = Math.min(this.overlaySpan(), Math.ceil((offset + src.length) / bs) * bs);
      const aligned = new Uint8Array(end - start);
      // Edge blocks the write covers only partly keep their current bytes (from overlay or base).
      const firstPartial = offset !== start;
      const lastPartial = offset + src.length !== end;
      const lastStart = end - bs;
      if (firstPartial) await this.read(start, aligned.subarray(0, Math.min(bs, this.sizeBytes - start)));
      if (lastPartial && (lastStart !== start || !firstPartial)) {
        await this.read(
          lastStart,
          aligned.subarray(lastStart - start, Math.min(end, this.sizeBytes) - start),
        );
      }
      aligned.set(src, offset - start);
      await this.overlay.write(this.dataStart + start, aligned);
      for (let b = start / bs; b < end / bs; b++) this.bitmap[b >> 3] |= 1 << (b & 7);
    });
  }

  flush(): Promise<void> {
    return this.serial(async () => {
      const snapshot = this.bitmap.slice(); // covers exactly the writes completed before this flush
      await this.overlay.flush();
      if (await this.storeBitmap(snapshot)) await this.overlay.flush();
    });
  }

  /** Forget every change: the disk reads as the base again (durable when this resolves). */
  reset(): Promise<void> {
    return this.serial(async () => {
      this.bitmap.fill(0);
      await this.storeBitmap(this.bitmap.slice());
      await this.overlay.flush();
    });
  }

  /** Write the bitmap sectors that differ from the persisted ones; true when any did. */
  private async storeBitmap(snapshot: Uint8Array): Promise<boolean> {
    let wrote = false;
    for (let at = 0; at < snapshot.length; at += 512) {
      const end = Math.min(snapshot.length, at + 512);
      let same = true;
      for (let i = at; i < end && same; i++) same = snapshot[i] === this.persisted[i];
      if (same) continue;
      const sector = new Uint8Array(512);
      sector.set(snapshot.subarray(at, end));
      await this.overlay.write(HEADER_SIZE + at, sector);
      this.persisted.set(snapshot.subarray(at, end), at);
      wrote = true;
    }
    return wrote;
  }

  private async writeHeader(): Promise<void> {
    const head = new Uint8Array(this.dataStart);
    const view = new DataView(head.buffer);
    head.set(new TextEncoder().encode(MAGIC), 0);
    view.setUint32(8, this.blockSize, true);
    view.setFloat64(16, this.base.sizeBytes, true);
    head.set(new TextEncoder().encode(this.baseId), 24);
    await this.overlay.write(0, head);
    await this.overlay.flush();
    this.persisted.fill(0);
  }

  /** The base rounded up to whole blocks: the last block may extend past the disk's end in the overlay. */
  private overlaySpan(): number {
    return Math.ceil(this.sizeBytes / this.blockSize) * this.blockSize;
  }

  private has(block: number): boolean {
    return (this.bitmap[block >> 3] & (1 << (block & 7))) !== 0;
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new BlockIoError(
        `range [${offset}, ${offset + length}) is outside the ${this.sizeBytes}-byte disk`,
      );
    }
  }

  private serial(operation: () => Promise<void>): Promise<void> {
    const run = this.writes.then(operation);
    this.writes = run.catch(() => {});
    return run;
  }
}
