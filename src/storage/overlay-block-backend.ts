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
 * the base. Discard and write-zeroes of whole blocks only set zero bits (no data is written); partial blocks are
 * written with zeroes.
 *
 * Crash consistency: a block's data bit is set in memory only after its data was written; bits reach the
 * overlay only in `flush()`: the overlay's own flush makes that data durable, then the data map is written and
 * flushed, then the zero map is written and flushed. So after a crash every persisted data bit points at
 * persisted data, and a zero bit is cleared (by a write over a discarded block) only once the data bit that
 * replaces it is durable: a block never falls back to the base. An operation the guest never flushed reads
 * back either new or old.
 */
import { UserError } from '../common/errors.ts';
import type { BlockBackend } from '../devices/block-backend.ts';
import { BlockIoError } from '../devices/block-backend.ts';

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

/** What {@link OverlayBlockBackend.open} found. */
export type OverlayOpenResult = 'created' | 'reused' | 'replaced';

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
    this.zeroMap = new Uint8Array(this.bitmap.length);
    this.persistedZero = new Uint8Array(this.bitmap.length);
    this.dataStart = dataStartFor(base.sizeBytes, this.blockSize);
    this.zeroStart = zeroStartFor(base.sizeBytes, this.blockSize);
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
      const zeroSectors = new Uint8Array(Math.ceil(disk.zeroMap.length / SECTOR) * SECTOR);
      await overlay.read(disk.zeroStart, zeroSectors);
      disk.zeroMap.set(zeroSectors.subarray(0, disk.zeroMap.length));
      disk.persistedZero.set(disk.zeroMap);
      disk.openResult = 'reused';
      return disk;
    }
    disk.openResult = magic === MAGIC ? 'replaced' : 'created';
    await disk.writeHeader();
    return disk;
  }

  /** Blocks that no longer read as the base: written, discarded or zeroed. */
  changedBlocks(): number {
    let count = 0;
    for (let i = 0; i < this.bitmap.length; i++)
      for (let v = this.bitmap[i] | this.zeroMap[i]; v !== 0; v &= v - 1) count++;
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
      for (let b = firstWhole; b < lastWhole; b++) this.zeroMap[b >> 3] |= 1 << (b & 7);
    });
  }

  /** Discarded ranges read back as zeroes, never as the base ({@link writeZeroes}). */
  discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length);
  }

  flush(): Promise<void> {
    return this.serial(async () => {
      // Snapshots cover exactly the operations completed before this flush.
      const data = this.bitmap.slice();
      const zero = this.zeroMap.slice();
      await this.overlay.flush();
      if (await this.storeMap(data, this.persisted, HEADER_SIZE)) await this.overlay.flush();
      // Zero bits are cleared only by writes whose data bits are durable now.
      if (await this.storeMap(zero, this.persistedZero, this.zeroStart)) await this.overlay.flush();
    });
  }

  /** Forget every change: the disk reads as the base again (durable when this resolves). */
  reset(): Promise<void> {
    return this.serial(async () => {
      this.zeroMap.fill(0);
      await this.storeMap(this.zeroMap.slice(), this.persistedZero, this.zeroStart);
      this.bitmap.fill(0);
      await this.storeMap(this.bitmap.slice(), this.persisted, HEADER_SIZE);
      await this.overlay.flush();
    });
  }

  /** Write `src` at `offset` (called in order, from {@link serial}). */
  private async writeNow(offset: number, src: Uint8Array): Promise<void> {
    const bs = this.blockSize;
    const start = Math.floor(offset / bs) * bs;
    const end = Math.min(this.overlaySpan(), Math.ceil((offset + src.length) / bs) * bs);
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
    for (let b = start / bs; b < end / bs; b++) {
      this.bitmap[b >> 3] |= 1 << (b & 7);
      this.zeroMap[b >> 3] &= ~(1 << (b & 7));
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
    const run = this.writes.then(operation);
    this.writes = run.catch(() => {});
    return run;
  }
}
