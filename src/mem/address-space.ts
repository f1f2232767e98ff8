import type { WasmMemory } from '../common/wasm-api.ts';
import { FRAME_SHIFT, FRAME_SIZE } from './host-ram.ts';

/** Guest-physical base of RAM on the virt board. */
export const RAM_BASE = 0x8000_0000;

/**
 * What a VM's threads need to rebuild its address space: the host RAM buffer and the page table (guest page
 * index -> host byte offset of its frame). Both are shared, so every vCPU worker sees the same mapping.
 */
export interface AddressSpaceInit {
  readonly ram: ArrayBufferLike;
  /** The WebAssembly.Memory whose buffer `ram` is (host RAM's), for the harts' WebAssembly tier. */
  readonly memory?: WasmMemory;
  readonly table: Int32Array;
  readonly ramBase: number;
  readonly ramSize: number;
}

/**
 * One VM's guest-physical memory: RAM at `[ramBase, ramBase + ramSize)`, mapped page by page to host frames.
 * Accesses outside that range are not RAM (the board routes them to devices or faults them).
 *
 * The typed-array views cover the whole host buffer; only offsets from `table` are ever used to index them, so
 * a VM reaches only its own frames.
 */
export class AddressSpace {
  readonly ram: ArrayBufferLike;
  readonly memory: WasmMemory | undefined;
  readonly table: Int32Array;
  readonly ramBase: number;
  readonly ramSize: number;
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly i32: Int32Array;

  constructor(init: AddressSpaceInit) {
    this.ram = init.ram;
    this.memory = init.memory;
    this.table = init.table;
    this.ramBase = init.ramBase >>> 0;
    this.ramSize = init.ramSize;
    // Fixed-length views over the buffer as it is now (host RAM may be growable; this VM's frames are already
    // inside it, and fixed-length views keep the interpreter's element accesses cheap).
    const bytes = init.ram.byteLength;
    this.u8 = new Uint8Array(init.ram, 0, bytes);
    // (Divided, not shifted: a 2 GiB buffer's length is 2^31, negative as an int32.)
    this.u16 = new Uint16Array(init.ram, 0, Math.floor(bytes / 2));
    this.i32 = new Int32Array(init.ram, 0, Math.floor(bytes / 4));
  }

  /** Build the page table for `frames` (host frame numbers in guest order), in shared memory if `shared`. */
  static tableFor(frames: Int32Array, shared: boolean): Int32Array {
    const buffer = shared ? new SharedArrayBuffer(frames.length * 4) : new ArrayBuffer(frames.length * 4);
    const table = new Int32Array(buffer);
    for (let i = 0; i < frames.length; i++) table[i] = frames[i] * FRAME_SIZE;
    return table;
  }

  /** The data a worker needs to rebuild this address space. */
  get init(): AddressSpaceInit {
    return {
      ram: this.ram,
      ...(this.memory ? { memory: this.memory } : {}),
      table: this.table,
      ramBase: this.ramBase,
      ramSize: this.ramSize,
    };
  }

  /** True when `[gpa, gpa + length)` lies entirely in RAM. */
  isRam(gpa: number, length: number): boolean {
    const offset = (gpa - this.ramBase) >>> 0;
    return offset < this.ramSize && length <= this.ramSize - offset;
  }

  /** Host byte offset of guest-physical `gpa`, or -1 when it is not RAM. */
  hostOffset(gpa: number): number {
    const offset = (gpa - this.ramBase) >>> 0;
    if (offset >= this.ramSize) return -1;
    return this.table[offset >>> FRAME_SHIFT] + (offset & (FRAME_SIZE - 1));
  }

  /** Copy guest RAM `[gpa, gpa + dst.length)` into `dst`. False (and nothing copied) when not all RAM. */
  read(gpa: number, dst: Uint8Array): boolean {
    if (!this.isRam(gpa, dst.length)) return false;
    let done = 0;
    while (done < dst.length) {
      const host = this.hostOffset((gpa + done) >>> 0);
      const chunk = Math.min(dst.length - done, FRAME_SIZE - (host & (FRAME_SIZE - 1)));
      dst.set(this.u8.subarray(host, host + chunk), done);
      done += chunk;
    }
    return true;
  }

  /** Copy `src` into guest RAM at `gpa`. False (and nothing written) when not all RAM. */
  write(gpa: number, src: Uint8Array): boolean {
    if (!this.isRam(gpa, src.length)) return false;
    let done = 0;
    while (done < src.length) {
      const host = this.hostOffset((gpa + done) >>> 0);
      const chunk = Math.min(src.length - done, FRAME_SIZE - (host & (FRAME_SIZE - 1)));
      this.u8.set(src.subarray(done, done + chunk), host);
      done += chunk;
    }
    return true;
  }

  /** Fill guest RAM `[gpa, gpa + length)` with `value`. False when not all RAM. */
  fill(gpa: number, length: number, value: number): boolean {
    if (!this.isRam(gpa, length)) return false;
    let done = 0;
    while (done < length) {
      const host = this.hostOffset((gpa + done) >>> 0);
      const chunk = Math.min(length - done, FRAME_SIZE - (host & (FRAME_SIZE - 1)));
      this.u8.fill(value, host, host + chunk);
      done += chunk;
    }
    return true;
  }

  /** Read a little-endian u8/u16/u32 at `gpa` (any alignment). Returns -1 when not RAM (u32 results are >>> 0). */
  readU8(gpa: number): number {
    const host = this.hostOffset(gpa);
    return host < 0 ? -1 : this.u8[host];
  }

  readU16(gpa: number): number {
    if (!this.isRam(gpa, 2)) return -1;
    return this.readU8(gpa) | (this.readU8((gpa + 1) >>> 0) << 8);
  }

  readU32(gpa: number): number {
    if (!this.isRam(gpa, 4)) return -1;
    if ((gpa & 3) === 0) return this.i32[this.hostOffset(gpa) >> 2] >>> 0;
    return (this.readU16(gpa) | (this.readU16((gpa + 2) >>> 0) << 16)) >>> 0;
  }

  /** Write a little-endian u8/u16/u32 at `gpa`. False when not RAM. */
  writeU8(gpa: number, value: number): boolean {
    const host = this.hostOffset(gpa);
    if (host < 0) return false;
    this.u8[host] = value;
    return true;
  }

  writeU16(gpa: number, value: number): boolean {
    if (!this.isRam(gpa, 2)) return false;
    this.writeU8(gpa, value & 0xff);
    this.writeU8((gpa + 1) >>> 0, (value >>> 8) & 0xff);
    return true;
  }

  writeU32(gpa: number, value: number): boolean {
    if (!this.isRam(gpa, 4)) return false;
    if ((gpa & 3) === 0) {
      this.i32[this.hostOffset(gpa) >> 2] = value;
      return true;
    }
    this.writeU16(gpa, value & 0xffff);
    this.writeU16((gpa + 2) >>> 0, (value >>> 16) & 0xffff);
    return true;
  }
}
