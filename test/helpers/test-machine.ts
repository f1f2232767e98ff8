import type { Firmware } from '../../src/common/firmware.ts';
import { Hart } from '../../src/cpu/hart.ts';
import { AddressSpace, RAM_BASE } from '../../src/mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../../src/mem/host-ram.ts';
import { Board, createBoardState } from '../../src/machine/board.ts';

export interface TestMachine {
  readonly board: Board;
  readonly memory: AddressSpace;
  readonly hart: Hart;
}

/** A one-hart virt board with `ramBytes` of RAM and `program` at the start of RAM; the hart is reset there. */
export function testMachine(
  program: number[],
  options: { ramBytes?: number; firmware?: Firmware } = {},
): TestMachine {
  const ramBytes = options.ramBytes ?? 1 << 20;
  const hostRam = new HostRam(ramBytes, false);
  const frames = hostRam.allocate(ramBytes / FRAME_SIZE);
  const memory = new AddressSpace({
    ram: hostRam.buffer,
    table: AddressSpace.tableFor(frames, false),
    ramBase: RAM_BASE,
    ramSize: ramBytes,
  });
  program.forEach((word, i) => memory.writeU32(RAM_BASE + 4 * i, word));
  const { block, layout } = createBoardState(1, false);
  const board = new Board({ hartCount: 1, block, memory: memory.init, layout, firmware: false });
  const hart = options.firmware
    ? new Hart({
        hartId: 0,
        memory: board.memory,
        mmio: board.bus,
        block,
        clock: board.clock,
        firmware: options.firmware,
      })
    : board.createHart(0);
  hart.reset(RAM_BASE);
  return { board, memory: board.memory, hart };
}

/** Execute exactly `count` instructions (traps count as the instruction that trapped). */
export function step(hart: Hart, count: number): void {
  let left = count;
  while (left > 0) {
    const n = hart.run(left);
    if (n === 0) break;
    left -= n;
  }
}
