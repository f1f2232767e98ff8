import { UserError } from '../common/errors.ts';

/** Size of a host frame and of a guest page: the unit in which host RAM is handed to VMs. */
export const FRAME_SIZE = 4096;
export const FRAME_SHIFT = 12;

/** Host RAM grows in steps of at least this many bytes, so a burst of small VMs does not grow it every time. */
const GROW_STEP_BYTES = 64 << 20;

interface GrowableBuffer {
  readonly byteLength: number;
  grow?(newByteLength: number): void;
  resize?(newByteLength: number): void;
}

/**
 * Host RAM: one buffer (a SharedArrayBuffer when the page is cross-origin isolated, or in Node) divided among
 * VMs in frames. It starts at `bytes` and grows on demand up to `maxBytes` (a growable SharedArrayBuffer, or a
 * resizable ArrayBuffer), so the host commits what its VMs need rather than the maximum up front. Frames are
 * handed out and taken back by {@link HostRam.allocate} and {@link HostRam.free}; a VM reaches only the frames its
 * own address space maps. Growing never moves existing frames, so running VMs are unaffected.
 */
export class HostRam {
  readonly buffer: ArrayBufferLike;
  /** Frames the buffer holds now. */
  frameCount: number;
  /** Frames the buffer may grow to. */
  readonly maxFrameCount: number;
  /** One bit per frame: 1 = in use. */
  private readonly used: Uint32Array;
  private freeCount: number;
  /** Where the next search for a free run starts (keeps allocation O(n) overall instead of O(n^2)). */
  private cursor = 0;

  constructor(bytes: number, shared: boolean, maxBytes = bytes) {
    if (
      bytes < 0 ||
      bytes % FRAME_SIZE !== 0 ||
      maxBytes < bytes ||
      maxBytes % FRAME_SIZE !== 0 ||
      maxBytes === 0
    ) {
      throw new RangeError(
        `host RAM sizes must be multiples of ${FRAME_SIZE} with 0 <= size <= maximum, maximum > 0`,
      );
    }
    const growable = maxBytes > bytes ? { maxByteLength: maxBytes } : undefined;
    // SharedArrayBuffer is only named when asked for: pages that are not cross-origin isolated lack the global.
    type Growable = new (length: number, options?: { maxByteLength: number }) => ArrayBufferLike;
    const Buffer = (shared ? SharedArrayBuffer : ArrayBuffer) as unknown as Growable;
    this.buffer = new Buffer(bytes, growable);
    this.frameCount = bytes / FRAME_SIZE;
    this.maxFrameCount = maxBytes / FRAME_SIZE;
    this.used = new Uint32Array(Math.ceil(this.maxFrameCount / 32));
    this.freeCount = this.frameCount;
  }

  /** Frames not yet handed out, counting those the buffer can still grow by. */
  get freeFrames(): number {
    return this.freeCount + (this.maxFrameCount - this.frameCount);
  }

  /**
   * Hand out `count` frames, preferring long contiguous runs, growing the buffer first when it must. Returns the
   * frame numbers in guest order. Throws a {@link UserError} when host RAM cannot satisfy the request (nothing is
   * allocated then).
   */
  allocate(count: number): Int32Array {
    if (count > this.freeFrames) {
      throw new UserError(
        `not enough host memory: ${count * (FRAME_SIZE >> 10)} KiB asked, ${this.freeFrames * (FRAME_SIZE >> 10)} KiB free; ` +
          'give the VM less memory or delete another VM',
      );
    }
    if (count > this.freeCount) this.grow(count - this.freeCount);
    const frames = new Int32Array(count);
    let got = 0;
    let frame = this.cursor;
    for (let scanned = 0; got < count && scanned < this.frameCount; scanned++) {
      if (!this.isUsed(frame)) {
        this.setUsed(frame, true);
        frames[got++] = frame;
      }
      frame = frame + 1 === this.frameCount ? 0 : frame + 1;
    }
    this.cursor = frame;
    this.freeCount -= count;
    return frames;
  }

  /** Grow the buffer by at least `frames` frames (in GROW_STEP_BYTES steps, up to the maximum). */
  private grow(frames: number): void {
    const bytes = Math.min(
      this.maxFrameCount * FRAME_SIZE,
      Math.max(this.frameCount * FRAME_SIZE + GROW_STEP_BYTES, (this.frameCount + frames) * FRAME_SIZE),
    );
    const buffer = this.buffer as unknown as GrowableBuffer;
    if (buffer.grow) buffer.grow(bytes);
    else buffer.resize?.(bytes);
    const added = bytes / FRAME_SIZE - this.frameCount;
    this.frameCount += added;
    this.freeCount += added;
  }

  /** Take frames back (zeroing them, so the next VM never sees this one's data). */
  free(frames: Int32Array): void {
    const bytes = new Uint8Array(this.buffer, 0, this.frameCount * FRAME_SIZE);
    for (const frame of frames) {
      if (!this.isUsed(frame)) throw new Error(`frame ${frame} freed twice`);
      this.setUsed(frame, false);
      bytes.fill(0, frame * FRAME_SIZE, (frame + 1) * FRAME_SIZE);
    }
    this.freeCount += frames.length;
  }

  private isUsed(frame: number): boolean {
    return (this.used[frame >>> 5] & (1 << (frame & 31))) !== 0;
  }

  private setUsed(frame: number, value: boolean): void {
    if (value) this.used[frame >>> 5] |= 1 << (frame & 31);
    else this.used[frame >>> 5] &= ~(1 << (frame & 31));
  }
}
