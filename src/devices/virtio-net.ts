import {
  MAX_SUPER_FRAME_BYTES,
  type FrameOffload,
  type GsoKind,
  type OffloadSupport,
} from '../common/frame-offload.ts';
import type { AccessSize } from './mmio.ts';
import type { AddressSpace } from '../mem/address-space.ts';
import type { BufferSegment, DescriptorChain } from './virtqueue.ts';
import type { VirtioDeviceModel, VirtioMmioTransport } from './virtio-mmio.ts';
import { VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit } from './virtio-mmio.ts';

/** Device ID of a network card (virtio 1.2, section 5). */
export const VIRTIO_ID_NET = 1;

/**
 * Feature bits we offer (5.1.3). Checksum offload both ways, TSO for TCP over IPv4 and IPv6 both ways (the
 * switch finishes frames for receivers that do not take them, see src/net/offload.ts), mergeable receive
 * buffers (so a 64 KiB receive needs no 64 KiB buffers), MAC, link status and MTU.
 */
export const VIRTIO_NET_F_CSUM = 0n;
export const VIRTIO_NET_F_GUEST_CSUM = 1n;
export const VIRTIO_NET_F_MTU = 3n;
export const VIRTIO_NET_F_MAC = 5n;
export const VIRTIO_NET_F_GUEST_TSO4 = 7n;
export const VIRTIO_NET_F_GUEST_TSO6 = 8n;
export const VIRTIO_NET_F_HOST_TSO4 = 11n;
export const VIRTIO_NET_F_HOST_TSO6 = 12n;
export const VIRTIO_NET_F_MRG_RXBUF = 15n;
export const VIRTIO_NET_F_STATUS = 16n;

/**
 * struct virtio_net_config (5.1.4), byte offsets (multi-byte fields little-endian):
 *   u8 mac[6] @0; le16 status @6; le16 max_virtqueue_pairs @8; le16 mtu @10; then speed/duplex and RSS fields
 *   of features not offered (read 0).
 */
export const VIRTIO_NET_CONFIG_MAC = 0;
export const VIRTIO_NET_CONFIG_STATUS = 6;
export const VIRTIO_NET_CONFIG_MAX_VIRTQUEUE_PAIRS = 8;
export const VIRTIO_NET_CONFIG_MTU = 10;
/** Bytes of configuration space we define (through mtu). */
export const VIRTIO_NET_CONFIG_SIZE = 12;
/** `status` bit (5.1.4): the link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;

/**
 * Bit of the transport's device state word (VirtioMmioTransport.updateDeviceState): the host holds the link down
 * until the driver resets the device. Set when a VM is restored from a snapshot with this card under a new MAC
 * (see {@link VirtioNetHost.holdLinkDownUntilReset}); the reset clears the word, so the link comes back up exactly
 * when the driver starts over and reads the configuration (and so the MAC) again.
 */
export const VIRTIO_NET_STATE_LINK_HELD_DOWN = 1;

/**
 * struct virtio_net_hdr (5.1.6), the VERSION_1 layout, 12 bytes: u8 flags @0; u8 gso_type @1; le16 hdr_len @2;
 * le16 gso_size @4; le16 csum_start @6; le16 csum_offset @8; le16 num_buffers @10. It precedes every frame on
 * both queues.
 */
export const VIRTIO_NET_HDR_FLAGS = 0;
export const VIRTIO_NET_HDR_GSO_TYPE = 1;
export const VIRTIO_NET_HDR_HDR_LEN = 2;
export const VIRTIO_NET_HDR_GSO_SIZE = 4;
export const VIRTIO_NET_HDR_CSUM_START = 6;
export const VIRTIO_NET_HDR_CSUM_OFFSET = 8;
export const VIRTIO_NET_HDR_NUM_BUFFERS = 10;
export const VIRTIO_NET_HDR_SIZE = 12;
/** `flags` bits (5.1.6): the checksum from csum_start is still to be completed; the checksums were checked. */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** `gso_type` values (5.1.6). UDP and the ECN bit are not accepted (their features are not offered). */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;

/** Queue indexes (5.1.2): receiveq1 and transmitq1; no control queue (VIRTIO_NET_F_CTRL_VQ not offered). */
export const VIRTIO_NET_RX_QUEUE = 0;
export const VIRTIO_NET_TX_QUEUE = 1;

/** The MTU we announce (VIRTIO_NET_F_MTU): standard Ethernet. */
export const VIRTIO_NET_MTU = 1500;
/** Ethernet header: destination, source, EtherType. */
const ETH_HEADER_BYTES = 14;
/** One 802.1Q tag, which a guest's VLAN subinterface adds on top of a full-MTU payload. */
const VLAN_TAG_BYTES = 4;

/**
 * Guest-facing bounds (STYLE.md rule 4). Each is enforced on every chain, so a hostile driver cannot make the
 * host allocate or loop without bound.
 */
/** QueueNumMax of both queues: 256 entries, as QEMU; Linux fills the rx queue with that many buffers. */
export const VIRTIO_NET_QUEUE_SIZE = 256;
/**
 * The largest frame (without FCS) the device sends or receives: MTU payload + Ethernet header + one VLAN tag,
 * 1518 bytes. Without GSO features a driver never builds a larger one (5.1.6.2); a longer tx chain is dropped
 * before anything is copied, so the host allocates at most this much per frame.
 */
export const VIRTIO_NET_MAX_FRAME_BYTES = VIRTIO_NET_MTU + ETH_HEADER_BYTES + VLAN_TAG_BYTES;
/**
 * The largest TCP super-frame (a frame with a gso_type) the device takes or gives. The switch checks the
 * headers inside against the gso fields.
 */
export const VIRTIO_NET_MAX_GSO_FRAME_BYTES = MAX_SUPER_FRAME_BYTES;
/**
 * Chains the host takes from the transmit queue per {@link VirtioNetHost.service} call before it yields to the
 * event loop ({@link VirtioNetHost.service} then answers "more"): a guest refilling the queue as fast as the
 * host drains it cannot keep the VMM thread busy forever.
 */
export const VIRTIO_NET_TX_BATCH = VIRTIO_NET_QUEUE_SIZE;

/** First size of a device's transmit buffer (room for a few super-frames); it grows as batches need. */
const TX_BUFFER_INITIAL_BYTES = 256 << 10;
/** Largest transmit buffer: frames of a batch beyond it get arrays of their own. */
const TX_BUFFER_MAX_BYTES = 1 << 20;

/** Plain data every thread needs to build the same network device (structured-clone safe). */
export interface VirtioNetOptions {
  /** The card's unicast MAC address, `xx:xx:xx:xx:xx:xx` (hex, any case). */
  readonly mac: string;
}

/** Parse `xx:xx:xx:xx:xx:xx` into 6 bytes; undefined unless it is a unicast address other than all zeros. */
export function parseUnicastMac(text: string): Uint8Array | undefined {
  const match = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(
    text,
  );
  if (match === null) return undefined;
  const bytes = Uint8Array.from(match.slice(1), (hex) => parseInt(hex, 16));
  if ((bytes[0] & 1) !== 0 || bytes.every((b) => b === 0)) return undefined;
  return bytes;
}

/**
 * A virtio network device (5.1): identity, features, the receive and transmit queues and the configuration
 * space (MAC, link status, MTU 1500). Pure declaration, the same in every thread (the link status comes from the
 * transport's device state word); frames move in {@link VirtioNetHost} on the I/O thread.
 *
 * Features offered: VERSION_1, INDIRECT_DESC, CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6, MRG_RXBUF, MAC,
 * STATUS, MTU. No control queue, one queue pair.
 */
export class VirtioNetDevice implements VirtioDeviceModel {
  readonly deviceId = VIRTIO_ID_NET;
  readonly features =
    featureBit(VIRTIO_F_VERSION_1) |
    featureBit(VIRTIO_F_INDIRECT_DESC) |
    featureBit(VIRTIO_NET_F_CSUM) |
    featureBit(VIRTIO_NET_F_GUEST_CSUM) |
    featureBit(VIRTIO_NET_F_GUEST_TSO4) |
    featureBit(VIRTIO_NET_F_GUEST_TSO6) |
    featureBit(VIRTIO_NET_F_HOST_TSO4) |
    featureBit(VIRTIO_NET_F_HOST_TSO6) |
    featureBit(VIRTIO_NET_F_MRG_RXBUF) |
    featureBit(VIRTIO_NET_F_MAC) |
    featureBit(VIRTIO_NET_F_STATUS) |
    featureBit(VIRTIO_NET_F_MTU);
  readonly queueSizeMax: readonly number[] = [VIRTIO_NET_QUEUE_SIZE, VIRTIO_NET_QUEUE_SIZE];
  readonly options: VirtioNetOptions;
  /** The MAC as bytes. */
  readonly mac: Uint8Array;
  private readonly config: Uint8Array;

  constructor(options: VirtioNetOptions) {
    const mac = parseUnicastMac(options.mac);
    if (mac === undefined) {
      throw new RangeError(
        `a virtio-net MAC is a unicast address written xx:xx:xx:xx:xx:xx (first byte even, not all zeros), not "${options.mac}"`,
      );
    }
    this.options = options;
    this.mac = mac;
    const config = new Uint8Array(VIRTIO_NET_CONFIG_SIZE);
    const view = new DataView(config.buffer);
    config.set(mac, VIRTIO_NET_CONFIG_MAC);
    view.setUint16(VIRTIO_NET_CONFIG_STATUS, VIRTIO_NET_S_LINK_UP, true);
    view.setUint16(VIRTIO_NET_CONFIG_MAX_VIRTQUEUE_PAIRS, 1, true);
    view.setUint16(VIRTIO_NET_CONFIG_MTU, VIRTIO_NET_MTU, true);
    this.config = config;
  }

  readConfig(configOffset: number, size: AccessSize, deviceState = 0): number {
    const linkDown = (deviceState & VIRTIO_NET_STATE_LINK_HELD_DOWN) !== 0;
    let value = 0;
    for (let i = size - 1; i >= 0; i--) {
      const at = configOffset + i;
      let byte = at >= 0 && at < this.config.length ? this.config[at] : 0;
      // status is le16: LINK_UP lives in its low byte.
      if (at === VIRTIO_NET_CONFIG_STATUS && linkDown) byte &= ~VIRTIO_NET_S_LINK_UP;
      value = (value << 8) | byte;
    }
    return value >>> 0;
  }

  writeConfig(_configOffset: number, _size: AccessSize, _value: number): void {
    // 5.1.4: without VIRTIO_NET_F_CTRL_MAC_ADDR the driver does not write the MAC; every field is read-only.
  }
}

/**
 * Where the device's transmitted frames go (STYLE.md rule 2): a switch port, a capture, a test. The frame is
 * lent for the call: it is a view into the device's transmit buffer, which the next batch overwrites, so a
 * receiver that keeps it (or posts it elsewhere) copies it first. `send` is called outside every device lock,
 * so it may deliver frames back into this or another device synchronously. `offload` is what the guest's header
 * asked for, as the guest wrote it (checked only against the negotiated features and size limits): the
 * receiver validates it against the frame before acting on it.
 */
export interface NetBackend {
  send(frame: Uint8Array, offload?: FrameOffload): void;
}

/** Hooks through which the host reports what went wrong; the VMM logs them. */
export interface VirtioNetHostOptions {
  /** The guest broke the virtqueue protocol; the device now needs a reset. */
  onGuestError?(reason: string): void;
}

/** Counters of one network device (for views and tests). */
export interface VirtioNetStats {
  txFrames: number;
  txBytes: number;
  /** Transmit chains dropped: header missing, frame shorter than an Ethernet header or longer than the cap, device-writable parts, or buffers outside RAM. */
  txDropped: number;
  rxFrames: number;
  rxBytes: number;
  /** Frames refused because the guest had no receive buffer (or the device was not live): the switch counts them busy. */
  rxNoBuffer: number;
  /** Frames dropped because the guest's receive buffer was too small for header + frame. */
  rxTooSmall: number;
  /** Frames dropped either way while the host held the link down ({@link VirtioNetHost.holdLinkDownUntilReset}). */
  linkDownDrops: number;
}

/**
 * The I/O-thread side of one virtio-net device. Transmit: the VMM calls {@link service} when the transport's
 * doorbell changes; each chain's header is stripped and the frame handed to the {@link NetBackend} as a view
 * into the device's transmit buffer, lent for the call. Receive: {@link deliver} (the switch's
 * `PortSink.deliver`) copies a frame into the next free receive buffer behind a header and raises the
 * interrupt, or answers false when the guest has no buffer.
 *
 * No guest input makes the host throw. Malformed transmit chains are returned unsent (used length 0) and
 * counted; a broken ring or a receive buffer outside RAM puts the device in DEVICE_NEEDS_RESET.
 */
export class VirtioNetHost {
  readonly device: VirtioNetDevice;
  readonly stats: VirtioNetStats = {
    txFrames: 0,
    txBytes: 0,
    txDropped: 0,
    rxFrames: 0,
    rxBytes: 0,
    rxNoBuffer: 0,
    rxTooSmall: 0,
    linkDownDrops: 0,
  };
  /** True when the last {@link service} stopped at {@link VIRTIO_NET_TX_BATCH} with chains still waiting. */
  private txBacklog = false;
  /**
   * Where a transmit batch's frames are gathered, one after the other, and reused by the next batch: in
   * Chromium a fresh 20 KB array cost ~0.1 ms (new memory is zeroed and faulted in), far more than copying the
   * frame, and a TCP stream sends thousands of them. Views handed out keep an outgrown buffer alive.
   */
  private txBuffer = new Uint8Array(TX_BUFFER_INITIAL_BYTES);
  private txBufferUsed = 0;
  /** Transmit batches in progress (a backend may, in principle, make this device transmit again). */
  private txDepth = 0;
  private readonly txHeader = new Uint8Array(VIRTIO_NET_HDR_SIZE);

  constructor(
    readonly transport: VirtioMmioTransport,
    private readonly memory: AddressSpace,
    private readonly backend: NetBackend,
    private readonly options: VirtioNetHostOptions = {},
  ) {
    if (!(transport.device instanceof VirtioNetDevice))
      throw new TypeError('the transport does not hold a virtio-net device');
    this.device = transport.device;
  }

  /**
   * Take the link down until the driver resets the device, and tell the driver (configuration change
   * notification; it reads `status` without LINK_UP). Meanwhile no frame moves either way. The reset that ends it
   * is a driver starting over, which reads the configuration again: this is how a VM restored from a snapshot
   * makes its guest pick up the card's new MAC (Linux reads the MAC only when it probes the card; the default
   * image's ifplugd action re-binds the driver when the link goes down). A device the driver has not touched
   * since its last reset (status 0) needs nothing: its driver will read the new MAC when it probes. Returns
   * whether the link is now held down.
   */
  holdLinkDownUntilReset(): boolean {
    if (this.transport.status === 0) return false;
    this.transport.updateDeviceState((state) => state | VIRTIO_NET_STATE_LINK_HELD_DOWN);
    return true;
  }

  /** True while the host holds the link down (until the driver resets the device). */
  get linkHeldDown(): boolean {
    return (this.transport.deviceState & VIRTIO_NET_STATE_LINK_HELD_DOWN) !== 0;
  }

  /** Control-block index of the doorbell: when its value changes, call {@link service}. */
  get doorbellIndex(): number {
    return this.transport.doorbellIndex;
  }

  /**
   * Take the guest's notifications and transmit what is queued. Returns true when transmit chains are still
   * waiting (the batch limit was reached): call again after yielding, without waiting for the doorbell.
   * Receive notifications need no work: new buffers are used as frames arrive.
   */
  service(): boolean {
    const notified = this.transport.takeNotifications();
    if ((notified & (1 << VIRTIO_NET_TX_QUEUE)) !== 0 || this.txBacklog) this.transmit();
    return this.txBacklog;
  }

  /**
   * The offloads the guest's driver accepted for frames it receives (PortSink.offloads): checksums left
   * partial (or marked checked) with GUEST_CSUM, TCP super-frames with GUEST_TSO4/6.
   */
  offloads(): OffloadSupport {
    const features = this.transport.negotiatedFeatures();
    const has = (bit: bigint): boolean => (features & featureBit(bit)) !== 0n;
    const csum = has(VIRTIO_NET_F_GUEST_CSUM);
    return {
      csum,
      tcp4: csum && has(VIRTIO_NET_F_GUEST_TSO4),
      tcp6: csum && has(VIRTIO_NET_F_GUEST_TSO6),
    };
  }

  /**
   * Receive one frame for the guest (PortSink semantics): true when it was copied into receive buffers (or
   * dropped because the buffer was too small, or because the link is held down, as a NIC drops it), false when the guest has no free buffer or
   * the device is not live. The frame is only read. `offload` (only what {@link offloads} said the driver
   * takes) goes into the frame's virtio_net_hdr. With MRG_RXBUF a frame spreads over as many buffers as it
   * needs; they are taken only when enough are free.
   */
  deliver(frame: Uint8Array, offload?: FrameOffload): boolean {
    const length = frame.length;
    const superFrame = offload !== undefined && offload.gso !== 'none';
    const limit = superFrame ? VIRTIO_NET_MAX_GSO_FRAME_BYTES : VIRTIO_NET_MAX_FRAME_BYTES;
    if (length < ETH_HEADER_BYTES || length > limit) {
      this.stats.rxTooSmall++;
      return true;
    }
    const header = receiveHeader(frame, offload);
    const needed = VIRTIO_NET_HDR_SIZE + length;
    let problem: string | undefined;
    let linkDown = false;
    const taken = this.transport.withLiveQueue(this.memory, VIRTIO_NET_RX_QUEUE, undefined, (live) => {
      if ((live.deviceState & VIRTIO_NET_STATE_LINK_HELD_DOWN) !== 0) {
        linkDown = true;
        return true;
      }
      const ring = live.ring;
      // New receive buffers need no action from us (frames use them as they arrive; without one a frame is
      // dropped, as a NIC drops it): ask the driver not to notify them, which saves the guest an MMIO exit and
      // the I/O side a wake-up per refill (2.7.10).
      ring.setNotificationsWanted(false);
      const mergeable = (live.driverFeatures & featureBit(VIRTIO_NET_F_MRG_RXBUF)) !== 0n;
      const firstAvail = ring.nextAvail;
      const chains: DescriptorChain[] = [];
      let capacity = 0;
      while (capacity < needed) {
        const popped = ring.pop();
        if (popped.kind === 'empty') {
          ring.nextAvail = firstAvail; // nothing was written: the buffers stay the guest's
          return false;
        }
        if (popped.kind === 'broken') {
          problem = popped.reason;
          live.fail(popped.reason);
          return false;
        }
        const chain = popped.chain;
        if (!chain.writable.every((s) => s.inRam)) {
          problem = 'virtio-net receive buffer outside RAM';
          live.fail(problem);
          return false;
        }
        if (chain.readableBytes !== 0 || (mergeable && chain.writableBytes < VIRTIO_NET_HDR_SIZE)) {
          if (mergeable) {
            // 5.1.6.3.1: every mergeable buffer is device-writable and holds at least a header.
            problem =
              'virtio-net mergeable receive buffer unusable (device-readable or smaller than a header)';
            live.fail(problem);
            return false;
          }
          this.stats.rxTooSmall++;
          ring.pushUsed(chain.head, 0);
          return true;
        }
        chains.push(chain);
        capacity += chain.writableBytes;
        if (!mergeable) break;
      }
      if (capacity < needed) {
        // Without MRG_RXBUF one buffer must hold it all (5.1.6.3); a NIC drops what does not fit.
        this.stats.rxTooSmall++;
        ring.pushUsed(chains[0].head, 0);
        return true;
      }
      header[VIRTIO_NET_HDR_NUM_BUFFERS] = chains.length & 0xff;
      header[VIRTIO_NET_HDR_NUM_BUFFERS + 1] = chains.length >>> 8;
      let at = 0;
      for (const chain of chains) {
        const used = Math.min(chain.writableBytes, needed - at);
        const fromHeader = Math.max(0, Math.min(VIRTIO_NET_HDR_SIZE - at, used));
        if (fromHeader > 0) scatter(this.memory, chain.writable, 0, header.subarray(at, at + fromHeader));
        const frameFrom = at + fromHeader - VIRTIO_NET_HDR_SIZE;
        const frameBytes = used - fromHeader;
        if (frameBytes > 0)
          scatter(this.memory, chain.writable, fromHeader, frame.subarray(frameFrom, frameFrom + frameBytes));
        ring.pushUsed(chain.head, used);
        at += used;
      }
      this.stats.rxFrames++;
      this.stats.rxBytes += length;
      return true;
    });
    if (problem !== undefined) this.options.onGuestError?.(problem);
    if (linkDown) {
      this.stats.linkDownDrops++;
      return true;
    }
    if (taken !== true) {
      this.stats.rxNoBuffer++;
      return false;
    }
    return true;
  }

  /** Take up to a batch of transmit chains under the lock, then hand the frames to the backend outside it. */
  private transmit(): void {
    this.txDepth++;
    try {
      this.transmitBatch();
    } finally {
      this.txDepth--;
    }
  }

  private transmitBatch(): void {
    // Frames of the last batch are no longer lent to anyone: their bytes may be overwritten.
    if (this.txDepth === 1) this.txBufferUsed = 0;
    const frames: Uint8Array[] = [];
    const offloads: (FrameOffload | undefined)[] = [];
    /** Heads of the chains taken, returned to the guest once their frames are on their way. */
    const heads: number[] = [];
    let problem: string | undefined;
    this.txBacklog = false;
    const epoch = this.transport.withLiveQueue(this.memory, VIRTIO_NET_TX_QUEUE, undefined, (live) => {
      // While the link is held down, frames the guest queued (under the identity it had before a snapshot
      // restore) are returned unsent, so no clone ever sends with another VM's MAC or address.
      const linkDown = (live.deviceState & VIRTIO_NET_STATE_LINK_HELD_DOWN) !== 0;
      for (let taken = 0; ; taken++) {
        if (taken === VIRTIO_NET_TX_BATCH) {
          this.txBacklog = true;
          return live.epoch;
        }
        const popped = live.ring.pop();
        if (popped.kind === 'empty') return live.epoch;
        if (popped.kind === 'broken') {
          problem = popped.reason;
          live.fail(popped.reason);
          return live.epoch;
        }
        const sent = linkDown ? undefined : this.gatherFrame(popped.chain, live.driverFeatures);
        heads.push(popped.chain.head);
        if (linkDown) {
          this.stats.linkDownDrops++;
        } else if (sent === undefined) {
          this.stats.txDropped++;
        } else {
          frames.push(sent.frame);
          offloads.push(sent.offload);
        }
      }
    });
    if (problem !== undefined) this.options.onGuestError?.(problem);
    try {
      // Outside the lock: the backend may deliver frames straight back into this device's receive queue.
      for (let i = 0; i < frames.length; i++) {
        const frame = frames[i];
        this.stats.txFrames++;
        this.stats.txBytes += frame.length;
        this.backend.send(frame, offloads[i]);
      }
    } finally {
      // Only now give the buffers back (and interrupt the sender for them): a frame's receiver is woken before
      // its sender's completion is handled, so the receiving vCPU's thread does not queue behind it for a core.
      // The frames were copied out, so the buffers are free whatever happens next (a backend that threw
      // included); a queue reset meanwhile (a new epoch) forgets them, as a reset must.
      if (heads.length > 0 && epoch !== undefined)
        this.transport.withLiveQueue(this.memory, VIRTIO_NET_TX_QUEUE, epoch, (live) => {
          for (const head of heads) live.ring.pushUsed(head, 0);
        });
    }
  }

  /**
   * The frame of a transmit chain (header stripped) with the offload its header asks for, or undefined when
   * the chain is not a valid one: device-writable parts, a header asking for an offload that was not
   * negotiated (or DATA_VALID, which only a device sets), a frame too short or longer than the cap (an MTU
   * frame, or 64 KiB of TCP for a super-frame).
   */
  private gatherFrame(
    chain: DescriptorChain,
    features: bigint,
  ): { frame: Uint8Array; offload: FrameOffload | undefined } | undefined {
    // 5.1.6.2: transmit buffers are device-readable only: header, then the frame.
    if (chain.writableBytes !== 0 || chain.readableBytes < VIRTIO_NET_HDR_SIZE) return undefined;
    const header = this.txHeader;
    if (!this.gather(chain, 0, header)) return undefined;
    const offload = transmitOffload(header, features);
    if (offload === null) return undefined;
    const length = chain.readableBytes - VIRTIO_NET_HDR_SIZE;
    const limit =
      offload !== undefined && offload.gso !== 'none'
        ? VIRTIO_NET_MAX_GSO_FRAME_BYTES
        : VIRTIO_NET_MAX_FRAME_BYTES;
    if (length < ETH_HEADER_BYTES || length > limit) return undefined;
    const frame = this.txSpace(length);
    if (!this.gather(chain, VIRTIO_NET_HDR_SIZE, frame)) return undefined;
    return { frame, offload };
  }

  /** `length` bytes of the transmit buffer for one frame of this batch (see {@link txBuffer}). */
  private txSpace(length: number): Uint8Array {
    if (this.txBufferUsed + length > this.txBuffer.length) {
      if (this.txBuffer.length >= TX_BUFFER_MAX_BYTES) return new Uint8Array(length);
      this.txBuffer = new Uint8Array(
        Math.min(TX_BUFFER_MAX_BYTES, Math.max(2 * this.txBuffer.length, length)),
      );
      this.txBufferUsed = 0;
    }
    const frame = this.txBuffer.subarray(this.txBufferUsed, this.txBufferUsed + length);
    this.txBufferUsed += length;
    return frame;
  }

  /** Copy `out.length` bytes of a chain's readable parts, starting `skip` bytes in; false if a part is not RAM. */
  private gather(chain: DescriptorChain, skip: number, out: Uint8Array): boolean {
    let at = 0;
    for (const segment of chain.readable) {
      if (at === out.length) break;
      if (skip >= segment.length) {
        skip -= segment.length;
        continue;
      }
      if (!segment.inRam) return false;
      const take = Math.min(segment.length - skip, out.length - at);
      if (!this.memory.read((segment.gpa + skip) >>> 0, out.subarray(at, at + take))) return false;
      at += take;
      skip = 0;
    }
    return at === out.length;
  }
}

/** The gso_type value of a segmentation kind. */
const GSO_TYPES: Record<GsoKind, number> = {
  none: VIRTIO_NET_HDR_GSO_NONE,
  tcp4: VIRTIO_NET_HDR_GSO_TCPV4,
  tcp6: VIRTIO_NET_HDR_GSO_TCPV6,
};

/**
 * The offload a transmit header asks for: undefined for none, null when the header is invalid for the
 * negotiated features (5.1.6.2.1: NEEDS_CSUM needs CSUM, a TCPv4/v6 gso_type needs HOST_TSO4/6 and a pending
 * checksum; DATA_VALID and other flags are the device's to set).
 */
function transmitOffload(header: Uint8Array, features: bigint): FrameOffload | undefined | null {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const flags = header[VIRTIO_NET_HDR_FLAGS];
  const gsoType = header[VIRTIO_NET_HDR_GSO_TYPE];
  if ((flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) return null;
  const needsCsum = (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  if (needsCsum && (features & featureBit(VIRTIO_NET_F_CSUM)) === 0n) return null;
  let gso: GsoKind;
  if (gsoType === VIRTIO_NET_HDR_GSO_NONE) gso = 'none';
  else if (gsoType === VIRTIO_NET_HDR_GSO_TCPV4 && (features & featureBit(VIRTIO_NET_F_HOST_TSO4)) !== 0n)
    gso = 'tcp4';
  else if (gsoType === VIRTIO_NET_HDR_GSO_TCPV6 && (features & featureBit(VIRTIO_NET_F_HOST_TSO6)) !== 0n)
    gso = 'tcp6';
  else return null;
  if (gso !== 'none' && !needsCsum) return null;
  if (!needsCsum) return undefined;
  return {
    csumStart: view.getUint16(VIRTIO_NET_HDR_CSUM_START, true),
    csumOffset: view.getUint16(VIRTIO_NET_HDR_CSUM_OFFSET, true),
    gso,
    gsoSize: gso === 'none' ? 0 : view.getUint16(VIRTIO_NET_HDR_GSO_SIZE, true),
    dataValid: false,
  };
}

/**
 * The virtio_net_hdr for a received frame (num_buffers filled in later): its pending checksum and
 * segmentation, or DATA_VALID (5.1.6.4). hdr_len is the length of the headers of a super-frame (Ethernet to
 * the end of the TCP header), as a driver expects it.
 */
function receiveHeader(frame: Uint8Array, offload: FrameOffload | undefined): Uint8Array {
  const header = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  if (offload === undefined) return header;
  const view = new DataView(header.buffer);
  if (offload.csumStart >= 0) {
    header[VIRTIO_NET_HDR_FLAGS] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    view.setUint16(VIRTIO_NET_HDR_CSUM_START, offload.csumStart, true);
    view.setUint16(VIRTIO_NET_HDR_CSUM_OFFSET, offload.csumOffset, true);
  } else if (offload.dataValid) {
    header[VIRTIO_NET_HDR_FLAGS] = VIRTIO_NET_HDR_F_DATA_VALID;
  }
  if (offload.gso !== 'none' && offload.csumStart >= 0) {
    header[VIRTIO_NET_HDR_GSO_TYPE] = GSO_TYPES[offload.gso];
    view.setUint16(VIRTIO_NET_HDR_GSO_SIZE, offload.gsoSize, true);
    const tcpHeader = offload.csumStart + 12 < frame.length ? (frame[offload.csumStart + 12] >>> 4) * 4 : 0;
    view.setUint16(VIRTIO_NET_HDR_HDR_LEN, Math.min(frame.length, offload.csumStart + tcpHeader), true);
  }
  return header;
}

/** Copy `data` into the concatenation of `segments` (checked to be RAM) starting at byte `start`. */
function scatter(
  memory: AddressSpace,
  segments: readonly BufferSegment[],
  start: number,
  data: Uint8Array,
): void {
  let skip = start;
  let at = 0;
  for (const segment of segments) {
    if (at === data.length) return;
    if (skip >= segment.length) {
      skip -= segment.length;
      continue;
    }
    const take = Math.min(segment.length - skip, data.length - at);
    memory.write((segment.gpa + skip) >>> 0, data.subarray(at, at + take));
    at += take;
    skip = 0;
  }
}
