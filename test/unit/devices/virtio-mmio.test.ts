import { describe, it, expect } from 'vitest';
import { SharedLayout, createControlBlock } from '../../../src/common/shared-block.ts';
import type { AccessSize } from '../../../src/devices/mmio.ts';
import {
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_RESET,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_SHM_BASE_HIGH,
  VIRTIO_MMIO_SHM_LEN_LOW,
  VIRTIO_MMIO_SHM_SEL,
  VIRTIO_MMIO_STATUS,
  VIRTIO_STATUS_ACKNOWLEDGE,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_STATUS_DRIVER,
  VIRTIO_STATUS_DRIVER_OK,
  VirtioMmioTransport,
  featureBit,
  type VirtioDeviceModel,
} from '../../../src/devices/virtio-mmio.ts';
import { VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_VENDOR_ID } from '../../../src/devices/virtio-mmio-empty.ts';
import { VIRTQ_AVAIL_F_NO_INTERRUPT } from '../../../src/devices/virtqueue.ts';
import { RecordingIrq, TestGuestRam, VirtioTestDriver } from '../../helpers/virtio-driver.ts';

/** A device with two queues, feature bit 40 (to test the high word) and four config bytes. */
class FakeDevice implements VirtioDeviceModel {
  readonly deviceId = 0x1234;
  readonly features =
    featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(40n) | 1n;
  readonly queueSizeMax = [8, 16];
  readonly config = Uint8Array.of(0x11, 0x22, 0x33, 0x44);
  /** Config byte 3 shows the low byte of the device state word, to test that the transport passes it. */
  readConfig(configOffset: number, size: AccessSize, deviceState: number): number {
    let value = 0;
    for (let i = size - 1; i >= 0; i--) {
      const at = configOffset + i;
      value = (value << 8) | (at === 3 && deviceState !== 0 ? deviceState & 0xff : (this.config[at] ?? 0));
    }
    return value >>> 0;
  }
  writeConfig(configOffset: number, _size: AccessSize, value: number): void {
    this.config[configOffset] = value;
  }
}

function setup() {
  const layout = new SharedLayout(1);
  const base = layout.alloc(VirtioMmioTransport.words(2));
  const guard = layout.alloc(2);
  const block = createControlBlock(layout.words, true);
  block[guard] = 0x5a5a;
  const irq = new RecordingIrq();
  const transport = new VirtioMmioTransport(block, base, new FakeDevice(), irq, 3);
  const ram = new TestGuestRam(1 << 20);
  const driver = new VirtioTestDriver(transport, ram);
  return { block, guard, irq, transport, ram, driver };
}

describe('VirtioMmioTransport registers', () => {
  it('identifies as a version 2 transport of its device and reports each queue size; absent queues read 0', () => {
    const { driver, transport } = setup();
    expect(driver.probe()).toBe(0x1234);
    expect(driver.read(VIRTIO_MMIO_DEVICE_ID)).toBe(0x1234);
    expect(driver.read(VIRTIO_MMIO_VENDOR_ID)).toBe(0x73766274);
    expect(transport.size).toBe(0x1000);
    for (const [sel, max] of [
      [0, 8],
      [1, 16],
      [2, 0],
      [0xffffffff, 0],
    ]) {
      driver.write(VIRTIO_MMIO_QUEUE_SEL, sel);
      expect(driver.read(VIRTIO_MMIO_QUEUE_NUM_MAX)).toBe(max);
    }
  });

  it('has no shared memory regions (length and base read all ones) and no queue reset', () => {
    const { driver } = setup();
    driver.write(VIRTIO_MMIO_SHM_SEL, 0);
    expect(driver.read(VIRTIO_MMIO_SHM_LEN_LOW)).toBe(0xffffffff);
    expect(driver.read(VIRTIO_MMIO_SHM_BASE_HIGH)).toBe(0xffffffff);
    driver.write(VIRTIO_MMIO_QUEUE_RESET, 1);
    expect(driver.read(VIRTIO_MMIO_QUEUE_RESET)).toBe(0);
    expect(driver.read(VIRTIO_MMIO_QUEUE_NUM)).toBe(0); // write-only registers read 0
  });

  it('rejects control register accesses that are not aligned 32-bit; config space takes any width', () => {
    const { transport } = setup();
    expect(transport.read(VIRTIO_MMIO_STATUS, 1)).toBe(-1);
    expect(transport.read(VIRTIO_MMIO_STATUS + 2, 4)).toBe(-1);
    expect(transport.write(VIRTIO_MMIO_STATUS, 2, 1)).toBe(false);
    expect(transport.read(VIRTIO_MMIO_CONFIG + 1, 1)).toBe(0x22);
    expect(transport.read(VIRTIO_MMIO_CONFIG + 2, 2)).toBe(0x4433);
    expect(transport.read(VIRTIO_MMIO_CONFIG, 4)).toBe(0x44332211);
    expect(transport.read(VIRTIO_MMIO_CONFIG + 0xefe, 4)).toBe(-1); // runs past the slot
    expect(transport.read(VIRTIO_MMIO_CONFIG_GENERATION, 4)).toBe(0);
  });
});

describe('VirtioMmioTransport status and features', () => {
  it('offers 64-bit features and accepts FEATURES_OK for a subset that includes VERSION_1', () => {
    const { driver } = setup();
    expect(driver.deviceFeatures()).toBe(new FakeDevice().features);
    expect(driver.negotiate(featureBit(VIRTIO_F_VERSION_1) | featureBit(40n))).toBeTypeOf('bigint');
  });

  it('refuses FEATURES_OK without VERSION_1 (no legacy interface) or with a feature it never offered', () => {
    const { driver } = setup();
    expect(() => driver.negotiate(1n)).toThrow('FEATURES_OK refused');
    expect(() => driver.negotiate(featureBit(VIRTIO_F_VERSION_1) | featureBit(41n))).toThrow(
      'FEATURES_OK refused',
    );
    expect(driver.status()).toBe(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
  });

  it('freezes the driver features once FEATURES_OK is set', () => {
    const { driver, transport, ram } = setup();
    driver.initialize({ features: featureBit(VIRTIO_F_VERSION_1) });
    driver.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    driver.write(VIRTIO_MMIO_DRIVER_FEATURES, 0xffffffff);
    const seen = transport.withLiveQueue(ram.memory, 0, undefined, (live) => live.driverFeatures);
    expect(seen).toBe(featureBit(VIRTIO_F_VERSION_1));
  });

  it('the driver can neither set nor clear DEVICE_NEEDS_RESET', () => {
    const { driver } = setup();
    driver.write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    expect(driver.status()).toBe(VIRTIO_STATUS_ACKNOWLEDGE);
  });

  it('a device-features selector beyond the two words reads 0', () => {
    const { driver } = setup();
    driver.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    expect(driver.read(0x010)).toBe(0);
  });
});

describe('VirtioMmioTransport queues and notifications', () => {
  it('QueueNotify only records the queue and rings the doorbell; the hart never touches the rings', () => {
    const { driver, transport, block } = setup();
    const q = (driver.initialize({ queueCount: 2 }), driver.queues[1]);
    transport.takeNotifications(); // DRIVER_OK looked at the ready queues
    const bell = Atomics.load(block, transport.doorbellIndex);
    q.add([{ writableLength: 4 }]);
    driver.notify(1);
    driver.notify(1);
    driver.write(VIRTIO_MMIO_QUEUE_NOTIFY, 7); // no such queue: ignored
    expect(Atomics.load(block, transport.doorbellIndex)).toBe(bell + 2);
    expect(q.usedIdx()).toBe(0);
    expect(transport.takeNotifications()).toBe(0b10);
    expect(transport.takeNotifications()).toBe(0);
  });

  it('after a snapshot restore, every ready queue of a live device counts as notified once', () => {
    const { driver, transport, block } = setup();
    transport.renotifyReadyQueues(); // not live yet: nothing to look at
    expect(transport.takeNotifications()).toBe(0);
    driver.initialize({ queueCount: 2 });
    expect(transport.takeNotifications()).toBe(0b11);
    const bell = Atomics.load(block, transport.doorbellIndex);
    transport.renotifyReadyQueues();
    expect(Atomics.load(block, transport.doorbellIndex)).toBe(bell + 1);
    expect(transport.takeNotifications()).toBe(0b11);
    expect(transport.takeNotifications()).toBe(0);
  });

  it('setting DRIVER_OK rings the doorbell for every ready queue', () => {
    const { driver, transport } = setup();
    driver.negotiate();
    driver.setupQueue(0);
    driver.write(VIRTIO_MMIO_STATUS, driver.status() | VIRTIO_STATUS_DRIVER_OK);
    expect(transport.takeNotifications()).toBe(0b01);
  });

  it('ignores queue reprogramming while the queue is ready', () => {
    const { driver, transport, ram } = setup();
    driver.initialize();
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 0);
    driver.write(VIRTIO_MMIO_QUEUE_NUM, 4);
    driver.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
    const layout = transport.withLiveQueue(ram.memory, 0, undefined, (live) => live.ring.layout);
    expect(layout).toMatchObject({ size: 8, descGpa: driver.queues[0].descGpa });
  });

  it('a used entry raises the line with InterruptStatus bit 0; InterruptACK lowers it', () => {
    const { driver, transport, ram, irq } = setup();
    driver.initialize();
    const head = driver.queues[0].add([{ writableLength: 4 }]);
    transport.withLiveQueue(ram.memory, 0, undefined, (live) => {
      const popped = live.ring.pop();
      expect(popped.kind).toBe('chain');
      live.ring.pushUsed(head, 4);
    });
    expect(irq.level).toBe(true);
    expect(driver.read(VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(VIRTIO_MMIO_INT_VRING);
    expect(driver.handleInterrupt()).toBe(VIRTIO_MMIO_INT_VRING);
    expect(irq.level).toBe(false);
    expect(driver.queues[0].takeUsed()).toEqual([{ id: head, len: 4 }]);
  });

  it('honours VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
    const { driver, transport, ram, irq } = setup();
    driver.initialize();
    driver.queues[0].setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    const head = driver.queues[0].add([{ writableLength: 4 }]);
    transport.withLiveQueue(ram.memory, 0, undefined, (live) => {
      live.ring.pop();
      live.ring.pushUsed(head, 0);
    });
    expect(irq.level).toBe(false);
    expect(driver.queues[0].usedIdx()).toBe(1);
  });

  it('the I/O side sees nothing before DRIVER_OK or on a queue that is not ready', () => {
    const { driver, transport, ram } = setup();
    driver.negotiate();
    driver.setupQueue(0);
    expect(transport.withLiveQueue(ram.memory, 0, undefined, () => 1)).toBeUndefined();
    driver.addStatus(VIRTIO_STATUS_DRIVER_OK);
    expect(transport.withLiveQueue(ram.memory, 0, undefined, () => 1)).toBe(1);
    expect(transport.withLiveQueue(ram.memory, 1, undefined, () => 1)).toBeUndefined();
    expect(transport.withLiveQueue(ram.memory, 9, undefined, () => 1)).toBeUndefined();
  });

  it('a failure sets DEVICE_NEEDS_RESET with a configuration change interrupt and stops all queues', () => {
    const { driver, transport, ram, irq } = setup();
    driver.initialize();
    transport.withLiveQueue(ram.memory, 0, undefined, (live) => live.fail('test'));
    expect(driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).not.toBe(0);
    expect(irq.level).toBe(true);
    expect(driver.read(VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(VIRTIO_MMIO_INT_CONFIG);
    expect(transport.withLiveQueue(ram.memory, 0, undefined, () => 1)).toBeUndefined();
    driver.initialize();
    expect(transport.withLiveQueue(ram.memory, 0, undefined, () => 1)).toBe(1);
  });

  it('a queue layout the device cannot use fails the device (size not a power of two, outside RAM, above 4 GiB)', () => {
    const cases: Array<[number, number]> = [
      [VIRTIO_MMIO_QUEUE_NUM, 6],
      [VIRTIO_MMIO_QUEUE_NUM, 16], // above QueueNumMax 8
      [VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000], // not RAM
      [VIRTIO_MMIO_QUEUE_DESC_LOW + 4, 1], // high word
    ];
    for (const [register, value] of cases) {
      const { driver, transport, ram } = setup();
      driver.negotiate();
      driver.setupQueue(0);
      driver.write(VIRTIO_MMIO_QUEUE_READY, 0);
      driver.write(register, value);
      driver.write(VIRTIO_MMIO_QUEUE_READY, 1);
      driver.addStatus(VIRTIO_STATUS_DRIVER_OK);
      expect(transport.withLiveQueue(ram.memory, 0, undefined, () => 1)).toBeUndefined();
      expect(driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET).not.toBe(0);
    }
  });

  it('reset clears the register file, lowers the line and retires the queue epoch; the next region is untouched', () => {
    const { driver, transport, ram, irq, block, guard } = setup();
    driver.initialize();
    const head = driver.queues[0].add([{ writableLength: 4 }]);
    const epoch = transport.withLiveQueue(ram.memory, 0, undefined, (live) => {
      live.ring.pop();
      return live.epoch;
    });
    transport.withLiveQueue(ram.memory, 0, epoch, (live) => live.ring.pushUsed(head, 0));
    expect(irq.level).toBe(true);
    driver.reset();
    expect(irq.level).toBe(false);
    expect(driver.read(VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(0);
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 0);
    expect(driver.read(VIRTIO_MMIO_QUEUE_READY)).toBe(0);
    expect(transport.resetCount).toBeGreaterThan(0);
    driver.initialize();
    expect(transport.withLiveQueue(ram.memory, 0, epoch, () => 1)).toBeUndefined();
    expect(transport.withLiveQueue(ram.memory, 0, undefined, (live) => live.ring.nextAvail)).toBe(0);
    expect(block[guard]).toBe(0x5a5a);
  });

  it('configChanged bumps ConfigGeneration and sends a configuration change notification', () => {
    const { driver, transport, irq } = setup();
    driver.initialize();
    transport.configChanged();
    expect(driver.read(VIRTIO_MMIO_CONFIG_GENERATION)).toBe(1);
    expect(irq.level).toBe(true);
    expect(driver.handleInterrupt()).toBe(VIRTIO_MMIO_INT_CONFIG);
  });
});

describe('VirtioMmioTransport device state word', () => {
  it('reaches readConfig, bumps ConfigGeneration and interrupts a live driver on a change, and survives nothing but a reset', () => {
    const { driver, transport, irq, block, guard } = setup();
    driver.initialize({ queueCount: 2 });
    driver.handleInterrupt();
    expect(transport.deviceState).toBe(0);
    expect(driver.read(VIRTIO_MMIO_CONFIG) >>> 24).toBe(0x44);
    const generation = driver.read(VIRTIO_MMIO_CONFIG_GENERATION);
    expect(transport.updateDeviceState((state) => state | 0x7e)).toBe(0x7e);
    expect(driver.read(VIRTIO_MMIO_CONFIG) >>> 24).toBe(0x7e);
    expect(driver.read(VIRTIO_MMIO_CONFIG_GENERATION)).toBe(generation + 1);
    expect(driver.handleInterrupt()).toBe(VIRTIO_MMIO_INT_CONFIG);
    expect(irq.level).toBe(false);
    // No change: no generation bump, no interrupt.
    transport.updateDeviceState((state) => state);
    expect(driver.read(VIRTIO_MMIO_CONFIG_GENERATION)).toBe(generation + 1);
    expect(driver.read(VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(0);
    // Status writes other than 0 keep it; a reset clears it.
    driver.addStatus(VIRTIO_STATUS_DRIVER);
    expect(transport.deviceState).toBe(0x7e);
    driver.reset();
    expect(transport.deviceState).toBe(0);
    expect(block[guard]).toBe(0x5a5a);
  });

  it('before DRIVER_OK a change interrupts nobody (the driver reads the configuration when it gets there)', () => {
    const { driver, transport } = setup();
    driver.reset();
    driver.addStatus(VIRTIO_STATUS_ACKNOWLEDGE);
    transport.updateDeviceState(() => 1);
    expect(driver.read(VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(0);
    expect(transport.deviceState).toBe(1);
  });
});
