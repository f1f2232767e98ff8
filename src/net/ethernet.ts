/**
 * Ethernet II frames and IEEE 802.1Q VLAN tags: reading, building, MAC addresses.
 *
 * Frames here carry no FCS (virtio-net and pcap LINKTYPE_ETHERNET frames do not), so every size limit is the
 * IEEE 802.3 limit minus the 4-byte FCS.
 *
 * Frame layout (IEEE 802.3 clause 3.1.1, Ethernet II type field):
 *   dst MAC @0 (6 bytes); src MAC @6 (6 bytes); EtherType @12 (2 bytes, big-endian); payload @14.
 * With an 802.1Q tag (IEEE 802.1Q clause 9.3, 9.6) the EtherType slot holds the TPID and 4 bytes are inserted:
 *   dst @0; src @6; TPID @12; TCI @14 (PCP:3 | DEI:1 | VID:12, big-endian); EtherType @16; payload @18.
 */

/** Bytes in a MAC address (EUI-48). */
export const MAC_BYTES = 6;
/** Offset of the destination MAC in a frame. */
export const ETH_DST_OFFSET = 0;
/** Offset of the source MAC in a frame. */
export const ETH_SRC_OFFSET = 6;
/** Offset of the EtherType (or TPID of the outer tag) in a frame. */
export const ETH_TYPE_OFFSET = 12;
/** dst + src + EtherType: the smallest frame the switch accepts; anything shorter is a runt. */
export const ETH_HEADER_BYTES = 14;
/** Bytes one 802.1Q tag adds: TPID (2) + TCI (2). */
export const VLAN_TAG_BYTES = 4;
/** Offset of the TCI of the outer tag (IEEE 802.1Q clause 9.6). */
export const VLAN_TCI_OFFSET = 14;
/** The MTU every port of the switch has: the Ethernet maximum payload (IEEE 802.3 clause 3.2.7). */
export const ETH_MTU = 1500;
/** Largest untagged frame without FCS: header + MTU (1518 with FCS). */
export const ETH_MAX_UNTAGGED_FRAME = ETH_HEADER_BYTES + ETH_MTU;
/** Largest single-tagged frame without FCS (1522 with FCS, IEEE 802.3 clause 3.2.7). */
export const ETH_MAX_TAGGED_FRAME = ETH_MAX_UNTAGGED_FRAME + VLAN_TAG_BYTES;

/** EtherTypes used here (IEEE Registration Authority assignments). */
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
/** C-VLAN tag TPID (IEEE 802.1Q clause 9.5, Table 9-1). */
export const ETHERTYPE_VLAN = 0x8100;
/** S-VLAN tag TPID, provider bridging / QinQ (IEEE 802.1Q clause 9.5, Table 9-1). */
export const ETHERTYPE_QINQ = 0x88a8;
/** Pre-standard S-tag TPID still emitted by some equipment; treated as a tag so it cannot slip through. */
export const ETHERTYPE_QINQ_LEGACY = 0x9100;

/** VID 0: the frame is priority-tagged and belongs to the port's VLAN (IEEE 802.1Q clause 9.6, Table 9-2). */
export const VID_PRIORITY_TAGGED = 0;
/** VID 4095 (0xFFF): reserved, never a VLAN (IEEE 802.1Q Table 9-2). */
export const VID_RESERVED = 0xfff;
/** Lowest VID usable as a VLAN. */
export const VID_MIN = 1;
/** Highest VID usable as a VLAN. */
export const VID_MAX = 4094;
/** Mask of the VID in a TCI. */
export const TCI_VID_MASK = 0x0fff;
/** Bit of the DEI (drop eligible indicator) in a TCI. */
export const TCI_DEI_BIT = 0x1000;
/** Shift of the 3-bit PCP (priority code point) in a TCI. */
export const TCI_PCP_SHIFT = 13;

/**
 * The tags {@link parseEthernet} reads before giving up: two is every legitimate stack (S-tag + C-tag, or a
 * priority tag over a C-tag); deeper stacks are reported with `truncated` so the caller can refuse them.
 */
export const MAX_PARSED_TAGS = 4;

/** A decoded 802.1Q tag. */
export interface VlanTag {
  /** The TPID that introduced the tag (0x8100, 0x88a8 or 0x9100). */
  readonly tpid: number;
  /** Priority code point, 0..7. */
  readonly pcp: number;
  /** Drop eligible indicator. */
  readonly dei: boolean;
  /** VLAN identifier, 0..4095 (0 = priority-tagged, 4095 reserved). */
  readonly vid: number;
}

/** What {@link parseEthernet} found in a frame's header. */
export interface EthernetHeader {
  /** Tags in wire order (outermost first), at most {@link MAX_PARSED_TAGS}. */
  readonly tags: readonly VlanTag[];
  /** True when more than {@link MAX_PARSED_TAGS} tags were stacked, or the frame ended inside a tag. */
  readonly truncated: boolean;
  /** EtherType after the tags (meaningless when `truncated`). */
  readonly etherType: number;
  /** Offset of the payload after the tags and EtherType. */
  readonly payloadOffset: number;
}

/** True for the TPIDs of C-tags and S-tags: any EtherType that announces a VLAN tag. */
export function isVlanTpid(etherType: number): boolean {
  return etherType === ETHERTYPE_VLAN || etherType === ETHERTYPE_QINQ || etherType === ETHERTYPE_QINQ_LEGACY;
}

/** Read a big-endian 16-bit value. The caller guarantees `offset + 2 <= bytes.length`. */
export function readU16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset] << 8) | bytes[offset + 1];
}

/** Write a big-endian 16-bit value. */
export function writeU16(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = (value >>> 8) & 0xff;
  bytes[offset + 1] = value & 0xff;
}

/** Read a big-endian 32-bit value as unsigned. The caller guarantees `offset + 4 <= bytes.length`. */
export function readU32(bytes: Uint8Array, offset: number): number {
  return (
    ((bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3]) >>> 0
  );
}

/** Write a big-endian 32-bit value. */
export function writeU32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = (value >>> 24) & 0xff;
  bytes[offset + 1] = (value >>> 16) & 0xff;
  bytes[offset + 2] = (value >>> 8) & 0xff;
  bytes[offset + 3] = value & 0xff;
}

/** Build a TCI from its fields (IEEE 802.1Q clause 9.6). */
export function makeTci(vid: number, pcp = 0, dei = false): number {
  return ((pcp & 7) << TCI_PCP_SHIFT) | (dei ? TCI_DEI_BIT : 0) | (vid & TCI_VID_MASK);
}

/** Split a TCI into its fields. */
export function decodeTci(tpid: number, tci: number): VlanTag {
  return { tpid, pcp: tci >>> TCI_PCP_SHIFT, dei: (tci & TCI_DEI_BIT) !== 0, vid: tci & TCI_VID_MASK };
}

/** True when `vid` may be configured as a port's VLAN: 1..4094 (not 0, not 4095). */
export function isUsableVid(vid: number): boolean {
  return Number.isInteger(vid) && vid >= VID_MIN && vid <= VID_MAX;
}

/**
 * Read the tags and EtherType of a frame of at least {@link ETH_HEADER_BYTES} bytes. Reads at most
 * {@link MAX_PARSED_TAGS} tags; never reads outside the frame.
 */
export function parseEthernet(frame: Uint8Array): EthernetHeader {
  const tags: VlanTag[] = [];
  let offset = ETH_TYPE_OFFSET;
  let type = readU16(frame, offset);
  while (isVlanTpid(type)) {
    if (tags.length === MAX_PARSED_TAGS || offset + VLAN_TAG_BYTES + 2 > frame.length) {
      return { tags, truncated: true, etherType: type, payloadOffset: offset + 2 };
    }
    tags.push(decodeTci(type, readU16(frame, offset + 2)));
    offset += VLAN_TAG_BYTES;
    type = readU16(frame, offset);
  }
  return { tags, truncated: false, etherType: type, payloadOffset: offset + 2 };
}

/** The 48-bit MAC at `offset` as an integer (exact: below 2^53), handy as a map key. */
export function macKeyAt(bytes: Uint8Array, offset: number): number {
  return readU16(bytes, offset) * 0x1_0000_0000 + readU32(bytes, offset + 2);
}

/** True when the MAC at `offset` has the I/G (group) bit set: multicast or broadcast (IEEE 802 clause 8.2). */
export function isGroupMacAt(bytes: Uint8Array, offset: number): boolean {
  return (bytes[offset] & 1) !== 0;
}

/** True when the MAC at `offset` is ff:ff:ff:ff:ff:ff. */
export function isBroadcastMacAt(bytes: Uint8Array, offset: number): boolean {
  for (let i = 0; i < MAC_BYTES; i++) if (bytes[offset + i] !== 0xff) return false;
  return true;
}

/** True when the MAC at `offset` is 00:00:00:00:00:00 (never a valid station address). */
export function isZeroMacAt(bytes: Uint8Array, offset: number): boolean {
  for (let i = 0; i < MAC_BYTES; i++) if (bytes[offset + i] !== 0) return false;
  return true;
}

/**
 * True for 01:80:C2:00:00:00 .. 01:80:C2:00:00:0F, the addresses a bridge must never forward (STP, pause,
 * LACP, 802.1X, LLDP, ...; IEEE 802.1Q clause 8.6.3, Table 8-1).
 */
export function isReservedMulticastAt(bytes: Uint8Array, offset: number): boolean {
  return (
    bytes[offset] === 0x01 &&
    bytes[offset + 1] === 0x80 &&
    bytes[offset + 2] === 0xc2 &&
    bytes[offset + 3] === 0x00 &&
    bytes[offset + 4] === 0x00 &&
    (bytes[offset + 5] & 0xf0) === 0x00
  );
}

/** Format the MAC at `offset` as lower-case `aa:bb:cc:dd:ee:ff`. */
export function formatMac(bytes: Uint8Array, offset = 0): string {
  let text = '';
  for (let i = 0; i < MAC_BYTES; i++) {
    if (i > 0) text += ':';
    text += bytes[offset + i].toString(16).padStart(2, '0');
  }
  return text;
}

/** Format a MAC key from {@link macKeyAt}. */
export function formatMacKey(key: number): string {
  const bytes = new Uint8Array(MAC_BYTES);
  writeU16(bytes, 0, Math.floor(key / 0x1_0000_0000));
  writeU32(bytes, 2, key % 0x1_0000_0000);
  return formatMac(bytes);
}

const MAC_PATTERN = /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/;

/**
 * Parse `aa:bb:cc:dd:ee:ff` (or with `-` separators) into 6 bytes. Returns null for anything else, so callers
 * can produce their own message.
 */
export function parseMac(text: string): Uint8Array | null {
  if (!MAC_PATTERN.test(text)) return null;
  const bytes = new Uint8Array(MAC_BYTES);
  for (let i = 0; i < MAC_BYTES; i++) bytes[i] = parseInt(text.slice(3 * i, 3 * i + 2), 16);
  return bytes;
}

/** The broadcast address. */
export const BROADCAST_MAC: Readonly<Uint8Array> = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

/** Fields for {@link buildFrame}. */
export interface FrameFields {
  readonly dst: Uint8Array;
  readonly src: Uint8Array;
  /** Tags outermost first; each written with its own TPID (default 0x8100). */
  readonly tags?: readonly (Partial<VlanTag> & { vid: number })[];
  readonly etherType: number;
  readonly payload: Uint8Array;
}

/** Build a frame from its fields (no padding to the 60-byte minimum: virtio-net does not require it). */
export function buildFrame(fields: FrameFields): Uint8Array {
  const tags = fields.tags ?? [];
  const headerBytes = ETH_HEADER_BYTES + VLAN_TAG_BYTES * tags.length;
  const frame = new Uint8Array(headerBytes + fields.payload.length);
  frame.set(fields.dst.subarray(0, MAC_BYTES), ETH_DST_OFFSET);
  frame.set(fields.src.subarray(0, MAC_BYTES), ETH_SRC_OFFSET);
  let offset = ETH_TYPE_OFFSET;
  for (const tag of tags) {
    writeU16(frame, offset, tag.tpid ?? ETHERTYPE_VLAN);
    writeU16(frame, offset + 2, makeTci(tag.vid, tag.pcp ?? 0, tag.dei ?? false));
    offset += VLAN_TAG_BYTES;
  }
  writeU16(frame, offset, fields.etherType);
  frame.set(fields.payload, headerBytes);
  return frame;
}

/**
 * A copy of `frame` with an outer tag (`tpid`, `tci`) inserted after the source MAC, in `tagged` (exactly 4
 * bytes longer than `frame`) or a new array.
 */
export function pushVlanTag(
  frame: Uint8Array,
  tci: number,
  tpid = ETHERTYPE_VLAN,
  tagged: Uint8Array = new Uint8Array(frame.length + VLAN_TAG_BYTES),
): Uint8Array {
  if (tagged.length !== frame.length + VLAN_TAG_BYTES)
    throw new RangeError('pushVlanTag: wrong output length');
  tagged.set(frame.subarray(0, ETH_TYPE_OFFSET), 0);
  writeU16(tagged, ETH_TYPE_OFFSET, tpid);
  writeU16(tagged, VLAN_TCI_OFFSET, tci);
  tagged.set(frame.subarray(ETH_TYPE_OFFSET), ETH_TYPE_OFFSET + VLAN_TAG_BYTES);
  return tagged;
}

/**
 * A copy of `frame` without its outer tag, in `untagged` (exactly 4 bytes shorter than `frame`) or a new array.
 * The caller guarantees the frame has one.
 */
export function popVlanTag(
  frame: Uint8Array,
  untagged: Uint8Array = new Uint8Array(frame.length - VLAN_TAG_BYTES),
): Uint8Array {
  if (untagged.length !== frame.length - VLAN_TAG_BYTES)
    throw new RangeError('popVlanTag: wrong output length');
  untagged.set(frame.subarray(0, ETH_TYPE_OFFSET), 0);
  untagged.set(frame.subarray(ETH_TYPE_OFFSET + VLAN_TAG_BYTES), ETH_TYPE_OFFSET);
  return untagged;
}
