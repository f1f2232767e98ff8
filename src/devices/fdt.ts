/**
 * Flattened devicetree (DTB) writer and reader, per the Devicetree Specification v0.4, chapter 5 "Flattened
 * Devicetree (DTB) Format". All multi-byte fields are big-endian.
 *
 * Blob layout written here (half-open byte ranges):
 *   [0, 40)                        header (5.2)
 *   [40, rsv)                      padding to 8 bytes, then the memory reservation block (5.3): {u64 address,
 *                                  u64 size} entries ending with an all-zero entry
 *   [structOffset, +structSize)    structure block (5.4): tokens, 4-byte aligned
 *   [stringsOffset, +stringsSize)  strings block (5.5): NUL-terminated property names, each stored once
 */

/** Header field byte offsets (5.2, "struct fdt_header"). */
const HDR_MAGIC = 0;
const HDR_TOTALSIZE = 4;
const HDR_OFF_DT_STRUCT = 8;
const HDR_OFF_DT_STRINGS = 12;
const HDR_OFF_MEM_RSVMAP = 16;
const HDR_VERSION = 20;
const HDR_LAST_COMP_VERSION = 24;
const HDR_BOOT_CPUID_PHYS = 28;
const HDR_SIZE_DT_STRINGS = 32;
const HDR_SIZE_DT_STRUCT = 36;
const HEADER_SIZE = 40;

/** The DTB magic number. */
export const FDT_MAGIC = 0xd00d_feed;
/** The version we write, and the oldest version a reader of ours must understand. */
export const FDT_VERSION = 17;
export const FDT_LAST_COMP_VERSION = 16;

/** Structure block tokens (5.4.1). */
const FDT_BEGIN_NODE = 0x1;
const FDT_END_NODE = 0x2;
const FDT_PROP = 0x3;
const FDT_NOP = 0x4;
const FDT_END = 0x9;

/** Names are at most 31 characters (2.2.1 node names; 2.2.4 property names). */
const MAX_NAME_LENGTH = 31;
/** Nesting limit when parsing, so a malicious blob cannot recurse without bound. */
const MAX_PARSE_DEPTH = 64;

/** One memory reservation (5.3): `[address, address + size)` the client must not use. Numbers below 2^53. */
export interface FdtReservation {
  readonly address: number;
  readonly size: number;
}

/** A property: its name and raw big-endian value bytes. */
export interface FdtProperty {
  readonly name: string;
  readonly value: Uint8Array;
}

/**
 * A devicetree node: build a tree with the typed property setters and {@link FdtNode.child}, then encode it
 * with {@link encodeFdt}; {@link decodeFdt} gives back the same structure with the typed getters.
 */
export class FdtNode {
  readonly properties: FdtProperty[] = [];
  readonly children: FdtNode[] = [];

  /** `name` is `node-name[@unit-address]`; the root's name is the empty string. */
  constructor(readonly name: string) {}

  /** Add and return a child node called `name`. */
  child(name: string): FdtNode {
    checkName(name, 'node');
    if (this.children.some((c) => c.name === name)) throw new Error(`duplicate devicetree node ${name}`);
    const node = new FdtNode(name);
    this.children.push(node);
    return node;
  }

  /** Set property `name` to raw `value` bytes (replacing an earlier value). */
  bytes(name: string, value: Uint8Array): this {
    checkName(name, 'property');
    const index = this.properties.findIndex((p) => p.name === name);
    const property = { name, value: value.slice() };
    if (index >= 0) this.properties[index] = property;
    else this.properties.push(property);
    return this;
  }

  /** An empty (boolean) property such as `interrupt-controller`. */
  empty(name: string): this {
    return this.bytes(name, new Uint8Array(0));
  }

  /** One 32-bit cell. */
  u32(name: string, value: number): this {
    return this.cells(name, [value]);
  }

  /** A 64-bit value as two cells, high first. `value` is a non-negative integer below 2^53 or a bigint. */
  u64(name: string, value: number | bigint): this {
    const big = BigInt(value);
    if (big < 0n || big >= 1n << 64n) throw new RangeError(`${name}: ${value} does not fit in 64 bits`);
    return this.cells(name, [Number(big >> 32n), Number(big & 0xffff_ffffn)]);
  }

  /** A list of 32-bit cells (`<a b c>` in source form). */
  cells(name: string, values: readonly number[]): this {
    const value = new Uint8Array(values.length * 4);
    const view = new DataView(value.buffer);
    values.forEach((v, i) => {
      if (!Number.isInteger(v) || v < -0x8000_0000 || v > 0xffff_ffff) {
        throw new RangeError(`${name}: cell ${v} is not a 32-bit integer`);
      }
      view.setUint32(i * 4, v >>> 0);
    });
    return this.bytes(name, value);
  }

  /** A NUL-terminated string. */
  string(name: string, value: string): this {
    return this.strings(name, [value]);
  }

  /** A string list (`"a", "b"`): each string NUL-terminated, concatenated. */
  strings(name: string, values: readonly string[]): this {
    const parts = values.map((v) => {
      if (v.includes('\0')) throw new RangeError(`${name}: a devicetree string may not contain NUL`);
      return encodeUtf8(v);
    });
    const value = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
    let at = 0;
    for (const p of parts) {
      value.set(p, at);
      at += p.length + 1;
    }
    return this.bytes(name, value);
  }

  /** Give this node phandle `value` (a `phandle` property) so others can reference it. */
  phandle(value: number): this {
    if (!Number.isInteger(value) || value < 1 || value > 0xffff_fffe) {
      throw new RangeError('a phandle is a 32-bit value other than 0 and 0xffffffff');
    }
    return this.u32('phandle', value);
  }

  /** The raw value of property `name`, or undefined. */
  get(name: string): Uint8Array | undefined {
    return this.properties.find((p) => p.name === name)?.value;
  }

  /** True when property `name` exists. */
  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** Property `name` as a list of unsigned 32-bit cells (undefined when absent or not a multiple of 4 bytes). */
  getCells(name: string): number[] | undefined {
    const value = this.get(name);
    if (value === undefined || value.length % 4 !== 0) return undefined;
    const view = new DataView(value.buffer, value.byteOffset, value.length);
    const out: number[] = [];
    for (let i = 0; i < value.length; i += 4) out.push(view.getUint32(i));
    return out;
  }

  /** Property `name` as one unsigned 32-bit cell. */
  getU32(name: string): number | undefined {
    const cells = this.getCells(name);
    return cells !== undefined && cells.length === 1 ? cells[0] : undefined;
  }

  /** Property `name` as a 64-bit value of two cells (as a number; exact below 2^53). */
  getU64(name: string): number | undefined {
    const cells = this.getCells(name);
    return cells !== undefined && cells.length === 2 ? cells[0] * 0x1_0000_0000 + cells[1] : undefined;
  }

  /** Property `name` as a string list (undefined when absent or not NUL-terminated). */
  getStrings(name: string): string[] | undefined {
    const value = this.get(name);
    if (value === undefined || value.length === 0 || value[value.length - 1] !== 0) return undefined;
    return decodeUtf8(value.subarray(0, value.length - 1)).split('\0');
  }

  /** Property `name` as one string. */
  getString(name: string): string | undefined {
    return this.getStrings(name)?.[0];
  }

  /** The node at `path` below this one (`"cpus/cpu@0"`; a leading `/` is ignored), or undefined. */
  find(path: string): FdtNode | undefined {
    const parts = path.split('/').filter((part) => part !== '');
    return parts.reduce<FdtNode | undefined>(
      (node, part) => node?.children.find((c) => c.name === part),
      this,
    );
  }

  /** The node in this subtree whose `phandle` property is `phandle`, or undefined. */
  findByPhandle(phandle: number): FdtNode | undefined {
    if (this.getU32('phandle') === phandle) return this;
    for (const c of this.children) {
      const found = c.findByPhandle(phandle);
      if (found !== undefined) return found;
    }
    return undefined;
  }
}

/** Options for {@link encodeFdt}. */
export interface FdtEncodeOptions {
  /** Physical id of the boot CPU (header `boot_cpuid_phys`); default 0. */
  readonly bootCpuId?: number;
  /** Memory reservation entries; default none. */
  readonly reservations?: readonly FdtReservation[];
}

/** Encode the tree under `root` (whose name must be empty) as a DTB. */
export function encodeFdt(root: FdtNode, options: FdtEncodeOptions = {}): Uint8Array {
  if (root.name !== '') throw new Error('the devicetree root node has an empty name');
  const strings = new StringTable();
  const struct = new ByteWriter();
  writeNode(root, struct, strings);
  struct.u32(FDT_END);

  const reservations = options.reservations ?? [];
  const rsvOffset = align(HEADER_SIZE, 8);
  const rsvSize = (reservations.length + 1) * 16;
  const structOffset = align(rsvOffset + rsvSize, 4);
  const structBytes = struct.finish();
  const stringsOffset = structOffset + structBytes.length;
  const stringsBytes = strings.finish();
  const total = stringsOffset + stringsBytes.length;

  const blob = new Uint8Array(total);
  const view = new DataView(blob.buffer);
  view.setUint32(HDR_MAGIC, FDT_MAGIC);
  view.setUint32(HDR_TOTALSIZE, total);
  view.setUint32(HDR_OFF_DT_STRUCT, structOffset);
  view.setUint32(HDR_OFF_DT_STRINGS, stringsOffset);
  view.setUint32(HDR_OFF_MEM_RSVMAP, rsvOffset);
  view.setUint32(HDR_VERSION, FDT_VERSION);
  view.setUint32(HDR_LAST_COMP_VERSION, FDT_LAST_COMP_VERSION);
  view.setUint32(HDR_BOOT_CPUID_PHYS, options.bootCpuId ?? 0);
  view.setUint32(HDR_SIZE_DT_STRINGS, stringsBytes.length);
  view.setUint32(HDR_SIZE_DT_STRUCT, structBytes.length);
  reservations.forEach((r, i) => {
    setU64(view, rsvOffset + i * 16, r.address);
    setU64(view, rsvOffset + i * 16 + 8, r.size);
  });
  blob.set(structBytes, structOffset);
  blob.set(stringsBytes, stringsOffset);
  return blob;
}

/** The parts of a DTB header a reader may want to check. */
export interface FdtHeader {
  readonly magic: number;
  readonly totalSize: number;
  readonly structOffset: number;
  readonly stringsOffset: number;
  readonly reservationsOffset: number;
  readonly version: number;
  readonly lastCompatibleVersion: number;
  readonly bootCpuId: number;
  readonly stringsSize: number;
  readonly structSize: number;
}

/** A decoded DTB. */
export interface DecodedFdt {
  readonly header: FdtHeader;
  readonly reservations: FdtReservation[];
  readonly root: FdtNode;
}

/**
 * Decode a DTB. Every offset and length is checked against the blob; a malformed blob throws an Error that says
 * what is wrong (never reads out of bounds, never loops without bound).
 */
export function decodeFdt(blob: Uint8Array): DecodedFdt {
  if (blob.length < HEADER_SIZE) throw new Error('devicetree blob shorter than its header');
  const view = new DataView(blob.buffer, blob.byteOffset, blob.length);
  const header: FdtHeader = {
    magic: view.getUint32(HDR_MAGIC),
    totalSize: view.getUint32(HDR_TOTALSIZE),
    structOffset: view.getUint32(HDR_OFF_DT_STRUCT),
    stringsOffset: view.getUint32(HDR_OFF_DT_STRINGS),
    reservationsOffset: view.getUint32(HDR_OFF_MEM_RSVMAP),
    version: view.getUint32(HDR_VERSION),
    lastCompatibleVersion: view.getUint32(HDR_LAST_COMP_VERSION),
    bootCpuId: view.getUint32(HDR_BOOT_CPUID_PHYS),
    stringsSize: view.getUint32(HDR_SIZE_DT_STRINGS),
    structSize: view.getUint32(HDR_SIZE_DT_STRUCT),
  };
  if (header.magic !== FDT_MAGIC) throw new Error('not a devicetree blob (bad magic)');
  if (header.lastCompatibleVersion > FDT_VERSION) {
    throw new Error(`devicetree blob needs a version ${header.lastCompatibleVersion} reader`);
  }
  if (header.totalSize > blob.length)
    throw new Error('devicetree blob truncated (totalsize beyond the data)');
  const end = header.totalSize;
  const within = (offset: number, size: number): boolean => offset <= end && size <= end - offset;
  if (!within(header.structOffset, header.structSize) || !within(header.stringsOffset, header.stringsSize)) {
    throw new Error('devicetree blob block outside the blob');
  }

  const reservations: FdtReservation[] = [];
  for (let at = header.reservationsOffset; ; at += 16) {
    if (!within(at, 16)) throw new Error('devicetree memory reservation block not terminated');
    const address = getU64(view, at);
    const size = getU64(view, at + 8);
    if (address === 0 && size === 0) break;
    reservations.push({ address, size });
  }

  const structEnd = header.structOffset + header.structSize;
  const stringsEnd = header.stringsOffset + header.stringsSize;
  let at = header.structOffset;
  const token = (): number => {
    if (at + 4 > structEnd) throw new Error('devicetree structure block ends early');
    const t = view.getUint32(at);
    at += 4;
    return t;
  };
  const cString = (from: number, limit: number): string => {
    let stop = from;
    while (stop < limit && blob[stop] !== 0) stop++;
    if (stop >= limit) throw new Error('devicetree string not terminated');
    return decodeUtf8(blob.subarray(from, stop));
  };

  const parseNode = (depth: number): FdtNode => {
    if (depth > MAX_PARSE_DEPTH) throw new Error('devicetree nested too deeply');
    const name = cString(at, structEnd);
    at = align(at + encodeUtf8(name).length + 1, 4);
    const node = new FdtNode(name);
    for (;;) {
      const t = token();
      if (t === FDT_NOP) continue;
      if (t === FDT_END_NODE) return node;
      if (t === FDT_BEGIN_NODE) {
        node.children.push(parseNode(depth + 1));
      } else if (t === FDT_PROP) {
        const length = token();
        const nameOffset = token();
        if (!within(at, length) || at + length > structEnd) throw new Error('devicetree property overruns');
        if (nameOffset >= header.stringsSize) throw new Error('devicetree property name outside strings');
        const propName = cString(header.stringsOffset + nameOffset, stringsEnd);
        node.properties.push({ name: propName, value: blob.slice(at, at + length) });
        at = align(at + length, 4);
      } else {
        throw new Error(`devicetree structure block has unexpected token ${t}`);
      }
    }
  };

  let t = token();
  while (t === FDT_NOP) t = token();
  if (t !== FDT_BEGIN_NODE) throw new Error('devicetree structure block does not start with a node');
  const root = parseNode(0);
  t = token();
  while (t === FDT_NOP) t = token();
  if (t !== FDT_END) throw new Error('devicetree structure block has data after the root node');
  return { header, reservations, root };
}

function writeNode(node: FdtNode, out: ByteWriter, strings: StringTable): void {
  out.u32(FDT_BEGIN_NODE);
  out.bytes(encodeUtf8(node.name));
  out.bytes(new Uint8Array(1));
  out.pad4();
  for (const p of node.properties) {
    out.u32(FDT_PROP);
    out.u32(p.value.length);
    out.u32(strings.offsetOf(p.name));
    out.bytes(p.value);
    out.pad4();
  }
  for (const c of node.children) writeNode(c, out, strings);
  out.u32(FDT_END_NODE);
}

/** The strings block: each name stored once, referenced by byte offset. */
class StringTable {
  private readonly offsets = new Map<string, number>();
  private readonly out = new ByteWriter();

  offsetOf(name: string): number {
    let offset = this.offsets.get(name);
    if (offset === undefined) {
      offset = this.out.length;
      this.offsets.set(name, offset);
      this.out.bytes(encodeUtf8(name));
      this.out.bytes(new Uint8Array(1));
    }
    return offset;
  }

  finish(): Uint8Array {
    return this.out.finish();
  }
}

/** A growable big-endian byte buffer. */
class ByteWriter {
  private buffer = new Uint8Array(1024);
  length = 0;

  private reserve(extra: number): void {
    if (this.length + extra <= this.buffer.length) return;
    let capacity = this.buffer.length * 2;
    while (capacity < this.length + extra) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
  }

  u32(value: number): void {
    this.reserve(4);
    new DataView(this.buffer.buffer).setUint32(this.length, value >>> 0);
    this.length += 4;
  }

  bytes(data: Uint8Array): void {
    this.reserve(data.length);
    this.buffer.set(data, this.length);
    this.length += data.length;
  }

  pad4(): void {
    const padding = align(this.length, 4) - this.length;
    this.reserve(padding);
    this.buffer.fill(0, this.length, this.length + padding);
    this.length += padding;
  }

  finish(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

function checkName(name: string, kind: 'node' | 'property'): void {
  const base = kind === 'node' ? name.split('@')[0] : name;
  if (name.length === 0 || base.length > MAX_NAME_LENGTH || name.includes('\0') || name.includes('/')) {
    throw new Error(`invalid devicetree ${kind} name "${name}"`);
  }
}

function align(value: number, to: number): number {
  return Math.ceil(value / to) * to;
}

function setU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, Math.floor(value / 0x1_0000_0000));
  view.setUint32(offset + 4, value % 0x1_0000_0000);
}

function getU64(view: DataView, offset: number): number {
  return view.getUint32(offset) * 0x1_0000_0000 + view.getUint32(offset + 4);
}

/** UTF-8 encode (the core has no TextEncoder type: it builds without DOM types). */
function encodeUtf8(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0) ?? 0;
    if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x1_0000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    else {
      out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    }
  }
  return Uint8Array.from(out);
}

/** UTF-8 decode; a malformed sequence becomes U+FFFD. */
function decodeUtf8(bytes: Uint8Array): string {
  let text = '';
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i];
    const extra =
      b < 0x80 ? 0 : b >= 0xf0 && b < 0xf8 ? 3 : b >= 0xe0 ? (b < 0xf0 ? 2 : -1) : b >= 0xc0 ? 1 : -1;
    let cp = extra === 0 ? b : extra === 1 ? b & 0x1f : extra === 2 ? b & 0x0f : b & 0x07;
    let ok = extra >= 0 && i + extra < bytes.length;
    for (let k = 1; ok && k <= extra; k++) {
      const c = bytes[i + k];
      if ((c & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (c & 0x3f);
    }
    if (!ok || cp > 0x10_ffff) {
      text += '\ufffd';
      i++;
    } else {
      text += String.fromCodePoint(cp);
      i += extra + 1;
    }
  }
  return text;
}
