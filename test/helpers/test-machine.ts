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

export interface TestMachineOptions {
  ramBytes?: number;
  firmware?: Firmware;
  /** Block translator on or off and its threshold (default: the hart's defaults). */
  jit?: { enabled: boolean; threshold?: number };
  /** Host time for the VM clock (default the wall clock); the clock reads 0 at creation. */
  nowMs?: () => number;
  /** Give the hart an area in host RAM, so it runs the WebAssembly tier (default: no area, JavaScript only). */
  wasm?: boolean;
}

/** A one-hart virt board with `ramBytes` of RAM and `program` at the start of RAM; the hart is reset there. */
export function testMachine(program: number[], options: TestMachineOptions = {}): TestMachine {
  const ramBytes = options.ramBytes ?? 1 << 20;
  const hostRam = new HostRam(ramBytes, false);
  const frames = hostRam.allocate(ramBytes / FRAME_SIZE);
  const memory = new AddressSpace({
    ram: hostRam.buffer,
    memory: hostRam.memory,
    table: AddressSpace.tableFor(frames, false),
    ramBase: RAM_BASE,
    ramSize: ramBytes,
  });
  program.forEach((word, i) => memory.writeU32(RAM_BASE + 4 * i, word));
  const { block, layout } = createBoardState(1, false);
  const board = new Board(
    {
      hartCount: 1,
      block,
      memory: memory.init,
      layout,
      firmware: false,
      ...(options.wasm ? { hartAreas: hostRam.allocateHartAreas(1) } : {}),
    },
    options.nowMs,
  );
  if (options.nowMs !== undefined) board.clock.reset();
  const hart = options.firmware
    ? new Hart({
        hartId: 0,
        memory: board.memory,
        mmio: board.bus,
        block,
        clock: board.clock,
        firmware: options.firmware,
        jit: options.jit?.enabled,
        jitThreshold: options.jit?.threshold,
        ...(options.wasm ? { area: { memory: hostRam.memory, offset: board.init.hartAreas![0] } } : {}),
      })
    : board.createHart(0, options.jit);
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
