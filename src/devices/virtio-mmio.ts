import type { AccessSize, IrqSink, MmioDevice } from './mmio.ts';
import type { AddressSpace } from '../mem/address-space.ts';
import { SpinLock } from '../common/spin-lock.ts';
import { notifyWord } from '../common/shared-block.ts';
import {
  TABVISOR_VIRTIO_VENDOR_ID,
  VIRTIO_MAGIC,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_SLOT_SIZE,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VERSION,
} from './virtio-mmio-empty.ts';
import { SplitVirtqueue, VIRTQ_MAX_SIZE, checkVirtqueueLayout } from './virtqueue.ts';

/**
 * virtio-mmio control registers, version 2 (virtio 1.2, section 4.2.2, table "MMIO Device Register Layout").
 * MagicValue, Version, DeviceID and VendorID are in virtio-mmio-empty.ts. R = read-only, W = write-only.
 */
/** R: device feature bits `[32 * DeviceFeaturesSel, +32)`. */
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
/** W: selects the 32-bit word of DeviceFeatures. */
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
/** W: driver (accepted) feature bits `[32 * DriverFeaturesSel, +32)`. */
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
/** W: selects the 32-bit word of DriverFeatures. */
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
/** W: selects the queue the Queue* registers apply to. */
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
/** R: largest queue size the device accepts for the selected queue; 0 when the queue does not exist. */
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
/** W: queue size the driver uses. */
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
/** RW: 1 = the device may use the selected queue. */
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
/** W: available buffer notification; the value is the queue index (no VIRTIO_F_NOTIFICATION_DATA). */
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
/** R: pending events, see VIRTIO_MMIO_INT_*. */
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
/** W: events the driver handled. */
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
/** RW: device status, see VIRTIO_STATUS_*; writing 0 resets the device. */
export const VIRTIO_MMIO_STATUS = 0x070;
/** W: Descriptor Area, Driver Area and Device Area addresses of the selected queue, low and high words. */
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
export const VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090;
export const VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094;
export const VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0;
export const VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4;
/** W: selects a shared memory region; R: its length and base (no regions here: all ones). */
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4;
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
/** RW: per-queue reset, only with VIRTIO_F_RING_RESET (not offered: reads 0, writes ignored). */
export const VIRTIO_MMIO_QUEUE_RESET = 0x0c0;
/** R: changes whenever the device-specific configuration changes. */
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
/** Start of the device-specific configuration space. */
export const VIRTIO_MMIO_CONFIG = 0x100;

/** InterruptStatus bits (4.2.2): a used buffer notification, a configuration change notification. */
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;

/** Device status bits (2.1). */
export const VIRTIO_STATUS_ACKNOWLEDGE = 1;
export const VIRTIO_STATUS_DRIVER = 2;
export const VIRTIO_STATUS_DRIVER_OK = 4;
export const VIRTIO_STATUS_FEATURES_OK = 8;
export const VIRTIO_STATUS_DEVICE_NEEDS_RESET = 64;
export const VIRTIO_STATUS_FAILED = 128;

/** Reserved feature bits (6) the transport itself understands; features are 64-bit sets as bigint. */
export const VIRTIO_F_INDIRECT_DESC = 28n;
export const VIRTIO_F_VERSION_1 = 32n;

/** The most queues one transport serves: the pending-notification word has one bit per queue. */
export const VIRTIO_MMIO_MAX_QUEUES = 32;

/** The feature set with bit `bit`. */
export function featureBit(bit: bigint): bigint {
  return 1n << bit;
}

/**
 * What a virtio device declares to its transport (STYLE.md rule 3): identity, features, queues and its
 * configuration space. Built identically in every thread from plain options, so it holds no mutable state.
 */
export interface VirtioDeviceModel {
  /** Device ID (virtio 1.2, section 5): 1 = network, 2 = block, 3 = console. */
  readonly deviceId: number;
  /** Every feature the device offers, including VIRTIO_F_VERSION_1. */
  readonly features: bigint;
  /** QueueNumMax of each queue; the array length is the number of queues. */
  readonly queueSizeMax: readonly number[];
  /**
   * Read `size` bytes of configuration space at `configOffset` (little-endian, zero-extended). `deviceState` is
   * the device's own state word in the transport ({@link VirtioMmioTransport.updateDeviceState}; 0 after a
   * reset), for configuration fields that change while the device runs (virtio-net's link status).
   */
  readConfig(configOffset: number, size: AccessSize, deviceState: number): number;
  /** A driver write to configuration space (most devices ignore them). */
  writeConfig(configOffset: number, size: AccessSize, value: number): void;
  /**
   * Whether to send a configuration change notification when the driver sets DRIVER_OK with these features:
   * for a driver that reads some field only when told it changed (the console size). Default: no.
   */
  announceConfigWhenLive?(driverFeatures: bigint): boolean;
  /** The driver reset the device (status 0). Called on the driver's thread, under the transport's lock. */
  onReset?(): void;
  /**
   * A queue notification the device serves on the notifying hart itself (the console copies its output into a
   * ring). Return true when it did all the work: the transport then only wakes the I/O thread (the doorbell
   * changes, no queue is marked pending). False, or no hook: the queue is marked pending for the I/O thread.
   * Called without the transport lock.
   */
  onNotify?(queue: number, transport: VirtioMmioTransport): boolean;
}

/**
 * Shared-state layout of a transport's region (int32 word offsets from `base`):
 *   [0]  LOCK                 spin lock over everything below except NOTIFY_PENDING and DOORBELL
 *   [1]  STATUS               device status (VIRTIO_STATUS_*)
 *   [2]  DEVICE_FEATURES_SEL
 *   [3]  DRIVER_FEATURES_SEL
 *   [4]  DRIVER_FEATURES_LO, [5] DRIVER_FEATURES_HI
 *   [6]  QUEUE_SEL
 *   [7]  INTERRUPT_STATUS     VIRTIO_MMIO_INT_* bits
 *   [8]  CONFIG_GENERATION
 *   [9]  IRQ_LEVEL            the level last driven on the interrupt line
 *   [10] NOTIFY_PENDING       bit q: queue q was notified and not yet taken by the I/O thread (Atomics.or)
 *   [11] DOORBELL             futex word the I/O thread waits on; bumped after every notification
 *   [12] RESET_COUNT          device resets so far (statistics, tests)
 *   [13] DEVICE_STATE         bits the device model defines (passed to readConfig); a device reset clears them
 *   [16 + q * QUEUE_WORDS, +QUEUE_WORDS)  queue q:
 *        NUM, READY, DESC_LO, DESC_HI, DRIVER_LO, DRIVER_HI, DEVICE_LO, DEVICE_HI,
 *        EPOCH      bumped whenever the queue is enabled, disabled or reset: completions of an older epoch
 *                   are discarded, so the device never writes buffers the driver has taken back
 *        NEXT_AVAIL the device's next available-ring index, NEXT_USED its next used-ring index
 * All-zero words are the reset state.
 */
const LOCK = 0;
const STATUS = 1;
const DEVICE_FEATURES_SEL = 2;
const DRIVER_FEATURES_SEL = 3;
const DRIVER_FEATURES_LO = 4;
const DRIVER_FEATURES_HI = 5;
const QUEUE_SEL = 6;
const INTERRUPT_STATUS = 7;
const CONFIG_GENERATION = 8;
const IRQ_LEVEL = 9;
const NOTIFY_PENDING = 10;
const DOORBELL = 11;
const RESET_COUNT = 12;
const DEVICE_STATE = 13;
const HEADER_WORDS = 16;

const Q_NUM = 0;
const Q_READY = 1;
const Q_DESC_LO = 2;
const Q_DESC_HI = 3;
const Q_DRIVER_LO = 4;
const Q_DRIVER_HI = 5;
const Q_DEVICE_LO = 6;
const Q_DEVICE_HI = 7;
const Q_EPOCH = 8;
const Q_NEXT_AVAIL = 9;
const Q_NEXT_USED = 10;
const QUEUE_WORDS = 12;

/** The status bits that make a device live: it may use its queues. */
const LIVE_BITS = VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
/** Status bits that stop all queue processing until a reset. */
const STOP_BITS = VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED;

/**
 * The I/O thread's access to one live queue, valid only inside {@link VirtioMmioTransport.withLiveQueue}.
 */
export interface LiveQueue {
  /** The queue index. */
  readonly index: number;
  /** The queue's epoch: pass it back to `withLiveQueue` to complete requests taken now. */
  readonly epoch: number;
  /** The ring, positioned where the device left off. */
  readonly ring: SplitVirtqueue;
  /** The features the driver accepted. */
  readonly driverFeatures: bigint;
  /** The device's state word (see {@link VirtioMmioTransport.updateDeviceState}). */
  readonly deviceState: number;
  /**
   * The driver broke the protocol: set DEVICE_NEEDS_RESET, send a configuration change notification and stop
   * processing every queue until the driver resets the device (2.1.2).
   */
  fail(reason: string): void;
}

/**
 * The virtio-mmio transport (version 2 only): register file, device status state machine, feature
 * negotiation, queue registers and interrupt line. The device behind it is a {@link VirtioDeviceModel}.
 *
 * Threads: every hart thread builds one over the shared control block and handles its own register accesses.
 * A QueueNotify does not process the queue on the hart (unless the device serves it there, see
 * {@link VirtioDeviceModel.onNotify}): it sets the queue's bit in NOTIFY_PENDING and bumps the DOORBELL futex
 * word ({@link doorbellIndex}), and the I/O thread, which owns the device's back-end, calls
 * {@link takeNotifications} and then {@link withLiveQueue} to walk the rings. Completions come back through
 * `withLiveQueue` with the epoch seen when the request was taken, and raise the interrupt line.
 *
 * Reset (status 0) is immediate, as Linux expects: under the lock it clears the register file and bumps every
 * queue's epoch, so requests still running on the I/O side complete into nothing.
 *
 * Control registers take only aligned 32-bit accesses (4.2.2: drivers MUST use them); others are rejected.
 * Configuration space takes any width. Write-only registers read 0; writes to read-only registers are ignored.
 */
export class VirtioMmioTransport implements MmioDevice {
  readonly size = VIRTIO_MMIO_SLOT_SIZE;
  /** Control-block index of the doorbell futex word the I/O thread waits on. */
  readonly doorbellIndex: number;
  readonly queueCount: number;
  private readonly lock: SpinLock;

  /** Control-block words a transport with `queueCount` queues needs. */
  static words(queueCount: number): number {
    return HEADER_WORDS + queueCount * QUEUE_WORDS;
  }

  constructor(
    private readonly block: Int32Array,
    private readonly base: number,
    readonly device: VirtioDeviceModel,
    private readonly irqSink: IrqSink,
    private readonly irq: number,
  ) {
    this.queueCount = device.queueSizeMax.length;
    if (this.queueCount < 1 || this.queueCount > VIRTIO_MMIO_MAX_QUEUES) {
      throw new RangeError(`a virtio-mmio device has 1..${VIRTIO_MMIO_MAX_QUEUES} queues`);
    }
    for (const max of device.queueSizeMax) {
      if (!Number.isInteger(max) || max < 1 || max > VIRTQ_MAX_SIZE || (max & (max - 1)) !== 0) {
        throw new RangeError(`queue size maximum ${max} is not a power of two in [1, ${VIRTQ_MAX_SIZE}]`);
      }
    }
    this.lock = new SpinLock(block, base + LOCK);
    this.doorbellIndex = base + DOORBELL;
  }

  read(mmioOffset: number, size: AccessSize): number {
    if (mmioOffset >= VIRTIO_MMIO_CONFIG) {
      if (mmioOffset + size > VIRTIO_MMIO_SLOT_SIZE) return -1;
      const state = Atomics.load(this.block, this.base + DEVICE_STATE);
      return this.device.readConfig(mmioOffset - VIRTIO_MMIO_CONFIG, size, state) >>> 0;
    }
    if (size !== 4 || (mmioOffset & 3) !== 0 || mmioOffset < 0) return -1;
    this.lock.acquire();
    try {
      return this.readRegister(mmioOffset) >>> 0;
    } finally {
      this.lock.release();
    }
  }

  write(mmioOffset: number, size: AccessSize, value: number): boolean {
    if (mmioOffset >= VIRTIO_MMIO_CONFIG) {
      if (mmioOffset + size > VIRTIO_MMIO_SLOT_SIZE) return false;
      this.device.writeConfig(mmioOffset - VIRTIO_MMIO_CONFIG, size, value);
      return true;
    }
    if (size !== 4 || (mmioOffset & 3) !== 0 || mmioOffset < 0) return false;
    if (mmioOffset === VIRTIO_MMIO_QUEUE_NOTIFY) {
      this.notify(value >>> 0);
      return true;
    }
    this.lock.acquire();
    try {
      this.writeRegister(mmioOffset, value | 0);
      return true;
    } finally {
      this.lock.release();
    }
  }

  /** I/O thread: take the set of queues notified since the last call (bit q = queue q) and clear it. */
  takeNotifications(): number {
    return Atomics.exchange(this.block, this.base + NOTIFY_PENDING, 0);
  }

  /**
   * I/O thread: run `fn` under the register lock on queue `index` if the device is live (FEATURES_OK and
   * DRIVER_OK, neither NEEDS_RESET nor FAILED), the queue is ready with a usable layout, and, when `epoch` is
   * given, the queue's epoch still equals it. Returns `fn`'s result, or undefined when any of that fails (a
   * broken layout also fails the device). Used entries written by `fn` raise a used buffer notification unless
   * the driver suppressed it. Keep `fn` short: harts touching this device's registers spin meanwhile.
   */
  withLiveQueue<T>(
    memory: AddressSpace,
    index: number,
    epoch: number | undefined,
    fn: (queue: LiveQueue) => T,
  ): T | undefined {
    if (!Number.isInteger(index) || index < 0 || index >= this.queueCount) return undefined;
    this.lock.acquire();
    try {
      const b = this.block;
      const status = b[this.base + STATUS];
      if ((status & LIVE_BITS) !== LIVE_BITS || (status & STOP_BITS) !== 0) return undefined;
      const q = this.queueBase(index);
      if (b[q + Q_READY] === 0) return undefined;
      const queueEpoch = b[q + Q_EPOCH];
      if (epoch !== undefined && epoch !== queueEpoch) return undefined;
      const layout = {
        size: b[q + Q_NUM],
        descGpa: b[q + Q_DESC_LO] >>> 0,
        availGpa: b[q + Q_DRIVER_LO] >>> 0,
        usedGpa: b[q + Q_DEVICE_LO] >>> 0,
      };
      const driverFeatures = this.driverFeatures();
      let problem = checkVirtqueueLayout(memory, layout, this.device.queueSizeMax[index]);
      if ((b[q + Q_DESC_HI] | b[q + Q_DRIVER_HI] | b[q + Q_DEVICE_HI]) !== 0)
        problem = 'a queue part is above 4 GiB';
      if (problem !== undefined) {
        this.failLocked();
        return undefined;
      }
      const indirect = (driverFeatures & featureBit(VIRTIO_F_INDIRECT_DESC)) !== 0n;
      const ring = new SplitVirtqueue(memory, layout, indirect, b[q + Q_NEXT_AVAIL], b[q + Q_NEXT_USED]);
      const live: LiveQueue = {
        index,
        epoch: queueEpoch,
        ring,
        driverFeatures,
        deviceState: b[this.base + DEVICE_STATE],
        fail: () => this.failLocked(),
      };
      try {
        return fn(live);
      } finally {
        b[q + Q_NEXT_AVAIL] = ring.nextAvail;
        b[q + Q_NEXT_USED] = ring.nextUsed;
        if (ring.usedWritten > 0 && !ring.driverSuppressesInterrupts) this.raiseLocked(VIRTIO_MMIO_INT_VRING);
      }
    } finally {
      this.lock.release();
    }
  }

  /** I/O thread: the device-specific configuration changed; bump ConfigGeneration and notify the driver. */
  configChanged(): void {
    this.lock.acquire();
    try {
      this.block[this.base + CONFIG_GENERATION]++;
      if ((this.block[this.base + STATUS] & VIRTIO_STATUS_DRIVER_OK) !== 0)
        this.raiseLocked(VIRTIO_MMIO_INT_CONFIG);
    } finally {
      this.lock.release();
    }
  }

  /**
   * I/O thread: change the device's state word (configuration the device model derives from it, such as a link
   * status) and, when it changed, send a configuration change notification as {@link configChanged} does. The
   * word lives in the control block, so every thread and a snapshot see it; a device reset (status 0) clears it.
   * Returns the new value.
   */
  updateDeviceState(update: (state: number) => number): number {
    this.lock.acquire();
    try {
      const index = this.base + DEVICE_STATE;
      const before = this.block[index];
      const after = update(before) | 0;
      if (after !== before) {
        Atomics.store(this.block, index, after);
        this.block[this.base + CONFIG_GENERATION]++;
        if ((this.block[this.base + STATUS] & VIRTIO_STATUS_DRIVER_OK) !== 0)
          this.raiseLocked(VIRTIO_MMIO_INT_CONFIG);
      }
      return after;
    } finally {
      this.lock.release();
    }
  }

  /** The device's state word (see {@link updateDeviceState}). */
  get deviceState(): number {
    return Atomics.load(this.block, this.base + DEVICE_STATE);
  }

  /** The device status register (for the VMM's diagnostics and tests). */
  get status(): number {
    return Atomics.load(this.block, this.base + STATUS);
  }

  /**
   * The features the driver accepted, once it set FEATURES_OK (the device accepted them then); 0 before and
   * after a reset. Read without the lock: the words change only while the driver renegotiates.
   */
  negotiatedFeatures(): bigint {
    if ((Atomics.load(this.block, this.base + STATUS) & VIRTIO_STATUS_FEATURES_OK) === 0) return 0n;
    return this.driverFeatures();
  }

  /** Device resets the driver has made (statistics, tests). */
  get resetCount(): number {
    return Atomics.load(this.block, this.base + RESET_COUNT);
  }

  private queueBase(index: number): number {
    return this.base + HEADER_WORDS + index * QUEUE_WORDS;
  }

  private selectedQueue(): number {
    const sel = this.block[this.base + QUEUE_SEL] >>> 0;
    return sel < this.queueCount ? this.queueBase(sel) : -1;
  }

  private driverFeatures(): bigint {
    const b = this.block;
    return (
      (BigInt(b[this.base + DRIVER_FEATURES_HI] >>> 0) << 32n) |
      BigInt(b[this.base + DRIVER_FEATURES_LO] >>> 0)
    );
  }

  /** Caller holds the lock. */
  private readRegister(mmioOffset: number): number {
    const b = this.block;
    const base = this.base;
    switch (mmioOffset) {
      case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MAGIC;
      case VIRTIO_MMIO_VERSION:
        return 2;
      case VIRTIO_MMIO_DEVICE_ID:
        return this.device.deviceId;
      case VIRTIO_MMIO_VENDOR_ID:
        return TABVISOR_VIRTIO_VENDOR_ID;
      case VIRTIO_MMIO_DEVICE_FEATURES: {
        const sel = b[base + DEVICE_FEATURES_SEL] >>> 0;
        return sel > 1 ? 0 : Number((this.device.features >> BigInt(32 * sel)) & 0xffff_ffffn);
      }
      case VIRTIO_MMIO_QUEUE_NUM_MAX: {
        const sel = b[base + QUEUE_SEL] >>> 0;
        return sel < this.queueCount ? this.device.queueSizeMax[sel] : 0;
      }
      case VIRTIO_MMIO_QUEUE_READY: {
        const q = this.selectedQueue();
        return q < 0 ? 0 : b[q + Q_READY];
      }
      case VIRTIO_MMIO_INTERRUPT_STATUS:
        return b[base + INTERRUPT_STATUS];
      case VIRTIO_MMIO_STATUS:
        return b[base + STATUS];
      case VIRTIO_MMIO_SHM_LEN_LOW:
      case VIRTIO_MMIO_SHM_LEN_HIGH:
      case VIRTIO_MMIO_SHM_BASE_LOW:
      case VIRTIO_MMIO_SHM_BASE_HIGH:
        return -1; // no shared memory regions: length -1, base all ones (4.2.2)
      case VIRTIO_MMIO_CONFIG_GENERATION:
        return b[base + CONFIG_GENERATION];
      default:
        return 0; // write-only registers, QueueReset without VIRTIO_F_RING_RESET, holes
    }
  }

  /** Caller holds the lock. */
  private writeRegister(mmioOffset: number, value: number): void {
    const b = this.block;
    const base = this.base;
    switch (mmioOffset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        b[base + DEVICE_FEATURES_SEL] = value;
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES: {
        // Features are frozen once FEATURES_OK is set (3.1.1).
        if ((b[base + STATUS] & VIRTIO_STATUS_FEATURES_OK) !== 0) return;
        const sel = b[base + DRIVER_FEATURES_SEL] >>> 0;
        if (sel === 0) b[base + DRIVER_FEATURES_LO] = value;
        else if (sel === 1) b[base + DRIVER_FEATURES_HI] = value;
        return;
      }
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        b[base + DRIVER_FEATURES_SEL] = value;
        return;
      case VIRTIO_MMIO_QUEUE_SEL:
        b[base + QUEUE_SEL] = value;
        return;
      case VIRTIO_MMIO_QUEUE_NUM:
        this.writeQueueWord(Q_NUM, value);
        return;
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
        this.writeQueueWord(Q_DESC_LO, value);
        return;
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        this.writeQueueWord(Q_DESC_HI, value);
        return;
      case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
        this.writeQueueWord(Q_DRIVER_LO, value);
        return;
      case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        this.writeQueueWord(Q_DRIVER_HI, value);
        return;
      case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
        this.writeQueueWord(Q_DEVICE_LO, value);
        return;
      case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        this.writeQueueWord(Q_DEVICE_HI, value);
        return;
      case VIRTIO_MMIO_QUEUE_READY: {
        const q = this.selectedQueue();
        if (q < 0) return;
        const ready = value & 1;
        if (ready === b[q + Q_READY]) return;
        // Enabling starts the rings from index 0 (a fresh queue); either change retires in-flight requests.
        b[q + Q_READY] = ready;
        b[q + Q_EPOCH]++;
        b[q + Q_NEXT_AVAIL] = 0;
        b[q + Q_NEXT_USED] = 0;
        return;
      }
      case VIRTIO_MMIO_INTERRUPT_ACK:
        b[base + INTERRUPT_STATUS] &= ~value;
        this.updateIrqLocked();
        return;
      case VIRTIO_MMIO_STATUS:
        this.writeStatus(value & 0xff);
        return;
      default:
        return; // read-only registers, SHMSel (no regions), QueueReset (not offered), holes
    }
  }

  /** The driver may not reprogram a queue while it is ready (4.2.2); such writes are ignored. */
  private writeQueueWord(word: number, value: number): void {
    const q = this.selectedQueue();
    if (q < 0 || this.block[q + Q_READY] !== 0) return;
    this.block[q + word] = word === Q_NUM ? value & 0xffff : value;
  }

  /** The status state machine (2.1, 3.1). Caller holds the lock. */
  private writeStatus(value: number): void {
    const b = this.block;
    const base = this.base;
    if (value === 0) {
      this.resetLocked();
      return;
    }
    const before = b[base + STATUS];
    // DEVICE_NEEDS_RESET belongs to the device: the driver can neither set nor clear it.
    let after = (value & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET) | (before & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    const settingFeaturesOk = (after & ~before & VIRTIO_STATUS_FEATURES_OK) !== 0;
    if (settingFeaturesOk && !this.featuresAcceptable()) after &= ~VIRTIO_STATUS_FEATURES_OK;
    b[base + STATUS] = after;
    const becameLive = (before & LIVE_BITS) !== LIVE_BITS && (after & LIVE_BITS) === LIVE_BITS;
    if (becameLive) {
      // Buffers made available before DRIVER_OK were not processed; look at every ready queue once.
      this.notifyReadyQueuesLocked();
      if (this.device.announceConfigWhenLive?.(this.driverFeatures()) === true)
        this.raiseLocked(VIRTIO_MMIO_INT_CONFIG);
    }
  }

  /** FEATURES_OK is accepted only for a subset of the offered features that includes VIRTIO_F_VERSION_1. */
  private featuresAcceptable(): boolean {
    const driver = this.driverFeatures();
    return (driver & ~this.device.features) === 0n && (driver & featureBit(VIRTIO_F_VERSION_1)) !== 0n;
  }

  /** Device reset (2.4): clear the register file, retire every queue's requests, drop the line. */
  private resetLocked(): void {
    const b = this.block;
    const base = this.base;
    for (let w = STATUS; w < HEADER_WORDS; w++) {
      if (w === DOORBELL || w === RESET_COUNT || w === IRQ_LEVEL) continue;
      // Both are read without the lock (the I/O thread's notifications, configuration reads).
      if (w === NOTIFY_PENDING || w === DEVICE_STATE) Atomics.store(b, base + w, 0);
      else b[base + w] = 0;
    }
    for (let q = 0; q < this.queueCount; q++) {
      const qb = this.queueBase(q);
      const epoch = b[qb + Q_EPOCH];
      for (let w = 0; w < QUEUE_WORDS; w++) b[qb + w] = 0;
      b[qb + Q_EPOCH] = epoch + 1;
    }
    b[base + RESET_COUNT]++;
    this.updateIrqLocked();
    this.device.onReset?.();
  }

  /** Enter DEVICE_NEEDS_RESET (2.1.2) and send a configuration change notification. Caller holds the lock. */
  private failLocked(): void {
    const b = this.block;
    if ((b[this.base + STATUS] & VIRTIO_STATUS_DEVICE_NEEDS_RESET) !== 0) return;
    b[this.base + STATUS] |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    if ((b[this.base + STATUS] & VIRTIO_STATUS_DRIVER_OK) !== 0) this.raiseLocked(VIRTIO_MMIO_INT_CONFIG);
  }

  private notify(value: number): void {
    // Without VIRTIO_F_NOTIFICATION_DATA the value is the 16-bit queue index (4.2.3.3).
    const queue = value & 0xffff;
    if (queue >= this.queueCount) return;
    if (this.device.onNotify?.(queue, this) === true) this.ringDoorbell(0);
    else this.ringDoorbell(1 << queue);
  }

  /**
   * I/O thread, after a restore from a snapshot: treat every ready queue as notified. The snapshot may have
   * caught a queue whose notification the old I/O side had taken but whose buffers it had not yet used (a
   * virtio console write the guest spins on, a packet); the new I/O side must look at every ring once, as a
   * device does after migration. A spurious notification costs one look at an empty ring.
   */
  renotifyReadyQueues(): void {
    this.lock.acquire();
    try {
      const status = this.block[this.base + STATUS];
      if ((status & VIRTIO_STATUS_DRIVER_OK) === 0) return;
      this.notifyReadyQueuesLocked();
    } finally {
      this.lock.release();
    }
  }

  /** Mark every ready queue notified and ring the doorbell once. Caller holds the lock. */
  private notifyReadyQueuesLocked(): void {
    let ready = 0;
    for (let q = 0; q < this.queueCount; q++)
      if (this.block[this.queueBase(q) + Q_READY] !== 0) ready |= 1 << q;
    if (ready !== 0) this.ringDoorbell(ready);
  }

  private ringDoorbell(queues: number): void {
    if (queues !== 0) Atomics.or(this.block, this.base + NOTIFY_PENDING, queues);
    Atomics.add(this.block, this.base + DOORBELL, 1);
    notifyWord(this.block, this.base + DOORBELL);
  }

  private raiseLocked(bits: number): void {
    this.block[this.base + INTERRUPT_STATUS] |= bits;
    this.updateIrqLocked();
  }

  /** Drive the line from InterruptStatus, calling the sink only on a change. Caller holds the lock. */
  private updateIrqLocked(): void {
    const level = this.block[this.base + INTERRUPT_STATUS] !== 0 ? 1 : 0;
    if (this.block[this.base + IRQ_LEVEL] === level) return;
    this.block[this.base + IRQ_LEVEL] = level;
    this.irqSink.setLevel(this.irq, level === 1);
  }
}
