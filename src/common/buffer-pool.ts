/**
 * A few ArrayBuffers kept for reuse. In Chromium on a VM host a fresh buffer costs far more than the copy into
 * it (its memory is zeroed and faulted in: ~5 ms per MiB, against 0.06 ms to fill an existing one), so paths
 * that need one buffer per request take them from here and give them back when the request is done.
 */
export class BufferPool {
  readonly #spare: ArrayBuffer[] = [];

  /** Keep at most `max` buffers (the largest); a new buffer has at least `minBytes`. */
  constructor(
    private readonly max: number,
    private readonly minBytes = 0,
  ) {}

  /**
   * A buffer of at least `length` bytes: the smallest kept one that fits (so a small request leaves the large
   * buffers to large ones, as when a disk's reads and writes of different sizes share a pool), else a new one.
   */
  take(length: number): ArrayBuffer {
    // Kept largest first: the last one that fits is the smallest.
    let at = -1;
    for (let i = 0; i < this.#spare.length && this.#spare[i].byteLength >= length; i++) at = i;
    return at >= 0 ? this.#spare.splice(at, 1)[0] : new ArrayBuffer(Math.max(length, this.minBytes));
  }

  /** A buffer nobody uses any more, kept if it is among the largest (a resizable one never is). */
  give(buffer: ArrayBuffer): void {
    if ((buffer as { resizable?: boolean }).resizable === true) return;
    this.#spare.push(buffer);
    this.#spare.sort((a, b) => b.byteLength - a.byteLength);
    this.#spare.length = Math.min(this.#spare.length, this.max);
  }
}
