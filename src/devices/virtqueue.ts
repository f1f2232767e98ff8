import type { AddressSpace } from '../mem/address-space.ts';

/**
 * Split virtqueues seen from the device (virtio 1.2, section 2.7). All multi-byte fields are little-endian.
 *
 * struct virtq_desc (2.7.5), 16 bytes: le64 addr; le32 len; le16 flags; le16 next;
 */
export const VIRTQ_DESC_SIZE = 16;
export const VIRTQ_DESC_ADDR = 0;
export const VIRTQ_DESC_LEN = 8;
export const VIRTQ_DESC_FLAGS = 12;
export const VIRTQ_DESC_NEXT = 14;
/** Descriptor flags (2.7.5): the chain continues at `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flags: the buffer is device-writable (otherwise device-readable). */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flags: the buffer is a table of descriptors (2.7.5.3, needs VIRTIO_F_INDIRECT_DESC). */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** struct virtq_avail (2.7.6): le16 flags; le16 idx; le16 ring[size]; le16 used_event; */
export const VIRTQ_AVAIL_FLAGS = 0;
export const VIRTQ_AVAIL_IDX = 2;
export const VIRTQ_AVAIL_RING = 4;
/** Available ring flags: the driver asks for no used buffer notifications (2.7.7). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;

/** struct virtq_used (2.7.8): le16 flags; le16 idx; struct virtq_used_elem ring[size]; le16 avail_event; */
export const VIRTQ_USED_FLAGS = 0;
export const VIRTQ_USED_IDX = 2;
export const VIRTQ_USED_RING = 4;
/** Used ring flags: the device needs no available buffer notifications (2.7.10); only advice to the driver. */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** struct virtq_used_elem: le32 id; le32 len; */
export const VIRTQ_USED_ELEM_SIZE = 8;

/** Alignment of each part (2.7, table "Virtqueue Part Alignment"). */
export const VIRTQ_DESC_ALIGN = 16;
export const VIRTQ_AVAIL_ALIGN = 2;
export const VIRTQ_USED_ALIGN = 4;
/** The largest queue size a split virtqueue can have (2.7). */
export const VIRTQ_MAX_SIZE = 32768;

/** Bytes of each part of a queue of `size` entries (2.7, table "Virtqueue Part Sizes"). */
export function virtqDescBytes(size: number): number {
  return VIRTQ_DESC_SIZE * size;
}
export function virtqAvailBytes(size: number): number {
  return 6 + 2 * size;
}
export function virtqUsedBytes(size: number): number {
  return 6 + VIRTQ_USED_ELEM_SIZE * size;
}

/** Where the driver put a queue, as programmed through the transport. Addresses are guest-physical. */
export interface VirtqueueLayout {
  /** Queue size (entries); a power of two. */
  readonly size: number;
  /** Descriptor Area (descriptor table). */
  readonly descGpa: number;
  /** Driver Area (available ring). */
  readonly availGpa: number;
  /** Device Area (used ring). */
  readonly usedGpa: number;
}

/** One buffer of a descriptor chain: `[gpa, gpa + length)`. */
export interface BufferSegment {
  readonly gpa: number;
  readonly length: number;
  /** False when any byte of the buffer lies outside the VM's RAM (including addresses at or above 4 GiB). */
  readonly inRam: boolean;
}

/** A descriptor chain taken from the available ring: device-readable buffers first, then device-writable. */
export interface DescriptorChain {
  /** The head descriptor index: the id to return in the used ring. */
  readonly head: number;
  readonly readable: readonly BufferSegment[];
  readonly writable: readonly BufferSegment[];
  readonly readableBytes: number;
  readonly writableBytes: number;
}

/** What {@link SplitVirtqueue.pop} found. `broken` means the driver violated the ring protocol. */
export type PopResult =
  | { readonly kind: 'empty' }
  | { readonly kind: 'chain'; readonly chain: DescriptorChain }
  | { readonly kind: 'broken'; readonly reason: string };

/**
 * Why a queue layout cannot be used, or undefined when it can: size not a power of two in `[1, maxSize]`, a
 * misaligned part, or a part not entirely in RAM. Any address at or above 4 GiB is outside RAM on RV32, so the
 * callers pass only the low word after checking the high word is 0.
 */
export function checkVirtqueueLayout(
  memory: AddressSpace,
  layout: VirtqueueLayout,
  maxSize: number,
): string | undefined {
  const { size, descGpa, availGpa, usedGpa } = layout;
  if (!Number.isInteger(size) || size < 1 || size > maxSize || (size & (size - 1)) !== 0) {
    return `queue size ${size} is not a power of two in [1, ${maxSize}]`;
  }
  if (
    descGpa % VIRTQ_DESC_ALIGN !== 0 ||
    availGpa % VIRTQ_AVAIL_ALIGN !== 0 ||
    usedGpa % VIRTQ_USED_ALIGN !== 0
  ) {
    return 'a queue part is misaligned';
  }
  if (
    !memory.isRam(descGpa, virtqDescBytes(size)) ||
    !memory.isRam(availGpa, virtqAvailBytes(size)) ||
    !memory.isRam(usedGpa, virtqUsedBytes(size))
  ) {
    return 'a queue part is outside RAM';
  }
  return undefined;
}

/**
 * The device side of one split virtqueue over guest RAM. It is a short-lived view: the transport builds it
 * under its register lock from the queue's registers and its saved ring positions, and stores the positions
 * back afterwards. The layout must have passed {@link checkVirtqueueLayout}.
 *
 * The guest is hostile: every descriptor field is read exactly once into a local, every index is range
 * checked, and a chain may hold at most `size` descriptors per table (main table and indirect table each), so
 * a loop in `next` ends the walk instead of the host. Any violation is reported as `broken`, after which the
 * caller must stop using the queue (the transport sets DEVICE_NEEDS_RESET).
 */
export class SplitVirtqueue {
  /** Free-running index of the next available-ring entry to take (16 bits). */
  nextAvail: number;
  /** Free-running index of the next used-ring entry to write (16 bits). */
  nextUsed: number;
  /** Used entries written through this view. */
  usedWritten = 0;

  constructor(
    private readonly memory: AddressSpace,
    readonly layout: VirtqueueLayout,
    /** VIRTIO_F_INDIRECT_DESC was negotiated. */
    private readonly indirect: boolean,
    nextAvail: number,
    nextUsed: number,
  ) {
    this.nextAvail = nextAvail & 0xffff;
    this.nextUsed = nextUsed & 0xffff;
  }

  /**
   * True when the driver set VIRTQ_AVAIL_F_NO_INTERRUPT (the device then need not interrupt, 2.7.7). Read
   * atomically: it is asked right after the used index was stored (an atomic store), and the pair must not
   * be reordered against the driver's "clear the flag, full fence, read the used index".
   */
  get driverSuppressesInterrupts(): boolean {
    return (this.loadU16(this.layout.availGpa + VIRTQ_AVAIL_FLAGS) & VIRTQ_AVAIL_F_NO_INTERRUPT) !== 0;
  }

  /**
   * Tell the driver whether this queue needs available buffer notifications (VIRTQ_USED_F_NO_NOTIFY clear or
   * set, 2.7.10). Writes the used ring's flags only when they change.
   */
  setNotificationsWanted(wanted: boolean): void {
    const at = this.layout.usedGpa + VIRTQ_USED_FLAGS;
    const flags = wanted ? 0 : VIRTQ_USED_F_NO_NOTIFY;
    if (this.memory.readU16(at) !== flags) this.memory.writeU16(at, flags);
  }

  /** Take the next chain from the available ring. */
  pop(): PopResult {
    const { size, availGpa } = this.layout;
    const availIdx = this.loadU16(availGpa + VIRTQ_AVAIL_IDX);
    const pending = (availIdx - this.nextAvail) & 0xffff;
    if (pending === 0) return EMPTY;
    // The driver can never have more than `size` buffers outstanding (2.7.13): a larger jump is corruption.
    if (pending > size)
      return broken(`available index moved ${pending} entries ahead of a ${size}-entry queue`);
    const slot = this.nextAvail & (size - 1);
    const head = this.memory.readU16(availGpa + VIRTQ_AVAIL_RING + 2 * slot);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    return this.walk(head);
  }

  /** Return chain `head` to the driver with `writtenBytes` bytes written into its writable buffers (2.7.8). */
  pushUsed(head: number, writtenBytes: number): void {
    const { size, usedGpa } = this.layout;
    const entry = usedGpa + VIRTQ_USED_RING + VIRTQ_USED_ELEM_SIZE * (this.nextUsed & (size - 1));
    this.memory.writeU32(entry, head);
    this.memory.writeU32(entry + 4, writtenBytes);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    // The entry must be visible before the index that publishes it (2.7.8.2): a sequentially consistent store.
    this.storeU16(usedGpa + VIRTQ_USED_IDX, this.nextUsed);
    this.usedWritten++;
  }

  private walk(head: number): PopResult {
    const { size, descGpa } = this.layout;
    if (head >= size) return broken(`descriptor index ${head} is outside a ${size}-entry table`);
    const readable: BufferSegment[] = [];
    const writable: BufferSegment[] = [];
    let readableBytes = 0;
    let writableBytes = 0;
    let tableGpa = descGpa;
    let tableEntries = size;
    let inIndirect = false;
    let visited = 0;
    let index = head;
    for (;;) {
      // A driver may not build a chain longer than the queue (2.7.5.3.1, 2.7.13.1); this also ends loops.
      if (++visited > tableEntries) return broken(`descriptor chain longer than ${tableEntries} (a loop?)`);
      const descGpaAt = tableGpa + VIRTQ_DESC_SIZE * index;
      const addrLo = this.memory.readU32(descGpaAt + VIRTQ_DESC_ADDR);
      const addrHi = this.memory.readU32(descGpaAt + VIRTQ_DESC_ADDR + 4);
      const length = this.memory.readU32(descGpaAt + VIRTQ_DESC_LEN);
      const flags = this.memory.readU16(descGpaAt + VIRTQ_DESC_FLAGS);
      const next = this.memory.readU16(descGpaAt + VIRTQ_DESC_NEXT);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // 2.7.5.3.1: only with the feature, never nested, never combined with NEXT, a whole number of entries.
        if (!this.indirect) return broken('indirect descriptor without VIRTIO_F_INDIRECT_DESC');
        if (inIndirect) return broken('indirect descriptor inside an indirect table');
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) return broken('indirect descriptor with NEXT set');
        const entries = length / VIRTQ_DESC_SIZE;
        if (length === 0 || !Number.isInteger(entries) || entries > size) {
          return broken(`indirect table of ${length} bytes is not 1..${size} descriptors`);
        }
        if (addrHi !== 0 || !this.memory.isRam(addrLo, length)) return broken('indirect table outside RAM');
        tableGpa = addrLo;
        tableEntries = entries;
        inIndirect = true;
        visited = 0;
        index = 0;
        continue;
      }
      const inRam = length === 0 || (addrHi === 0 && this.memory.isRam(addrLo, length));
      const segment: BufferSegment = { gpa: addrLo, length, inRam };
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
        writable.push(segment);
        writableBytes += length;
      } else {
        // 2.7.4.2: device-readable buffers come before device-writable ones.
        if (writable.length > 0) return broken('device-readable descriptor after a device-writable one');
        readable.push(segment);
        readableBytes += length;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (next >= tableEntries) return broken(`next index ${next} is outside a ${tableEntries}-entry table`);
      index = next;
    }
    return { kind: 'chain', chain: { head, readable, writable, readableBytes, writableBytes } };
  }

  /** Atomic 16-bit load of an aligned ring index (pairs with the driver's write barrier before it). */
  private loadU16(gpa: number): number {
    return Atomics.load(this.memory.u16, this.memory.hostOffset(gpa) >>> 1);
  }

  private storeU16(gpa: number, value: number): void {
    Atomics.store(this.memory.u16, this.memory.hostOffset(gpa) >>> 1, value);
  }
}

const EMPTY: PopResult = { kind: 'empty' };

function broken(reason: string): PopResult {
  return { kind: 'broken', reason };
}
