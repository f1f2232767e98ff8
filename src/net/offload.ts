/**
 * Checksum and TCP segmentation offload on the virtual network: checking what a sender asks for, and doing
 * the work for receivers that do not take it as it is.
 *
 * A guest whose virtio-net card offers checksum offload (VIRTIO_NET_F_CSUM) and TSO (HOST_TSO4/6) hands over
 * frames with the transport checksum left partial and TCP "super-frames" of up to 64 KiB with one set of
 * headers: the guest's TCP stack runs once per 64 KiB instead of once per 1448 bytes, and sums no payload.
 * The switch carries such a frame as it is to a receiver that accepts it (a guest whose card negotiated
 * GUEST_CSUM/GUEST_TSO4/6: two guests in one page exchange super-frames end to end, as two VMs on one Linux
 * bridge do) and finishes it here for every other receiver: complete the checksum, cut the super-frame into
 * MTU-sized segments with their own IP and TCP headers and checksums, exactly as the guest would have.
 *
 * Everything in a {@link FrameOffload} comes from a guest or another tab, so {@link checkOffload} validates it
 * against the frame's own headers before the switch acts on it.
 */
import { MAX_SUPER_FRAME_BYTES, type FrameOffload, type OffloadSupport } from '../common/frame-offload.ts';
import {
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_VLAN,
  ETH_HEADER_BYTES,
  ETH_MTU,
  ETH_TYPE_OFFSET,
  VLAN_TAG_BYTES,
  readU16,
  readU32,
  writeU16,
  writeU32,
} from './ethernet.ts';
import {
  IPV4_CHECKSUM,
  IPV4_DESTINATION,
  IPV4_FLAGS_FRAGMENT,
  IPV4_FRAGMENT_OFFSET_MASK,
  IPV4_IDENTIFICATION,
  IPV4_MIN_HEADER_BYTES,
  IPV4_MORE_FRAGMENTS,
  IPV4_PROTOCOL,
  IPV4_SOURCE,
  IPV4_TOTAL_LENGTH,
  IPV4_VERSION_IHL,
  foldChecksum,
  sumWords,
} from './ipv4.ts';

/** IP protocol number of TCP (RFC 9293). */
export const IP_PROTOCOL_TCP = 6;
/** The fixed IPv6 header (RFC 8200 section 3): payload length @4, next header @6, source @8, destination @24. */
export const IPV6_HEADER_BYTES = 40;
const IPV6_PAYLOAD_LENGTH = 4;
const IPV6_NEXT_HEADER = 6;
const IPV6_SOURCE = 8;
/** TCP header (RFC 9293 section 3.1): sequence number @4, data offset @12 (high nibble), flags @13, checksum @16. */
const TCP_SEQUENCE = 4;
const TCP_DATA_OFFSET = 12;
const TCP_FLAGS = 13;
/** Offset of the TCP checksum in its header: the `csumOffset` a TCP frame carries. */
export const TCP_CHECKSUM_OFFSET = 16;
const TCP_MIN_HEADER_BYTES = 20;
const TCP_FLAG_FIN = 0x01;
const TCP_FLAG_PSH = 0x08;
const TCP_FLAG_CWR = 0x80;
/** The largest IPv4 datagram, and the largest IPv6 payload without jumbograms. */
const IP_MAX_LENGTH = 0xffff;

/** The largest super-frame accepted (see {@link MAX_SUPER_FRAME_BYTES}). */
export const GSO_MAX_FRAME = MAX_SUPER_FRAME_BYTES;
/**
 * The smallest segment size accepted. Linux never sends an MSS below 48 bytes (`tcp_min_snd_mss`); the floor
 * bounds the segments one super-frame can turn into (at most 64 KiB / 32 = 2048).
 */
export const GSO_MIN_SEGMENT = 32;

/** A frame that needs nothing: what a frame without offload information means. */
export const FINISHED: FrameOffload = {
  csumStart: -1,
  csumOffset: 0,
  gso: 'none',
  gsoSize: 0,
  dataValid: false,
};

/** A finished frame whose checksums the host computed or checked: what a receiver taking checksum offload is told. */
export const CHECKSUMS_VALID: FrameOffload = { ...FINISHED, dataValid: true };

/** True when `offload` asks for no work and carries no hint. */
export function isFinished(offload: FrameOffload): boolean {
  return offload.csumStart < 0 && offload.gso === 'none' && !offload.dataValid;
}

/** Offset and EtherType of the network header, past at most one 802.1Q tag. */
function networkHeader(frame: Uint8Array): { offset: number; etherType: number } | undefined {
  if (frame.length < ETH_HEADER_BYTES) return undefined;
  const outer = readU16(frame, ETH_TYPE_OFFSET);
  if (outer !== ETHERTYPE_VLAN) return { offset: ETH_HEADER_BYTES, etherType: outer };
  if (frame.length < ETH_HEADER_BYTES + VLAN_TAG_BYTES) return undefined;
  return {
    offset: ETH_HEADER_BYTES + VLAN_TAG_BYTES,
    etherType: readU16(frame, ETH_TYPE_OFFSET + VLAN_TAG_BYTES),
  };
}

/**
 * Check the offload a sender attached to `frame` against the frame's headers. Returns the offload to act on
 * (normalized: unused fields zero) or why it is refused. A TCP super-frame must be one unfragmented TCP segment
 * directly behind an IPv4 or IPv6 header (one optional VLAN tag before it), with its checksum pending at the
 * TCP checksum field, a payload, and a segment size for which every segment fits the MTU.
 */
export function checkOffload(frame: Uint8Array, offload: FrameOffload): FrameOffload | string {
  const { csumStart, csumOffset, gso, gsoSize } = offload;
  if (gso !== 'none' && gso !== 'tcp4' && gso !== 'tcp6') return 'unknown segmentation type';
  if (csumStart === -1) {
    if (gso !== 'none') return 'segmentation without a pending checksum';
    return offload.dataValid === true ? CHECKSUMS_VALID : FINISHED;
  }
  if (!Number.isInteger(csumStart) || !Number.isInteger(csumOffset) || csumOffset < 0)
    return 'checksum offsets are not non-negative integers';
  if (csumStart < ETH_HEADER_BYTES || csumStart + csumOffset + 2 > frame.length)
    return 'checksum field outside the frame';
  if (gso === 'none') return { csumStart, csumOffset, gso, gsoSize: 0, dataValid: false };

  const network = networkHeader(frame);
  if (network === undefined) return 'truncated Ethernet header';
  const l3 = network.offset;
  if (gso === 'tcp4') {
    if (network.etherType !== ETHERTYPE_IPV4) return 'TCPv4 segmentation of a frame that is not IPv4';
    if (frame.length < l3 + IPV4_MIN_HEADER_BYTES) return 'truncated IPv4 header';
    const versionIhl = frame[l3 + IPV4_VERSION_IHL];
    const headerBytes = (versionIhl & 0x0f) * 4;
    if (versionIhl >>> 4 !== 4 || headerBytes < IPV4_MIN_HEADER_BYTES) return 'bad IPv4 header';
    if (frame[l3 + IPV4_PROTOCOL] !== IP_PROTOCOL_TCP)
      return 'TCPv4 segmentation of a datagram that is not TCP';
    const fragment = readU16(frame, l3 + IPV4_FLAGS_FRAGMENT);
    if ((fragment & (IPV4_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET_MASK)) !== 0)
      return 'segmentation of an IPv4 fragment';
    if (csumStart !== l3 + headerBytes) return 'checksum start is not the TCP header';
    if (frame.length - l3 > IP_MAX_LENGTH) return 'IPv4 super-frame longer than 65535 bytes';
  } else {
    if (network.etherType !== ETHERTYPE_IPV6) return 'TCPv6 segmentation of a frame that is not IPv6';
    if (frame.length < l3 + IPV6_HEADER_BYTES) return 'truncated IPv6 header';
    if (frame[l3] >>> 4 !== 6) return 'bad IPv6 header';
    if (frame[l3 + IPV6_NEXT_HEADER] !== IP_PROTOCOL_TCP)
      return 'TCPv6 segmentation of a packet whose next header is not TCP';
    if (csumStart !== l3 + IPV6_HEADER_BYTES) return 'checksum start is not the TCP header';
    if (frame.length - l3 - IPV6_HEADER_BYTES > IP_MAX_LENGTH)
      return 'IPv6 super-frame payload longer than 65535 bytes';
  }
  if (csumOffset !== TCP_CHECKSUM_OFFSET) return 'checksum offset is not the TCP checksum';
  if (frame.length < csumStart + TCP_MIN_HEADER_BYTES) return 'truncated TCP header';
  const tcpHeaderBytes = (frame[csumStart + TCP_DATA_OFFSET] >>> 4) * 4;
  if (tcpHeaderBytes < TCP_MIN_HEADER_BYTES || csumStart + tcpHeaderBytes > frame.length)
    return 'bad TCP header length';
  if (frame.length === csumStart + tcpHeaderBytes) return 'super-frame without payload';
  if (!Number.isInteger(gsoSize) || gsoSize < GSO_MIN_SEGMENT) return `segment size below ${GSO_MIN_SEGMENT}`;
  if (csumStart - l3 + tcpHeaderBytes + gsoSize > ETH_MTU) return 'segments would exceed the MTU';
  return { csumStart, csumOffset, gso, gsoSize, dataValid: false };
}

/** True when a receiver with `support` takes a frame with `offload` as it is. */
export function acceptsOffload(support: OffloadSupport, offload: FrameOffload): boolean {
  if (offload.gso === 'tcp4') return support.csum && support.tcp4;
  if (offload.gso === 'tcp6') return support.csum && support.tcp6;
  return offload.csumStart < 0 || support.csum;
}

/**
 * Move an offload's offsets by `delta` bytes: a VLAN tag was inserted (+4) or removed (-4) in front of the
 * network header.
 */
export function shiftOffload(offload: FrameOffload, delta: number): FrameOffload {
  if (offload.csumStart < 0) return offload;
  return { ...offload, csumStart: offload.csumStart + delta };
}

/**
 * Finish a frame: the frames a receiver that takes no offload gets. A pending checksum is completed in a copy;
 * a super-frame becomes its segments. The input is not modified. `offload` must have passed
 * {@link checkOffload} for this frame.
 */
export function finishFrame(frame: Uint8Array, offload: FrameOffload): Uint8Array[] {
  if (offload.gso !== 'none') return segmentTcp(frame, offload);
  if (offload.csumStart < 0) return [frame];
  const copy = frame.slice();
  completeChecksum(copy, offload.csumStart, offload.csumOffset);
  return [copy];
}

/**
 * Complete a partial checksum in place: the field holds the pseudo-header sum; the one's-complement sum of
 * `[start, end)` (field included) is folded, complemented and stored. A result of 0 is sent as 0xffff, its
 * other representation (as RFC 768 requires for UDP; harmless for TCP).
 */
function completeChecksum(frame: Uint8Array, start: number, offset: number): void {
  const checksum = foldChecksum(sumWords(frame, start, frame.length, 0));
  writeU16(frame, start + offset, checksum === 0 ? 0xffff : checksum);
}

/** Cut a checked TCP super-frame into MTU-sized segments, each with correct headers and checksums. */
function segmentTcp(frame: Uint8Array, offload: FrameOffload): Uint8Array[] {
  const l4 = offload.csumStart;
  const v4 = offload.gso === 'tcp4';
  const ip = networkHeader(frame)!.offset;
  const headerEnd = l4 + (frame[l4 + TCP_DATA_OFFSET] >>> 4) * 4;
  const payload = frame.length - headerEnd;
  const mss = offload.gsoSize;
  const count = Math.ceil(payload / mss);
  const firstSequence = readU32(frame, l4 + TCP_SEQUENCE);
  const flags = frame[l4 + TCP_FLAGS];
  const firstId = v4 ? readU16(frame, ip + IPV4_IDENTIFICATION) : 0;
  // The pseudo header's addresses (RFC 9293 3.1, RFC 8200 8.1) are the same for every segment.
  const addressSum = v4
    ? sumWords(frame, ip + IPV4_SOURCE, ip + IPV4_DESTINATION + 4, 0)
    : sumWords(frame, ip + IPV6_SOURCE, ip + IPV6_SOURCE + 32, 0);
  const segments: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const from = headerEnd + i * mss;
    const length = Math.min(mss, frame.length - from);
    const segment = new Uint8Array(headerEnd + length);
    segment.set(frame.subarray(0, headerEnd));
    segment.set(frame.subarray(from, from + length), headerEnd);
    if (v4) {
      const headerBytes = l4 - ip;
      writeU16(segment, ip + IPV4_TOTAL_LENGTH, segment.length - ip);
      writeU16(segment, ip + IPV4_IDENTIFICATION, (firstId + i) & 0xffff);
      writeU16(segment, ip + IPV4_CHECKSUM, 0);
      writeU16(segment, ip + IPV4_CHECKSUM, foldChecksum(sumWords(segment, ip, ip + headerBytes, 0)));
    } else {
      writeU16(segment, ip + IPV6_PAYLOAD_LENGTH, segment.length - ip - IPV6_HEADER_BYTES);
    }
    writeU32(segment, l4 + TCP_SEQUENCE, (firstSequence + i * mss) >>> 0);
    let segmentFlags = flags;
    if (i > 0) segmentFlags &= ~TCP_FLAG_CWR;
    if (i < count - 1) segmentFlags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
    segment[l4 + TCP_FLAGS] = segmentFlags;
    const tcpLength = segment.length - l4;
    writeU16(segment, l4 + TCP_CHECKSUM_OFFSET, 0);
    const sum = sumWords(segment, l4, segment.length, addressSum + IP_PROTOCOL_TCP + tcpLength);
    const checksum = foldChecksum(sum);
    writeU16(segment, l4 + TCP_CHECKSUM_OFFSET, checksum === 0 ? 0xffff : checksum);
    segments.push(segment);
  }
  return segments;
}
