import type { AccessSize } from './mmio.ts';
import type { AddressSpace } from '../mem/address-space.ts';
import type { BufferSegment, DescriptorChain } from './virtqueue.ts';
import type { VirtioDeviceModel, VirtioMmioTransport } from './virtio-mmio.ts';
import { VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit } from './virtio-mmio.ts';
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
 * Guest-facing bounds (STYLE.md rule 4). The largest transmit chain the host copies: Linux sends at most one
 * page per buffer (hvc's output buffer is PAGE_SIZE), so 64 KiB leaves room for other drivers while keeping
 * what one chain can make the host allocate small. A longer chain is returned unread and counted.
 */
export const VIRTIO_CONSOLE_MAX_TX_CHAIN_BYTES = 64 * 1024;
/**
 * Transmit chains taken per {@link VirtioConsoleHost.service} call before it answers "more" and lets the event
 * loop run: a guest that refills the queue as fast as the host drains it cannot keep the VMM thread busy.
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
 *   [0] SIZE      cols in the low 16 bits, rows in the high 16: exactly the first four bytes of the config
 *                 space, so a 32-bit config read gets a consistent pair
 *   [1] STREAM    1 while the VMM's console stream follows this port (see machine/vm.ts); kept here so a
 *                 snapshot restores it
 *   [2] LEFT      1 when the driver reset the device while the stream followed it: the stream goes back to
 *                 the other console, from [3] on
 *   [3] LEFT_AT   the other console's output position at that reset ({@link VirtioConsoleOptions})
 * All-zero words are the reset state (size 0 x 0: the VMM writes the real size before the VM starts).
 */
const SIZE = 0;
const STREAM = 1;
const LEFT = 2;
const LEFT_AT = 3;
const CONSOLE_WORDS = 4;

/** What the board tells a console device (the same in every thread). */
export interface VirtioConsoleOptions {
  /**
   * The output position of the console the stream falls back to (`Uart16550.txPosition`),
   * recorded when the driver resets this device while the stream follows it. Linux resets every virtio device
   * before it powers off or reboots; its last messages then reach only the boot console on the UART.
   */
  readonly fallbackPosition?: () => number;
}

/**
 * A virtio console device (5.3) with one port: identity, features, the receive and transmit queues and the
 * configuration space (the terminal size). The size lives in the control block so every thread reads the same
 * value; the VMM changes it with {@link VirtioConsoleHost.resize}, which sends a configuration change
 * notification (Linux's virtio_console then calls hvc_resize: the tty gets the new window size and SIGWINCH).
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
    private readonly options: VirtioConsoleOptions = {},
  ) {}

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

  /** Whether the VMM's console stream follows this port (VMM state kept in the block for snapshots). */
  get streamFollows(): boolean {
    return Atomics.load(this.block, this.base + STREAM) !== 0;
  }

  set streamFollows(value: boolean) {
    Atomics.store(this.block, this.base + STREAM, value ? 1 : 0);
    if (value) Atomics.store(this.block, this.base + LEFT, 0);
  }

  /**
   * VMM: if the driver reset the device while the stream followed it, the fallback console's position at that
   * moment (and the mark is cleared); otherwise undefined.
   */
  takeLeftAt(): number | undefined {
    if (Atomics.exchange(this.block, this.base + LEFT, 0) === 0) return undefined;
    return Atomics.load(this.block, this.base + LEFT_AT);
  }

  /** The driver reset the device: if the stream follows this port, record where the fallback console stands. */
  onReset(): void {
    if (Atomics.load(this.block, this.base + STREAM) === 0) return;
    Atomics.store(this.block, this.base + LEFT_AT, this.options.fallbackPosition?.() ?? 0);
    Atomics.store(this.block, this.base + LEFT, 1);
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

/** Where the port's output goes (STYLE.md rule 2): the VMM's console stream, a test. Called outside every lock. */
export interface CharBackend {
  /** Bytes the guest wrote to the port, in order; a fresh array the receiver owns. */
  write(bytes: Uint8Array): void;
}

/** Hooks through which the host reports what went wrong; the VMM logs them. */
export interface VirtioConsoleHostOptions {
  /** The guest broke the virtqueue protocol; the device now needs a reset. */
  onGuestError?(reason: string): void;
}

/** Counters of one console device (for tests and diagnostics). */
export interface VirtioConsoleStats {
  txBytes: number;
  /** Transmit chains returned unread: device-writable parts, buffers outside RAM, or longer than the cap. */
  txDropped: number;
  rxBytes: number;
  /** Receive chains returned empty because they had device-readable parts. */
  rxBadBuffers: number;
}

/**
 * The I/O-thread side of a virtio console. Transmit: the VMM calls {@link service} when the transport's
 * doorbell changes; each chain's bytes go to the {@link CharBackend}. Receive: {@link receive} copies input into
 * the guest's free receive buffers and answers how much fit (0: no buffer, or the device is not live). Resize:
 * {@link resize} updates the configuration space and notifies the driver.
 *
 * No guest input makes the host throw. Malformed transmit chains are returned unread (used length 0) and
 * counted; a broken ring or a receive buffer outside RAM puts the device in DEVICE_NEEDS_RESET.
 */
export class VirtioConsoleHost {
  readonly device: VirtioConsoleDevice;
  readonly stats: VirtioConsoleStats = { txBytes: 0, txDropped: 0, rxBytes: 0, rxBadBuffers: 0 };
  /** True when the last {@link service} stopped at {@link VIRTIO_CONSOLE_TX_BATCH} with chains still waiting. */
  private txBacklog = false;

  constructor(
    readonly transport: VirtioMmioTransport,
    private readonly memory: AddressSpace,
    private readonly backend: CharBackend,
    private readonly options: VirtioConsoleHostOptions = {},
  ) {
    if (!(transport.device instanceof VirtioConsoleDevice))
      throw new TypeError('the transport does not hold a virtio console');
    this.device = transport.device;
  }

  /** Control-block index of the doorbell: when its value changes, call {@link service}. */
  get doorbellIndex(): number {
    return this.transport.doorbellIndex;
  }

  /** True once the driver made the device live (its buffers can be used). */
  get live(): boolean {
    return this.transport.withLiveQueue(this.memory, VIRTIO_CONSOLE_RX_QUEUE, undefined, () => true) === true;
  }

  /**
   * Take the guest's notifications and pass what it transmitted to the backend. Returns true when transmit
   * chains are still waiting (the batch limit was reached): call again after yielding. Receive notifications
   * need no work: new buffers are used as input arrives.
   */
  service(): boolean {
    const notified = this.transport.takeNotifications();
    if ((notified & (1 << VIRTIO_CONSOLE_TX_QUEUE)) !== 0 || this.txBacklog) this.transmit();
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
    if (problem !== undefined) this.options.onGuestError?.(problem);
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

  /**
   * Take up to a batch of transmit chains under the lock, hand their bytes to the backend outside it, then
   * return the chains to the driver. Completing only after the backend has the bytes keeps the guest's write
   * in flight meanwhile: Linux's console writes wait for their buffer to come back, so everything the guest
   * printed elsewhere before this write (the UART) is already visible to the backend, and nothing it prints
   * after it is yet.
   */
  private transmit(): void {
    const chunks: Uint8Array[] = [];
    const heads: number[] = [];
    let problem: string | undefined;
    this.txBacklog = false;
    const epoch = this.transport.withLiveQueue(this.memory, VIRTIO_CONSOLE_TX_QUEUE, undefined, (live) => {
      for (let taken = 0; ; taken++) {
        if (taken === VIRTIO_CONSOLE_TX_BATCH) {
          this.txBacklog = true;
          break;
        }
        const popped = live.ring.pop();
        if (popped.kind === 'empty') break;
        if (popped.kind === 'broken') {
          problem = popped.reason;
          live.fail(popped.reason);
          break;
        }
        const bytes = this.gather(popped.chain);
        heads.push(popped.chain.head);
        if (bytes === undefined) this.stats.txDropped++;
        else if (bytes.length > 0) chunks.push(bytes);
      }
      return live.epoch;
    });
    if (problem !== undefined) this.options.onGuestError?.(problem);
    if (chunks.length > 0) {
      const out = chunks.length === 1 ? chunks[0] : concat(chunks);
      this.stats.txBytes += out.length;
      this.backend.write(out);
    }
    if (heads.length === 0 || epoch === undefined) return;
    // Nothing is written into a chain the driver took back meanwhile (a reset changes the epoch).
    this.transport.withLiveQueue(this.memory, VIRTIO_CONSOLE_TX_QUEUE, epoch, (live) => {
      for (const head of heads) live.ring.pushUsed(head, 0);
    });
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
}

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

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
