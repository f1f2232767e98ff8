import { describe, expect, it } from 'vitest';
import { Hart } from '../../../src/cpu/hart.ts';
import { Board, createBoardState } from '../../../src/machine/board.ts';
import { AddressSpace, RAM_BASE } from '../../../src/mem/address-space.ts';
import { FRAME_SIZE, HART_AREA_BYTES, HostRam } from '../../../src/mem/host-ram.ts';
import * as A from '../../helpers/rv-encoder.ts';

const VM_BYTES = 1 << 20;

function vmOn(hostRam: HostRam): { memory: AddressSpace; hart: Hart } {
  const frames = hostRam.allocate(VM_BYTES / FRAME_SIZE);
  const memory = new AddressSpace({
    ram: hostRam.buffer,
    table: AddressSpace.tableFor(frames, true),
    ramBase: RAM_BASE,
    ramSize: VM_BYTES,
  });
  const { block, layout } = createBoardState(1, true);
  const board = new Board({ hartCount: 1, block, memory: memory.init, layout, firmware: false });
  return { memory, hart: board.createHart(0) };
}

describe('memory isolation between VMs on one host RAM', () => {
  it('a VM that writes its whole RAM leaves the other VM untouched, and an access just past its RAM faults', () => {
    const hostRam = new HostRam(3 * VM_BYTES, true);
    // The two VMs get neighbouring frames in host memory.
    const a = vmOn(hostRam);
    const b = vmOn(hostRam);
    const pattern = (gpa: number): number => (gpa * 2654435761) | 0;
    for (let gpa = RAM_BASE; gpa < RAM_BASE + VM_BYTES; gpa += 4) b.memory.writeU32(gpa >>> 0, pattern(gpa));

    // x1 = first address to fill, x2 = end of RAM, x3 = value; loop: sw x3, 0(x1); addi x1, x1, 4; bne x1, x2, loop
    // then lw x4, 0(x2) must fault (mtvec -> a self-loop at RAM_BASE + 0x100).
    const program = [
      ...A.li(1, RAM_BASE + 0x1000),
      ...A.li(2, RAM_BASE + VM_BYTES),
      ...A.li(3, 0x5a5a5a5a),
      A.sw(3, 1, 0),
      A.addi(1, 1, 4),
      A.bne(1, 2, -8),
      A.lw(4, 2, 0),
    ];
    program.forEach((word, i) => a.memory.writeU32(RAM_BASE + 4 * i, word));
    a.memory.writeU32(RAM_BASE + 0x100, A.jal(0, 0));
    a.hart.reset(RAM_BASE);
    a.hart.mtvec = RAM_BASE + 0x100;
    let budget = 2_000_000;
    while (a.hart.mcause === 0 && budget > 0) budget -= a.hart.run(10_000);

    expect(a.hart.mcause).toBe(5); // load access fault
    expect(a.hart.mtval >>> 0).toBe((RAM_BASE + VM_BYTES) >>> 0);
    expect(a.memory.readU32(RAM_BASE + VM_BYTES - 4)).toBe(0x5a5a5a5a);
    for (let gpa = RAM_BASE; gpa < RAM_BASE + VM_BYTES; gpa += 4) {
      if (b.memory.readU32(gpa >>> 0) !== pattern(gpa) >>> 0)
        throw new Error(`VM B changed at 0x${gpa.toString(16)}`);
    }
  });

  it('frames go back zeroed, so the next VM never sees the previous one', () => {
    const hostRam = new HostRam(VM_BYTES, true);
    const frames = hostRam.allocate(VM_BYTES / FRAME_SIZE);
    const bytes = new Uint8Array(hostRam.buffer);
    for (const frame of frames) bytes.fill(0xee, frame * FRAME_SIZE, (frame + 1) * FRAME_SIZE);
    hostRam.free(frames);
    const again = hostRam.allocate(VM_BYTES / FRAME_SIZE);
    expect(again.length).toBe(VM_BYTES / FRAME_SIZE);
    for (const frame of again) {
      expect(bytes.subarray(frame * FRAME_SIZE, (frame + 1) * FRAME_SIZE).every((byte) => byte === 0)).toBe(
        true,
      );
    }
    // The vCPUs' areas too (registers and TLBs of the VM that had them).
    const [area] = hostRam.allocateHartAreas(1);
    bytes.fill(0xee, area, area + HART_AREA_BYTES);
    hostRam.freeHartAreas([area]);
    expect(hostRam.allocateHartAreas(1)).toEqual([area]);
    expect(bytes.subarray(area, area + HART_AREA_BYTES).every((byte) => byte === 0)).toBe(true);
  });

  it('asking for more memory than is free is a clear error and allocates nothing', () => {
    const hostRam = new HostRam(VM_BYTES, true);
    expect(() => hostRam.allocate(VM_BYTES / FRAME_SIZE + 1)).toThrow(/not enough host memory/);
    expect(hostRam.freeFrames).toBe(VM_BYTES / FRAME_SIZE);
  });
});
