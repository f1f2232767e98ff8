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
  /**
   * Set by {@link decodeSnapshotBlob} instead of `pageData`: the marked pages, in guest order, still in the file.
   * A VM restored from it has its vCPU threads read and copy them (see Vm.fromSnapshot); `ram` is not available.
   */
  readonly pageBlob?: Blob;
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
export function encodeSnapshot(snapshot: VmSnapshot): Uint8Array<ArrayBuffer> {
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

/** What a snapshot file's head (everything before the pages) says. */
interface SnapshotHead {
  readonly header: Header;
  readonly block: Int32Array;
  readonly storedPages: Uint8Array;
  /** Where the stored pages start in the file. */
  readonly pagesAt: number;
}

/**
 * Parse the head of a snapshot file of `fileLength` bytes from `prefix` (its first bytes). Returns the number
 * of bytes the head needs when `prefix` is shorter than that. Every field is checked, so a corrupt or foreign
 * file is a clear error.
 */
function decodeHead(prefix: Uint8Array, fileLength: number): SnapshotHead | number {
  if (fileLength < 12 || prefix.length < 12 || MAGIC.some((b, i) => prefix[i] !== b)) {
    throw corrupt('bad magic or format');
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  const jsonLength = view.getUint32(8, true);
  if (jsonLength > MAX_HEADER_BYTES || 12 + jsonLength > fileLength) throw corrupt('header length');
  if (prefix.length < 12 + jsonLength) return 12 + jsonLength;
  let header: Header;
  try {
    header = JSON.parse(new TextDecoder().decode(prefix.subarray(12, 12 + jsonLength))) as Header;
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
  const pageCount = (header.memoryMiB * 1024 * 1024) / PAGE;
  const bitmapBytes = Math.ceil(pageCount / 8);
  let at = 12 + jsonLength;
  const pagesAt = at + header.blockWords * 4 + bitmapBytes;
  const expected = pagesAt + header.pages * PAGE;
  if (fileLength !== expected) throw corrupt(`size ${fileLength}, expected ${expected}`);
  if (prefix.length < pagesAt) return pagesAt;
  const block = new Int32Array(header.blockWords);
  new Uint8Array(block.buffer).set(prefix.subarray(at, at + header.blockWords * 4));
  at += header.blockWords * 4;
  const storedPages = prefix.slice(at, at + bitmapBytes);
  let stored = 0;
  for (let i = 0; i < bitmapBytes; i++) stored += bitCount(storedPages[i]);
  if (stored !== header.pages) throw corrupt('page bitmap');
  return { header, block, storedPages, pagesAt };
}

/** The snapshot a decoded head describes, with its pages in `pages` (bytes or a Blob). */
function fromHead(head: SnapshotHead, pages: { pageData: Uint8Array } | { pageBlob: Blob }): VmSnapshot {
  const { header, block, storedPages } = head;
  const ramBytes = header.memoryMiB * 1024 * 1024;
  const pageData = 'pageData' in pages ? pages.pageData : undefined;
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
      if (pageData === undefined) {
        throw new Error('the pages of a snapshot read from a Blob are in its pageBlob, not in memory');
      }
      if (ram === undefined) {
        ram = new Uint8Array(ramBytes);
        forEachStoredPage(storedPages, ramBytes / PAGE, (page, index) =>
          ram!.set(pageData.subarray(index * PAGE, (index + 1) * PAGE), page * PAGE),
        );
      }
      return ram;
    },
    storedPages,
    ...pages,
  };
}

/** Parse a snapshot file; every field is checked, so a corrupt or foreign file is a clear error. */
export function decodeSnapshot(bytes: Uint8Array): VmSnapshot {
  const head = decodeHead(bytes, bytes.length);
  // The whole file is there, so the head is complete (a shorter file throws).
  if (typeof head === 'number') throw corrupt('truncated');
  return fromHead(head, { pageData: bytes.subarray(head.pagesAt) });
}

/** How much of a snapshot Blob is read first: a typical head (header, control block, bitmap) fits. */
const HEAD_READ_BYTES = 256 * 1024;

/**
 * Parse a snapshot file held as a Blob (as stored in IndexedDB) reading only its head; the stored pages stay
 * in the Blob ({@link VmSnapshot.pageBlob}), for the vCPU threads to read and copy into guest RAM themselves.
 * Checked as {@link decodeSnapshot} checks; a Blob that cannot be read rejects with the browser's error.
 */
export async function decodeSnapshotBlob(blob: Blob): Promise<VmSnapshot> {
  const read = async (end: number): Promise<Uint8Array> =>
    new Uint8Array(await blob.slice(0, Math.min(end, blob.size)).arrayBuffer());
  let prefix = await read(HEAD_READ_BYTES);
  for (;;) {
    const head = decodeHead(prefix, blob.size);
    if (typeof head !== 'number') return fromHead(head, { pageBlob: blob.slice(head.pagesAt) });
    // A head longer than the first read (a large VM's bitmap): read exactly that much, once.
    if (prefix.length >= head) throw corrupt('truncated');
    prefix = await read(head);
  }
}

/** How much of a snapshot's pages is read at a time: enough to keep reads few, small enough to stay warm. */
const PAGE_READ_BYTES = 64 * PAGE;

/**
 * Read `count` whole pages from `data` (a Blob of exactly `count` * 4 KiB) and hand each to `write(index,
 * bytes)` in order (`bytes` is only valid during the call), reading into one small buffer again and again:
 * reading the Blob whole would cost a fresh buffer of its size first, and fresh memory costs a page fault per
 * 4 KiB (~20 µs each on the machine we measure on; with ~2,700 pages, tens of ms per VM). Rejects when the Blob
 * cannot be read or has another size.
 */
export async function readStoredPages(
  data: Blob,
  count: number,
  write: (index: number, bytes: Uint8Array) => void,
): Promise<void> {
  if (data.size !== count * PAGE) {
    throw corrupt(`its pages are ${data.size} bytes, ${count * PAGE} expected`);
  }
  const stream = data.stream();
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = stream.getReader({ mode: 'byob' });
  } catch {
    // Not a byte stream here: read its chunks and copy them into the buffer.
  }
  const plain = byob ? undefined : stream.getReader();
  let buffer = new ArrayBuffer(PAGE_READ_BYTES);
  let filled = 0;
  let index = 0;
  try {
    await readAll();
  } catch (error) {
    await (byob ?? plain)?.cancel().catch(() => undefined);
    throw error;
  }
  if (index !== count || filled !== 0) throw corrupt('truncated');

  async function readAll(): Promise<void> {
    for (;;) {
      let done: boolean;
      if (byob) {
        const result = await byob.read(new Uint8Array(buffer, filled, buffer.byteLength - filled));
        done = result.done;
        if (result.value) {
          buffer = result.value.buffer as ArrayBuffer;
          filled += result.value.length;
        }
      } else {
        const result = await plain!.read();
        done = result.done;
        const chunk = result.value;
        for (let at = 0; chunk && at < chunk.length;) {
          const n = Math.min(chunk.length - at, buffer.byteLength - filled);
          new Uint8Array(buffer, filled, n).set(chunk.subarray(at, at + n));
          filled += n;
          at += n;
          if (filled === buffer.byteLength) filled = writePages(buffer, filled);
        }
      }
      filled = writePages(buffer, filled);
      if (done) return;
    }
  }

  /** Hand over the whole pages at the start of `buffer`; keep the rest at its start; returns its length. */
  function writePages(into: ArrayBuffer, length: number): number {
    const whole = Math.floor(length / PAGE);
    for (let i = 0; i < whole; i++) write(index++, new Uint8Array(into, i * PAGE, PAGE));
    const rest = length - whole * PAGE;
    if (whole > 0 && rest > 0) new Uint8Array(into).copyWithin(0, whole * PAGE, length);
    return rest;
  }
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
