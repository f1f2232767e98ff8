import type { IrqSink, MmioDevice } from '../../src/devices/mmio.ts';
import { AddressSpace, RAM_BASE } from '../../src/mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../../src/mem/host-ram.ts';
import {
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_DEVICE_HIGH,
  VIRTIO_MMIO_QUEUE_DEVICE_LOW,
  VIRTIO_MMIO_QUEUE_DRIVER_HIGH,
  VIRTIO_MMIO_QUEUE_DRIVER_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_STATUS,
  VIRTIO_STATUS_ACKNOWLEDGE,
  VIRTIO_STATUS_DRIVER,
  VIRTIO_STATUS_DRIVER_OK,
  VIRTIO_STATUS_FEATURES_OK,
} from '../../src/devices/virtio-mmio.ts';
import {
  VIRTIO_MAGIC,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_VERSION,
} from '../../src/devices/virtio-mmio-empty.ts';
import {
  VIRTQ_AVAIL_FLAGS,
  VIRTQ_AVAIL_IDX,
  VIRTQ_AVAIL_RING,
  VIRTQ_DESC_ADDR,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_FLAGS,
  VIRTQ_DESC_LEN,
  VIRTQ_DESC_NEXT,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_ELEM_SIZE,
  VIRTQ_USED_IDX,
  VIRTQ_USED_RING,
  virtqAvailBytes,
  virtqDescBytes,
  virtqUsedBytes,
} from '../../src/devices/virtqueue.ts';

/**
 * Guest RAM for device tests with a bump allocator. Frames are mapped in reverse order, so any buffer that
 * crosses a 4 KiB page is split across host frames, as in a real VM whose RAM is not contiguous on the host.
 */
export class TestGuestRam {
  readonly memory: AddressSpace;
  private next: number;

  constructor(readonly ramBytes = 4 << 20) {
    const host = new HostRam(ramBytes, true);
    const frames = host.allocate(ramBytes / FRAME_SIZE).reverse();
    this.memory = new AddressSpace({
      ram: host.buffer,
      table: AddressSpace.tableFor(frames, true),
      ramBase: RAM_BASE,
      ramSize: ramBytes,
    });
    this.next = RAM_BASE;
  }

  /** Reserve `bytes` of zeroed RAM aligned to `align`; returns its guest-physical address. */
  alloc(bytes: number, align = 16): number {
    const gpa = Math.ceil(this.next / align) * align;
    if (gpa + bytes > RAM_BASE + this.ramBytes) throw new Error('test guest RAM exhausted');
    this.next = gpa + bytes;
    this.memory.fill(gpa, bytes, 0);
    return gpa;
  }

  /** Reserve RAM holding `bytes`. */
  put(bytes: Uint8Array, align = 16): number {
    const gpa = this.alloc(bytes.length, align);
    this.memory.write(gpa, bytes);
    return gpa;
  }

  /** Copy `length` bytes of guest RAM at `gpa`. */
  get(gpa: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    if (!this.memory.read(gpa, out)) throw new Error('not RAM');
    return out;
  }
}

/** An IrqSink that records the line. */
export class RecordingIrq implements IrqSink {
  level = false;
  raises = 0;

  setLevel(_irq: number, level: boolean): void {
    if (level && !this.level) this.raises++;
    this.level = level;
  }
}

/** One buffer of a chain the test driver builds: device-readable bytes, or `length` device-writable bytes. */
export type TestBuffer =
  | { readonly gpa: number; readonly length: number; readonly writable: boolean }
  | { readonly bytes: Uint8Array }
  | { readonly writableLength: number };

/** A descriptor exactly as the driver writes it, for hostile tests. */
export interface RawDescriptor {
  readonly addr: number;
  readonly addrHi?: number;
  readonly len: number;
  readonly flags: number;
  readonly next: number;
}

/** A used ring entry. */
export interface UsedEntry {
  readonly id: number;
  readonly len: number;
}

/** The driver's view of one split virtqueue in test guest RAM. */
export class TestQueue {
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  /** Free-running index of the next available-ring slot. */
  availIdx = 0;
  /** Next used-ring entry the driver has not consumed. */
  lastUsed = 0;
  private readonly free: number[] = [];
  /** Head -> descriptors of its chain, returned to the free list when used. */
  private readonly chains = new Map<number, number[]>();

  constructor(
    private readonly ram: TestGuestRam,
    readonly index: number,
    readonly size: number,
  ) {
    this.descGpa = ram.alloc(virtqDescBytes(size), 16);
    this.availGpa = ram.alloc(virtqAvailBytes(size), 2);
    this.usedGpa = ram.alloc(virtqUsedBytes(size), 4);
    for (let i = 0; i < size; i++) this.free.push(i);
  }

  /** Free descriptors in the table. */
  get freeDescriptors(): number {
    return this.free.length;
  }

  /** Build a chain of `buffers` (readable ones first) and make it available. Returns the head index. */
  add(buffers: readonly TestBuffer[], options: { indirect?: boolean } = {}): number {
    const resolved = buffers.map((b) => this.resolve(b));
    if (options.indirect) {
      const table = this.ram.alloc(VIRTQ_DESC_SIZE * resolved.length, 16);
      resolved.forEach((b, i) =>
        this.writeDescriptorAt(table + VIRTQ_DESC_SIZE * i, {
          addr: b.gpa,
          len: b.length,
          flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < resolved.length ? VIRTQ_DESC_F_NEXT : 0),
          next: i + 1,
        }),
      );
      const head = this.take(1)[0];
      this.writeDescriptor(head, {
        addr: table,
        len: VIRTQ_DESC_SIZE * resolved.length,
        flags: VIRTQ_DESC_F_INDIRECT,
        next: 0,
      });
      this.chains.set(head, [head]);
      this.publish(head);
      return head;
    }
    const indices = this.take(resolved.length);
    resolved.forEach((b, i) =>
      this.writeDescriptor(indices[i], {
        addr: b.gpa,
        len: b.length,
        flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < resolved.length ? VIRTQ_DESC_F_NEXT : 0),
        next: i + 1 < resolved.length ? indices[i + 1] : 0,
      }),
    );
    this.chains.set(indices[0], indices);
    this.publish(indices[0]);
    return indices[0];
  }

  /** Write descriptor `index` of the table exactly as given (hostile tests). */
  writeDescriptor(index: number, d: RawDescriptor): void {
    this.writeDescriptorAt(this.descGpa + VIRTQ_DESC_SIZE * index, d);
  }

  /** Write a descriptor at any guest address (indirect tables). */
  writeDescriptorAt(gpa: number, d: RawDescriptor): void {
    const m = this.ram.memory;
    m.writeU32(gpa + VIRTQ_DESC_ADDR, d.addr);
    m.writeU32(gpa + VIRTQ_DESC_ADDR + 4, d.addrHi ?? 0);
    m.writeU32(gpa + VIRTQ_DESC_LEN, d.len);
    m.writeU16(gpa + VIRTQ_DESC_FLAGS, d.flags);
    m.writeU16(gpa + VIRTQ_DESC_NEXT, d.next);
  }

  /** Put `head` (any value) in the next available slot and publish it. */
  publish(head: number): void {
    const m = this.ram.memory;
    m.writeU16(this.availGpa + VIRTQ_AVAIL_RING + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    m.writeU16(this.availGpa + VIRTQ_AVAIL_IDX, this.availIdx);
  }

  /** Set the available index to any value (hostile tests). */
  setAvailIdx(value: number): void {
    this.availIdx = value & 0xffff;
    this.ram.memory.writeU16(this.availGpa + VIRTQ_AVAIL_IDX, this.availIdx);
  }

  /** Set the available ring's flags (VIRTQ_AVAIL_F_NO_INTERRUPT). */
  setAvailFlags(flags: number): void {
    this.ram.memory.writeU16(this.availGpa + VIRTQ_AVAIL_FLAGS, flags);
  }

  /** The device's used index. */
  usedIdx(): number {
    return this.ram.memory.readU16(this.usedGpa + VIRTQ_USED_IDX);
  }

  /** Consume the used entries the device wrote since the last call, freeing their descriptors. */
  takeUsed(): UsedEntry[] {
    const out: UsedEntry[] = [];
    const m = this.ram.memory;
    const end = this.usedIdx();
    while (this.lastUsed !== end) {
      const entry = this.usedGpa + VIRTQ_USED_RING + VIRTQ_USED_ELEM_SIZE * (this.lastUsed % this.size);
      const used = { id: m.readU32(entry), len: m.readU32(entry + 4) };
      out.push(used);
      const chain = this.chains.get(used.id);
      if (chain !== undefined) {
        this.chains.delete(used.id);
        this.free.push(...chain);
      }
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  private take(count: number): number[] {
    if (count > this.free.length)
      throw new Error(`queue ${this.index} has only ${this.free.length} free descriptors`);
    return this.free.splice(0, count);
  }

  private resolve(b: TestBuffer): { gpa: number; length: number; writable: boolean } {
    if ('gpa' in b) return b;
    if ('bytes' in b) return { gpa: this.ram.put(b.bytes, 1), length: b.bytes.length, writable: false };
    return { gpa: this.ram.alloc(b.writableLength, 1), length: b.writableLength, writable: true };
  }
}

/**
 * A fake guest driver that programs a virtio-mmio transport the way Linux's virtio_mmio driver does
 * (drivers/virtio/virtio_mmio.c and the virtio core): probe, reset, ACKNOWLEDGE, DRIVER, 64-bit feature
 * negotiation with a FEATURES_OK read-back, queue setup through QueueSel, DRIVER_OK, then QueueNotify and
 * InterruptStatus/InterruptACK. Only aligned 32-bit register accesses, as the spec requires.
 */
export class VirtioTestDriver {
  readonly queues: TestQueue[] = [];

  constructor(
    readonly transport: MmioDevice,
    readonly ram: TestGuestRam,
  ) {}

  read(mmioOffset: number): number {
    return this.transport.read(mmioOffset, 4);
  }

  write(mmioOffset: number, value: number): void {
    if (!this.transport.write(mmioOffset, 4, value))
      throw new Error(`register 0x${mmioOffset.toString(16)} rejected`);
  }

  /** Probe: magic, version 2, and the device ID. */
  probe(): number {
    if (this.read(VIRTIO_MMIO_MAGIC_VALUE) !== VIRTIO_MAGIC) throw new Error('bad magic');
    if (this.read(VIRTIO_MMIO_VERSION) !== 2) throw new Error('not a version 2 transport');
    return this.read(VIRTIO_MMIO_DEVICE_ID);
  }

  /** The 64 device feature bits. */
  deviceFeatures(): bigint {
    this.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    const hi = BigInt(this.read(VIRTIO_MMIO_DEVICE_FEATURES));
    this.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    const lo = BigInt(this.read(VIRTIO_MMIO_DEVICE_FEATURES));
    return (hi << 32n) | lo;
  }

  /** Reset the device (status 0) and read the status back. */
  reset(): void {
    this.write(VIRTIO_MMIO_STATUS, 0);
    if (this.read(VIRTIO_MMIO_STATUS) !== 0) throw new Error('reset did not complete');
  }

  /** OR `bits` into the status register. */
  addStatus(bits: number): void {
    this.write(VIRTIO_MMIO_STATUS, this.read(VIRTIO_MMIO_STATUS) | bits);
  }

  /**
   * Reset and negotiate: accept `wanted` features (default: all offered), write them, set FEATURES_OK and check
   * it stuck. Returns the accepted set; throws if the device refused it.
   */
  negotiate(wanted?: bigint): bigint {
    this.probe();
    this.reset();
    this.addStatus(VIRTIO_STATUS_ACKNOWLEDGE);
    this.addStatus(VIRTIO_STATUS_DRIVER);
    const accepted = wanted ?? this.deviceFeatures();
    this.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    this.write(VIRTIO_MMIO_DRIVER_FEATURES, Number(accepted >> 32n) >>> 0);
    this.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    this.write(VIRTIO_MMIO_DRIVER_FEATURES, Number(accepted & 0xffff_ffffn) >>> 0);
    this.addStatus(VIRTIO_STATUS_FEATURES_OK);
    if ((this.read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK) === 0)
      throw new Error('FEATURES_OK refused');
    return accepted;
  }

  /** Set up queue `index` with `size` entries (default QueueNumMax) in fresh guest RAM. */
  setupQueue(index: number, size?: number): TestQueue {
    this.write(VIRTIO_MMIO_QUEUE_SEL, index);
    if (this.read(VIRTIO_MMIO_QUEUE_READY) !== 0) throw new Error('queue already in use');
    const max = this.read(VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max === 0) throw new Error(`queue ${index} does not exist`);
    const queue = new TestQueue(this.ram, index, size ?? max);
    this.write(VIRTIO_MMIO_QUEUE_NUM, queue.size);
    this.write(VIRTIO_MMIO_QUEUE_DESC_LOW, queue.descGpa);
    this.write(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
    this.write(VIRTIO_MMIO_QUEUE_DRIVER_LOW, queue.availGpa);
    this.write(VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
    this.write(VIRTIO_MMIO_QUEUE_DEVICE_LOW, queue.usedGpa);
    this.write(VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
    this.write(VIRTIO_MMIO_QUEUE_READY, 1);
    this.queues[index] = queue;
    return queue;
  }

  /** The whole Linux bring-up: negotiate, set up `queueCount` queues, DRIVER_OK. */
  initialize(options: { features?: bigint; queueCount?: number; queueSize?: number } = {}): bigint {
    const accepted = this.negotiate(options.features);
    for (let q = 0; q < (options.queueCount ?? 1); q++) this.setupQueue(q, options.queueSize);
    this.addStatus(VIRTIO_STATUS_DRIVER_OK);
    return accepted;
  }

  /** Available buffer notification for queue `index`. */
  notify(index = 0): void {
    this.write(VIRTIO_MMIO_QUEUE_NOTIFY, index);
  }

  /** The interrupt handler: read InterruptStatus and acknowledge exactly those bits. Returns them. */
  handleInterrupt(): number {
    const status = this.read(VIRTIO_MMIO_INTERRUPT_STATUS);
    if (status !== 0) this.write(VIRTIO_MMIO_INTERRUPT_ACK, status);
    return status;
  }

  /** The status register. */
  status(): number {
    return this.read(VIRTIO_MMIO_STATUS);
  }
}
