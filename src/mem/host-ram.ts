import { UserError } from '../common/errors.ts';
import { wasmApi, type WasmMemory } from '../common/wasm-api.ts';

/** Size of a host frame and of a guest page: the unit in which host RAM is handed to VMs. */
export const FRAME_SIZE = 4096;
export const FRAME_SHIFT = 12;

/** Host RAM grows in steps of at least this many bytes, so a burst of small VMs does not grow it every time. */
const GROW_STEP_BYTES = 64 << 20;

/** Bytes of one vCPU's area (its registers and software TLB; see cpu/wasm-core.ts for the layout). */
export const HART_AREA_BYTES = 7 * FRAME_SIZE;
/**
 * vCPUs that can have an area at once; more run without one (JavaScript-only interpreter). Fewer when the
 * maximum host RAM leaves no room for them below 2 GiB (see {@link HostRam}).
 */
export const HART_AREA_SLOTS = 64;
/** Host offsets stay below this: the harts compute them in int32 arithmetic. */
const HOST_LIMIT = 2 ** 31;
const WASM_PAGE = 65536;

/**
 * Host RAM: one `WebAssembly.Memory` (shared when the page is cross-origin isolated, or in Node) divided among
 * VMs in frames, so that both JavaScript and the harts' WebAssembly tier work on it. It holds `bytes` of frames
 * at first and grows on demand up to `maxBytes` (a shared memory grows in place; an unshared one is made at its
 * maximum from the start, since growing it would detach the buffer every view is built on, and the operating
 * system commits only the pages that are touched). Frames are handed out and taken back by
 * {@link HostRam.allocate} and {@link HostRam.free}; a VM reaches only the frames its own address space maps.
 * Growing never moves existing frames, so running VMs are unaffected.
 *
 * Before the frames lies a band of up to {@link HART_AREA_SLOTS} hart areas ({@link HostRam.allocateHartAreas}):
 * vCPU state that the WebAssembly tier must find in the same memory as guest RAM. No VM's table maps it. Every
 * host offset stays below 2 GiB (the harts compute them in int32 arithmetic), so a host RAM of the full 2 GiB
 * has no band, and its vCPUs run without the tier.
 */
export class HostRam {
  /** The memory; its buffer is what every view of host RAM is built on. */
  readonly memory: WasmMemory;
  /** Frames (for VMs) the buffer holds now. */
  frameCount: number;
  /** Frames (for VMs) the buffer may grow to. */
  readonly maxFrameCount: number;
  /** One bit per frame, counted from the start of the buffer (the band's frames stay set): 1 = in use. */
  private readonly used: Uint32Array;
  private freeCount: number;
  /** Where the next search for a free run starts (keeps allocation O(n) overall instead of O(n^2)). */
  private cursor: number;
  /** Hart area slots: how many, and which are in use. */
  private readonly areaSlots: number;
  private readonly areaUsed: Uint8Array;
  /** Frames of the band of hart areas; VM frames are numbered after it (frame n is at byte n * FRAME_SIZE). */
  private readonly bandFrames: number;

  constructor(bytes: number, shared: boolean, maxBytes = bytes) {
    if (
      bytes < 0 ||
      bytes % FRAME_SIZE !== 0 ||
      maxBytes < bytes ||
      maxBytes % FRAME_SIZE !== 0 ||
      maxBytes === 0 ||
      maxBytes > HOST_LIMIT
    ) {
      throw new RangeError(
        `host RAM sizes must be multiples of ${FRAME_SIZE} with 0 <= size <= maximum, 0 < maximum <= 2048 MiB`,
      );
    }
    // The band of hart areas, as many as fit below 2 GiB beside the frames (none for a full 2 GiB host RAM).
    this.areaSlots = Math.min(HART_AREA_SLOTS, Math.floor((HOST_LIMIT - maxBytes) / HART_AREA_BYTES));
    this.bandFrames = (this.areaSlots * HART_AREA_BYTES) / FRAME_SIZE;
    const bandBytes = this.bandFrames * FRAME_SIZE;
    const pages = (frameBytes: number): number => Math.ceil((bandBytes + frameBytes) / WASM_PAGE);
    const { Memory } = wasmApi();
    this.memory = shared
      ? new Memory({ initial: pages(bytes), maximum: pages(maxBytes), shared: true })
      : new Memory({ initial: pages(maxBytes), maximum: pages(maxBytes) });
    // Frames that a page rounded up to a whole WebAssembly page would add are not handed out: the sizes asked
    // for are the sizes given.
    this.frameCount = shared ? bytes / FRAME_SIZE : maxBytes / FRAME_SIZE;
    this.maxFrameCount = maxBytes / FRAME_SIZE;
    this.used = new Uint32Array(Math.ceil((this.bandFrames + this.maxFrameCount) / 32));
    for (let frame = 0; frame < this.bandFrames; frame++) this.setUsed(frame, true);
    this.freeCount = this.frameCount;
    this.cursor = this.bandFrames;
    this.areaUsed = new Uint8Array(this.areaSlots);
  }

  /** The buffer of {@link memory} as it is now (a shared memory's buffer object changes when it grows). */
  get buffer(): ArrayBufferLike {
    return this.memory.buffer;
  }

  /** Frames not yet handed out, counting those the buffer can still grow by. */
  get freeFrames(): number {
    return this.freeCount + (this.maxFrameCount - this.frameCount);
  }

  /**
   * Hand out `count` frames, preferring long contiguous runs, growing the buffer first when it must. Returns the
   * frame numbers in guest order (frame n is at byte n * FRAME_SIZE of the buffer). Throws a {@link UserError}
   * when host RAM cannot satisfy the request (nothing is allocated then).
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
    const end = this.bandFrames + this.frameCount;
    let got = 0;
    let frame = this.cursor;
    for (let scanned = 0; got < count && scanned < this.frameCount; scanned++) {
      if (!this.isUsed(frame)) {
        this.setUsed(frame, true);
        frames[got++] = frame;
      }
      frame = frame + 1 === end ? this.bandFrames : frame + 1;
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
    const pages = Math.ceil((this.bandFrames * FRAME_SIZE + bytes) / WASM_PAGE);
    const now = this.memory.buffer.byteLength / WASM_PAGE;
    if (pages > now) this.memory.grow(pages - now);
    const added = bytes / FRAME_SIZE - this.frameCount;
    this.frameCount += added;
    this.freeCount += added;
  }

  /** Take frames back (zeroing them, so the next VM never sees this one's data). */
  free(frames: Int32Array): void {
    const bytes = new Uint8Array(this.buffer);
    for (const frame of frames) {
      if (frame < this.bandFrames || !this.isUsed(frame)) throw new Error(`frame ${frame} freed twice`);
      this.setUsed(frame, false);
      bytes.fill(0, frame * FRAME_SIZE, (frame + 1) * FRAME_SIZE);
    }
    this.freeCount += frames.length;
  }

  /**
   * Reserve a hart area ({@link HART_AREA_BYTES}, zeroed) for each of `count` vCPUs: their byte offsets, as many
   * as there are free slots (possibly fewer than `count`, or none; a vCPU without one runs without the
   * WebAssembly tier).
   */
  allocateHartAreas(count: number): number[] {
    const offsets: number[] = [];
    for (let slot = 0; slot < this.areaSlots && offsets.length < count; slot++) {
      if (this.areaUsed[slot] !== 0) continue;
      this.areaUsed[slot] = 1;
      offsets.push(slot * HART_AREA_BYTES);
    }
    return offsets;
  }

  /** Give hart areas back (zeroing them). */
  freeHartAreas(offsets: readonly number[]): void {
    const bytes = new Uint8Array(this.buffer, 0, this.bandFrames * FRAME_SIZE);
    for (const offset of offsets) {
      const slot = offset / HART_AREA_BYTES;
      if (!Number.isInteger(slot) || this.areaUsed[slot] !== 1)
        throw new Error(`hart area ${offset} freed twice`);
      this.areaUsed[slot] = 0;
      bytes.fill(0, offset, offset + HART_AREA_BYTES);
    }
  }

  private isUsed(frame: number): boolean {
    return (this.used[frame >>> 5] & (1 << (frame & 31))) !== 0;
  }

  private setUsed(frame: number, value: boolean): void {
    if (value) this.used[frame >>> 5] |= 1 << (frame & 31);
    else this.used[frame >>> 5] &= ~(1 << (frame & 31));
  }
}
