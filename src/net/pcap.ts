/**
 * Classic libpcap capture files (draft-ietf-opsawg-pcap, "PCAP Capture File Format"), LINKTYPE_ETHERNET, with
 * microsecond timestamps, written little-endian: what Wireshark and tcpdump open. Also a strict reader, for
 * tests and for checking a file before it is offered for download.
 */
import type { CaptureDirection, SwitchPort } from './switch.ts';

/**
 * File header (draft-ietf-opsawg-pcap section 4), 24 bytes:
 *   magic @0 (u32); major version @4 (u16); minor version @6 (u16); reserved1 @8 (u32, 0);
 *   reserved2 @12 (u32, 0); snaplen @16 (u32); link type @20 (u32; low 16 bits = LinkType, FCS bits 0).
 */
export const PCAP_MAGIC_OFFSET = 0;
export const PCAP_VERSION_MAJOR_OFFSET = 4;
export const PCAP_VERSION_MINOR_OFFSET = 6;
export const PCAP_SNAPLEN_OFFSET = 16;
export const PCAP_LINKTYPE_OFFSET = 20;
export const PCAP_FILE_HEADER_BYTES = 24;
/** Magic of a file with microsecond timestamps; read back byte-swapped, it tells the file's byte order. */
export const PCAP_MAGIC_MICROSECONDS = 0xa1b2c3d4;
/** Magic of a file with nanosecond timestamps (accepted by the reader). */
export const PCAP_MAGIC_NANOSECONDS = 0xa1b23c4d;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
/** LINKTYPE_ETHERNET (draft-ietf-opsawg-pcaplinktype): IEEE 802.3 frames without FCS. */
export const LINKTYPE_ETHERNET = 1;

/**
 * Packet record header (draft-ietf-opsawg-pcap section 5), 16 bytes, then the captured bytes:
 *   seconds @0 (u32); microseconds (or nanoseconds) @4 (u32); captured length @8 (u32); original length @12 (u32).
 */
export const PCAP_RECORD_SECONDS = 0;
export const PCAP_RECORD_FRACTION = 4;
export const PCAP_RECORD_CAPTURED_LENGTH = 8;
export const PCAP_RECORD_ORIGINAL_LENGTH = 12;
export const PCAP_RECORD_HEADER_BYTES = 16;

/** Default snap length: more than any frame the switch forwards, so frames are never cut. */
export const DEFAULT_SNAP_LENGTH = 65_535;
/** Default cap on a capture's size, so a forgotten capture cannot exhaust the tab's memory. */
export const DEFAULT_MAX_CAPTURE_BYTES = 64 * 1024 * 1024;
/** Largest snap length the reader accepts (libpcap's own maximum). */
export const MAX_SNAP_LENGTH = 262_144;

/** Options of {@link PcapWriter}. */
export interface PcapWriterOptions {
  /** Bytes of each frame kept (default {@link DEFAULT_SNAP_LENGTH}). */
  readonly snapLength?: number;
  /** Records that would grow the file beyond this are dropped and counted (default 64 MiB). */
  readonly maxBytes?: number;
  /** Wall-clock milliseconds since 1970 for records added without a time (default `Date.now`). */
  readonly clock?: () => number;
}

/** Accumulates a capture in memory; {@link PcapWriter.bytes} returns the file. */
export class PcapWriter {
  readonly snapLength: number;
  readonly maxBytes: number;
  readonly #clock: () => number;
  readonly #chunks: Uint8Array[] = [];
  #size = PCAP_FILE_HEADER_BYTES;
  #records = 0;
  #dropped = 0;

  constructor(options: PcapWriterOptions = {}) {
    this.snapLength = options.snapLength ?? DEFAULT_SNAP_LENGTH;
    if (!Number.isInteger(this.snapLength) || this.snapLength < 1 || this.snapLength > MAX_SNAP_LENGTH) {
      throw new RangeError(
        `snapLength must be an integer from 1 to ${MAX_SNAP_LENGTH}, got ${this.snapLength}`,
      );
    }
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_CAPTURE_BYTES;
    this.#clock = options.clock ?? Date.now;
    const header = new Uint8Array(PCAP_FILE_HEADER_BYTES);
    const view = new DataView(header.buffer);
    view.setUint32(PCAP_MAGIC_OFFSET, PCAP_MAGIC_MICROSECONDS, true);
    view.setUint16(PCAP_VERSION_MAJOR_OFFSET, PCAP_VERSION_MAJOR, true);
    view.setUint16(PCAP_VERSION_MINOR_OFFSET, PCAP_VERSION_MINOR, true);
    view.setUint32(PCAP_SNAPLEN_OFFSET, this.snapLength, true);
    view.setUint32(PCAP_LINKTYPE_OFFSET, LINKTYPE_ETHERNET, true);
    this.#chunks.push(header);
  }

  /** Records written. */
  get records(): number {
    return this.#records;
  }

  /** Records dropped because the capture reached `maxBytes`. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Current file size in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Append a frame captured at `timeMs` (milliseconds since 1970, fractional allowed; default now). */
  add(frame: Uint8Array, timeMs: number = this.#clock()): boolean {
    const captured = Math.min(frame.length, this.snapLength);
    const recordBytes = PCAP_RECORD_HEADER_BYTES + captured;
    if (this.#size + recordBytes > this.maxBytes) {
      this.#dropped++;
      return false;
    }
    const record = new Uint8Array(recordBytes);
    const view = new DataView(record.buffer);
    const micros = Math.max(0, Math.round(timeMs * 1000));
    view.setUint32(PCAP_RECORD_SECONDS, Math.floor(micros / 1_000_000) >>> 0, true);
    view.setUint32(PCAP_RECORD_FRACTION, micros % 1_000_000, true);
    view.setUint32(PCAP_RECORD_CAPTURED_LENGTH, captured, true);
    view.setUint32(PCAP_RECORD_ORIGINAL_LENGTH, frame.length, true);
    record.set(frame.subarray(0, captured), PCAP_RECORD_HEADER_BYTES);
    this.#chunks.push(record);
    this.#size += recordBytes;
    this.#records++;
    return true;
  }

  /** The capture file so far (a fresh copy; `new Blob([bytes])` makes it downloadable). */
  bytes(): Uint8Array {
    const file = new Uint8Array(this.#size);
    let offset = 0;
    for (const chunk of this.#chunks) {
      file.set(chunk, offset);
      offset += chunk.length;
    }
    return file;
  }
}

/** Which frames of a port {@link capturePort} records. */
export type CaptureFilter = 'both' | CaptureDirection;

/**
 * Record a switch port's frames into `writer` (both directions by default; 'rx' = frames the port received from
 * its device, 'tx' = frames the switch delivered to it). Returns the function that stops the capture.
 */
export function capturePort(
  port: SwitchPort,
  writer: PcapWriter,
  filter: CaptureFilter = 'both',
): () => void {
  return port.capture((frame, direction) => {
    if (filter === 'both' || filter === direction) writer.add(frame);
  });
}

/** A record read back by {@link parsePcap}. */
export interface PcapRecord {
  readonly seconds: number;
  /** Microseconds, or nanoseconds when the file's `nanoseconds` is true. */
  readonly fraction: number;
  readonly originalLength: number;
  readonly data: Uint8Array;
}

/** A file read back by {@link parsePcap}. */
export interface PcapFile {
  readonly littleEndian: boolean;
  readonly nanoseconds: boolean;
  readonly versionMajor: number;
  readonly versionMinor: number;
  readonly snapLength: number;
  readonly linkType: number;
  readonly records: readonly PcapRecord[];
}

/** Parse a classic pcap file, checking every length against the bytes present. Throws a RangeError if invalid. */
export function parsePcap(bytes: Uint8Array): PcapFile {
  if (bytes.length < PCAP_FILE_HEADER_BYTES) throw new RangeError('pcap: shorter than the file header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let littleEndian: boolean;
  let nanoseconds: boolean;
  const magicLe = view.getUint32(PCAP_MAGIC_OFFSET, true);
  const magicBe = view.getUint32(PCAP_MAGIC_OFFSET, false);
  if (magicLe === PCAP_MAGIC_MICROSECONDS || magicLe === PCAP_MAGIC_NANOSECONDS) {
    littleEndian = true;
    nanoseconds = magicLe === PCAP_MAGIC_NANOSECONDS;
  } else if (magicBe === PCAP_MAGIC_MICROSECONDS || magicBe === PCAP_MAGIC_NANOSECONDS) {
    littleEndian = false;
    nanoseconds = magicBe === PCAP_MAGIC_NANOSECONDS;
  } else {
    throw new RangeError(`pcap: unknown magic 0x${magicBe.toString(16)}`);
  }
  const snapLength = view.getUint32(PCAP_SNAPLEN_OFFSET, littleEndian);
  const records: PcapRecord[] = [];
  let offset = PCAP_FILE_HEADER_BYTES;
  while (offset < bytes.length) {
    if (offset + PCAP_RECORD_HEADER_BYTES > bytes.length)
      throw new RangeError('pcap: truncated record header');
    const captured = view.getUint32(offset + PCAP_RECORD_CAPTURED_LENGTH, littleEndian);
    const original = view.getUint32(offset + PCAP_RECORD_ORIGINAL_LENGTH, littleEndian);
    const fraction = view.getUint32(offset + PCAP_RECORD_FRACTION, littleEndian);
    if (captured > snapLength || captured > original)
      throw new RangeError('pcap: captured length out of range');
    if (fraction >= (nanoseconds ? 1_000_000_000 : 1_000_000))
      throw new RangeError('pcap: bad timestamp fraction');
    const start = offset + PCAP_RECORD_HEADER_BYTES;
    if (start + captured > bytes.length) throw new RangeError('pcap: truncated record data');
    records.push({
      seconds: view.getUint32(offset + PCAP_RECORD_SECONDS, littleEndian),
      fraction,
      originalLength: original,
      data: bytes.subarray(start, start + captured),
    });
    offset = start + captured;
  }
  return {
    littleEndian,
    nanoseconds,
    versionMajor: view.getUint16(PCAP_VERSION_MAJOR_OFFSET, littleEndian),
    versionMinor: view.getUint16(PCAP_VERSION_MINOR_OFFSET, littleEndian),
    snapLength,
    linkType: view.getUint32(PCAP_LINKTYPE_OFFSET, littleEndian) & 0xffff,
    records,
  };
}
