import { UserError } from '../common/errors.ts';

/**
 * A VM's full state at one instant: guest RAM, the control block (device registers, rings, interrupt lines,
 * timer compares, hart state areas) and the guest clock. Everything a VM is lives in these, which is what makes
 * a snapshot a copy rather than a traversal.
 */
export interface VmSnapshot {
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly bootargs: string;
  /**
   * virtio-net cards on the board (their transports' state is in `block`). A restore needs as many NICs; each
   * gets the restoring VM's own MAC (see Vm.fromSnapshot). Files without the field have none.
   */
  readonly nics: number;
  /**
   * The console's last line when the snapshot was taken (at most {@link MAX_SCREEN_CHARS}; a boot snapshot's is
   * the shell prompt). A VM restored from it shows this line at once, as the terminal did. Files without it:
   * nothing to show (the VMM then asks the shell for a fresh prompt).
   */
  readonly screen?: string;
  /** Guest time (10 MHz ticks) when the snapshot was taken; the restored clock continues from here. */
  readonly ticks: number;
  /** A copy of the control block. */
  readonly block: Int32Array;
  /**
   * Guest RAM, memoryMiB MiB. A decoded snapshot builds it only when asked (a restore reads {@link pageData}
   * instead).
   */
  readonly ram: Uint8Array;
  /**
   * Set by {@link decodeSnapshot}: one bit per 4 KiB page of `ram`, 1 = the page may hold data, 0 = all zero.
   * A restore copies only the marked pages (host frames come zeroed).
   */
  readonly storedPages?: Uint8Array;
  /**
   * Set by {@link decodeSnapshot}, with `storedPages`: the marked pages, in guest order, as they are in the file
   * (a view of it, not a copy).
   */
  readonly pageData?: Uint8Array;
}

/** The longest console line a snapshot keeps ({@link VmSnapshot.screen}). */
export const MAX_SCREEN_CHARS = 512;

/**
 * File layout (little endian):
 *   [0, 8)    magic "TVSNAP\0" + format byte 1
 *   [8, 12)   u32 length of the JSON header
 *   JSON      { cpus, memoryMiB, bootargs, nics, screen, ticks, blockWords, pages } (nics may be absent: 0;
 *             screen may be absent)
 *   block     blockWords * 4 bytes
 *   bitmap    one bit per 4 KiB guest page: 1 = page stored (pages that are all zero are not)
 *   pages     the stored pages, in guest order
 */
const MAGIC = [0x54, 0x56, 0x53, 0x4e, 0x41, 0x50, 0x00, 0x01];
const PAGE = 4096;
/** Header JSON larger than this is not something we wrote. */
const MAX_HEADER_BYTES = 64 * 1024;

interface Header {
  cpus: number;
  memoryMiB: number;
  bootargs: string;
  nics?: number;
  screen?: string;
  ticks: number;
  blockWords: number;
  pages: number;
}

function pageIsZero(ram: Uint8Array, offset: number): boolean {
  const words = new Int32Array(ram.buffer, ram.byteOffset + offset, PAGE / 4);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}

/** Serialize a snapshot; all-zero pages are left out, so a freshly booted guest packs small. */
export function encodeSnapshot(snapshot: VmSnapshot): Uint8Array {
  const pageCount = snapshot.ram.length / PAGE;
  const bitmap = new Uint8Array(Math.ceil(pageCount / 8));
  let stored = 0;
  for (let p = 0; p < pageCount; p++) {
    if (!pageIsZero(snapshot.ram, p * PAGE)) {
      bitmap[p >> 3] |= 1 << (p & 7);
      stored++;
    }
  }
  const header: Header = {
    cpus: snapshot.cpus,
    memoryMiB: snapshot.memoryMiB,
    bootargs: snapshot.bootargs,
    nics: snapshot.nics,
    ...(snapshot.screen !== undefined ? { screen: snapshot.screen.slice(-MAX_SCREEN_CHARS) } : {}),
    ticks: snapshot.ticks,
    blockWords: snapshot.block.length,
    pages: stored,
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const blockBytes = new Uint8Array(
    snapshot.block.buffer,
    snapshot.block.byteOffset,
    snapshot.block.byteLength,
  );
  const out = new Uint8Array(12 + json.length + blockBytes.length + bitmap.length + stored * PAGE);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(8, json.length, true);
  let at = 12;
  out.set(json, at);
  at += json.length;
  out.set(blockBytes, at);
  at += blockBytes.length;
  out.set(bitmap, at);
  at += bitmap.length;
  forEachStoredPage(bitmap, pageCount, (page, index) =>
    out.set(snapshot.ram.subarray(page * PAGE, (page + 1) * PAGE), at + index * PAGE),
  );
  return out;
}

function corrupt(why: string): UserError {
  return new UserError(`this is not a usable tabvisor snapshot (${why}); take a new snapshot`);
}

/** Parse a snapshot file; every field is checked, so a corrupt or foreign file is a clear error. */
export function decodeSnapshot(bytes: Uint8Array): VmSnapshot {
  if (bytes.length < 12 || MAGIC.some((b, i) => bytes[i] !== b)) throw corrupt('bad magic or format');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const jsonLength = view.getUint32(8, true);
  if (jsonLength > MAX_HEADER_BYTES || 12 + jsonLength > bytes.length) throw corrupt('header length');
  let header: Header;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + jsonLength))) as Header;
  } catch {
    throw corrupt('header is not JSON');
  }
  const int = (v: unknown, lo: number, hi: number): boolean =>
    Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;
  if (
    !int(header.cpus, 1, 64) ||
    !int(header.memoryMiB, 1, 1 << 16) ||
    typeof header.bootargs !== 'string' ||
    !(header.nics === undefined || int(header.nics, 0, 8)) ||
    !(
      header.screen === undefined ||
      (typeof header.screen === 'string' && header.screen.length <= MAX_SCREEN_CHARS)
    ) ||
    typeof header.ticks !== 'number' ||
    !(header.ticks >= 0) ||
    !int(header.blockWords, 1, 1 << 24) ||
    !int(header.pages, 0, header.memoryMiB * 256)
  ) {
    throw corrupt('header fields out of range');
  }
  const ramBytes = header.memoryMiB * 1024 * 1024;
  const pageCount = ramBytes / PAGE;
  const bitmapBytes = Math.ceil(pageCount / 8);
  let at = 12 + jsonLength;
  const expected = at + header.blockWords * 4 + bitmapBytes + header.pages * PAGE;
  if (bytes.length !== expected) throw corrupt(`size ${bytes.length}, expected ${expected}`);
  const block = new Int32Array(header.blockWords);
  new Uint8Array(block.buffer).set(bytes.subarray(at, at + header.blockWords * 4));
  at += header.blockWords * 4;
  const bitmap = bytes.subarray(at, at + bitmapBytes);
  at += bitmapBytes;
  let stored = 0;
  for (let i = 0; i < bitmapBytes; i++) stored += bitCount(bitmap[i]);
  if (stored !== header.pages) throw corrupt('page bitmap');
  const storedPages = bitmap.slice();
  const pageData = bytes.subarray(at, at + header.pages * PAGE);
  // The whole RAM image only for whoever asks (encodeSnapshot, tests): a restore copies the stored pages from
  // the file into the VM's frames directly, without a memoryMiB-sized buffer and a second copy.
  let ram: Uint8Array | undefined;
  return {
    cpus: header.cpus,
    memoryMiB: header.memoryMiB,
    bootargs: header.bootargs,
    nics: header.nics ?? 0,
    ...(header.screen !== undefined ? { screen: header.screen } : {}),
    ticks: header.ticks,
    block,
    get ram(): Uint8Array {
      if (ram === undefined) {
        ram = new Uint8Array(ramBytes);
        forEachStoredPage(storedPages, pageCount, (page, index) =>
          ram!.set(pageData.subarray(index * PAGE, (index + 1) * PAGE), page * PAGE),
        );
      }
      return ram;
    },
    storedPages,
    pageData,
  };
}

/** Set bits in a byte. */
function bitCount(byte: number): number {
  let n = 0;
  for (let b = byte; b !== 0; b &= b - 1) n++;
  return n;
}

/** Call `fn(page, index)` for each page of `pageCount` marked in `bitmap`; `index` counts the marked ones. */
export function forEachStoredPage(
  bitmap: Uint8Array,
  pageCount: number,
  fn: (page: number, index: number) => void,
): void {
  let index = 0;
  for (let page = 0; page < pageCount; page++) {
    if (bitmap[page >> 3] & (1 << (page & 7))) fn(page, index++);
  }
}
