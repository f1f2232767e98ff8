/**
 * IPv4 (RFC 791), UDP (RFC 768), ICMP echo (RFC 792) and ARP (RFC 826) layouts and helpers for the services on
 * the virtual network. Readers validate every length against the bytes actually present; they return null
 * rather than throw, because their input comes from guests.
 */
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETH_HEADER_BYTES,
  MAC_BYTES,
  buildFrame,
  readU16,
  readU32,
  writeU16,
  writeU32,
} from './ethernet.ts';

/**
 * IPv4 header (RFC 791 section 3.1), offsets from the start of the header:
 *   version:4 | IHL:4 @0; TOS @1; total length @2; identification @4; flags:3 | fragment offset:13 @6;
 *   TTL @8; protocol @9; header checksum @10; source @12; destination @16; options @20 (IHL*4 - 20 bytes).
 */
export const IPV4_VERSION_IHL = 0;
export const IPV4_TOTAL_LENGTH = 2;
export const IPV4_IDENTIFICATION = 4;
export const IPV4_FLAGS_FRAGMENT = 6;
export const IPV4_TTL = 8;
export const IPV4_PROTOCOL = 9;
export const IPV4_CHECKSUM = 10;
export const IPV4_SOURCE = 12;
export const IPV4_DESTINATION = 16;
/** Header without options (IHL = 5). */
export const IPV4_MIN_HEADER_BYTES = 20;
/** "More fragments" flag and fragment offset mask in the flags/fragment word. */
export const IPV4_MORE_FRAGMENTS = 0x2000;
export const IPV4_FRAGMENT_OFFSET_MASK = 0x1fff;
/** TTL of datagrams we originate (the value RFC 1700 recommends). */
export const IPV4_DEFAULT_TTL = 64;

/** Protocol numbers (IANA). */
export const IP_PROTOCOL_ICMP = 1;
export const IP_PROTOCOL_UDP = 17;

/** UDP header (RFC 768): source port @0; destination port @2; length @4; checksum @6; data @8. */
export const UDP_SOURCE_PORT = 0;
export const UDP_DESTINATION_PORT = 2;
export const UDP_LENGTH = 4;
export const UDP_CHECKSUM = 6;
export const UDP_HEADER_BYTES = 8;

/** ICMP echo (RFC 792): type @0; code @1; checksum @2; identifier @4; sequence @6; data @8. */
export const ICMP_TYPE = 0;
export const ICMP_CODE = 1;
export const ICMP_CHECKSUM = 2;
export const ICMP_ECHO_HEADER_BYTES = 8;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;

/**
 * ARP packet for Ethernet/IPv4 (RFC 826, "Packet format"): hardware type @0; protocol type @2; hardware
 * length @4; protocol length @5; opcode @6; sender MAC @8; sender IP @14; target MAC @18; target IP @24.
 */
export const ARP_HTYPE = 0;
export const ARP_PTYPE = 2;
export const ARP_HLEN = 4;
export const ARP_PLEN = 5;
export const ARP_OPCODE = 6;
export const ARP_SENDER_MAC = 8;
export const ARP_SENDER_IP = 14;
export const ARP_TARGET_MAC = 18;
export const ARP_TARGET_IP = 24;
export const ARP_PACKET_BYTES = 28;
/** ares_hrd$Ethernet (RFC 826; IANA hardware type 1). */
export const ARP_HTYPE_ETHERNET = 1;
export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;

/** 255.255.255.255, the limited broadcast address. */
export const IPV4_BROADCAST = 0xffffffff;

/** Parse dotted-quad `a.b.c.d` into an unsigned 32-bit number, or null. */
export function parseIpv4(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return null;
    const octet = Number(part);
    if (octet > 255) return null;
    value = value * 256 + octet;
  }
  return value;
}

/** Format an unsigned 32-bit address as `a.b.c.d`. */
export function formatIpv4(address: number): string {
  return [address >>> 24, (address >>> 16) & 0xff, (address >>> 8) & 0xff, address & 0xff].join('.');
}

/** The netmask of a prefix length 0..32, as unsigned 32-bit. */
export function prefixMask(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/** Sum 16-bit big-endian words into a one's-complement accumulator (RFC 1071); odd lengths pad with zero. */
export function sumWords(bytes: Uint8Array, start: number, end: number, initial: number): number {
  let sum = initial;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (bytes[i] << 8) | bytes[i + 1];
  if (i < end) sum += bytes[i] << 8;
  return sum;
}

/** Fold a {@link sumWords} accumulator to 16 bits and complement it: the checksum field's value. */
export function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** The Internet checksum (RFC 1071) of `bytes[start, end)`; 0 when computed over data that includes a valid one. */
export function internetChecksum(bytes: Uint8Array, start: number, end: number): number {
  return foldChecksum(sumWords(bytes, start, end, 0));
}

/** A validated IPv4 datagram inside a frame. */
export interface Ipv4View {
  /** Offset of the IP header in the frame. */
  readonly headerOffset: number;
  /** Offset of the payload (after options). */
  readonly payloadOffset: number;
  /** End of the datagram (total length; the frame may be padded beyond it). */
  readonly end: number;
  readonly protocol: number;
  readonly source: number;
  readonly destination: number;
}

/** Why {@link readIpv4} refused a datagram. */
export type Ipv4Problem = 'bad-ip-header' | 'bad-ip-checksum' | 'fragment';

/**
 * Validate the IPv4 header at `offset`: version 4, IHL >= 5, total length within the frame, header checksum,
 * not a fragment (services here never reassemble).
 */
export function readIpv4(frame: Uint8Array, offset: number): Ipv4View | Ipv4Problem {
  if (frame.length < offset + IPV4_MIN_HEADER_BYTES) return 'bad-ip-header';
  const versionIhl = frame[offset + IPV4_VERSION_IHL];
  const headerBytes = (versionIhl & 0x0f) * 4;
  const totalLength = readU16(frame, offset + IPV4_TOTAL_LENGTH);
  if (versionIhl >>> 4 !== 4 || headerBytes < IPV4_MIN_HEADER_BYTES) return 'bad-ip-header';
  if (totalLength < headerBytes || offset + totalLength > frame.length) return 'bad-ip-header';
  if (internetChecksum(frame, offset, offset + headerBytes) !== 0) return 'bad-ip-checksum';
  const fragment = readU16(frame, offset + IPV4_FLAGS_FRAGMENT);
  if ((fragment & IPV4_MORE_FRAGMENTS) !== 0 || (fragment & IPV4_FRAGMENT_OFFSET_MASK) !== 0)
    return 'fragment';
  return {
    headerOffset: offset,
    payloadOffset: offset + headerBytes,
    end: offset + totalLength,
    protocol: frame[offset + IPV4_PROTOCOL],
    source: readU32(frame, offset + IPV4_SOURCE),
    destination: readU32(frame, offset + IPV4_DESTINATION),
  };
}

/** Fields of an IPv4 datagram to build. */
export interface Ipv4Fields {
  readonly source: number;
  readonly destination: number;
  readonly protocol: number;
  readonly payload: Uint8Array;
  readonly ttl?: number;
}

/** Build an IPv4 datagram (no options, DF clear, identification 0) with its header checksum. */
export function buildIpv4(fields: Ipv4Fields): Uint8Array {
  const datagram = new Uint8Array(IPV4_MIN_HEADER_BYTES + fields.payload.length);
  datagram[IPV4_VERSION_IHL] = 0x45;
  writeU16(datagram, IPV4_TOTAL_LENGTH, datagram.length);
  datagram[IPV4_TTL] = fields.ttl ?? IPV4_DEFAULT_TTL;
  datagram[IPV4_PROTOCOL] = fields.protocol;
  writeU32(datagram, IPV4_SOURCE, fields.source);
  writeU32(datagram, IPV4_DESTINATION, fields.destination);
  writeU16(datagram, IPV4_CHECKSUM, internetChecksum(datagram, 0, IPV4_MIN_HEADER_BYTES));
  datagram.set(fields.payload, IPV4_MIN_HEADER_BYTES);
  return datagram;
}

/** The UDP checksum (RFC 768) of a UDP segment with its pseudo header; 0 is sent as 0xffff. */
export function udpChecksum(source: number, destination: number, segment: Uint8Array): number {
  let sum = (source >>> 16) + (source & 0xffff) + (destination >>> 16) + (destination & 0xffff);
  sum += IP_PROTOCOL_UDP + segment.length;
  const checksum = foldChecksum(sumWords(segment, 0, segment.length, sum));
  return checksum === 0 ? 0xffff : checksum;
}

/** Build a UDP segment with its checksum. */
export function buildUdp(
  source: number,
  destination: number,
  sourcePort: number,
  destinationPort: number,
  data: Uint8Array,
): Uint8Array {
  const segment = new Uint8Array(UDP_HEADER_BYTES + data.length);
  writeU16(segment, UDP_SOURCE_PORT, sourcePort);
  writeU16(segment, UDP_DESTINATION_PORT, destinationPort);
  writeU16(segment, UDP_LENGTH, segment.length);
  segment.set(data, UDP_HEADER_BYTES);
  writeU16(segment, UDP_CHECKSUM, udpChecksum(source, destination, segment));
  return segment;
}

/** Build an Ethernet frame carrying an IPv4/UDP datagram. */
export function buildUdpFrame(fields: {
  readonly dstMac: Uint8Array;
  readonly srcMac: Uint8Array;
  readonly source: number;
  readonly destination: number;
  readonly sourcePort: number;
  readonly destinationPort: number;
  readonly data: Uint8Array;
}): Uint8Array {
  const segment = buildUdp(
    fields.source,
    fields.destination,
    fields.sourcePort,
    fields.destinationPort,
    fields.data,
  );
  const datagram = buildIpv4({
    source: fields.source,
    destination: fields.destination,
    protocol: IP_PROTOCOL_UDP,
    payload: segment,
  });
  return buildFrame({ dst: fields.dstMac, src: fields.srcMac, etherType: ETHERTYPE_IPV4, payload: datagram });
}

/** Build an Ethernet frame carrying an ARP packet (RFC 826) for Ethernet/IPv4. */
export function buildArpFrame(fields: {
  readonly dstMac: Uint8Array;
  readonly opcode: number;
  readonly senderMac: Uint8Array;
  readonly senderIp: number;
  readonly targetMac: Uint8Array;
  readonly targetIp: number;
}): Uint8Array {
  const arp = new Uint8Array(ARP_PACKET_BYTES);
  writeU16(arp, ARP_HTYPE, ARP_HTYPE_ETHERNET);
  writeU16(arp, ARP_PTYPE, ETHERTYPE_IPV4);
  arp[ARP_HLEN] = MAC_BYTES;
  arp[ARP_PLEN] = 4;
  writeU16(arp, ARP_OPCODE, fields.opcode);
  arp.set(fields.senderMac.subarray(0, MAC_BYTES), ARP_SENDER_MAC);
  writeU32(arp, ARP_SENDER_IP, fields.senderIp);
  arp.set(fields.targetMac.subarray(0, MAC_BYTES), ARP_TARGET_MAC);
  writeU32(arp, ARP_TARGET_IP, fields.targetIp);
  return buildFrame({ dst: fields.dstMac, src: fields.senderMac, etherType: ETHERTYPE_ARP, payload: arp });
}

/** Offset of the ARP packet in an untagged frame. */
export const ARP_OFFSET_IN_FRAME = ETH_HEADER_BYTES;
