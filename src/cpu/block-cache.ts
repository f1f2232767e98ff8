import type { BlockFunction } from './block-translator.ts';

/** One translated block (or a marker that the instruction at its address is left to the interpreter). */
export interface Block {
  /** Instructions in the block; 0 for a marker. */
  readonly len: number;
  /** The instruction words the translation depends on (see {@link planBlock}). */
  readonly words: Int32Array;
  /** The block loops back to its first instruction by itself (a whole loop in one function). */
  readonly loops: boolean;
  /** The translation; null for a marker. */
  readonly run: BlockFunction | null;
  /** The cache's code epoch when `words` were last known to match memory. */
  epoch: number;
}

/** Words per 4 KiB frame: a frame's blocks are indexed by the word offset of their first instruction. */
const FRAME_WORDS = 1024;
/** Frames per directory entry (4 MiB of host RAM): only entries with translated code hold a table. */
const CHUNK_FRAMES = 1024;

/** One frame's blocks by word offset. */
type FrameBlocks = (Block | undefined)[];
/** One directory entry: the frames of 4 MiB of host RAM. */
type Chunk = (FrameBlocks | undefined)[];

/** An array of `length` undefined slots, packed (so V8 keeps fast elements). */
function emptySlots<T>(length: number): (T | undefined)[] {
  const slots: (T | undefined)[] = [];
  for (let i = 0; i < length; i++) slots.push(undefined);
  return slots;
}
/** Execution counters, hashed by host word address (collisions only make a block hot a little early). */
const HOT_COUNTERS = 1 << 16;

/** Counters for benchmarks and debugging. */
export interface BlockCacheStats {
  /** Blocks translated (including markers). */
  translated: number;
  /** Frames whose blocks were dropped because this hart stored into them. */
  frameInvalidations: number;
  /** Blocks checked against memory after a FENCE.I (or a remote one). */
  revalidations: number;
  /** Blocks dropped because their code changed. */
  stale: number;
}

/**
 * A hart's translated blocks, keyed by the host offset (that is, the physical address) of their first
 * instruction, so they survive address-space switches and serve every virtual alias of the same code.
 *
 * Invalidation has two halves. Stores by this hart into a frame holding blocks drop the whole frame at once (the
 * hart keeps such frames out of its write TLB, so those stores reach the slow path). Everything else that can
 * change code (other harts, devices writing RAM, the VMM) is covered by FENCE.I, which RISC-V requires before
 * such code runs: it only bumps `epoch`, and each block compares its words with memory the next time it is
 * entered, which is far cheaper than translating again (Linux issues FENCE.I every time it maps a fresh
 * executable page).
 */
export class BlockCache {
  /**
   * Per 4 MiB of host RAM, per frame: its blocks by word offset; undefined where there are none. Two levels, so
   * a hart costs memory only for the frames it translated code in, however large host RAM is.
   */
  private readonly directory: (Chunk | undefined)[];
  /** Execution counts of untranslated block starts. */
  readonly hot = new Int32Array(HOT_COUNTERS);
  readonly hotMask = HOT_COUNTERS - 1;
  /** Bumped by FENCE.I: blocks from an older epoch are checked against memory before they run. */
  epoch = 0;
  readonly stats: BlockCacheStats = { translated: 0, frameInvalidations: 0, revalidations: 0, stale: 0 };

  /** `frameCount`: 4 KiB frames in the host RAM buffer the hart's views cover. */
  constructor(frameCount: number) {
    this.directory = emptySlots(Math.ceil(frameCount / CHUNK_FRAMES));
  }

  /** The block (or marker) starting at host offset `host`, if any. */
  lookup(host: number): Block | undefined {
    const chunk = this.directory[host >>> 22];
    if (chunk === undefined) return undefined;
    const blocks = chunk[(host >>> 12) & (CHUNK_FRAMES - 1)];
    return blocks === undefined ? undefined : blocks[(host >>> 2) & (FRAME_WORDS - 1)];
  }

  /** Drop every block and counter (reset, snapshot restore). */
  clear(): void {
    this.directory.fill(undefined);
    this.hot.fill(0);
    this.epoch = 0;
  }

  /** True when the frame at host frame number `frame` holds blocks. */
  holdsCode(frame: number): boolean {
    const chunk = this.directory[frame >>> 10];
    return chunk !== undefined && chunk[frame & (CHUNK_FRAMES - 1)] !== undefined;
  }

  /** Store `block` for host offset `host`; returns true when its frame held no blocks before. */
  add(host: number, block: Block): boolean {
    const frame = host >>> 12;
    let chunk = this.directory[frame >>> 10];
    if (chunk === undefined) {
      chunk = emptySlots(CHUNK_FRAMES);
      this.directory[frame >>> 10] = chunk;
    }
    let blocks = chunk[frame & (CHUNK_FRAMES - 1)];
    const fresh = blocks === undefined;
    if (blocks === undefined) {
      blocks = emptySlots(FRAME_WORDS);
      chunk[frame & (CHUNK_FRAMES - 1)] = blocks;
    }
    blocks[(host >>> 2) & (FRAME_WORDS - 1)] = block;
    this.stats.translated++;
    return fresh;
  }

  /** Drop every block of host frame `frame`. */
  dropFrame(frame: number): void {
    const chunk = this.directory[frame >>> 10];
    if (chunk !== undefined) chunk[frame & (CHUNK_FRAMES - 1)] = undefined;
    this.stats.frameInvalidations++;
  }

  /**
   * After a FENCE.I: true when `block` (at host offset `host`) still matches memory, which makes it current;
   * otherwise it is dropped and false returned.
   */
  revalidate(block: Block, host: number, mem32: Int32Array): boolean {
    this.stats.revalidations++;
    const first = host >> 2;
    const words = block.words;
    for (let i = 0; i < words.length; i++) {
      if (mem32[first + i] !== words[i]) {
        const blocks = this.directory[host >>> 22]?.[(host >>> 12) & (CHUNK_FRAMES - 1)];
        if (blocks !== undefined) blocks[(host >>> 2) & (FRAME_WORDS - 1)] = undefined;
        this.stats.stale++;
        return false;
      }
    }
    block.epoch = this.epoch;
    return true;
  }
}
