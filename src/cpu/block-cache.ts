import type { BlockFunction } from './block-translator.ts';

/** One translated block (or a marker that the instruction at its address is left to the interpreter). */
export interface Block {
  /** Instructions in the block; 0 for a marker. */
  readonly len: number;
  /** The instruction words the translation depends on (see {@link planBlock}). */
  readonly words: Int32Array;
  /** The translation; null for a marker. */
  readonly run: BlockFunction | null;
  /** The cache's code epoch when `words` were last known to match memory. */
  epoch: number;
}

/** Words per 4 KiB frame: a frame's blocks are indexed by the word offset of their first instruction. */
const FRAME_WORDS = 1024;
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
  /** Per host frame: its blocks by word offset, or undefined when the frame holds none. */
  readonly frames: (Array<Block | undefined> | undefined)[] = [];
  /** Execution counts of untranslated block starts. */
  readonly hot = new Int32Array(HOT_COUNTERS);
  readonly hotMask = HOT_COUNTERS - 1;
  /** Bumped by FENCE.I: blocks from an older epoch are checked against memory before they run. */
  epoch = 0;
  readonly stats: BlockCacheStats = { translated: 0, frameInvalidations: 0, revalidations: 0, stale: 0 };

  /** `frameCount`: 4 KiB frames in the host RAM buffer the hart's views cover. */
  constructor(frameCount: number) {
    for (let i = 0; i < frameCount; i++) this.frames.push(undefined);
  }

  /** Drop every block and counter (reset, snapshot restore). */
  clear(): void {
    this.frames.fill(undefined);
    this.hot.fill(0);
    this.epoch = 0;
  }

  /** True when the frame at host frame number `frame` holds blocks. */
  holdsCode(frame: number): boolean {
    return this.frames[frame] !== undefined;
  }

  /** Store `block` for host offset `host`; returns true when its frame held no blocks before. */
  add(host: number, block: Block): boolean {
    const frame = host >>> 12;
    let blocks = this.frames[frame];
    const fresh = blocks === undefined;
    if (blocks === undefined) {
      blocks = [];
      for (let i = 0; i < FRAME_WORDS; i++) blocks.push(undefined);
      this.frames[frame] = blocks;
    }
    blocks[(host >>> 2) & (FRAME_WORDS - 1)] = block;
    this.stats.translated++;
    return fresh;
  }

  /** Drop every block of host frame `frame`. */
  dropFrame(frame: number): void {
    this.frames[frame] = undefined;
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
        const blocks = this.frames[host >>> 12];
        if (blocks !== undefined) blocks[(host >>> 2) & (FRAME_WORDS - 1)] = undefined;
        this.stats.stale++;
        return false;
      }
    }
    block.epoch = this.epoch;
    return true;
  }
}
