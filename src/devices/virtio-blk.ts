import { BufferPool } from '../common/buffer-pool.ts';
import type { AccessSize } from './mmio.ts';
import type { AddressSpace } from '../mem/address-space.ts';
import type { BlockBackend } from './block-backend.ts';
import { BLOCK_SECTOR_SIZE } from './block-backend.ts';
import type { BufferSegment, DescriptorChain } from './virtqueue.ts';
import type { LiveQueue, VirtioDeviceModel, VirtioMmioTransport } from './virtio-mmio.ts';
import { VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit } from './virtio-mmio.ts';

/** Device ID of a block device (virtio 1.2, section 5). */
export const VIRTIO_ID_BLOCK = 2;

/** Feature bits (5.2.3). */
export const VIRTIO_BLK_F_SIZE_MAX = 1n;
export const VIRTIO_BLK_F_SEG_MAX = 2n;
export const VIRTIO_BLK_F_RO = 5n;
export const VIRTIO_BLK_F_BLK_SIZE = 6n;
export const VIRTIO_BLK_F_FLUSH = 9n;
export const VIRTIO_BLK_F_DISCARD = 13n;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14n;

/**
 * struct virtio_blk_config (5.2.4), byte offsets of the fields we fill (all little-endian):
 *   le64 capacity @0; le32 size_max @8; le32 seg_max @12; geometry @16 (4 bytes); le32 blk_size @20;
 *   topology @24 (8 bytes); u8 writeback @32; u8 unused0 @33; le16 num_queues @34;
 *   le32 max_discard_sectors @36; le32 max_discard_seg @40; le32 discard_sector_alignment @44;
 *   le32 max_write_zeroes_sectors @48; le32 max_write_zeroes_seg @52; u8 write_zeroes_may_unmap @56;
 *   u8 unused1[3] @57; then the secure-erase and zoned fields (features not offered: read 0).
 */
export const VIRTIO_BLK_CONFIG_CAPACITY = 0;
export const VIRTIO_BLK_CONFIG_SIZE_MAX = 8;
export const VIRTIO_BLK_CONFIG_SEG_MAX = 12;
export const VIRTIO_BLK_CONFIG_BLK_SIZE = 20;
export const VIRTIO_BLK_CONFIG_MAX_DISCARD_SECTORS = 36;
export const VIRTIO_BLK_CONFIG_MAX_DISCARD_SEG = 40;
export const VIRTIO_BLK_CONFIG_DISCARD_SECTOR_ALIGNMENT = 44;
export const VIRTIO_BLK_CONFIG_MAX_WRITE_ZEROES_SECTORS = 48;
export const VIRTIO_BLK_CONFIG_MAX_WRITE_ZEROES_SEG = 52;
export const VIRTIO_BLK_CONFIG_WRITE_ZEROES_MAY_UNMAP = 56;
/** Bytes of configuration space we define (through unused1). */
export const VIRTIO_BLK_CONFIG_SIZE = 60;

/** struct virtio_blk_req header (5.2.6): le32 type; le32 reserved; le64 sector; then data, then u8 status. */
export const VIRTIO_BLK_REQ_TYPE = 0;
export const VIRTIO_BLK_REQ_SECTOR = 8;
export const VIRTIO_BLK_REQ_HEADER_SIZE = 16;

/** Request types (5.2.6). */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

/** Request status byte values (5.2.6). */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** struct virtio_blk_discard_write_zeroes (5.2.6): le64 sector; le32 num_sectors; le32 flags; */
export const VIRTIO_BLK_RANGE_SECTOR = 0;
export const VIRTIO_BLK_RANGE_NUM_SECTORS = 8;
export const VIRTIO_BLK_RANGE_FLAGS = 12;
export const VIRTIO_BLK_RANGE_SIZE = 16;
/** The only defined range flag: unmap (write zeroes only; MUST be 0 for discard). */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** Length of the GET_ID device ID string (5.2.6): NUL-padded ASCII, no terminator when 20 long. */
export const VIRTIO_BLK_ID_BYTES = 20;

/**
 * Guest-facing bounds. Each is announced in configuration space, so a correct driver never exceeds it, and
 * each is enforced on every request, so a hostile one cannot make the host allocate or work without bound.
 */
/** QueueNumMax of the request queue: 256 entries, as QEMU, enough for Linux to keep many requests in flight. */
export const VIRTIO_BLK_QUEUE_SIZE = 256;
/**
 * seg_max: data buffers per request. With the header and the status byte a chain is at most 128
 * descriptors, so two maximal requests fit the queue even without indirect descriptors.
 */
export const VIRTIO_BLK_SEG_MAX = 126;
/** size_max: bytes per data buffer (Linux merges pages up to this). */
export const VIRTIO_BLK_SIZE_MAX = 64 * 1024;
/**
 * The most data bytes one IN or OUT request may move: seg_max * size_max, the largest request a driver that
 * honours both can build. The host allocates a bounce buffer of the request's size, so larger requests are
 * refused (IOERR) before anything is allocated.
 */
export const VIRTIO_BLK_MAX_DATA_BYTES = VIRTIO_BLK_SEG_MAX * VIRTIO_BLK_SIZE_MAX;
/** max_discard_seg / max_write_zeroes_seg: ranges per request (bounds the host's per-request loop). */
export const VIRTIO_BLK_MAX_RANGES = 32;
/** max_discard_sectors: sectors per discard range (1 GiB); discards are cheap for every backend we have. */
export const VIRTIO_BLK_MAX_DISCARD_SECTORS = 1 << 21;
/**
 * max_write_zeroes_sectors: sectors per write-zeroes range (4 MiB). Write zeroes is carried out by the
 * backend's `writeZeroes`, or else as writes of {@link VIRTIO_BLK_ZERO_CHUNK_BYTES}, so this bounds the host
 * work one range costs.
 */
export const VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS = 1 << 13;
/** Bytes of zeroes written per backend call when carrying out write zeroes. */
export const VIRTIO_BLK_ZERO_CHUNK_BYTES = 64 * 1024;
/** discard_sector_alignment: 4 KiB, the page size, so Linux sends page-granular discards. */
export const VIRTIO_BLK_DISCARD_ALIGNMENT_SECTORS = 8;

/** The largest disk the device describes exactly: byte offsets must stay below 2^53. */
const MAX_DISK_BYTES = Number.MAX_SAFE_INTEGER - (Number.MAX_SAFE_INTEGER % BLOCK_SECTOR_SIZE);

/**
 * What every thread needs to build the same block device: plain data, structured-clone safe. The I/O thread
 * additionally has the {@link BlockBackend}, which must agree with it ({@link virtioBlkOptionsFor}).
 */
export interface VirtioBlkOptions {
  /** Disk size in bytes, a positive multiple of 512. */
  readonly sizeBytes: number;
  /** Offer VIRTIO_BLK_F_RO and refuse every write. */
  readonly readOnly: boolean;
  /** Offer VIRTIO_BLK_F_DISCARD (the backend has `discard`). Ignored when read-only. */
  readonly discard: boolean;
  /** The GET_ID string: at most 20 printable ASCII characters. */
  readonly serial: string;
}

/** The options that describe `backend` as a virtio-blk disk with GET_ID string `serial`. */
export function virtioBlkOptionsFor(backend: BlockBackend, serial = ''): VirtioBlkOptions {
  return {
    sizeBytes: backend.sizeBytes,
    readOnly: backend.readOnly,
    discard: typeof backend.discard === 'function',
    serial,
  };
}

/**
 * A virtio block device (5.2): its identity, features, one request queue and its configuration space. Pure
 * declaration, the same in every thread; requests are carried out by {@link VirtioBlkHost} on the I/O thread.
 *
 * Features offered: VERSION_1, INDIRECT_DESC, SIZE_MAX, SEG_MAX, BLK_SIZE (512), FLUSH, WRITE_ZEROES and
 * DISCARD when writable (DISCARD only if the backend can), RO when read-only.
 */
export class VirtioBlkDevice implements VirtioDeviceModel {
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly features: bigint;
  readonly queueSizeMax: readonly number[] = [VIRTIO_BLK_QUEUE_SIZE];
  readonly options: VirtioBlkOptions;
  /** The serial as the 20 bytes GET_ID returns. */
  readonly idBytes: Uint8Array;
  private readonly config: Uint8Array;

  constructor(options: VirtioBlkOptions) {
    const { sizeBytes, serial } = options;
    if (!Number.isInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % BLOCK_SECTOR_SIZE !== 0) {
      throw new RangeError(
        `a virtio-blk disk is a positive multiple of ${BLOCK_SECTOR_SIZE} bytes, not ${sizeBytes}`,
      );
    }
    if (sizeBytes > MAX_DISK_BYTES)
      throw new RangeError(`a virtio-blk disk is at most ${MAX_DISK_BYTES} bytes`);
    if (serial.length > VIRTIO_BLK_ID_BYTES || !/^[\x20-\x7e]*$/.test(serial)) {
      throw new RangeError(
        `a virtio-blk serial is at most ${VIRTIO_BLK_ID_BYTES} printable ASCII characters`,
      );
    }
    this.options = options;
    const writable = !options.readOnly;
    let features =
      featureBit(VIRTIO_F_VERSION_1) |
      featureBit(VIRTIO_F_INDIRECT_DESC) |
      featureBit(VIRTIO_BLK_F_SIZE_MAX) |
      featureBit(VIRTIO_BLK_F_SEG_MAX) |
      featureBit(VIRTIO_BLK_F_BLK_SIZE) |
      featureBit(VIRTIO_BLK_F_FLUSH);
    if (options.readOnly) features |= featureBit(VIRTIO_BLK_F_RO);
    if (writable) features |= featureBit(VIRTIO_BLK_F_WRITE_ZEROES);
    if (writable && options.discard) features |= featureBit(VIRTIO_BLK_F_DISCARD);
    this.features = features;

    this.idBytes = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    for (let i = 0; i < serial.length; i++) this.idBytes[i] = serial.charCodeAt(i);

    const config = new Uint8Array(VIRTIO_BLK_CONFIG_SIZE);
    const view = new DataView(config.buffer);
    view.setBigUint64(VIRTIO_BLK_CONFIG_CAPACITY, BigInt(sizeBytes / BLOCK_SECTOR_SIZE), true);
    view.setUint32(VIRTIO_BLK_CONFIG_SIZE_MAX, VIRTIO_BLK_SIZE_MAX, true);
    view.setUint32(VIRTIO_BLK_CONFIG_SEG_MAX, VIRTIO_BLK_SEG_MAX, true);
    view.setUint32(VIRTIO_BLK_CONFIG_BLK_SIZE, BLOCK_SECTOR_SIZE, true);
    view.setUint32(VIRTIO_BLK_CONFIG_MAX_DISCARD_SECTORS, VIRTIO_BLK_MAX_DISCARD_SECTORS, true);
    view.setUint32(VIRTIO_BLK_CONFIG_MAX_DISCARD_SEG, VIRTIO_BLK_MAX_RANGES, true);
    view.setUint32(VIRTIO_BLK_CONFIG_DISCARD_SECTOR_ALIGNMENT, VIRTIO_BLK_DISCARD_ALIGNMENT_SECTORS, true);
    view.setUint32(VIRTIO_BLK_CONFIG_MAX_WRITE_ZEROES_SECTORS, VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS, true);
    view.setUint32(VIRTIO_BLK_CONFIG_MAX_WRITE_ZEROES_SEG, VIRTIO_BLK_MAX_RANGES, true);
    config[VIRTIO_BLK_CONFIG_WRITE_ZEROES_MAY_UNMAP] = 0;
    this.config = config;
  }

  /** Disk size in 512-byte sectors. */
  get capacitySectors(): number {
    return this.options.sizeBytes / BLOCK_SECTOR_SIZE;
  }

  readConfig(configOffset: number, size: AccessSize): number {
    let value = 0;
    for (let i = size - 1; i >= 0; i--) {
      const at = configOffset + i;
      value = (value << 8) | (at >= 0 && at < this.config.length ? this.config[at] : 0);
    }
    return value >>> 0;
  }

  writeConfig(_configOffset: number, _size: AccessSize, _value: number): void {
    // Every field is read-only without VIRTIO_BLK_F_CONFIG_WCE (not offered).
  }
}

/** Hooks through which the host reports what went wrong; the VMM logs them. */
export interface VirtioBlkHostOptions {
  /** The guest broke the virtqueue or request protocol; the device now needs a reset. */
  onGuestError?(reason: string): void;
  /** The backend failed a request (the guest got VIRTIO_BLK_S_IOERR). */
  onBackendError?(error: unknown): void;
}

/** Counters of the requests the host completed (for dashboards and tests). */
export interface VirtioBlkStats {
  requests: number;
  bytesRead: number;
  bytesWritten: number;
  errors: number;
}

/** A request taken from the ring and handed to the backend. */
interface PendingRequest {
  readonly queue: number;
  readonly epoch: number;
  readonly head: number;
  readonly type: number;
  /** Disk byte offset (IN, OUT). */
  readonly offset: number;
  /** IN: filled by the backend, then copied to `inSegments`. OUT: the data to write. */
  readonly data: Uint8Array;
  /** IN: where the data goes in guest RAM. */
  readonly inSegments: readonly BufferSegment[];
  /** DISCARD and WRITE_ZEROES: byte ranges `[offset, offset + length)`. */
  readonly ranges: readonly { readonly offset: number; readonly length: number }[];
  readonly statusGpa: number;
}

/** What parsing a chain produced. */
type Parsed =
  | { readonly kind: 'request'; readonly request: PendingRequest }
  | { readonly kind: 'answered' }
  | { readonly kind: 'broken'; readonly reason: string };

const ANSWERED: Parsed = { kind: 'answered' };
const NO_DATA = new Uint8Array(0);
const ZEROES = new Uint8Array(VIRTIO_BLK_ZERO_CHUNK_BYTES);

/** Data buffers a disk keeps for reuse (a guest keeps a few reads and writes in flight). */
const MAX_DATA_BUFFERS = 4;

/**
 * The I/O-thread side of one virtio-blk device: takes requests from the guest's queue, carries them out on the
 * {@link BlockBackend} and completes them. The VMM calls {@link service} whenever the transport's doorbell word
 * ({@link VirtioMmioTransport.doorbellIndex}) changes; everything else (backend completions, back-pressure
 * refills) happens from the host's own callbacks.
 *
 * Guarantees: every request taken from the ring is completed exactly once, in any order, or discarded if the
 * driver reset the device or disabled the queue meanwhile (its epoch changed). Malformed requests the device
 * can still answer get VIRTIO_BLK_S_IOERR or VIRTIO_BLK_S_UNSUPP; ones it cannot answer (no status byte, a
 * broken ring) put the device in DEVICE_NEEDS_RESET. No guest input makes the host throw.
 */
export class VirtioBlkHost {
  readonly device: VirtioBlkDevice;
  readonly stats: VirtioBlkStats = { requests: 0, bytesRead: 0, bytesWritten: 0, errors: 0 };
  private outstanding = 0;
  /** Queues that still had buffers when the backend's depth was reached (bit q). */
  private starved = 0;
  /** Queues to look at in the current pump (bit q). */
  private wanted = 0;
  private pumping = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  /**
   * Buffers of finished reads and writes, for the next requests' data (a guest streaming a disk reads or
   * writes many). The backend contract gives a buffer back once its operation settled.
   */
  private readonly dataBuffers = new BufferPool(MAX_DATA_BUFFERS);

  constructor(
    readonly transport: VirtioMmioTransport,
    private readonly memory: AddressSpace,
    private readonly backend: BlockBackend,
    private readonly options: VirtioBlkHostOptions = {},
  ) {
    if (!(transport.device instanceof VirtioBlkDevice))
      throw new TypeError('the transport does not hold a virtio-blk device');
    this.device = transport.device;
    const declared = this.device.options;
    if (backend.sizeBytes !== declared.sizeBytes || backend.readOnly !== declared.readOnly) {
      throw new RangeError('the block backend does not match the device options (size or read-only)');
    }
    if (declared.discard && !declared.readOnly && typeof backend.discard !== 'function') {
      throw new RangeError('the device offers discard but the backend has no discard');
    }
    if (!Number.isInteger(backend.queueDepth) || backend.queueDepth < 1) {
      throw new RangeError('a block backend accepts at least one operation at a time');
    }
  }

  /** Control-block index of the doorbell: when its value changes, call {@link service}. */
  get doorbellIndex(): number {
    return this.transport.doorbellIndex;
  }

  /** Requests handed to the backend and not yet completed. */
  get inFlight(): number {
    return this.outstanding;
  }

  /** Take the guest's notifications and start every request that is ready. Never throws for guest input. */
  service(): void {
    const notified = this.transport.takeNotifications();
    if (notified !== 0) this.pump(notified);
  }

  /** Resolves when no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stop taking requests and resolve once the in-flight ones have finished; then the backend may be closed. */
  close(): Promise<void> {
    this.closed = true;
    return this.whenIdle();
  }

  private pump(queues: number): void {
    this.wanted |= queues;
    if (this.pumping) return; // the running pump picks the bits up
    this.pumping = true;
    try {
      while (this.wanted !== 0 && !this.closed) {
        const wanted = this.wanted;
        this.wanted = 0;
        for (let q = 0; q < this.transport.queueCount; q++)
          if ((wanted & (1 << q)) !== 0) this.processQueue(q);
      }
    } finally {
      this.pumping = false;
    }
  }

  /**
   * Take chains from queue `q` while the backend has room, then start them outside the lock (the backend may
   * complete synchronously, and completion takes the lock again).
   */
  private processQueue(q: number): void {
    const taken: PendingRequest[] = [];
    let failed = false;
    this.starved &= ~(1 << q);
    this.transport.withLiveQueue(this.memory, q, undefined, (live) => {
      for (;;) {
        if (this.outstanding + taken.length >= this.backend.queueDepth) {
          this.starved |= 1 << q;
          return;
        }
        const popped = live.ring.pop();
        if (popped.kind === 'empty') return;
        const parsed = popped.kind === 'broken' ? popped : this.parse(live, popped.chain);
        if (parsed.kind === 'broken') {
          failed = true;
          this.stats.errors++;
          live.fail(parsed.reason);
          this.options.onGuestError?.(parsed.reason);
          return;
        }
        if (parsed.kind === 'request') taken.push(parsed.request);
      }
    });
    // A device that failed carries out nothing more, not even the requests taken just before the failure.
    if (failed) return;
    for (const request of taken) this.start(request);
  }

  /**
   * Validate a chain and either build the backend request or answer it at once. Runs under the transport lock:
   * reads the header and OUT data from guest RAM exactly once, so later guest writes cannot change the request.
   */
  private parse(live: LiveQueue, chain: DescriptorChain): Parsed {
    // The status byte is the last device-writable byte (5.2.6); without it nothing can be answered.
    if (chain.writableBytes === 0)
      return { kind: 'broken', reason: 'virtio-blk request without a status byte' };
    const statusSegment = sliceSegments(chain.writable, chain.writableBytes - 1, 1)[0];
    if (!statusSegment.inRam) return { kind: 'broken', reason: 'virtio-blk status byte outside RAM' };
    const statusGpa = statusSegment.gpa;
    const answer = (status: number, written = 0): Parsed => {
      this.memory.writeU8(statusGpa, status);
      live.ring.pushUsed(chain.head, written + 1);
      this.stats.requests++;
      if (status !== VIRTIO_BLK_S_OK) this.stats.errors++;
      return ANSWERED;
    };

    if (chain.readableBytes < VIRTIO_BLK_REQ_HEADER_SIZE) return answer(VIRTIO_BLK_S_IOERR);
    const header = this.gather(chain.readable, 0, VIRTIO_BLK_REQ_HEADER_SIZE);
    if (header === undefined) return answer(VIRTIO_BLK_S_IOERR);
    const headerView = new DataView(header.buffer);
    const type = headerView.getUint32(VIRTIO_BLK_REQ_TYPE, true);
    const sectorLo = headerView.getUint32(VIRTIO_BLK_REQ_SECTOR, true);
    const sectorHi = headerView.getUint32(VIRTIO_BLK_REQ_SECTOR + 4, true);
    const readOnly = this.device.options.readOnly;
    const readableData = chain.readableBytes - VIRTIO_BLK_REQ_HEADER_SIZE;
    const writableData = chain.writableBytes - 1;
    const base = { queue: live.index, epoch: live.epoch, head: chain.head, type, statusGpa };

    switch (type) {
      case VIRTIO_BLK_T_IN: {
        // A read carries no device-readable data, and its data must be whole sectors within the cap and disk.
        if (readableData !== 0 || !this.dataLengthOk(writableData)) return answer(VIRTIO_BLK_S_IOERR);
        const offset = this.diskOffset(sectorLo, sectorHi, writableData);
        const inSegments = sliceSegments(chain.writable, 0, writableData);
        if (offset < 0 || !inSegments.every((s) => s.inRam)) return answer(VIRTIO_BLK_S_IOERR);
        if (writableData === 0) return answer(VIRTIO_BLK_S_OK);
        const data = new Uint8Array(this.dataBuffers.take(writableData), 0, writableData);
        return { kind: 'request', request: { ...base, offset, data, inSegments, ranges: [] } };
      }
      case VIRTIO_BLK_T_OUT: {
        // 5.2.6.2: a write to a read-only device fails and writes nothing.
        if (readOnly || writableData !== 0 || !this.dataLengthOk(readableData))
          return answer(VIRTIO_BLK_S_IOERR);
        const offset = this.diskOffset(sectorLo, sectorHi, readableData);
        if (offset < 0) return answer(VIRTIO_BLK_S_IOERR);
        if (readableData === 0) return answer(VIRTIO_BLK_S_OK);
        const data = this.gather(chain.readable, VIRTIO_BLK_REQ_HEADER_SIZE, readableData, this.dataBuffers);
        if (data === undefined) return answer(VIRTIO_BLK_S_IOERR);
        return { kind: 'request', request: { ...base, offset, data, inSegments: [], ranges: [] } };
      }
      case VIRTIO_BLK_T_FLUSH:
        return {
          kind: 'request',
          request: { ...base, offset: 0, data: NO_DATA, inSegments: [], ranges: [] },
        };
      case VIRTIO_BLK_T_GET_ID: {
        const length = Math.min(writableData, VIRTIO_BLK_ID_BYTES);
        const segments = sliceSegments(chain.writable, 0, length);
        if (!segments.every((s) => s.inRam)) return answer(VIRTIO_BLK_S_IOERR);
        scatter(this.memory, segments, this.device.idBytes.subarray(0, length));
        return answer(VIRTIO_BLK_S_OK, length);
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const discard = type === VIRTIO_BLK_T_DISCARD;
        const feature = discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES;
        if ((live.driverFeatures & featureBit(feature)) === 0n) return answer(VIRTIO_BLK_S_UNSUPP);
        if (readOnly) return answer(VIRTIO_BLK_S_IOERR);
        const count = readableData / VIRTIO_BLK_RANGE_SIZE;
        if (!Number.isInteger(count) || count < 1 || count > VIRTIO_BLK_MAX_RANGES) {
          return answer(VIRTIO_BLK_S_IOERR);
        }
        const table = this.gather(chain.readable, VIRTIO_BLK_REQ_HEADER_SIZE, readableData);
        if (table === undefined) return answer(VIRTIO_BLK_S_IOERR);
        const view = new DataView(table.buffer);
        const maxSectors = discard ? VIRTIO_BLK_MAX_DISCARD_SECTORS : VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS;
        const allowedFlags = discard ? 0 : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
        const ranges: { offset: number; length: number }[] = [];
        let status = VIRTIO_BLK_S_OK;
        for (let i = 0; i < count; i++) {
          const at = i * VIRTIO_BLK_RANGE_SIZE;
          const flags = view.getUint32(at + VIRTIO_BLK_RANGE_FLAGS, true);
          const sectors = view.getUint32(at + VIRTIO_BLK_RANGE_NUM_SECTORS, true);
          // 5.2.6.2: unknown flags, or unmap on a discard, are unsupported.
          if ((flags & ~allowedFlags) !== 0) return answer(VIRTIO_BLK_S_UNSUPP);
          const length = sectors * BLOCK_SECTOR_SIZE;
          const offset = this.diskOffset(
            view.getUint32(at + VIRTIO_BLK_RANGE_SECTOR, true),
            view.getUint32(at + VIRTIO_BLK_RANGE_SECTOR + 4, true),
            length,
          );
          if (sectors > maxSectors || offset < 0) status = VIRTIO_BLK_S_IOERR;
          else if (length > 0) ranges.push({ offset, length });
        }
        if (status !== VIRTIO_BLK_S_OK) return answer(status);
        if (ranges.length === 0) return answer(VIRTIO_BLK_S_OK);
        return { kind: 'request', request: { ...base, offset: 0, data: NO_DATA, inSegments: [], ranges } };
      }
      default:
        return answer(VIRTIO_BLK_S_UNSUPP);
    }
  }

  /** IN/OUT data: whole sectors, at most {@link VIRTIO_BLK_MAX_DATA_BYTES}. */
  private dataLengthOk(bytes: number): boolean {
    return bytes % BLOCK_SECTOR_SIZE === 0 && bytes <= VIRTIO_BLK_MAX_DATA_BYTES;
  }

  /** Byte offset of sector `hi:lo` when `[offset, offset + bytes)` lies on the disk, else -1. */
  private diskOffset(sectorLo: number, sectorHi: number, bytes: number): number {
    const capacity = this.device.capacitySectors;
    // hi >= 2^21 puts the byte offset at or beyond 2^53: never on a disk we can describe.
    if (sectorHi >= 1 << 21) return -1;
    const sector = sectorHi * 0x1_0000_0000 + sectorLo;
    if (sector > capacity) return -1;
    const offset = sector * BLOCK_SECTOR_SIZE;
    return offset + bytes <= this.device.options.sizeBytes ? offset : -1;
  }

  /**
   * Copy `[start, start + length)` of `segments` out of guest RAM, into a buffer of `pool` when given (a view
   * of exactly `length` bytes at its start); undefined when any part is not RAM.
   */
  private gather(
    segments: readonly BufferSegment[],
    start: number,
    length: number,
    pool?: BufferPool,
  ): Uint8Array | undefined {
    const parts = sliceSegments(segments, start, length);
    const out = pool ? new Uint8Array(pool.take(length), 0, length) : new Uint8Array(length);
    let at = 0;
    for (const part of parts) {
      if (!part.inRam || !this.memory.read(part.gpa, out.subarray(at, at + part.length))) {
        pool?.give(out.buffer);
        return undefined;
      }
      at += part.length;
    }
    return out;
  }

  /** Hand a request to the backend; its completion (sync or async) comes back to {@link finish} once. */
  private start(request: PendingRequest): void {
    this.outstanding++;
    let result: Promise<void> | void;
    try {
      result = this.perform(request);
    } catch (error) {
      this.finish(request, false, error);
      return;
    }
    if (isPromiseLike(result)) {
      result.then(
        () => this.finish(request, true, undefined),
        (error: unknown) => this.finish(request, false, error),
      );
    } else {
      this.finish(request, true, undefined);
    }
  }

  private perform(request: PendingRequest): Promise<void> | void {
    const backend = this.backend;
    switch (request.type) {
      case VIRTIO_BLK_T_IN:
        return backend.read(request.offset, request.data);
      case VIRTIO_BLK_T_OUT:
        return backend.write(request.offset, request.data);
      case VIRTIO_BLK_T_FLUSH:
        return backend.flush();
      case VIRTIO_BLK_T_DISCARD:
        return this.discardRanges(request.ranges);
      default:
        return this.zeroRanges(request.ranges);
    }
  }

  private async discardRanges(ranges: PendingRequest['ranges']): Promise<void> {
    const discard = this.backend.discard;
    if (discard === undefined) throw new Error('backend has no discard');
    for (const range of ranges) await discard.call(this.backend, range.offset, range.length);
  }

  private async zeroRanges(ranges: PendingRequest['ranges']): Promise<void> {
    const writeZeroes = this.backend.writeZeroes;
    if (writeZeroes !== undefined) {
      for (const range of ranges) await writeZeroes.call(this.backend, range.offset, range.length);
      return;
    }
    for (const range of ranges) {
      for (let done = 0; done < range.length; done += VIRTIO_BLK_ZERO_CHUNK_BYTES) {
        const chunk = Math.min(VIRTIO_BLK_ZERO_CHUNK_BYTES, range.length - done);
        await this.backend.write(range.offset + done, ZEROES.subarray(0, chunk));
      }
    }
  }

  /** Complete `request` in guest memory, unless its queue epoch is gone (reset or disabled meanwhile). */
  private finish(request: PendingRequest, ok: boolean, error: unknown): void {
    this.outstanding--;
    if (!ok) {
      this.stats.errors++;
      this.options.onBackendError?.(error);
    }
    this.transport.withLiveQueue(this.memory, request.queue, request.epoch, (live) => {
      let written = 0;
      if (ok && request.type === VIRTIO_BLK_T_IN) {
        scatter(this.memory, request.inSegments, request.data);
        written = request.data.length;
        this.stats.bytesRead += written;
      } else if (ok && request.type === VIRTIO_BLK_T_OUT) {
        this.stats.bytesWritten += request.data.length;
      }
      this.memory.writeU8(request.statusGpa, ok ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR);
      live.ring.pushUsed(request.head, written + 1);
      this.stats.requests++;
    });
    // The backend is done with the data once its operation settled, and a read's bytes are in guest RAM now.
    if (
      (request.type === VIRTIO_BLK_T_IN || request.type === VIRTIO_BLK_T_OUT) &&
      request.data.buffer instanceof ArrayBuffer
    ) {
      this.dataBuffers.give(request.data.buffer);
    }
    const bit = 1 << request.queue;
    if ((this.starved & bit) !== 0) this.pump(bit);
    if (this.outstanding === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<void> {
  return typeof (value as { then?: unknown } | undefined)?.then === 'function';
}

/** The sub-segments covering bytes `[start, start + length)` of the concatenation of `segments`. */
function sliceSegments(segments: readonly BufferSegment[], start: number, length: number): BufferSegment[] {
  const out: BufferSegment[] = [];
  let skip = start;
  let left = length;
  for (const segment of segments) {
    if (left === 0) break;
    if (skip >= segment.length) {
      skip -= segment.length;
      continue;
    }
    const take = Math.min(segment.length - skip, left);
    out.push({ gpa: (segment.gpa + skip) >>> 0, length: take, inRam: segment.inRam });
    left -= take;
    skip = 0;
  }
  return out;
}

/** Copy `data` into guest RAM across `segments` (checked to be RAM). */
function scatter(memory: AddressSpace, segments: readonly BufferSegment[], data: Uint8Array): void {
  let at = 0;
  for (const segment of segments) {
    memory.write(segment.gpa, data.subarray(at, at + segment.length));
    at += segment.length;
  }
}
