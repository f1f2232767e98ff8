import { UserError } from '../common/errors.ts';

/** Size of a host frame and of a guest page: the unit in which host RAM is handed to VMs. */
export const FRAME_SIZE = 4096;
export const FRAME_SHIFT = 12;

/**
 * Host RAM: one buffer (a SharedArrayBuffer when the page is cross-origin isolated, or in Node) reserved up
 * front and divided among VMs in frames. Frames are handed out and taken back by {@link HostRam.allocate} and
 * {@link HostRam.free}; a VM reaches only the frames its own address space maps.
 */
export class HostRam {
  readonly buffer: ArrayBufferLike;
  readonly frameCount: number;
  /** One bit per frame: 1 = in use. */
  private readonly used: Uint32Array;
  private freeCount: number;
  /** Where the next search for a free run starts (keeps allocation O(n) overall instead of O(n^2)). */
  private cursor = 0;

  constructor(bytes: number, shared: boolean) {
    if (bytes <= 0 || bytes % FRAME_SIZE !== 0) {
      throw new RangeError(`host RAM size must be a positive multiple of ${FRAME_SIZE}`);
    }
    this.buffer = shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
    this.frameCount = bytes / FRAME_SIZE;
    this.used = new Uint32Array(Math.ceil(this.frameCount / 32));
    this.freeCount = this.frameCount;
  }

  /** Frames not yet handed out. */
  get freeFrames(): number {
    return this.freeCount;
  }

  /**
   * Hand out `count` frames, preferring long contiguous runs. Returns the frame numbers in guest order.
   * Throws a {@link UserError} when host RAM cannot satisfy the request (nothing is allocated then).
   */
  allocate(count: number): Int32Array {
    if (count > this.freeCount) {
      throw new UserError(
        `not enough host memory: ${count * (FRAME_SIZE >> 10)} KiB asked, ${this.freeCount * (FRAME_SIZE >> 10)} KiB free; ` +
          'give the VM less memory or delete another VM',
      );
    }
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

  /** Take frames back (zeroing them, so the next VM never sees this one's data). */
  free(frames: Int32Array): void {
    const bytes = new Uint8Array(this.buffer);
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
