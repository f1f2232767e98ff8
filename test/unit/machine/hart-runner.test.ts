import { describe, expect, it } from 'vitest';
import {
  HART_STATE,
  HART_STATE_RUNNING,
  HART_TIMECMP_HI,
  HART_TIMECMP_LO,
  hartWord,
} from '../../../src/common/shared-block.ts';
import * as C from '../../../src/cpu/csr.ts';
import { Board, createBoardState } from '../../../src/machine/board.ts';
import { stepHart } from '../../../src/machine/hart-runner.ts';
import { hartStateArea } from '../../../src/machine/hart-state-codec.ts';
import { AddressSpace, RAM_BASE } from '../../../src/mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../../../src/mem/host-ram.ts';
import * as A from '../../helpers/rv-encoder.ts';

/** A Linux-style hart (S-mode, SBI firmware) idling in `wfi; j .-4` with its timer deadline in the past. */
function idleHart(mie: number) {
  const ramBytes = 1 << 20;
  const ram = new HostRam(ramBytes, false);
  const memory = new AddressSpace({
    ram: ram.buffer,
    table: AddressSpace.tableFor(ram.allocate(ramBytes / FRAME_SIZE), false),
    ramBase: RAM_BASE,
    ramSize: ramBytes,
  });
  memory.writeU32(RAM_BASE, A.wfi());
  memory.writeU32(RAM_BASE + 4, A.jal(0, -4));
  const { block, layout } = createBoardState(1, false);
  const board = new Board({ hartCount: 1, block, memory: memory.init, layout, firmware: true });
  const hart = board.createHart(0);
  hart.enterSupervisor(RAM_BASE, 0);
  hart.mie = mie;
  block[hartWord(0, HART_TIMECMP_LO)] = 0; // deadline at tick 0: long past
  block[hartWord(0, HART_TIMECMP_HI)] = 0;
  block[hartWord(0, HART_STATE)] = HART_STATE_RUNNING;
  const area = hartStateArea(block, layout.hartStates, 0);
  return () =>
    stepHart(hart, block, area, (message) => {
      throw new Error(message);
    });
}

describe('a hart in WFI', () => {
  it('sleeps when its past timer deadline is masked (STIE off), instead of spinning in the idle loop', () => {
    const step = idleHart(C.MIP_SSIP | C.MIP_SEIP);
    const first = step();
    expect(first.kind).toBe('sleep');
    expect(first.kind === 'sleep' && first.ms).toBeGreaterThan(100);
  });

  it('runs on when the past deadline can wake it (STIE on): the timer interrupt is pending', () => {
    const step = idleHart(C.MIP_SSIP | C.MIP_SEIP | C.MIP_STIP);
    expect(step().kind).toBe('run');
  });
});
