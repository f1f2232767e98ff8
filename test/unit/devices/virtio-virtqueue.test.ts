import { describe, it, expect } from 'vitest';
import { RAM_BASE } from '../../../src/mem/address-space.ts';
import {
  SplitVirtqueue,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  checkVirtqueueLayout,
  type PopResult,
} from '../../../src/devices/virtqueue.ts';
import { TestGuestRam, TestQueue } from '../../helpers/virtio-driver.ts';

const SIZE = 8;

function setup(options: { indirect?: boolean } = {}) {
  const ram = new TestGuestRam(1 << 20);
  const queue = new TestQueue(ram, 0, SIZE);
  const layout = { size: SIZE, descGpa: queue.descGpa, availGpa: queue.availGpa, usedGpa: queue.usedGpa };
  const ring = new SplitVirtqueue(ram.memory, layout, options.indirect ?? true, 0, 0);
  return { ram, queue, ring };
}

function brokenReason(result: PopResult): string {
  if (result.kind !== 'broken') throw new Error(`expected broken, got ${result.kind}`);
  return result.reason;
}

describe('SplitVirtqueue: legitimate chains', () => {
  it('reads a direct chain: readable buffers, then writable ones, with lengths and RAM checks', () => {
    const { queue, ring } = setup();
    const head = queue.add([
      { bytes: new Uint8Array(16) },
      { bytes: new Uint8Array(512) },
      { writableLength: 1 },
    ]);
    const popped = ring.pop();
    expect(popped.kind).toBe('chain');
    if (popped.kind !== 'chain') return;
    expect(popped.chain.head).toBe(head);
    expect(popped.chain.readableBytes).toBe(528);
    expect(popped.chain.writableBytes).toBe(1);
    expect(popped.chain.readable.every((s) => s.inRam)).toBe(true);
    expect(ring.pop().kind).toBe('empty');
  });

  it('reads an indirect chain when VIRTIO_F_INDIRECT_DESC was negotiated', () => {
    const { queue, ring } = setup();
    queue.add([{ bytes: new Uint8Array(16) }, { writableLength: 4096 }, { writableLength: 1 }], {
      indirect: true,
    });
    const popped = ring.pop();
    if (popped.kind !== 'chain') throw new Error(popped.kind);
    expect(popped.chain.readable.length).toBe(1);
    expect(popped.chain.writable.map((s) => s.length)).toEqual([4096, 1]);
  });

  it('accepts a chain of exactly queue-size descriptors and an indirect table of queue-size entries', () => {
    const { queue, ring } = setup();
    queue.add(Array.from({ length: SIZE }, () => ({ writableLength: 1 })));
    expect(ring.pop().kind).toBe('chain');
    queue.takeUsed();
    ring.pushUsed(0, 0);
    queue.takeUsed();
    queue.add(
      Array.from({ length: SIZE }, () => ({ writableLength: 1 })),
      { indirect: true },
    );
    expect(ring.pop().kind).toBe('chain');
  });

  it('accepts an available index exactly one queue ahead, and wraps its 16-bit indices', () => {
    const { ram, queue } = setup();
    const layout = { size: SIZE, descGpa: queue.descGpa, availGpa: queue.availGpa, usedGpa: queue.usedGpa };
    const ring = new SplitVirtqueue(ram.memory, layout, true, 0xfffc, 0xffff);
    queue.setAvailIdx(0xfffc);
    for (let i = 0; i < SIZE; i++) queue.add([{ writableLength: 1 }]);
    expect(queue.availIdx).toBe(4);
    for (let i = 0; i < SIZE; i++) expect(ring.pop().kind).toBe('chain');
    expect(ring.pop().kind).toBe('empty');
    ring.pushUsed(3, 9);
    expect(ring.nextUsed).toBe(0);
    expect(queue.usedIdx()).toBe(0);
  });

  it('marks buffers outside RAM or above 4 GiB (not a failure of the ring: the device answers with an error)', () => {
    const { queue, ring } = setup();
    queue.writeDescriptor(0, { addr: 0x1000, len: 16, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    queue.writeDescriptor(1, { addr: RAM_BASE, addrHi: 1, len: 16, flags: VIRTQ_DESC_F_NEXT, next: 2 });
    queue.writeDescriptor(2, { addr: RAM_BASE + (1 << 20) - 4, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 3 });
    queue.writeDescriptor(3, { addr: 0, len: 0, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    queue.publish(0);
    const popped = ring.pop();
    if (popped.kind !== 'chain') throw new Error(popped.kind);
    expect(popped.chain.readable.map((s) => s.inRam)).toEqual([false, false, false]);
    expect(popped.chain.writable[0].inRam).toBe(true); // zero length touches nothing
  });
});

describe('SplitVirtqueue: a hostile driver breaks the ring, never the host', () => {
  it('an available index more than a queue ahead', () => {
    const { queue, ring } = setup();
    queue.setAvailIdx(SIZE + 1);
    expect(brokenReason(ring.pop())).toMatch(/moved 9 entries/);
  });

  it('a head index outside the table', () => {
    const { queue, ring } = setup();
    queue.publish(SIZE);
    expect(brokenReason(ring.pop())).toMatch(/outside/);
  });

  it('a loop in next (the chain exceeds the queue size)', () => {
    const { queue, ring } = setup();
    queue.writeDescriptor(0, { addr: RAM_BASE, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    queue.writeDescriptor(1, { addr: RAM_BASE, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    queue.publish(0);
    expect(brokenReason(ring.pop())).toMatch(/longer than 8/);
  });

  it('a next index outside the table', () => {
    const { queue, ring } = setup();
    queue.writeDescriptor(0, { addr: RAM_BASE, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0xffff });
    queue.publish(0);
    expect(brokenReason(ring.pop())).toMatch(/next index 65535/);
  });

  it('a device-readable buffer after a device-writable one', () => {
    const { queue, ring } = setup();
    queue.writeDescriptor(0, {
      addr: RAM_BASE,
      len: 1,
      flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
      next: 1,
    });
    queue.writeDescriptor(1, { addr: RAM_BASE, len: 1, flags: 0, next: 0 });
    queue.publish(0);
    expect(brokenReason(ring.pop())).toMatch(/readable descriptor after/);
  });

  it('indirect descriptors: not negotiated, nested, with NEXT, a partial or oversized table, a table outside RAM', () => {
    const table = (ram: TestGuestRam) => ram.alloc(VIRTQ_DESC_SIZE * 2, 16);
    const cases: Array<[string, (q: TestQueue, ram: TestGuestRam) => void, boolean?]> = [
      ['without VIRTIO_F_INDIRECT_DESC', (q, ram) => q.writeDescriptor(0, ind(table(ram), 32)), false],
      ['with NEXT', (q, ram) => q.writeDescriptor(0, { ...ind(table(ram), 32), flags: 5, next: 1 })],
      ['is not 1..8', (q, ram) => q.writeDescriptor(0, ind(table(ram), 24))],
      ['is not 1..8', (q, ram) => q.writeDescriptor(0, ind(ram.alloc(16 * 9, 16), 16 * 9))],
      ['is not 1..8', (q, ram) => q.writeDescriptor(0, ind(table(ram), 0))],
      ['outside RAM', (q) => q.writeDescriptor(0, ind(0x1000, 32))],
      [
        'inside an indirect table',
        (q, ram) => {
          const t = table(ram);
          q.writeDescriptorAt(t, ind(t, 32));
          q.writeDescriptor(0, ind(t, 32));
        },
      ],
    ];
    for (const [reason, build, indirect] of cases) {
      const { queue, ring, ram } = setup({ indirect: indirect ?? true });
      build(queue, ram);
      queue.publish(0);
      expect(brokenReason(ring.pop())).toContain(reason);
    }
  });

  it('a loop inside an indirect table', () => {
    const { queue, ring, ram } = setup();
    const t = ram.alloc(VIRTQ_DESC_SIZE * 2, 16);
    queue.writeDescriptorAt(t, { addr: RAM_BASE, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    queue.writeDescriptorAt(t + VIRTQ_DESC_SIZE, {
      addr: RAM_BASE,
      len: 1,
      flags: VIRTQ_DESC_F_NEXT,
      next: 0,
    });
    queue.writeDescriptor(0, ind(t, 32));
    queue.publish(0);
    expect(brokenReason(ring.pop())).toMatch(/longer than 2/);
  });
});

describe('checkVirtqueueLayout', () => {
  it('accepts an aligned power-of-two queue in RAM and names what is wrong otherwise', () => {
    const { ram, queue } = setup();
    const ok = { size: SIZE, descGpa: queue.descGpa, availGpa: queue.availGpa, usedGpa: queue.usedGpa };
    expect(checkVirtqueueLayout(ram.memory, ok, 256)).toBeUndefined();
    expect(checkVirtqueueLayout(ram.memory, { ...ok, size: 0 }, 256)).toMatch(/power of two/);
    expect(checkVirtqueueLayout(ram.memory, { ...ok, size: 512 }, 256)).toMatch(/power of two/);
    expect(checkVirtqueueLayout(ram.memory, { ...ok, descGpa: ok.descGpa + 8 }, 256)).toMatch(/misaligned/);
    expect(checkVirtqueueLayout(ram.memory, { ...ok, usedGpa: RAM_BASE + (1 << 20) - 16 }, 256)).toMatch(
      /outside RAM/,
    );
  });
});

function ind(tableGpa: number, len: number) {
  return { addr: tableGpa, len, flags: VIRTQ_DESC_F_INDIRECT, next: 0 };
}
