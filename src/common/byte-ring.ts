/**
 * A single-producer single-consumer byte ring over an Int32Array region of a control block (shared or not).
 * Layout at `base`: [0] head (next write, producer-owned), [1] tail (next read, consumer-owned),
 * then `capacity` bytes of data packed into words. Head and tail count bytes modulo 2^31; the ring holds at most
 * `capacity` bytes. Producers that may run on several threads must hold a lock around `push`.
 */
export class ByteRing {
  private readonly data: Uint8Array;

  constructor(
    private readonly block: Int32Array,
    private readonly base: number,
    readonly capacity: number,
  ) {
    if ((capacity & (capacity - 1)) !== 0) throw new RangeError('ring capacity must be a power of two');
    this.data = new Uint8Array(block.buffer, block.byteOffset + (base + 2) * 4, capacity);
  }

  /** Words a ring of `capacity` bytes needs in the control block. */
  static words(capacity: number): number {
    return 2 + Math.ceil(capacity / 4);
  }

  /** Bytes waiting to be read. */
  get size(): number {
    return (Atomics.load(this.block, this.base) - Atomics.load(this.block, this.base + 1)) & 0x7fff_ffff;
  }

  /** Bytes ever pushed, modulo 2^31 (the position the next byte will have). */
  get writePosition(): number {
    return Atomics.load(this.block, this.base);
  }

  /** Bytes ever taken, modulo 2^31 (the position of the next byte {@link shift} returns). */
  get readPosition(): number {
    return Atomics.load(this.block, this.base + 1);
  }

  /** Free space in bytes. */
  get free(): number {
    return this.capacity - this.size;
  }

  /** Append one byte; false when full (nothing written). */
  push(byte: number): boolean {
    const head = Atomics.load(this.block, this.base);
    const tail = Atomics.load(this.block, this.base + 1);
    if (((head - tail) & 0x7fff_ffff) >= this.capacity) return false;
    this.data[head & (this.capacity - 1)] = byte;
    Atomics.store(this.block, this.base, (head + 1) & 0x7fff_ffff);
    return true;
  }

  /** Append as many bytes of `bytes` as fit; returns how many were written. */
  pushMany(bytes: Uint8Array): number {
    let written = 0;
    while (written < bytes.length && this.push(bytes[written])) written++;
    return written;
  }

  /** Remove and return one byte, or -1 when empty. */
  shift(): number {
    const head = Atomics.load(this.block, this.base);
    const tail = Atomics.load(this.block, this.base + 1);
    if (head === tail) return -1;
    const byte = this.data[tail & (this.capacity - 1)];
    Atomics.store(this.block, this.base + 1, (tail + 1) & 0x7fff_ffff);
    return byte;
  }

  /** Remove and return everything waiting (empty array when nothing). */
  drain(): Uint8Array {
    const n = this.size;
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.shift();
    return out;
  }
}
