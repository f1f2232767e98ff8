import { describe, expect, it } from 'vitest';
import { SharedLayout, createControlBlock } from '../../../src/common/shared-block.ts';
import type { FrameOffload } from '../../../src/common/frame-offload.ts';
import {
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  VirtioMmioTransport,
  featureBit,
} from '../../../src/devices/virtio-mmio.ts';
import {
  VIRTIO_ID_NET,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_SIZE,
  VIRTIO_NET_MAX_FRAME_BYTES,
  VIRTIO_NET_MAX_GSO_FRAME_BYTES,
  VIRTIO_NET_QUEUE_SIZE,
  VIRTIO_NET_RX_QUEUE,
  VIRTIO_NET_TX_BATCH,
  VIRTIO_NET_TX_QUEUE,
  VirtioNetDevice,
  VirtioNetHost,
  parseUnicastMac,
} from '../../../src/devices/virtio-net.ts';
import {
  VIRTQ_DESC_F_NEXT,
  VIRTQ_USED_FLAGS,
  VIRTQ_USED_F_NO_NOTIFY,
} from '../../../src/devices/virtqueue.ts';
import { RecordingIrq, TestGuestRam, VirtioTestDriver } from '../../helpers/virtio-driver.ts';

const MAC = '52:54:00:12:34:56';

/** The features of a driver that takes no offload and no mergeable buffers (most tests). */
const BASIC_FEATURES =
  featureBit(VIRTIO_F_VERSION_1) |
  featureBit(VIRTIO_F_INDIRECT_DESC) |
  featureBit(VIRTIO_NET_F_MAC) |
  featureBit(VIRTIO_NET_F_STATUS) |
  featureBit(VIRTIO_NET_F_MTU);

function setup(options: { queueSize?: number; features?: bigint } = {}) {
  const layout = new SharedLayout(1);
  const base = layout.alloc(VirtioMmioTransport.words(2));
  const block = createControlBlock(layout.words, true);
  const irq = new RecordingIrq();
  // Two objects over one region, as on a hart thread and on the I/O thread.
  const hartView = new VirtioMmioTransport(block, base, new VirtioNetDevice({ mac: MAC }), irq, 1);
  const ioView = new VirtioMmioTransport(block, base, new VirtioNetDevice({ mac: MAC }), irq, 1);
  const ram = new TestGuestRam(4 << 20);
  const sent: Uint8Array[] = [];
  const sentOffloads: (FrameOffload | undefined)[] = [];
  const guestErrors: string[] = [];
  const host = new VirtioNetHost(
    ioView,
    ram.memory,
    {
      send: (frame, offload) => {
        sent.push(frame);
        sentOffloads.push(offload);
      },
    },
    {
      onGuestError: (reason) => guestErrors.push(reason),
    },
  );
  const driver = new VirtioTestDriver(hartView, ram);
  driver.initialize({
    queueCount: 2,
    queueSize: options.queueSize,
    features: options.features ?? BASIC_FEATURES,
  });
  host.service();
  return { host, driver, ram, irq, sent, sentOffloads, guestErrors };
}

type Setup = ReturnType<typeof setup>;

/** An Ethernet frame of `length` bytes: broadcast destination, the test MAC as source, payload pattern. */
function frame(length: number, seed = 1): Uint8Array {
  const bytes = new Uint8Array(length);
  bytes.fill(0xff, 0, 6);
  bytes.set(parseUnicastMac(MAC) ?? [], 6);
  bytes[12] = 0x08;
  for (let i = 14; i < length; i++) bytes[i] = (i * seed) & 0xff;
  return bytes;
}

/** Queue a frame for transmission as Linux does: header and frame in one readable buffer. */
function transmit(s: Setup, payload: Uint8Array): void {
  const bytes = new Uint8Array(VIRTIO_NET_HDR_SIZE + payload.length);
  bytes.set(payload, VIRTIO_NET_HDR_SIZE);
  s.driver.queues[VIRTIO_NET_TX_QUEUE].add([{ bytes }]);
}

/** Post a receive buffer of `length` writable bytes; returns its guest address. */
function postRx(s: Setup, length = VIRTIO_NET_HDR_SIZE + VIRTIO_NET_MAX_FRAME_BYTES): number {
  const gpa = s.ram.alloc(length, 16);
  s.driver.queues[VIRTIO_NET_RX_QUEUE].add([{ gpa, length, writable: true }]);
  return gpa;
}

describe('virtio-net device model', () => {
  it('is a network device offering VERSION_1, MAC, STATUS, MTU, checksum and TSO offloads and mergeable buffers', () => {
    const s = setup();
    expect(s.driver.probe()).toBe(VIRTIO_ID_NET);
    const features = s.driver.deviceFeatures();
    const offered = [VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MTU];
    offered.push(VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6);
    offered.push(VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_MRG_RXBUF);
    for (const bit of offered) expect(features & featureBit(bit)).not.toBe(0n);
    // No UDP fragmentation or ECN offloads, no control queue.
    for (const bit of [9n, 10n, 13n, 14n, 17n]) expect(features & featureBit(bit)).toBe(0n);
    expect(s.driver.queues).toHaveLength(2);
  });

  it('configuration space holds the MAC, link up and MTU 1500', () => {
    const s = setup();
    const mac = Array.from({ length: 6 }, (_, i) => s.driver.transport.read(VIRTIO_MMIO_CONFIG + i, 1));
    expect(mac).toEqual([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    expect(s.driver.transport.read(VIRTIO_MMIO_CONFIG + 6, 2)).toBe(1);
    expect(s.driver.transport.read(VIRTIO_MMIO_CONFIG + 8, 2)).toBe(1);
    expect(s.driver.transport.read(VIRTIO_MMIO_CONFIG + 10, 2)).toBe(1500);
  });

  it('refuses a multicast, all-zero or malformed MAC with the expected form', () => {
    for (const mac of ['01:00:5e:00:00:01', '00:00:00:00:00:00', '52:54:00:12:34', 'zz:54:00:12:34:56'])
      expect(() => new VirtioNetDevice({ mac })).toThrow(/xx:xx:xx:xx:xx:xx/);
  });
});

describe('virtio-net transmit', () => {
  it('strips the 12-byte header and hands each frame to the backend, outside guest RAM', () => {
    const s = setup();
    const a = frame(60, 3);
    const b = frame(VIRTIO_NET_MAX_FRAME_BYTES, 5);
    transmit(s, a);
    transmit(s, b);
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    expect(s.host.service()).toBe(false);
    expect(s.sent).toEqual([a, b]);
    expect(s.sent[0].buffer).not.toBe(s.ram.memory.u8.buffer);
    const used = s.driver.queues[VIRTIO_NET_TX_QUEUE].takeUsed();
    expect(used).toHaveLength(2);
    expect(s.driver.handleInterrupt() & VIRTIO_MMIO_INT_VRING).toBe(VIRTIO_MMIO_INT_VRING);
    expect(s.host.stats).toMatchObject({
      txFrames: 2,
      txBytes: 60 + VIRTIO_NET_MAX_FRAME_BYTES,
      txDropped: 0,
    });
  });

  it('a header and frame split over several descriptors arrive whole', () => {
    const s = setup();
    const payload = frame(200, 7);
    const bytes = new Uint8Array(VIRTIO_NET_HDR_SIZE + payload.length);
    bytes.set(payload, VIRTIO_NET_HDR_SIZE);
    s.driver.queues[VIRTIO_NET_TX_QUEUE].add([
      { bytes: bytes.subarray(0, 5) },
      { bytes: bytes.subarray(5, 40) },
      { bytes: bytes.subarray(40) },
    ]);
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    s.host.service();
    expect(s.sent).toEqual([payload]);
  });

  it('hostile: frames beyond 1518 bytes, runts, headerless and device-writable chains are dropped, the queue lives on', () => {
    const s = setup();
    transmit(s, frame(VIRTIO_NET_MAX_FRAME_BYTES + 1));
    transmit(s, frame(13));
    s.driver.queues[VIRTIO_NET_TX_QUEUE].add([{ bytes: new Uint8Array(8) }]);
    s.driver.queues[VIRTIO_NET_TX_QUEUE].add([{ bytes: new Uint8Array(80) }, { writableLength: 16 }]);
    const good = frame(64);
    transmit(s, good);
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    s.host.service();
    expect(s.sent).toEqual([good]);
    expect(s.host.stats.txDropped).toBe(4);
    expect(s.driver.queues[VIRTIO_NET_TX_QUEUE].takeUsed()).toHaveLength(5);
    expect(s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).toBe(0);
  });

  it('hostile: a frame whose buffer lies outside RAM is dropped, not read', () => {
    const s = setup();
    const q = s.driver.queues[VIRTIO_NET_TX_QUEUE];
    q.add([{ gpa: 0x7000_0000, length: 100, writable: false }]);
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    s.host.service();
    expect(s.sent).toEqual([]);
    expect(s.host.stats.txDropped).toBe(1);
  });

  it('hostile: a looping descriptor chain fails the device instead of hanging the host', () => {
    const s = setup({ queueSize: 8 });
    const q = s.driver.queues[VIRTIO_NET_TX_QUEUE];
    const gpa = s.ram.alloc(64);
    q.writeDescriptor(0, { addr: gpa, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    q.writeDescriptor(1, { addr: gpa, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    q.publish(0);
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    s.host.service();
    expect(s.sent).toEqual([]);
    expect(s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).toBe(VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    expect(s.guestErrors.join()).toMatch(/longer than/);
  });

  it(`a guest refilling the queue is served ${VIRTIO_NET_TX_BATCH} chains at a time, and the rest on the next call`, () => {
    const s = setup();
    const q = s.driver.queues[VIRTIO_NET_TX_QUEUE];
    for (let i = 0; i < VIRTIO_NET_QUEUE_SIZE; i++) transmit(s, frame(60));
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    // A full batch: the host stops there and asks to be called again without a doorbell.
    expect(s.host.service()).toBe(true);
    expect(s.sent).toHaveLength(VIRTIO_NET_TX_BATCH);
    q.takeUsed();
    transmit(s, frame(60));
    expect(s.host.service()).toBe(false);
    expect(s.sent).toHaveLength(VIRTIO_NET_QUEUE_SIZE + 1);
  });

  it('sending from the backend back into the device (a synchronous reply) does not deadlock', () => {
    const s = setup();
    const replies: boolean[] = [];
    const echo = new VirtioNetHost(s.host.transport, s.ram.memory, {
      send: (f) => replies.push(echo.deliver(f)),
    });
    postRx(s);
    transmit(s, frame(60));
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    echo.service();
    expect(replies).toEqual([true]);
  });

  it('hands frames to the backend before returning their buffers and interrupting the sender, and returns them even if it throws', () => {
    const s = setup();
    const tx = s.driver.queues[VIRTIO_NET_TX_QUEUE];
    const seen: { used: number; interrupt: number }[] = [];
    let fail = false;
    const host = new VirtioNetHost(s.host.transport, s.ram.memory, {
      send: () => {
        seen.push({ used: tx.usedIdx(), interrupt: s.driver.handleInterrupt() });
        if (fail) throw new Error('backend broke');
      },
    });
    transmit(s, frame(60));
    transmit(s, frame(61));
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    host.service();
    // While the backend had the frames, neither buffer was back and no interrupt was pending.
    expect(seen).toEqual([
      { used: 0, interrupt: 0 },
      { used: 0, interrupt: 0 },
    ]);
    expect(tx.takeUsed()).toHaveLength(2);
    expect(s.driver.handleInterrupt() & VIRTIO_MMIO_INT_VRING).toBe(VIRTIO_MMIO_INT_VRING);
    fail = true;
    transmit(s, frame(62));
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    expect(() => host.service()).toThrow('backend broke');
    expect(tx.takeUsed()).toHaveLength(1); // the guest gets its buffer back all the same
  });
});

describe('virtio-net receive', () => {
  it('copies a frame behind a zeroed header with num_buffers 1 and interrupts', () => {
    const s = setup();
    const gpa = postRx(s);
    s.driver.notify(VIRTIO_NET_RX_QUEUE);
    s.host.service();
    const f = frame(98, 9);
    expect(s.host.deliver(f)).toBe(true);
    const used = s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed();
    expect(used).toEqual([{ id: expect.any(Number) as number, len: VIRTIO_NET_HDR_SIZE + 98 }]);
    const header = s.ram.get(gpa, VIRTIO_NET_HDR_SIZE);
    expect(Array.from(header)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    expect(s.ram.get(gpa + VIRTIO_NET_HDR_SIZE, 98)).toEqual(f);
    expect(s.driver.handleInterrupt() & VIRTIO_MMIO_INT_VRING).toBe(VIRTIO_MMIO_INT_VRING);
    expect(s.host.stats).toMatchObject({ rxFrames: 1, rxBytes: 98 });
  });

  it('a frame scatters across a chain of small writable buffers', () => {
    const s = setup();
    const parts = [7, 20, 2000].map((length) => ({ gpa: s.ram.alloc(length), length, writable: true }));
    s.driver.queues[VIRTIO_NET_RX_QUEUE].add(parts);
    const f = frame(300, 11);
    expect(s.host.deliver(f)).toBe(true);
    const joined = new Uint8Array(VIRTIO_NET_HDR_SIZE + 300);
    let at = 0;
    for (const p of parts) {
      const take = Math.min(p.length, joined.length - at);
      joined.set(s.ram.get(p.gpa, take), at);
      at += take;
    }
    expect(joined.subarray(VIRTIO_NET_HDR_SIZE)).toEqual(f);
  });

  it('asks the driver not to notify new receive buffers (VIRTQ_USED_F_NO_NOTIFY), and leaves the transmit queue notifying', () => {
    const s = setup();
    const rx = s.driver.queues[VIRTIO_NET_RX_QUEUE];
    const tx = s.driver.queues[VIRTIO_NET_TX_QUEUE];
    const usedFlags = (q: typeof rx) => s.ram.memory.readU16(q.usedGpa + VIRTQ_USED_FLAGS);
    expect(usedFlags(rx)).toBe(0); // a fresh ring: the driver's first refill notifies
    postRx(s);
    expect(s.host.deliver(frame(60))).toBe(true);
    expect(usedFlags(rx)).toBe(VIRTQ_USED_F_NO_NOTIFY);
    // Still set when the guest has no buffer (the frame is dropped; nothing waits for a refill).
    expect(s.host.deliver(frame(60))).toBe(false);
    expect(usedFlags(rx)).toBe(VIRTQ_USED_F_NO_NOTIFY);
    // Frames the guest sends still need their notification.
    expect(usedFlags(tx)).toBe(0);
  });

  it('answers false (busy) when the guest has posted no buffer, and true again once it has', () => {
    const s = setup();
    expect(s.host.deliver(frame(60))).toBe(false);
    expect(s.host.stats.rxNoBuffer).toBe(1);
    postRx(s);
    expect(s.host.deliver(frame(60))).toBe(true);
    expect(s.host.deliver(frame(60))).toBe(false);
  });

  it('answers false before the driver is ready (no DRIVER_OK)', () => {
    const s = setup();
    s.driver.reset();
    expect(s.host.deliver(frame(60))).toBe(false);
  });

  it('hostile: a buffer too small for header and frame gets nothing written and is returned empty', () => {
    const s = setup();
    const gpa = postRx(s, VIRTIO_NET_HDR_SIZE + 50);
    s.ram.memory.write(gpa, new Uint8Array(62).fill(0xaa));
    expect(s.host.deliver(frame(60))).toBe(true);
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()[0].len).toBe(0);
    expect(s.ram.get(gpa, 62).every((b) => b === 0xaa)).toBe(true);
    expect(s.host.stats.rxTooSmall).toBe(1);
  });

  it('hostile: a receive buffer outside RAM fails the device and nothing is written', () => {
    const s = setup();
    s.driver.queues[VIRTIO_NET_RX_QUEUE].add([{ gpa: 0x7000_0000, length: 2000, writable: true }]);
    expect(s.host.deliver(frame(60))).toBe(false);
    expect(s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).toBe(VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    expect(s.guestErrors).toHaveLength(1);
  });

  it('frames beyond the 1518-byte cap are never copied to the guest', () => {
    const s = setup();
    postRx(s, 4000);
    expect(s.host.deliver(frame(VIRTIO_NET_MAX_FRAME_BYTES + 1))).toBe(true);
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()).toHaveLength(0);
    expect(s.host.deliver(frame(VIRTIO_NET_MAX_FRAME_BYTES))).toBe(true);
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()).toHaveLength(1);
  });
});

/** Every feature the device offers: checksum and TSO offloads both ways and mergeable receive buffers. */
const OFFLOAD_FEATURES =
  BASIC_FEATURES |
  featureBit(VIRTIO_NET_F_CSUM) |
  featureBit(VIRTIO_NET_F_GUEST_CSUM) |
  featureBit(VIRTIO_NET_F_HOST_TSO4) |
  featureBit(VIRTIO_NET_F_HOST_TSO6) |
  featureBit(VIRTIO_NET_F_GUEST_TSO4) |
  featureBit(VIRTIO_NET_F_GUEST_TSO6) |
  featureBit(VIRTIO_NET_F_MRG_RXBUF);

/** A virtio_net_hdr (5.1.6) with the given fields, little-endian. */
function netHeader(fields: {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
}): Uint8Array {
  const header = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  const view = new DataView(header.buffer);
  header[0] = fields.flags ?? 0;
  header[1] = fields.gsoType ?? 0;
  view.setUint16(2, fields.hdrLen ?? 0, true);
  view.setUint16(4, fields.gsoSize ?? 0, true);
  view.setUint16(6, fields.csumStart ?? 0, true);
  view.setUint16(8, fields.csumOffset ?? 0, true);
  return header;
}

/** Queue header + frame as Linux does with scatter-gather: the header, then the frame in 4 KiB pieces. */
function transmitWithHeader(s: Setup, header: Uint8Array, payload: Uint8Array): void {
  const buffers = [{ bytes: header }];
  for (let at = 0; at < payload.length; at += 4096) buffers.push({ bytes: payload.slice(at, at + 4096) });
  s.driver.queues[VIRTIO_NET_TX_QUEUE].add(buffers, { indirect: buffers.length > 4 });
}

describe('virtio-net offloads', () => {
  const NEEDS_CSUM = 1;
  const DATA_VALID = 2;
  const GSO_TCPV4 = 1;
  const GSO_TCPV6 = 4;
  /** A TCP/IPv4 super-frame's header fields: MSS 1448, headers to byte 66, checksum pending at 34 + 16. */
  const TSO4_FIELDS = {
    flags: NEEDS_CSUM,
    gsoType: GSO_TCPV4,
    gsoSize: 1448,
    hdrLen: 66,
    csumStart: 34,
    csumOffset: 16,
  };

  it('lends frames as views into one transmit buffer reused batch after batch, grown to 1 MiB, with arrays of their own beyond', () => {
    const s = setup({ features: OFFLOAD_FEATURES });
    /** Each batch's frames as the backend saw them at the end of the batch, and the buffers they were in. */
    const batch = (payloads: Uint8Array[]): { intact: boolean; buffers: ArrayBufferLike[] } => {
      s.sent.length = 0;
      for (const payload of payloads) transmitWithHeader(s, netHeader(TSO4_FIELDS), payload);
      s.driver.notify(VIRTIO_NET_TX_QUEUE);
      s.host.service();
      s.driver.queues[VIRTIO_NET_TX_QUEUE].takeUsed();
      const intact =
        s.sent.length === payloads.length && s.sent.every((f, i) => f.join() === payloads[i].join());
      return { intact, buffers: s.sent.map((f) => f.buffer) };
    };
    const big = (n: number, seed: number): Uint8Array[] =>
      Array.from({ length: n }, (_, i) => frame(60_000 + i, seed + i));
    // One batch's frames lie one after another in one buffer, none overwriting another.
    const first = batch(big(3, 1));
    expect(first.intact).toBe(true);
    expect(new Set(first.buffers).size).toBe(1);
    expect(first.buffers[0]).not.toBe(s.ram.memory.u8.buffer);
    // The next batch reuses the same bytes: what the backend did not copy is gone.
    const kept = s.sent[0];
    const second = batch(big(2, 7));
    expect(second.intact).toBe(true);
    expect(second.buffers[0]).toBe(first.buffers[0]);
    expect(kept.join()).not.toBe(frame(60_000, 1).join());
    // A batch that does not fit grows the buffer (doubling, up to 1 MiB); the frames of that batch stay whole.
    const grown = batch(big(12, 20));
    expect(grown.intact).toBe(true);
    expect(grown.buffers.at(-1)!.byteLength).toBe(512 << 10);
    // Beyond 1 MiB in one batch, the remaining frames get arrays of their own.
    const beyond = batch(big(40, 60));
    expect(beyond.intact).toBe(true);
    expect(Math.max(...beyond.buffers.map((b) => b.byteLength))).toBe(1 << 20);
    const own = beyond.buffers.filter((b, i) => b.byteLength === s.sent[i].byteLength).length;
    expect(own).toBe(40 - 8 - 17);
  });

  it('hands the backend the checksum and TSO requests of a transmit header', () => {
    const s = setup({ features: OFFLOAD_FEATURES });
    const big = frame(30_000);
    transmitWithHeader(s, netHeader({ flags: NEEDS_CSUM, csumStart: 34, csumOffset: 16 }), frame(200));
    transmitWithHeader(s, netHeader(TSO4_FIELDS), big);
    transmitWithHeader(
      s,
      netHeader({ flags: NEEDS_CSUM, gsoType: GSO_TCPV6, gsoSize: 1428, csumStart: 54, csumOffset: 16 }),
      frame(9000),
    );
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    s.host.service();
    expect(s.sent.map((f) => f.length)).toEqual([200, 30_000, 9000]);
    expect(s.sent[1]).toEqual(big);
    expect(s.sentOffloads).toEqual([
      { csumStart: 34, csumOffset: 16, gso: 'none', gsoSize: 0, dataValid: false },
      { csumStart: 34, csumOffset: 16, gso: 'tcp4', gsoSize: 1448, dataValid: false },
      { csumStart: 54, csumOffset: 16, gso: 'tcp6', gsoSize: 1428, dataValid: false },
    ]);
  });

  it('drops transmit headers asking for what was not negotiated or is not the driver’s to set', () => {
    const s = setup();
    transmitWithHeader(s, netHeader({ flags: NEEDS_CSUM, csumStart: 34, csumOffset: 16 }), frame(200));
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    s.host.service();
    expect(s.sent).toHaveLength(0);
    const o = setup({ features: OFFLOAD_FEATURES });
    const bad = [
      netHeader({ flags: DATA_VALID }),
      netHeader({ flags: 4 }),
      netHeader({ gsoType: GSO_TCPV4, gsoSize: 1448, csumStart: 34, csumOffset: 16 }), // no NEEDS_CSUM
      netHeader({ flags: NEEDS_CSUM, gsoType: 3, gsoSize: 1448, csumStart: 34, csumOffset: 6 }), // UDP
      netHeader({
        flags: NEEDS_CSUM,
        gsoType: GSO_TCPV4 | 0x80,
        gsoSize: 1448,
        csumStart: 34,
        csumOffset: 16,
      }), // ECN
    ];
    for (const header of bad) transmitWithHeader(o, header, frame(200));
    // Longer than an MTU frame without a gso_type.
    transmitWithHeader(o, netHeader({ flags: NEEDS_CSUM, csumStart: 34, csumOffset: 16 }), frame(3000));
    // Longer than the largest super-frame.
    const huge = netHeader({
      flags: NEEDS_CSUM,
      gsoType: GSO_TCPV4,
      gsoSize: 1448,
      csumStart: 34,
      csumOffset: 16,
    });
    transmitWithHeader(o, huge, frame(VIRTIO_NET_MAX_GSO_FRAME_BYTES + 1));
    o.driver.notify(VIRTIO_NET_TX_QUEUE);
    o.host.service();
    expect(o.sent).toHaveLength(0);
    expect(o.host.stats.txDropped).toBe(bad.length + 2);
    expect(o.driver.queues[VIRTIO_NET_TX_QUEUE].takeUsed()).toHaveLength(bad.length + 2);
  });

  it('tells the switch which offloads the driver takes, from the negotiated features', () => {
    expect(setup().host.offloads()).toEqual({ csum: false, tcp4: false, tcp6: false });
    const s = setup({ features: OFFLOAD_FEATURES });
    expect(s.host.offloads()).toEqual({ csum: true, tcp4: true, tcp6: true });
    s.driver.reset();
    expect(s.host.offloads()).toEqual({ csum: false, tcp4: false, tcp6: false });
    const csumOnly = BASIC_FEATURES | featureBit(VIRTIO_NET_F_GUEST_CSUM);
    expect(setup({ features: csumOnly }).host.offloads()).toEqual({ csum: true, tcp4: false, tcp6: false });
  });

  it('writes a received super-frame across mergeable buffers with its header and num_buffers', () => {
    const s = setup({ features: OFFLOAD_FEATURES });
    const gpas = Array.from({ length: 8 }, () => postRx(s, 1536));
    const f = frame(5000, 3);
    f[34 + 12] = 0x80; // TCP data offset 32 bytes
    const offload = { csumStart: 34, csumOffset: 16, gso: 'tcp4' as const, gsoSize: 1448, dataValid: false };
    expect(s.host.deliver(f, offload)).toBe(true);
    const used = s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed();
    expect(used.map((u) => u.len)).toEqual([1536, 1536, 1536, VIRTIO_NET_HDR_SIZE + 5000 - 3 * 1536]);
    const header = s.ram.get(gpas[0], VIRTIO_NET_HDR_SIZE);
    expect(Array.from(header)).toEqual(Array.from(netHeader(TSO4_FIELDS)).map((b, i) => (i === 10 ? 4 : b)));
    const joined = new Uint8Array(4 * 1536);
    gpas.slice(0, 4).forEach((gpa, i) => joined.set(s.ram.get(gpa, 1536), i * 1536));
    expect(joined.subarray(VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_SIZE + 5000)).toEqual(f);
  });

  it('marks frames whose checksums the host checked with DATA_VALID', () => {
    const s = setup({ features: OFFLOAD_FEATURES });
    const gpa = postRx(s);
    const valid = { csumStart: -1, csumOffset: 0, gso: 'none' as const, gsoSize: 0, dataValid: true };
    expect(s.host.deliver(frame(100), valid)).toBe(true);
    expect(s.ram.get(gpa, VIRTIO_NET_HDR_SIZE)[0]).toBe(DATA_VALID);
  });

  it('takes no mergeable buffer unless all the frame needs are there', () => {
    const s = setup({ features: OFFLOAD_FEATURES });
    postRx(s, 1536);
    postRx(s, 1536);
    const f = frame(4000, 5);
    const offload = { csumStart: 34, csumOffset: 16, gso: 'tcp4' as const, gsoSize: 1448, dataValid: false };
    expect(s.host.deliver(f, offload)).toBe(false);
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()).toHaveLength(0);
    postRx(s, 1536);
    expect(s.host.deliver(f, offload)).toBe(true);
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()).toHaveLength(3);
  });

  it('hostile: a mergeable buffer smaller than a header fails the device', () => {
    const s = setup({ features: OFFLOAD_FEATURES });
    postRx(s, 8);
    expect(s.host.deliver(frame(60))).toBe(false);
    expect(s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).toBe(VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    expect(s.guestErrors).toHaveLength(1);
  });

  it('without mergeable buffers a super-frame needs one buffer big enough, or is dropped', () => {
    const features = OFFLOAD_FEATURES & ~featureBit(VIRTIO_NET_F_MRG_RXBUF);
    const s = setup({ features });
    postRx(s, 1536);
    const offload = { csumStart: 34, csumOffset: 16, gso: 'tcp4' as const, gsoSize: 1448, dataValid: false };
    expect(s.host.deliver(frame(4000), offload)).toBe(true);
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()[0].len).toBe(0);
    expect(s.host.stats.rxTooSmall).toBe(1);
    postRx(s, 65_600);
    expect(s.host.deliver(frame(4000), offload)).toBe(true);
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()[0].len).toBe(VIRTIO_NET_HDR_SIZE + 4000);
  });
});

describe('virtio-net link held down until the driver resets the device (snapshot clones)', () => {
  const status = (s: Setup): number => s.driver.transport.read(VIRTIO_MMIO_CONFIG + 6, 2);

  it('clears LINK_UP in status and sends a configuration change interrupt; the MAC bytes are untouched', () => {
    const s = setup();
    s.driver.handleInterrupt();
    const generation = s.driver.read(VIRTIO_MMIO_CONFIG_GENERATION);
    expect(s.host.holdLinkDownUntilReset()).toBe(true);
    expect(s.host.linkHeldDown).toBe(true);
    expect(status(s)).toBe(0);
    expect(s.driver.read(VIRTIO_MMIO_CONFIG_GENERATION)).not.toBe(generation);
    expect(s.driver.handleInterrupt() & VIRTIO_MMIO_INT_CONFIG).toBe(VIRTIO_MMIO_INT_CONFIG);
    const mac = Array.from({ length: 6 }, (_, i) => s.driver.transport.read(VIRTIO_MMIO_CONFIG + i, 1));
    expect(mac).toEqual([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    // A 4-byte read across status and max_virtqueue_pairs sees the same status.
    expect(s.driver.transport.read(VIRTIO_MMIO_CONFIG + 6, 4)).toBe(0x0001_0000);
  });

  it('no frame moves either way while the link is held: received frames are dropped, queued ones returned unsent', () => {
    const s = setup();
    postRx(s);
    transmit(s, frame(60));
    s.host.holdLinkDownUntilReset();
    expect(s.host.deliver(frame(60))).toBe(true); // consumed (dropped), not "busy": the switch need not retry
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()).toHaveLength(0);
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    s.host.service();
    expect(s.sent).toHaveLength(0);
    expect(s.driver.queues[VIRTIO_NET_TX_QUEUE].takeUsed()).toEqual([expect.objectContaining({ len: 0 })]);
    expect(s.host.stats.linkDownDrops).toBe(2);
    expect(s.host.stats.txFrames + s.host.stats.rxFrames).toBe(0);
  });

  it('a device reset brings the link back up, and the re-initialized device moves frames again', () => {
    const s = setup();
    s.host.holdLinkDownUntilReset();
    s.driver.initialize({ queueCount: 2 }); // reset, negotiate, queues, DRIVER_OK: what a driver re-probe does
    expect(s.host.linkHeldDown).toBe(false);
    expect(status(s)).toBe(1);
    postRx(s);
    expect(s.host.deliver(frame(60))).toBe(true);
    expect(s.driver.queues[VIRTIO_NET_RX_QUEUE].takeUsed()).toHaveLength(1);
    transmit(s, frame(60));
    s.driver.notify(VIRTIO_NET_TX_QUEUE);
    s.host.service();
    expect(s.sent).toHaveLength(1);
  });

  it('a device the driver has not touched since reset needs no hold: its probe reads the MAC anyway', () => {
    const s = setup();
    s.driver.reset();
    expect(s.host.holdLinkDownUntilReset()).toBe(false);
    expect(s.host.linkHeldDown).toBe(false);
    expect(status(s)).toBe(1);
  });

  it("the hold lives in the shared control block: another thread's view of the device reads it", () => {
    const s = setup();
    s.host.holdLinkDownUntilReset();
    // The driver's transport object (a hart thread's) is not the one the host changed.
    expect(s.driver.transport).not.toBe(s.host.transport);
    expect(status(s)).toBe(0);
  });
});
