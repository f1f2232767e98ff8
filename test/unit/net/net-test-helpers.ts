import type { PortSink } from '../../../src/net/switch.ts';

/** A port sink that records every frame; `busy` makes it refuse them. */
export class RecordingSink implements PortSink {
  readonly frames: Uint8Array[] = [];
  busy = false;
  deliver(frame: Uint8Array): boolean {
    if (this.busy) return false;
    this.frames.push(frame);
    return true;
  }
  clear(): void {
    this.frames.length = 0;
  }
}

/** A unicast, locally administered MAC 02:00:00:00:hi:lo for test station `n`. */
export function stationMac(n: number): Uint8Array {
  return new Uint8Array([0x02, 0x00, 0x00, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/** Bytes from hex written with optional spaces. */
export function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, '');
  const bytes = new Uint8Array(clean.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

/** A deterministic PRNG (mulberry32) so fuzz tests are reproducible. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
}

/** A hand-written untagged IPv4-typed test frame: dst, src, 0x0800, then `payloadBytes` bytes of pattern. */
export function plainFrame(dst: Uint8Array, src: Uint8Array, payloadBytes = 46): Uint8Array {
  const frame = new Uint8Array(14 + payloadBytes);
  frame.set(dst, 0);
  frame.set(src, 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  for (let i = 0; i < payloadBytes; i++) frame[14 + i] = (i * 7 + 3) & 0xff;
  return frame;
}
