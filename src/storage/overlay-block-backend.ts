/**
 * A copy-on-write disk: a read-only base image (the default root file system, fetched over HTTP) under a
 * writable overlay disk that holds the blocks the guest changed and a bitmap of which blocks those are.
 *
 * Overlay layout (offsets in bytes of the overlay disk):
 * - `[0, 512)`: header: magic `TVOVL001`, u32 block size, f64 base size, then the base id (UTF-8, NUL padded);
 * - `[512, dataStart)`: the data map, bit `b % 8` of byte `b / 8` set when block `b`'s data lives in the
 *   overlay;
 * - `[dataStart + b * blockSize, ...)`: block `b`'s data, where `dataStart` is the data map's end rounded up to
 *   a block;
 * - `[zeroStart, zeroStart + map bytes rounded up to a sector)`, right after the last block's data: the zero
 *   map, bit `b` set when block `b` was discarded or zeroed (it reads as zeroes, whatever the data map and the
 *   base say). It was added after the first overlays were made: an older overlay is simply grown, and its zero
 *   map reads as all clear.
 *
 * A block reads as zeroes when its zero bit is set, else from the overlay when its data bit is set, else from
 * the base. Discard and write-zeroes of whole blocks set zero bits (no data is written); partial blocks are
 * written with zeroes.
 *
 * Giving space back: when the overlay disk's `discard` frees space (`discardGranularity`: IndexedDB deletes
 * whole 64 KiB blocks; OPFS frees nothing and is not asked), a discard or write-zeroes then discards every
 * aligned unit of the data area that overlaps the zeroed blocks, holds a block with its data bit set, and has
 * no live block: each of its blocks has its zero bit set or no data bit. Adjacent units go in one call. Units
 * are whole so the store frees them rather than zeroing parts of its blocks, and counted over the whole unit so
 * that neighbouring discards add up (the data area starts 4 KiB into the overlay for the default image, so a
 * 64 KiB-aligned guest discard never covers a 64 KiB store block by itself). `reset()` and emptying an overlay made for another base
 * free the whole data area the same way, once the cleared maps are durable. Data bits stay set: a zero bit
 * wins, and a write over a zeroed block rewrites the whole block (its untouched part is read through the zero
 * map as zeroes, never from freed data) before it clears the zero bit.
 *
 * Crash consistency: a block's data bit is set in memory only after its data was written; bits reach the
 * overlay only in `flush()`: the overlay's own flush makes that data durable, then the data map is written and
 * flushed, then the zero map is written and flushed. So after a crash every persisted data bit points at
 * persisted data, and a zero bit is cleared (by a write over a discarded block) only once the data bit that
 * replaces it is durable: a block never falls back to the base. An operation the guest never flushed reads
 * back either new or old.
 *
 * Saving the maps without a guest flush: bits that live only in memory are lost when the page closes, although
 * the data they point at reached the store. A guest need not flush after its last write for long: Linux's
 * `sync` on ext2 writes the metadata it keeps in the block device's cache after the file system's flush, and its
 * periodic writeback never flushes. So whenever the write chain runs dry with map bits changed, the overlay
 * runs a flush of its own (a checkpoint, the same steps in the same order) on the next turn of the event loop:
 * completed writes survive a page reload moments later, and crash consistency is unchanged.
 *
 * Freeing data needs no further ordering. A unit is discarded only when no block in it is read from the
 * overlay: a block without a data bit reads the base (a persisted data bit is always set in memory too), a
 * zeroed one reads zeroes from its in-memory zero bit, set before the discard is sent. After a crash, a freed
 * block whose zero bit had not reached the overlay yet reads the store's discarded bytes (zeroes: a store that
 * declares `discardGranularity` reads discarded ranges as zeroes) or, if the discard was lost too, its old data:
 * new or old, as for any operation the guest never flushed. Once a guest flush after the discard completed, the
 * zero bit is durable and the block reads zeroes. A later write to a freed block is sent after the discard
 * completed (both run in order on the write chain), so a crash may keep the discard and lose the write, but
 * the discard never lands over the write; and that write clears the zero bit only after its data, and the data
 * bit, are durable, as any write does: the block never reads freed bytes once the write's flush completed, and
 * never the base.
 */
import { UserError } from '../common/errors.ts';
import type { BlockBackend } from '../devices/block-backend.ts';
import { BLOCK_SECTOR_SIZE, BlockIoError } from '../devices/block-backend.ts';
import type { StoredDisk } from './disk-store.ts';

/** Copy-on-write granularity: ext2 blocks are 1-4 KiB, so 4 KiB copies little and keeps the bitmap small. */
export const OVERLAY_BLOCK_SIZE = 4096;
const HEADER_SIZE = 512;
/** Map sectors are written whole. */
const SECTOR = 512;
const MAGIC = 'TVOVL001';
const MAX_BASE_ID_BYTES = HEADER_SIZE - 24;

/** Bytes the overlay disk must have for a base of `baseSize` bytes. */
export function overlaySizeFor(baseSize: number, blockSize = OVERLAY_BLOCK_SIZE): number {
  return zeroStartFor(baseSize, blockSize) + Math.ceil(mapBytesFor(baseSize, blockSize) / SECTOR) * SECTOR;
}

/** Bytes of one block map (data or zero) for a base of `baseSize` bytes. */
function mapBytesFor(baseSize: number, blockSize: number): number {
  return Math.ceil(Math.ceil(baseSize / blockSize) / 8);
}

function dataStartFor(baseSize: number, blockSize: number): number {
  return Math.ceil((HEADER_SIZE + mapBytesFor(baseSize, blockSize)) / blockSize) * blockSize;
}

function zeroStartFor(baseSize: number, blockSize: number): number {
  return dataStartFor(baseSize, blockSize) + Math.ceil(baseSize / blockSize) * blockSize;
}

/** Bits set in `byte`. */
function bitsSet(byte: number): number {
  let count = 0;
  for (let v = byte; v !== 0; v &= v - 1) count++;
  return count;
}

/** What {@link OverlayBlockBackend.open} found. */
export type OverlayOpenResult = 'created' | 'reused' | 'replaced';

/** Options of {@link OverlayBlockBackend.open}. */
export interface OverlayOptions {
  /**
   * Save changed maps whenever the write chain runs dry (default true; see the header). Tests that model a
   * crash between a write and the guest's flush turn it off.
   */
  readonly checkpointWhenIdle?: boolean;
}

/** The disk that holds an overlay; with a `discardGranularity` when its discards free space. */
export type OverlayStore = BlockBackend & Pick<StoredDisk, 'discardGranularity'>;

/** A copy-on-write disk over a read-only base. Open it with {@link OverlayBlockBackend.open}. */
export class OverlayBlockBackend implements BlockBackend {
  readonly readOnly = false;
  readonly sizeBytes: number;
  readonly queueDepth: number;
  /** Which blocks' data live in the overlay (live: includes completed writes not yet flushed). */
  private readonly bitmap: Uint8Array;
  /** The data map as the overlay holds it. */
  private readonly persisted: Uint8Array;
  /** Which blocks read as zeroes (live), and as the overlay holds it. */
  private readonly zeroMap: Uint8Array;
  private readonly persistedZero: Uint8Array;
  private readonly dataStart: number;
  private readonly zeroStart: number;
  private readonly blockSize: number;
  /** Bytes per unit the overlay disk frees on discard, or 0 when discarding there frees nothing. */
  private readonly freeUnit: number;
  /** Writes run one after another (a partial block is read-modify-write); flushes too. */
  private writes: Promise<unknown> = Promise.resolve();
  /** Operations on the write chain that have not settled yet. */
  private chained = 0;
  /** A map bit changed in memory since the last flush (or checkpoint) took its snapshot. */
  private mapsChanged = false;
  private checkpointPending = false;
  /** How the overlay was found when opened. */
  openResult: OverlayOpenResult = 'reused';

  private constructor(
    private readonly base: BlockBackend,
    private readonly overlay: OverlayStore,
    private readonly baseId: string,
    private readonly checkpointWhenIdle: boolean,
  ) {
    this.sizeBytes = base.sizeBytes;
    this.blockSize = OVERLAY_BLOCK_SIZE;
    this.queueDepth = Math.max(1, Math.min(base.queueDepth, overlay.queueDepth));
    const blocks = Math.ceil(base.sizeBytes / this.blockSize);
    this.bitmap = new Uint8Array(Math.ceil(blocks / 8));
    this.persisted = new Uint8Array(this.bitmap.length);
    this.zeroMap = new Uint8Array(this.bitmap.length);
    this.persistedZero = new Uint8Array(this.bitmap.length);
    this.dataStart = dataStartFor(base.sizeBytes, this.blockSize);
    this.zeroStart = zeroStartFor(base.sizeBytes, this.blockSize);
    const unit = overlay.discardGranularity;
    if (unit !== undefined && (!Number.isSafeInteger(unit) || unit <= 0 || unit % BLOCK_SECTOR_SIZE !== 0)) {
      throw new RangeError(
        `the overlay disk's discardGranularity is ${unit}; it must be a positive multiple of ${BLOCK_SECTOR_SIZE}`,
      );
    }
    this.freeUnit = unit !== undefined && typeof overlay.discard === 'function' ? unit : 0;
  }

  /**
   * Put `overlay` (at least {@link overlaySizeFor} bytes) over `base`. `baseId` names the base image's
   * contents (its sha256): an overlay made for another base is emptied ('replaced'), since its blocks would
   * patch the wrong file system.
   */
  static async open(
    base: BlockBackend,
    overlay: OverlayStore,
    baseId: string,
    options: OverlayOptions = {},
  ): Promise<OverlayBlockBackend> {
    if (overlay.readOnly) throw new UserError('the overlay of a copy-on-write disk must be writable');
    if (new TextEncoder().encode(baseId).length > MAX_BASE_ID_BYTES) throw new RangeError('base id too long');
    if (overlay.sizeBytes < overlaySizeFor(base.sizeBytes)) {
      throw new RangeError(
        `the overlay has ${overlay.sizeBytes} bytes; it needs ${overlaySizeFor(base.sizeBytes)}`,
      );
    }
    const disk = new OverlayBlockBackend(base, overlay, baseId, options.checkpointWhenIdle ?? true);
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
      const zeroSectors = new Uint8Array(Math.ceil(disk.zeroMap.length / SECTOR) * SECTOR);
      await overlay.read(disk.zeroStart, zeroSectors);
      disk.zeroMap.set(zeroSectors.subarray(0, disk.zeroMap.length));
      disk.persistedZero.set(disk.zeroMap);
      disk.openResult = 'reused';
      return disk;
    }
    disk.openResult = magic === MAGIC ? 'replaced' : 'created';
    await disk.writeHeader();
    // Another base's blocks are of no use now (a new overlay holds nothing to free).
    if (disk.openResult === 'replaced') await disk.free(0, disk.blockCount(), false);
    return disk;
  }

  /** Blocks that no longer read as the base: written, discarded or zeroed. */
  changedBlocks(): number {
    let count = 0;
    for (let i = 0; i < this.bitmap.length; i++) count += bitsSet(this.bitmap[i] | this.zeroMap[i]);
    return count;
  }

  /** Blocks whose data or zero bit differs from the maps the overlay holds (lost if the page closed now). */
  unsavedBlocks(): number {
    let count = 0;
    for (let i = 0; i < this.bitmap.length; i++)
      count += bitsSet((this.bitmap[i] ^ this.persisted[i]) | (this.zeroMap[i] ^ this.persistedZero[i]));
    return count;
  }

  read(offset: number, dst: Uint8Array): Promise<void> {
    this.check(offset, dst.length);
    // Runs of blocks with the same owner are read in one request each.
    const jobs: (Promise<void> | void)[] = [];
    let at = offset;
    const end = offset + dst.length;
    while (at < end) {
      const owner = this.owner(Math.floor(at / this.blockSize));
      let runEnd = Math.min(end, (Math.floor(at / this.blockSize) + 1) * this.blockSize);
      while (runEnd < end && this.owner(Math.floor(runEnd / this.blockSize)) === owner) {
        runEnd = Math.min(end, runEnd + this.blockSize);
      }
      const part = dst.subarray(at - offset, runEnd - offset);
      if (owner === 'zero') part.fill(0);
      else
        jobs.push(
          owner === 'overlay' ? this.overlay.read(this.dataStart + at, part) : this.base.read(at, part),
        );
      at = runEnd;
    }
    return Promise.all(jobs).then(() => undefined);
  }

  write(offset: number, src: Uint8Array): Promise<void> {
    this.check(offset, src.length);
    return this.serial(() => this.writeNow(offset, src));
  }

  /**
   * The range reads as zeroes from now on (not as the base): whole blocks just get their zero bit; the parts
   * of blocks at either edge are written with zeroes.
   */
  writeZeroes(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    return this.serial(async () => {
      const bs = this.blockSize;
      const end = offset + length;
      const firstWhole = Math.ceil(offset / bs);
      // The last block may extend past the disk's end; covering the disk's end covers the block.
      const lastWhole = end === this.sizeBytes ? Math.ceil(end / bs) : Math.floor(end / bs);
      if (firstWhole >= lastWhole) {
        if (length > 0) await this.writeNow(offset, new Uint8Array(length));
        return;
      }
      if (offset < firstWhole * bs) await this.writeNow(offset, new Uint8Array(firstWhole * bs - offset));
      if (lastWhole * bs < end) await this.writeNow(lastWhole * bs, new Uint8Array(end - lastWhole * bs));
      // Zero bits first: from here on these blocks read zeroes whatever their stored data.
      for (let b = firstWhole; b < lastWhole; b++) this.zeroMap[b >> 3] |= 1 << (b & 7);
      this.mapsChanged = true;
      await this.free(firstWhole, lastWhole, true);
    });
  }

  /** Discarded ranges read back as zeroes, never as the base ({@link writeZeroes}). */
  discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length);
  }

  flush(): Promise<void> {
    return this.serial(async () => {
      // Snapshots cover exactly the operations completed before this flush.
      this.mapsChanged = false;
      const data = this.bitmap.slice();
      const zero = this.zeroMap.slice();
      await this.overlay.flush();
      if (await this.storeMap(data, this.persisted, HEADER_SIZE)) await this.overlay.flush();
      // Zero bits are cleared only by writes whose data bits are durable now.
      if (await this.storeMap(zero, this.persistedZero, this.zeroStart)) await this.overlay.flush();
    });
  }

  /**
   * Forget every change: the disk reads as the base again (durable when this resolves). The overlay disk's
   * space under the data is given back afterwards, when it can free space.
   */
  reset(): Promise<void> {
    return this.serial(async () => {
      this.zeroMap.fill(0);
      await this.storeMap(this.zeroMap.slice(), this.persistedZero, this.zeroStart);
      this.bitmap.fill(0);
      await this.storeMap(this.bitmap.slice(), this.persisted, HEADER_SIZE);
      await this.overlay.flush();
      await this.free(0, this.blockCount(), false);
    });
  }

  /**
   * Discard, on the overlay disk, the units of the data area that overlap blocks `[first, end)` and hold no
   * live block (see the header): adjacent units in one call. With `onlyStored`, only units that hold a block
   * with its data bit set (a zeroed block that never had data has nothing stored to free). Called from the
   * write chain, so no write changes the maps meanwhile.
   */
  private async free(first: number, end: number, onlyStored: boolean): Promise<void> {
    const unit = this.freeUnit;
    if (unit === 0 || first >= end) return;
    const bs = this.blockSize;
    // Only units wholly inside the data area: never the header, the data map or the zero map.
    const from = Math.max(Math.ceil(this.dataStart / unit), Math.floor((this.dataStart + first * bs) / unit));
    const to = Math.min(Math.floor(this.zeroStart / unit), Math.ceil((this.dataStart + end * bs) / unit));
    let runStart = -1;
    for (let u = from; u <= to; u++) {
      const freeable = u < to && this.unitFreeable(u, onlyStored);
      if (freeable && runStart < 0) runStart = u;
      else if (!freeable && runStart >= 0) {
        await this.overlay.discard!(runStart * unit, (u - runStart) * unit);
        runStart = -1;
      }
    }
  }

  /** True when no block whose data lies in unit `u` is live (zero bit clear, data bit set). */
  private unitFreeable(u: number, onlyStored: boolean): boolean {
    const unit = this.freeUnit;
    const firstBlock = Math.floor((u * unit - this.dataStart) / this.blockSize);
    const endBlock = Math.min(
      this.blockCount(),
      Math.ceil(((u + 1) * unit - this.dataStart) / this.blockSize),
    );
    let stored = false;
    for (let b = firstBlock; b < endBlock; b++) {
      const bit = 1 << (b & 7);
      if ((this.bitmap[b >> 3] & bit) === 0) continue;
      if ((this.zeroMap[b >> 3] & bit) === 0) return false;
      stored = true;
    }
    return stored || !onlyStored;
  }

  /** Blocks of the base (the last one may be partial). */
  private blockCount(): number {
    return Math.ceil(this.sizeBytes / this.blockSize);
  }

  /** Write `src` at `offset` (called in order, from {@link serial}). */
  private async writeNow(offset: number, src: Uint8Array): Promise<void> {
    const bs = this.blockSize;
    const start = Math.floor(offset / bs) * bs;
    const end = Math.min(this.overlaySpan(), Math.ceil((offset + src.length) / bs) * bs);
    if (start === offset && end === offset + src.length) {
      // Whole blocks: the write goes through as it is (src is ours until this write settles, and so the
      // overlay's), without a copy into a fresh buffer.
      await this.overlay.write(this.dataStart + start, src);
      this.markWritten(start, end);
      return;
    }
    const aligned = new Uint8Array(end - start);
    // Edge blocks the write covers only partly keep their current bytes (from overlay, zeroes or base).
    const firstPartial = offset !== start;
    const lastPartial = offset + src.length !== end;
    const lastStart = end - bs;
    if (firstPartial) await this.read(start, aligned.subarray(0, Math.min(bs, this.sizeBytes - start)));
    if (lastPartial && (lastStart !== start || !firstPartial)) {
      await this.read(lastStart, aligned.subarray(lastStart - start, Math.min(end, this.sizeBytes) - start));
    }
    aligned.set(src, offset - start);
    await this.overlay.write(this.dataStart + start, aligned);
    this.markWritten(start, end);
  }

  /** Blocks `[start, end)` (byte offsets at block boundaries) now hold data in the overlay. */
  private markWritten(start: number, end: number): void {
    const bs = this.blockSize;
    for (let b = start / bs; b < end / bs; b++) {
      const bit = 1 << (b & 7);
      if ((this.bitmap[b >> 3] & bit) === 0 || (this.zeroMap[b >> 3] & bit) !== 0) this.mapsChanged = true;
      this.bitmap[b >> 3] |= bit;
      this.zeroMap[b >> 3] &= ~bit;
    }
  }

  /** Write the sectors of map `snapshot` (at `at` in the overlay) that differ from `persisted`; true when any did. */
  private async storeMap(snapshot: Uint8Array, persisted: Uint8Array, at: number): Promise<boolean> {
    let wrote = false;
    for (let from = 0; from < snapshot.length; from += SECTOR) {
      const to = Math.min(snapshot.length, from + SECTOR);
      let same = true;
      for (let i = from; i < to && same; i++) same = snapshot[i] === persisted[i];
      if (same) continue;
      const sector = new Uint8Array(SECTOR);
      sector.set(snapshot.subarray(from, to));
      await this.overlay.write(at + from, sector);
      persisted.set(snapshot.subarray(from, to), from);
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
    // A replaced overlay may hold another base's zero bits: clear them before the header says "this base".
    await this.overlay.write(
      this.zeroStart,
      new Uint8Array(Math.ceil(this.zeroMap.length / SECTOR) * SECTOR),
    );
    await this.overlay.flush();
    await this.overlay.write(0, head);
    await this.overlay.flush();
    this.persisted.fill(0);
    this.persistedZero.fill(0);
  }

  /** The base rounded up to whole blocks: the last block may extend past the disk's end in the overlay. */
  private overlaySpan(): number {
    return Math.ceil(this.sizeBytes / this.blockSize) * this.blockSize;
  }

  /** Where block `block` reads from. */
  private owner(block: number): 'zero' | 'overlay' | 'base' {
    const bit = 1 << (block & 7);
    if ((this.zeroMap[block >> 3] & bit) !== 0) return 'zero';
    return (this.bitmap[block >> 3] & bit) !== 0 ? 'overlay' : 'base';
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new BlockIoError(
        `range [${offset}, ${offset + length}) is outside the ${this.sizeBytes}-byte disk`,
      );
    }
  }

  private serial(operation: () => Promise<void>): Promise<void> {
    this.chained++;
    const run = this.writes.then(operation);
    this.writes = run
      .catch(() => {})
      .then(() => {
        if (--this.chained === 0 && this.mapsChanged) this.scheduleCheckpoint();
      });
    return run;
  }

  /**
   * Flush on the next turn of the event loop unless the guest queued more meanwhile (then the chain runs dry
   * again later). A failure is left to the guest's next flush, which stores whatever still differs and reports.
   */
  private scheduleCheckpoint(): void {
    if (!this.checkpointWhenIdle || this.checkpointPending) return;
    this.checkpointPending = true;
    setTimeout(() => {
      this.checkpointPending = false;
      if (this.chained === 0 && this.mapsChanged) this.flush().catch(() => {});
    }, 0);
  }
}
