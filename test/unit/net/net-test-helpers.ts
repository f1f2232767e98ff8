import type { PortSink } from '../../../src/net/switch.ts';

/** A port sink that records every frame; `busy` makes it refuse them. */
export class RecordingSink implements PortSink {
  readonly frames: Uint8Array[] = [];
  /** The arrays as lent, for identity checks only: their bytes may have been reused since. */
  readonly lent: Uint8Array[] = [];
  busy = false;
  deliver(frame: Uint8Array): boolean {
    if (this.busy) return false;
    // Frames are lent for the call (switch.ts): a sink that keeps one copies it.
    this.frames.push(frame.slice());
    this.lent.push(frame);
    return true;
  }
  clear(): void {
    this.frames.length = 0;
    this.lent.length = 0;
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

/**
 * Reference arithmetic, written independently of the code under test: a plain RFC 1071 sum over an array of
 * 16-bit words, and frames built field by field.
 */
export function onesSum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i += 2) sum += (bytes[i] << 8) + (i + 1 < end ? bytes[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export function u16(bytes: Uint8Array, at: number): number {
  return (bytes[at] << 8) | bytes[at + 1];
}

export function u32(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

export function put16(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 8;
  bytes[at + 1] = value & 0xff;
}

export function put32(bytes: Uint8Array, at: number, value: number): void {
  put16(bytes, at, value >>> 16);
  put16(bytes, at + 2, value & 0xffff);
}

/** Sum of the TCP pseudo header (RFC 9293 3.1 / RFC 8200 8.1) for a frame's IP header at `ip`. */
export function pseudoSum(frame: Uint8Array, ip: number, v6: boolean, tcpLength: number): number {
  const addresses = v6 ? frame.subarray(ip + 8, ip + 40) : frame.subarray(ip + 12, ip + 20);
  return onesSum(addresses) + 6 + (tcpLength >>> 16) + (tcpLength & 0xffff);
}

/** True when the TCP checksum of the segment at `l4` verifies. */
export function tcpChecksumOk(frame: Uint8Array, ip: number, l4: number, v6: boolean): boolean {
  let sum = pseudoSum(frame, ip, v6, frame.length - l4) + onesSum(frame, l4);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

export interface TcpFrameOptions {
  v6?: boolean;
  vlan?: number;
  payload: number;
  flags?: number;
  seq?: number;
  id?: number;
  /** TCP options bytes (multiple of 4). */
  options?: number;
}

export const TCP_ACK = 0x10;
export const TCP_PSH = 0x08;
export const TCP_FIN = 0x01;
export const TCP_CWR = 0x80;

/**
 * A TCP frame as a guest with checksum offload sends it: every header filled in, the TCP checksum field holding
 * the folded pseudo-header sum (not complemented), payload a counting pattern.
 */
export function tcpFrame(o: TcpFrameOptions): {
  frame: Uint8Array;
  ip: number;
  l4: number;
  headerEnd: number;
} {
  const tag = o.vlan !== undefined ? 4 : 0;
  const ip = 14 + tag;
  const ipHeader = o.v6 ? 40 : 20;
  const l4 = ip + ipHeader;
  const tcpHeader = 20 + (o.options ?? 0);
  const headerEnd = l4 + tcpHeader;
  const frame = new Uint8Array(headerEnd + o.payload);
  frame.set(stationMac(2), 0);
  frame.set(stationMac(1), 6);
  if (o.vlan !== undefined) {
    put16(frame, 12, 0x8100);
    put16(frame, 14, o.vlan);
  }
  put16(frame, 12 + tag, o.v6 ? 0x86dd : 0x0800);
  if (o.v6) {
    frame[ip] = 0x60;
    put16(frame, ip + 4, frame.length - ip - 40);
    frame[ip + 6] = 6;
    frame[ip + 7] = 64;
    for (let i = 0; i < 32; i++) frame[ip + 8 + i] = 0x20 + i;
  } else {
    frame[ip] = 0x45;
    put16(frame, ip + 2, Math.min(0xffff, frame.length - ip));
    put16(frame, ip + 4, o.id ?? 0x1234);
    put16(frame, ip + 6, 0x4000); // DF
    frame[ip + 8] = 64;
    frame[ip + 9] = 6;
    put32(frame, ip + 12, 0x0a000001);
    put32(frame, ip + 16, 0x0a000002);
    put16(frame, ip + 10, ~onesSum(frame, ip, ip + 20) & 0xffff);
  }
  put16(frame, l4, 40000);
  put16(frame, l4 + 2, 5001);
  put32(frame, l4 + 4, o.seq ?? 0xfffff000);
  put32(frame, l4 + 8, 777);
  frame[l4 + 12] = (tcpHeader / 4) << 4;
  frame[l4 + 13] = o.flags ?? TCP_ACK | TCP_PSH;
  put16(frame, l4 + 14, 64000);
  for (let i = 20; i < tcpHeader; i++) frame[l4 + i] = 1; // NOP options
  for (let i = 0; i < o.payload; i++) frame[headerEnd + i] = (i * 13 + 5) & 0xff;
  let pseudo = pseudoSum(frame, ip, o.v6 ?? false, frame.length - l4);
  while (pseudo > 0xffff) pseudo = (pseudo & 0xffff) + (pseudo >>> 16);
  put16(frame, l4 + 16, pseudo);
  return { frame, ip, l4, headerEnd };
}
