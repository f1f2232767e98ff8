import type { AccessSize } from './mmio.ts';
import type { AddressSpace } from '../mem/address-space.ts';
import type { BufferSegment, DescriptorChain } from './virtqueue.ts';
import type { VirtioDeviceModel, VirtioMmioTransport } from './virtio-mmio.ts';
import {
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  featureBit,
} from './virtio-mmio.ts';
import { ByteRing } from '../common/byte-ring.ts';
import { UserError } from '../common/errors.ts';

/** Device ID of a console (virtio 1.2, section 5). */
export const VIRTIO_ID_CONSOLE = 3;

/**
 * Feature bits (5.3.3). We offer SIZE only: one port (no MULTIPORT, so no control queues), no emergency write.
 */
export const VIRTIO_CONSOLE_F_SIZE = 0n;
export const VIRTIO_CONSOLE_F_MULTIPORT = 1n;
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 2n;

/**
 * struct virtio_console_config (5.3.4), byte offsets (little-endian): le16 cols @0; le16 rows @2;
 * le32 max_nr_ports @4 (MULTIPORT only); le32 emerg_wr @8 (EMERG_WRITE only). The last two read 0 here.
 */
export const VIRTIO_CONSOLE_CONFIG_COLS = 0;
export const VIRTIO_CONSOLE_CONFIG_ROWS = 2;
export const VIRTIO_CONSOLE_CONFIG_MAX_NR_PORTS = 4;
export const VIRTIO_CONSOLE_CONFIG_EMERG_WR = 8;
/** Bytes of configuration space the structure defines. */
export const VIRTIO_CONSOLE_CONFIG_SIZE = 12;

/** Queue indexes (5.3.2): receiveq(port0) and transmitq(port0); without MULTIPORT there are no others. */
export const VIRTIO_CONSOLE_RX_QUEUE = 0;
export const VIRTIO_CONSOLE_TX_QUEUE = 1;

/**
 * QueueNumMax of both queues. Linux fills the receive queue with one page-sized buffer per entry when the port
 * appears (virtio_console.c fill_queue), so this many pages of guest RAM go to input buffers: 16 entries are
 * 64 KiB, plenty for typed and pasted text (the guest hands a buffer back as soon as its tty took the bytes).
 * Console writes wait for each buffer to come back, so the transmit queue never holds more than a few.
 */
export const VIRTIO_CONSOLE_QUEUE_SIZE = 16;
/**
 * The transmit ring between the harts and the VMM (bytes, a power of two), as the UART's: a hart copies each
 * transmit chain into it when the driver notifies the queue and returns the chain at once, so a console write
 * never waits for the VMM. 16 KiB absorbs a burst of boot messages between two drains.
 */
export const VIRTIO_CONSOLE_TX_RING_BYTES = 16 * 1024;
/**
 * Guest-facing bounds (STYLE.md rule 4). The largest transmit chain the device copies: Linux writes at most one
 * page per buffer (hvc's output buffer is PAGE_SIZE); any chain up to the ring's size fits once the VMM drained
 * it. A longer chain is returned unread and counted.
 */
export const VIRTIO_CONSOLE_MAX_TX_CHAIN_BYTES = VIRTIO_CONSOLE_TX_RING_BYTES;
/**
 * Transmit chains taken per call (a hart's notification, or the VMM retrying after the ring was full): a guest
 * that refills the queue as fast as it is drained cannot keep one call going forever.
 */
export const VIRTIO_CONSOLE_TX_BATCH = VIRTIO_CONSOLE_QUEUE_SIZE;

/** The console size a VM starts with until its host says otherwise: the classic 80 x 24 terminal. */
export const DEFAULT_CONSOLE_COLS = 80;
export const DEFAULT_CONSOLE_ROWS = 24;
/** cols and rows are le16 fields; 0 is not a size. */
export const MAX_CONSOLE_DIMENSION = 0xffff;

/** A terminal size in character cells. */
export interface ConsoleSize {
  readonly cols: number;
  readonly rows: number;
}

/** Check a console size from a host: both whole numbers in 1..65535; throws a UserError that says so. */
export function checkConsoleSize(cols: number, rows: number): void {
  const ok = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= MAX_CONSOLE_DIMENSION;
  if (!ok(cols) || !ok(rows)) {
    throw new UserError(
      `a console size is whole numbers of columns and rows from 1 to ${MAX_CONSOLE_DIMENSION}, not ${String(cols)} x ${String(rows)}`,
    );
  }
}

/**
 * The console's own words, after its transport's region (int32 offsets from the device base):
 *   [0] SIZE       cols in the low 16 bits, rows in the high 16: exactly the first four bytes of the config
 *                  space, so a 32-bit config read gets a consistent pair
 *   [1] PREFER     1 when the VMM's console stream should follow this port once it transmits (the guest's
 *                  /dev/console is an hvc device); set by the VMM
 *   [2] STREAM     1 while the console stream follows this port: set by the hart that transmits first while
 *                  PREFER is 1, cleared by the VMM when it falls back
 *   [3] STREAM_AT  the fallback console's output position when STREAM was set: its bytes before it still show
 *   [4] LEFT       1 when the driver reset the device while STREAM was 1: the stream goes back to the fallback
 *                  console, from [5] on; taken by the VMM
 *   [5] LEFT_AT    the fallback console's output position at that reset
 *   [6] TX_DROPPED transmit chains returned unread (device-writable parts, outside RAM, longer than the cap)
 *   [8, ...)       the transmit ring ({@link VIRTIO_CONSOLE_TX_RING_BYTES} bytes): written by whoever holds the
 *                  transport lock, drained by the VMM only
 * All-zero words are the reset state (size 0 x 0: the VMM writes the real size before the VM starts). A driver
 * reset keeps them: output already in the ring was returned to the guest and is still shown.
 */
const SIZE = 0;
const PREFER = 1;
const STREAM = 2;
const STREAM_AT = 3;
const LEFT = 4;
const LEFT_AT = 5;
const TX_DROPPED = 6;
const RING = 8;
const CONSOLE_WORDS = RING + ByteRing.words(VIRTIO_CONSOLE_TX_RING_BYTES);

/** What the board tells a console device (the same in every thread). */
export interface VirtioConsoleOptions {
  /**
   * The output position of the console the stream falls back to (the UART's `Uart16550.txPosition`). It is
   * recorded when the stream switches to this port (earlier bytes there are still shown) and when the driver
   * resets this device while the stream follows it (later bytes there are shown again: Linux resets every
   * virtio device before it powers off or reboots, and its last messages reach only the boot console).
   */
  readonly fallbackPosition?: () => number;
}

/**
 * A virtio console device (5.3) with one port: identity, features, the receive and transmit queues, the
 * configuration space (the terminal size) and the transmit ring. The size lives in the control block so every
 * thread reads the same value; the VMM changes it with {@link VirtioConsoleHost.resize}, which sends a
 * configuration change notification (Linux's virtio_console then calls hvc_resize: the tty gets the new window
 * size and SIGWINCH).
 *
 * Transmit is served on the notifying thread ({@link onNotify}): Linux's console writes spin until their buffer
 * comes back, so the hart copies each chain into the transmit ring and returns it at once, as a UART's THR write
 * lands in its ring; the VMM drains the ring. Receive stays on the VMM's thread ({@link VirtioConsoleHost}).
 *
 * The transport also announces the configuration once when the driver sets DRIVER_OK
 * ({@link announceConfigWhenLive}): without MULTIPORT, Linux reads the size only from a configuration change
 * notification, so a console would otherwise start at 0 x 0.
 */
export class VirtioConsoleDevice implements VirtioDeviceModel {
  readonly deviceId = VIRTIO_ID_CONSOLE;
  readonly features =
    featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_CONSOLE_F_SIZE);
  readonly queueSizeMax: readonly number[] = [VIRTIO_CONSOLE_QUEUE_SIZE, VIRTIO_CONSOLE_QUEUE_SIZE];
  /** The transmit ring: pushed under the transport lock, drained by the VMM ({@link VirtioConsoleHost}). */
  readonly txRing: ByteRing;

  /** Control-block words the device's own state needs (after its transport's). */
  static words(): number {
    return CONSOLE_WORDS;
  }

  /** Control-block words of a console's whole region: transport, then the device's words. */
  static regionWords(transportWords: number): number {
    return transportWords + CONSOLE_WORDS;
  }

  /** `base`: index of the device's words (after the transport's region) in `block`. */
  constructor(
    private readonly block: Int32Array,
    private readonly base: number,
    private readonly memory: AddressSpace,
    private readonly options: VirtioConsoleOptions = {},
  ) {
    this.txRing = new ByteRing(block, base + RING, VIRTIO_CONSOLE_TX_RING_BYTES);
  }

  /** The size the configuration space holds now. */
  get size(): ConsoleSize {
    const word = Atomics.load(this.block, this.base + SIZE);
    return { cols: word & 0xffff, rows: (word >>> 16) & 0xffff };
  }

  /** Store a new size; true when it differs from the old one. The caller notifies the driver. */
  setSize(cols: number, rows: number): boolean {
    const word = (cols & 0xffff) | ((rows & 0xffff) << 16);
    return Atomics.exchange(this.block, this.base + SIZE, word) !== word;
  }

  /** VMM: let the console stream follow this port once it transmits (the guest's console is an hvc device). */
  set preferred(value: boolean) {
    Atomics.store(this.block, this.base + PREFER, value ? 1 : 0);
  }

  /** Whether the console stream follows this port (VMM state kept in the block, so snapshots keep it). */
  get streamFollows(): boolean {
    return Atomics.load(this.block, this.base + STREAM) !== 0;
  }

  /**
   * While the stream follows this port: the fallback console's output position when it switched (its bytes
   * before that are still part of the stream). Read {@link streamFollows} first: the position is stored before
   * the flag.
   */
  get streamAt(): number {
    return Atomics.load(this.block, this.base + STREAM_AT);
  }

  /**
   * VMM: if the driver reset the device while the stream followed it, stop following and return the fallback
   * console's position at that reset (its bytes from there on are the stream again); otherwise undefined.
   */
  takeLeftAt(): number | undefined {
    if (Atomics.exchange(this.block, this.base + LEFT, 0) === 0) return undefined;
    Atomics.store(this.block, this.base + STREAM, 0);
    return Atomics.load(this.block, this.base + LEFT_AT);
  }

  /** Transmit chains returned unread (statistics, tests). */
  get txDropped(): number {
    return Atomics.load(this.block, this.base + TX_DROPPED);
  }

  /** The driver reset the device: if the stream follows this port, record where the fallback console stands. */
  onReset(): void {
    if (Atomics.load(this.block, this.base + STREAM) === 0) return;
    Atomics.store(this.block, this.base + LEFT_AT, this.options.fallbackPosition?.() ?? 0);
    Atomics.store(this.block, this.base + LEFT, 1);
  }

  /**
   * A queue notification, on the notifying thread. The transmit queue is served here ({@link transmit}); true
   * when every chain was taken (the transport then only wakes the VMM to drain the ring). Receive
   * notifications, and chains that did not fit the ring, are left to the VMM's thread (false).
   */
  onNotify(queue: number, transport: VirtioMmioTransport): boolean {
    return queue === VIRTIO_CONSOLE_TX_QUEUE && this.transmit(transport);
  }

  /**
   * Copy transmit chains into the ring and return them to the driver, up to {@link VIRTIO_CONSOLE_TX_BATCH}.
   * Returns false when a chain is left waiting because the ring has no room for it yet (or the batch ended):
   * call again after the VMM drained the ring. Any thread; the ring is pushed under the transport lock.
   */
  transmit(transport: VirtioMmioTransport): boolean {
    let complete = true;
    const pushed = transport.withLiveQueue(this.memory, VIRTIO_CONSOLE_TX_QUEUE, undefined, (live) => {
      let bytesPushed = 0;
      for (let taken = 0; ; taken++) {
        if (taken === VIRTIO_CONSOLE_TX_BATCH) {
          complete = false;
          break;
        }
        const popped = live.ring.pop();
        if (popped.kind === 'empty') break;
        if (popped.kind === 'broken') {
          live.fail(popped.reason);
          break;
        }
        const bytes = this.gather(popped.chain);
        if (bytes === undefined) {
          Atomics.add(this.block, this.base + TX_DROPPED, 1);
        } else if (bytes.length > this.txRing.free) {
          // Not yet: put the chain back for the VMM, which retries after draining the ring.
          live.ring.nextAvail = (live.ring.nextAvail - 1) & 0xffff;
          complete = false;
          break;
        } else if (bytes.length > 0) {
          this.streamMayFollow();
          this.txRing.pushMany(bytes);
          bytesPushed += bytes.length;
        }
        live.ring.pushUsed(popped.chain.head, 0);
      }
      return bytesPushed;
    });
    return complete || pushed === undefined;
  }

  /** The first output while PREFER is set switches the stream here; caller holds the transport lock. */
  private streamMayFollow(): void {
    const b = this.block;
    if (Atomics.load(b, this.base + PREFER) === 0 || Atomics.load(b, this.base + STREAM) !== 0) return;
    Atomics.store(b, this.base + STREAM_AT, this.options.fallbackPosition?.() ?? 0);
    Atomics.store(b, this.base + LEFT, 0);
    Atomics.store(b, this.base + STREAM, 1);
  }

  /** The bytes of a transmit chain, or undefined when it is not a valid one. */
  private gather(chain: DescriptorChain): Uint8Array | undefined {
    // 5.3.6.2: transmit buffers are device-readable only.
    if (chain.writableBytes !== 0) return undefined;
    if (chain.readableBytes > VIRTIO_CONSOLE_MAX_TX_CHAIN_BYTES) return undefined;
    const out = new Uint8Array(chain.readableBytes);
    let at = 0;
    for (const segment of chain.readable) {
      if (segment.length === 0) continue;
      if (!segment.inRam) return undefined;
      if (!this.memory.read(segment.gpa, out.subarray(at, at + segment.length))) return undefined;
      at += segment.length;
    }
    return out;
  }

  /** With SIZE negotiated, tell a driver that just became live to read the size (see the class comment). */
  announceConfigWhenLive(driverFeatures: bigint): boolean {
    return (driverFeatures & featureBit(VIRTIO_CONSOLE_F_SIZE)) !== 0n;
  }

  readConfig(configOffset: number, size: AccessSize): number {
    // One load for the whole access: cols and rows always come from the same resize.
    const sizeWord = Atomics.load(this.block, this.base + SIZE);
    let value = 0;
    for (let i = size - 1; i >= 0; i--) {
      const at = configOffset + i;
      const byte = at >= 0 && at < 4 ? (sizeWord >>> (8 * at)) & 0xff : 0; // max_nr_ports, emerg_wr: 0
      value = (value << 8) | byte;
    }
    return value >>> 0;
  }

  writeConfig(_configOffset: number, _size: AccessSize, _value: number): void {
    // 5.3.4: cols, rows and max_nr_ports are read-only; emerg_wr needs VIRTIO_CONSOLE_F_EMERG_WRITE (not offered).
  }
}

/** Hooks through which the host reports what went wrong; the VMM logs them. */
export interface VirtioConsoleHostOptions {
  /** The guest broke the virtqueue protocol; the device now needs a reset. */
  onGuestError?(reason: string): void;
}

/** Counters of one console device's VMM side (for tests and diagnostics). */
export interface VirtioConsoleStats {
  /** Bytes taken from the transmit ring. */
  txBytes: number;
  rxBytes: number;
  /** Receive chains returned empty because they had device-readable parts. */
  rxBadBuffers: number;
}

/**
 * The VMM side of a virtio console. Transmit: the harts copy output into the device's ring
 * ({@link VirtioConsoleDevice.onNotify}) and ring the doorbell; the VMM takes it with {@link takeOutput} (the
 * ring is the interface between the device and the console stream, as the UART's is) and calls
 * {@link service} to take chains that waited for room. Receive: {@link receive} copies input into the guest's
 * free receive buffers and answers how much fit (0: no buffer, or the device is not live). Resize:
 * {@link resize} updates the configuration space and notifies the driver.
 *
 * No guest input makes the host throw. Malformed transmit chains are returned unread (used length 0) and
 * counted; a broken ring or a receive buffer outside RAM puts the device in DEVICE_NEEDS_RESET.
 */
export class VirtioConsoleHost {
  readonly device: VirtioConsoleDevice;
  readonly stats: VirtioConsoleStats = { txBytes: 0, rxBytes: 0, rxBadBuffers: 0 };
  /** Chains are still waiting in the transmit queue (the ring was full, or a batch ended). */
  private txBacklog = false;
  /** DEVICE_NEEDS_RESET was reported for the current driver session. */
  private brokenReported = false;

  constructor(
    readonly transport: VirtioMmioTransport,
    private readonly memory: AddressSpace,
    private readonly options: VirtioConsoleHostOptions = {},
  ) {
    if (!(transport.device instanceof VirtioConsoleDevice))
      throw new TypeError('the transport does not hold a virtio console');
    this.device = transport.device;
  }

  /** Control-block index of the doorbell: when its value changes, take the output and call {@link service}. */
  get doorbellIndex(): number {
    return this.transport.doorbellIndex;
  }

  /** Everything the guest transmitted since the last call (an empty array when nothing). */
  takeOutput(): Uint8Array {
    if (this.device.txRing.size === 0) return NO_BYTES;
    const bytes = this.device.txRing.drain();
    this.stats.txBytes += bytes.length;
    return bytes;
  }

  /**
   * Take the notifications and copy the transmit chains that waited for room into the ring. Returns true when
   * some still wait: take the output, then call again. Receive notifications need no work: new buffers are used
   * as input arrives.
   */
  service(): boolean {
    const notified = this.transport.takeNotifications();
    if ((notified & (1 << VIRTIO_CONSOLE_TX_QUEUE)) !== 0) this.txBacklog = true;
    if (this.txBacklog) this.txBacklog = !this.device.transmit(this.transport);
    this.reportBroken();
    return this.txBacklog;
  }

  /**
   * Give the guest input: fill its free receive buffers, in order, with the leading bytes of `bytes`. Returns
   * how many bytes were taken (0 when the guest has no free buffer or the device is not live); the caller keeps
   * the rest for later.
   */
  receive(bytes: Uint8Array): number {
    if (bytes.length === 0) return 0;
    let problem: string | undefined;
    const taken = this.transport.withLiveQueue(this.memory, VIRTIO_CONSOLE_RX_QUEUE, undefined, (live) => {
      let at = 0;
      while (at < bytes.length) {
        const popped = live.ring.pop();
        if (popped.kind === 'empty') break;
        if (popped.kind === 'broken') {
          problem = popped.reason;
          live.fail(popped.reason);
          break;
        }
        const chain = popped.chain;
        if (!chain.writable.every((s) => s.inRam)) {
          problem = 'virtio console receive buffer outside RAM';
          live.fail(problem);
          break;
        }
        if (chain.readableBytes !== 0 || chain.writableBytes === 0) {
          // 5.3.6.1: receive buffers are device-writable; a wrong one is handed back with nothing in it.
          this.stats.rxBadBuffers++;
          live.ring.pushUsed(chain.head, 0);
          continue;
        }
        const count = Math.min(chain.writableBytes, bytes.length - at);
        scatter(this.memory, chain.writable, bytes.subarray(at, at + count));
        live.ring.pushUsed(chain.head, count);
        at += count;
      }
      return at;
    });
    if (problem !== undefined) {
      this.brokenReported = true;
      this.options.onGuestError?.(problem);
    }
    const count = taken ?? 0;
    this.stats.rxBytes += count;
    return count;
  }

  /**
   * Set the terminal size the guest sees. When it changed, bump the configuration generation and, if the
   * driver is up, send a configuration change notification. Throws a UserError for a size outside 1..65535.
   */
  resize(cols: number, rows: number): void {
    checkConsoleSize(cols, rows);
    if (this.device.setSize(cols, rows)) this.transport.configChanged();
  }

  /** A transmit-side protocol error shows only as DEVICE_NEEDS_RESET (the hart cannot call hooks): tell once. */
  private reportBroken(): void {
    const broken = (this.transport.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) !== 0;
    if (broken && !this.brokenReported)
      this.options.onGuestError?.('the device needs a reset (a broken queue)');
    this.brokenReported = broken;
  }
}

const NO_BYTES = new Uint8Array(0);

/** Copy `data` into the concatenation of `segments` (checked to be RAM and large enough). */
function scatter(memory: AddressSpace, segments: readonly BufferSegment[], data: Uint8Array): void {
  let at = 0;
  for (const segment of segments) {
    if (at === data.length) return;
    const take = Math.min(segment.length, data.length - at);
    memory.write(segment.gpa, data.subarray(at, at + take));
    at += take;
  }
}
