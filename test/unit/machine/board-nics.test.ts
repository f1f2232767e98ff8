import { describe, expect, it } from 'vitest';
import { Board, createBoardState } from '../../../src/machine/board.ts';
import { virtioSlotBase } from '../../../src/devices/virt-device-tree.ts';
import { VIRTIO_MMIO_DEVICE_ID } from '../../../src/devices/virtio-mmio-empty.ts';
import { AddressSpace, RAM_BASE } from '../../../src/mem/address-space.ts';
import { HostRam } from '../../../src/mem/host-ram.ts';
import { planBoard } from '../../../src/machine/board.ts';

describe('board: NICs in the virtio slots after the disks', () => {
  it('slot 1 is the disk, slots 2 and 3 the NICs (device ID 1), slot 4 empty', () => {
    const ram = new HostRam(1 << 20, true);
    const frames = ram.allocate(256);
    const memory = new AddressSpace({
      ram: ram.buffer,
      table: AddressSpace.tableFor(frames, true),
      ramBase: RAM_BASE,
      ramSize: 1 << 20,
    });
    const { block, layout } = createBoardState(1, true, 1, 2);
    const board = new Board({
      hartCount: 1,
      block,
      memory: memory.init,
      layout,
      firmware: true,
      disks: [{ sizeBytes: 4096, readOnly: false, discard: false, serial: '' }],
      nics: [{ mac: '02:00:00:00:00:01' }, { mac: '02:00:00:00:00:02' }],
    });
    const id = (slot: number): number => board.bus.read(virtioSlotBase(slot) + VIRTIO_MMIO_DEVICE_ID, 4);
    expect([1, 2, 3, 4].map(id)).toEqual([2, 1, 1, 0]);
    expect(board.nics).toHaveLength(2);
  });

  it('disks and NICs share 8 slots; more is refused with the fix', () => {
    expect(() => planBoard(1, 4, 4)).not.toThrow();
    expect(() => planBoard(1, 4, 5)).toThrow(/8 virtio slots .* remove a disk or a NIC/);
  });

  it('a board without NICs has the same layout as before NICs existed (snapshots stay compatible)', () => {
    expect(planBoard(2, 1)).toEqual(planBoard(2, 1, 0));
    expect(planBoard(2, 1).nics).toBeUndefined();
  });
});
