import { describe, expect, it } from 'vitest';
import { SharedLayout, createControlBlock } from '../../../src/common/shared-block.ts';
import { UserError } from '../../../src/common/errors.ts';
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
  VIRTIO_CONSOLE_CONFIG_EMERG_WR,
  VIRTIO_CONSOLE_CONFIG_MAX_NR_PORTS,
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_F_SIZE,
  VIRTIO_CONSOLE_MAX_TX_CHAIN_BYTES,
  VIRTIO_CONSOLE_QUEUE_SIZE,
  VIRTIO_CONSOLE_RX_QUEUE,
  VIRTIO_CONSOLE_TX_RING_BYTES,
  VIRTIO_CONSOLE_TX_QUEUE,
  VIRTIO_ID_CONSOLE,
  VirtioConsoleDevice,
  VirtioConsoleHost,
  checkConsoleSize,
} from '../../../src/devices/virtio-console.ts';
import { VIRTQ_DESC_F_NEXT } from '../../../src/devices/virtqueue.ts';
import { RecordingIrq, TestGuestRam, VirtioTestDriver } from '../../helpers/virtio-driver.ts';

const ALL =
  featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_CONSOLE_F_SIZE);

function setup(options: { features?: bigint; queueSize?: number; initialize?: boolean } = {}) {
  const layout = new SharedLayout(1);
  const transportWords = VirtioMmioTransport.words(2);
  const base = layout.alloc(VirtioConsoleDevice.regionWords(transportWords));
  const block = createControlBlock(layout.words, true);
  const irq = new RecordingIrq();
  const ram = new TestGuestRam(4 << 20);
  let fallback = 0;
  const device = (): VirtioConsoleDevice =>
    new VirtioConsoleDevice(block, base + transportWords, ram.memory, { fallbackPosition: () => fallback });
  // Two objects over one region, as on a hart thread and on the I/O thread.
  const hartView = new VirtioMmioTransport(block, base, device(), irq, 9);
  const ioView = new VirtioMmioTransport(block, base, device(), irq, 9);
  const guestErrors: string[] = [];
  const host = new VirtioConsoleHost(ioView, ram.memory, {
    onGuestError: (reason) => guestErrors.push(reason),
  });
  host.resize(80, 24);
  const driver = new VirtioTestDriver(hartView, ram);
  if (options.initialize !== false) {
    driver.initialize({ features: options.features, queueCount: 2, queueSize: options.queueSize });
    host.service();
  }
  let taken = '';
  /** What the VMM takes from the transmit ring, accumulated. */
  const text = (): string => (taken += new TextDecoder().decode(host.takeOutput()));
  const setFallback = (position: number): void => {
    fallback = position;
  };
  const hartDevice = hartView.device as VirtioConsoleDevice;
  return { host, driver, ram, irq, text, guestErrors, setFallback, block, hartDevice };
}

type Setup = ReturnType<typeof setup>;

/** Queue `text` for transmission as Linux's put_chars does: one device-readable buffer. */
function send(s: Setup, text: string): number {
  return s.driver.queues[VIRTIO_CONSOLE_TX_QUEUE].add([{ bytes: new TextEncoder().encode(text) }]);
}

/** Post a page-sized receive buffer as Linux's fill_queue does; returns its guest address. */
function postRx(s: Setup, length = 4096): number {
  const gpa = s.ram.alloc(length, 16);
  s.driver.queues[VIRTIO_CONSOLE_RX_QUEUE].add([{ gpa, length, writable: true }]);
  return gpa;
}

/** The config space's cols and rows as the driver reads them (two 16-bit reads, as virtio_cread does). */
function configSize(s: Setup): { cols: number; rows: number } {
  const t = s.driver.transport;
  return { cols: t.read(VIRTIO_MMIO_CONFIG, 2), rows: t.read(VIRTIO_MMIO_CONFIG + 2, 2) };
}

describe('virtio console device model', () => {
  it('is a console (ID 3) offering VERSION_1 and SIZE, with one receive and one transmit queue', () => {
    const s = setup({ initialize: false });
    expect(s.driver.probe()).toBe(VIRTIO_ID_CONSOLE);
    const features = s.driver.deviceFeatures();
    expect(features).toBe(ALL);
    // One port, so no control queues; no emergency write.
    expect(features & featureBit(VIRTIO_CONSOLE_F_MULTIPORT)).toBe(0n);
    expect(features & featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE)).toBe(0n);
    s.driver.initialize({ queueCount: 2 });
    expect(s.driver.queues.map((q) => q.size)).toEqual([
      VIRTIO_CONSOLE_QUEUE_SIZE,
      VIRTIO_CONSOLE_QUEUE_SIZE,
    ]);
    expect(() => s.driver.setupQueue(2)).toThrow(/does not exist/);
  });

  it('configuration space: le16 cols at 0, le16 rows at 2, max_nr_ports and emerg_wr read 0 and ignore writes', () => {
    const s = setup();
    s.host.resize(132, 0x1234);
    const t = s.driver.transport;
    expect(configSize(s)).toEqual({ cols: 132, rows: 0x1234 });
    expect(t.read(VIRTIO_MMIO_CONFIG, 4)).toBe(132 | (0x1234 << 16));
    expect([0, 1, 2, 3].map((i) => t.read(VIRTIO_MMIO_CONFIG + i, 1))).toEqual([132, 0, 0x34, 0x12]);
    expect(t.read(VIRTIO_MMIO_CONFIG + VIRTIO_CONSOLE_CONFIG_MAX_NR_PORTS, 4)).toBe(0);
    expect(t.read(VIRTIO_MMIO_CONFIG + VIRTIO_CONSOLE_CONFIG_EMERG_WR, 4)).toBe(0);
    expect(t.write(VIRTIO_MMIO_CONFIG, 4, 0x0001_0001)).toBe(true);
    expect(t.write(VIRTIO_MMIO_CONFIG + VIRTIO_CONSOLE_CONFIG_EMERG_WR, 4, 0x41)).toBe(true);
    expect(configSize(s)).toEqual({ cols: 132, rows: 0x1234 });
    expect(s.text()).toBe('');
  });

  it('tells a driver that negotiated SIZE to read the size when it sets DRIVER_OK (Linux reads it only then)', () => {
    const s = setup({ initialize: false });
    s.host.resize(100, 30);
    expect(s.irq.level).toBe(false);
    s.driver.initialize({ queueCount: 2 });
    expect(s.irq.level).toBe(true);
    expect(s.driver.handleInterrupt()).toBe(VIRTIO_MMIO_INT_CONFIG);
    expect(configSize(s)).toEqual({ cols: 100, rows: 30 });
  });

  it('sends no configuration change at DRIVER_OK to a driver that did not negotiate SIZE', () => {
    const s = setup({ features: featureBit(VIRTIO_F_VERSION_1) });
    expect(s.irq.level).toBe(false);
    expect(s.driver.handleInterrupt()).toBe(0);
  });
});

describe('virtio console resize', () => {
  it('a new size bumps the configuration generation and raises a configuration change interrupt', () => {
    const s = setup();
    s.driver.handleInterrupt(); // the DRIVER_OK announcement
    const generation = s.driver.read(VIRTIO_MMIO_CONFIG_GENERATION);
    s.host.resize(120, 40);
    expect(s.irq.level).toBe(true);
    expect(s.driver.handleInterrupt()).toBe(VIRTIO_MMIO_INT_CONFIG);
    expect(s.irq.level).toBe(false);
    expect(s.driver.read(VIRTIO_MMIO_CONFIG_GENERATION)).toBe(generation + 1);
    expect(configSize(s)).toEqual({ cols: 120, rows: 40 });
  });

  it('the same size again changes nothing and raises nothing', () => {
    const s = setup();
    s.driver.handleInterrupt();
    const generation = s.driver.read(VIRTIO_MMIO_CONFIG_GENERATION);
    s.host.resize(80, 24);
    expect(s.irq.level).toBe(false);
    expect(s.driver.read(VIRTIO_MMIO_CONFIG_GENERATION)).toBe(generation);
  });

  it('before the driver is up the size is stored without an interrupt', () => {
    const s = setup({ initialize: false });
    s.host.resize(200, 60);
    expect(s.irq.level).toBe(false);
    expect(configSize(s)).toEqual({ cols: 200, rows: 60 });
  });

  it('refuses sizes that are not whole numbers from 1 to 65535 with a message that says so', () => {
    const s = setup();
    for (const [cols, rows] of [
      [0, 24],
      [80, 0],
      [65536, 24],
      [80.5, 24],
      [Number.NaN, 24],
      [-1, 24],
    ]) {
      expect(() => s.host.resize(cols, rows)).toThrow(UserError);
      expect(() => checkConsoleSize(cols, rows)).toThrow(/whole numbers of columns and rows from 1 to 65535/);
    }
    expect(() => checkConsoleSize(1, 1)).not.toThrow();
    expect(() => checkConsoleSize(65535, 65535)).not.toThrow();
    expect(configSize(s)).toEqual({ cols: 80, rows: 24 });
  });
});

describe('virtio console transmit', () => {
  it('the notifying hart copies each chain into the ring and returns it at once, with a used interrupt', () => {
    const s = setup();
    s.driver.handleInterrupt();
    const doorbell = Atomics.load(s.block, s.host.doorbellIndex);
    send(s, 'hello, ');
    s.driver.queues[VIRTIO_CONSOLE_TX_QUEUE].add([
      { bytes: new TextEncoder().encode('wor') },
      { bytes: new TextEncoder().encode('ld\r\n') },
    ]);
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    // Done before the VMM ran: Linux's console write, spinning for its buffer, finds it back at once.
    const used = s.driver.queues[VIRTIO_CONSOLE_TX_QUEUE].takeUsed();
    expect(used.map((u) => u.len)).toEqual([0, 0]);
    expect(s.driver.handleInterrupt()).toBe(VIRTIO_MMIO_INT_VRING);
    // The VMM is woken to take the output, and finds no queue work left.
    expect(Atomics.load(s.block, s.host.doorbellIndex)).not.toBe(doorbell);
    expect(s.host.service()).toBe(false);
    expect(s.text()).toBe('hello, world\r\n');
    expect(s.host.stats.txBytes).toBe(14);
    expect(s.host.takeOutput()).toHaveLength(0);
  });

  it('a chain that does not fit the ring waits for the VMM, which takes it after draining, in order', () => {
    const s = setup();
    const q = s.driver.queues[VIRTIO_CONSOLE_TX_QUEUE];
    const page = (c: string): string => c.repeat(4096);
    for (const c of 'abcde') send(s, page(c));
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    // 16 KiB of ring: four pages went in, the fifth waits (not returned to the guest yet).
    expect(q.takeUsed()).toHaveLength(VIRTIO_CONSOLE_TX_RING_BYTES / 4096);
    expect(s.host.service()).toBe(true); // the doorbell marked the queue; the ring is still full
    expect(s.text()).toBe(page('a') + page('b') + page('c') + page('d'));
    expect(s.host.service()).toBe(false);
    expect(q.takeUsed()).toHaveLength(1);
    expect(s.text()).toBe(page('a') + page('b') + page('c') + page('d') + page('e'));
  });

  it('a chain of exactly the cap passes; longer ones, device-writable ones and ones outside RAM are returned unread', () => {
    const s = setup();
    const q = s.driver.queues[VIRTIO_CONSOLE_TX_QUEUE];
    q.add([{ bytes: new Uint8Array(VIRTIO_CONSOLE_MAX_TX_CHAIN_BYTES).fill(0x61) }]);
    q.add([{ bytes: new Uint8Array(VIRTIO_CONSOLE_MAX_TX_CHAIN_BYTES + 1).fill(0x62) }]);
    q.add([{ bytes: new TextEncoder().encode('read') }, { writableLength: 16 }]);
    q.add([{ gpa: 0x7000_0000, length: 100, writable: false }]);
    send(s, 'ok');
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    expect(s.text()).toBe('a'.repeat(VIRTIO_CONSOLE_MAX_TX_CHAIN_BYTES));
    s.host.service(); // 'ok' waited for the full ring to drain
    expect(s.text()).toBe('a'.repeat(VIRTIO_CONSOLE_MAX_TX_CHAIN_BYTES) + 'ok');
    expect(s.hartDevice.txDropped).toBe(3);
    expect(q.takeUsed()).toHaveLength(5);
    expect(s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).toBe(0);
  });

  it('hostile: a looping descriptor chain fails the device instead of hanging the hart, and the VMM says so', () => {
    const s = setup({ queueSize: 8 });
    const q = s.driver.queues[VIRTIO_CONSOLE_TX_QUEUE];
    const gpa = s.ram.alloc(64);
    q.writeDescriptor(0, { addr: gpa, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    q.writeDescriptor(1, { addr: gpa, len: 64, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    q.publish(0);
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    expect(s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).toBe(VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    s.host.service();
    s.host.service();
    expect(s.text()).toBe('');
    expect(s.guestErrors).toEqual(['the device needs a reset (a broken queue)']);
  });

  it('hostile: an available index far ahead of the queue fails the device', () => {
    const s = setup();
    s.driver.queues[VIRTIO_CONSOLE_TX_QUEUE].setAvailIdx(1000);
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    expect(s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).toBe(VIRTIO_STATUS_DEVICE_NEEDS_RESET);
  });

  it('a driver reset leaves the output already returned to the guest in the ring for the VMM', () => {
    const s = setup();
    send(s, 'bye');
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    s.driver.reset();
    expect(s.text()).toBe('bye');
  });
});

describe('virtio console receive', () => {
  it('copies input into the next receive buffer, returns it with the length written and interrupts', () => {
    const s = setup();
    s.driver.handleInterrupt();
    const gpa = postRx(s);
    expect(s.host.receive(new TextEncoder().encode('ls\n'))).toBe(3);
    expect(s.driver.queues[VIRTIO_CONSOLE_RX_QUEUE].takeUsed()).toEqual([
      { id: expect.any(Number) as number, len: 3 },
    ]);
    expect(new TextDecoder().decode(s.ram.get(gpa, 3))).toBe('ls\n');
    expect(s.driver.handleInterrupt()).toBe(VIRTIO_MMIO_INT_VRING);
    expect(s.host.stats.rxBytes).toBe(3);
  });

  it('input larger than a buffer fills buffers in order and reports how much fit', () => {
    const s = setup();
    const first = postRx(s, 4);
    const parts = [2, 3].map((length) => ({ gpa: s.ram.alloc(length), length, writable: true }));
    s.driver.queues[VIRTIO_CONSOLE_RX_QUEUE].add(parts);
    expect(s.host.receive(new TextEncoder().encode('abcdefghijk'))).toBe(9);
    const used = s.driver.queues[VIRTIO_CONSOLE_RX_QUEUE].takeUsed();
    expect(used.map((u) => u.len)).toEqual([4, 5]);
    expect(new TextDecoder().decode(s.ram.get(first, 4))).toBe('abcd');
    expect(new TextDecoder().decode(s.ram.get(parts[0].gpa, 2))).toBe('ef');
    expect(new TextDecoder().decode(s.ram.get(parts[1].gpa, 3))).toBe('ghi');
  });

  it('takes nothing when the guest has no free buffer, or before DRIVER_OK', () => {
    const s = setup();
    expect(s.host.receive(Uint8Array.of(1))).toBe(0);
    postRx(s);
    expect(s.host.receive(Uint8Array.of(1))).toBe(1);
    const fresh = setup({ initialize: false });
    expect(fresh.host.receive(Uint8Array.of(1))).toBe(0);
  });

  it('hostile: a buffer with device-readable parts is returned empty and the input goes to the next one', () => {
    const s = setup();
    const bad = s.ram.put(new Uint8Array(8).fill(0xaa));
    s.driver.queues[VIRTIO_CONSOLE_RX_QUEUE].add([{ gpa: bad, length: 8, writable: false }]);
    const good = postRx(s, 16);
    expect(s.host.receive(new TextEncoder().encode('hi'))).toBe(2);
    expect(s.driver.queues[VIRTIO_CONSOLE_RX_QUEUE].takeUsed().map((u) => u.len)).toEqual([0, 2]);
    expect(s.ram.get(bad, 8).every((b) => b === 0xaa)).toBe(true);
    expect(new TextDecoder().decode(s.ram.get(good, 2))).toBe('hi');
    expect(s.host.stats.rxBadBuffers).toBe(1);
  });

  it('hostile: a receive buffer outside RAM fails the device and nothing is written', () => {
    const s = setup();
    s.driver.queues[VIRTIO_CONSOLE_RX_QUEUE].add([{ gpa: 0x7000_0000, length: 64, writable: true }]);
    expect(s.host.receive(Uint8Array.of(1, 2))).toBe(0);
    expect(s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).toBe(VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    expect(s.guestErrors).toEqual(['virtio console receive buffer outside RAM']);
  });
});

describe('virtio console and the VMM stream', () => {
  it('without a preference the stream never follows the port, and a reset marks nothing', () => {
    const s = setup();
    send(s, 'x');
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    expect(s.host.device.streamFollows).toBe(false);
    s.driver.reset();
    expect(s.host.device.takeLeftAt()).toBeUndefined();
  });

  it('preferred: the first output switches the stream at the fallback position; a reset marks where it left', () => {
    const s = setup();
    const device = s.host.device;
    device.preferred = true;
    s.setFallback(1234);
    s.driver.reset(); // before any output: nothing to go back from
    expect(device.takeLeftAt()).toBeUndefined();
    s.driver.initialize({ queueCount: 2 });
    expect(device.streamFollows).toBe(false);
    send(s, 'first');
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    expect(device.streamFollows).toBe(true);
    expect(device.streamAt).toBe(1234);
    s.setFallback(2000);
    send(s, 'second');
    s.driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    expect(device.streamAt).toBe(1234); // recorded once, at the switch
    s.setFallback(5678);
    s.driver.reset();
    expect(device.streamFollows).toBe(true); // until the VMM takes the mark
    expect(device.takeLeftAt()).toBe(5678);
    expect(device.streamFollows).toBe(false);
    expect(device.takeLeftAt()).toBeUndefined();
  });
});
