import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { FENCE_INSTRUCTIONS, FENCE_TLB, HART_FENCE, hartWord } from '../../../src/common/shared-block.ts';
import * as C from '../../../src/cpu/csr.ts';
import { STOP_WFI, jitByDefault, type Hart } from '../../../src/cpu/hart.ts';
import { RAM_BASE } from '../../../src/mem/address-space.ts';
import * as A from '../../helpers/rv-encoder.ts';
import { testMachine, type TestMachine } from '../../helpers/test-machine.ts';

/** A machine that translates every block start on first sight. */
function jitMachine(program: number[]): TestMachine {
  return testMachine(program, { jit: { enabled: true, threshold: 1 } });
}

/** Run until the hart stops at a WFI (the programs' breakpoint: nothing can wake an M-mode hart here). */
function runToWfi(hart: Hart): void {
  hart.run(1_000_000);
  expect(hart.stopReason).toBe(STOP_WFI);
}

/**
 * x6 = 4 iterations of `x5 += 1` (the instruction at LOOP_BODY, which tests replace), a WFI for the test to look,
 * then `extra` and back to the start.
 */
const LOOP_BODY = RAM_BASE + 8;
function loopProgram(extra: number): number[] {
  return [
    A.addi(6, 0, 4), // 0: x6 = 4
    A.addi(0, 0, 0), // 4
    A.addi(5, 5, 1), // 8: LOOP_BODY
    A.addi(6, 6, -1), // 12
    A.bne(6, 0, -8), // 16: loop
    A.wfi(), // 20
    extra, // 24
    A.jal(0, -28), // 28: again
  ];
}

describe('block translator', () => {
  it('translates a hot loop and never runs past the instruction budget inside it', () => {
    // x1 counts iterations of a two-instruction loop that never ends.
    const { hart } = jitMachine([A.addi(1, 1, 1), A.jal(0, -4)]);
    let total = 0;
    for (let budget = 1; budget <= 60; budget++) {
      expect(hart.run(budget)).toBe(budget);
      total += budget;
      expect(hart.instret).toBe(total);
      expect(hart.x[1]).toBe(Math.ceil(total / 2));
    }
    expect(hart.jitStats()!.translated).toBeGreaterThan(0);
  });

  it("this hart's own store into translated code takes effect at the next instruction, even without FENCE.I", () => {
    const { hart } = jitMachine(loopProgram(A.sw(7, 8, 0)));
    hart.x[7] = A.addi(5, 5, 100);
    hart.x[8] = LOOP_BODY;
    runToWfi(hart);
    expect(hart.x[5]).toBe(4);
    expect(hart.jitStats()!.translated).toBeGreaterThan(0);
    runToWfi(hart);
    expect(hart.x[5]).toBe(4 + 4 * 100);
    expect(hart.jitStats()!.frameInvalidations).toBeGreaterThan(0);
  });

  it('code written by another agent runs after FENCE.I; translations are rechecked, not thrown away', () => {
    const { hart, memory } = jitMachine(loopProgram(A.fenceI()));
    runToWfi(hart);
    expect(hart.x[5]).toBe(4);
    const before = { ...hart.jitStats()! };
    memory.writeU32(LOOP_BODY, A.addi(5, 5, 100)); // a device or another hart writes the code
    runToWfi(hart);
    expect(hart.x[5]).toBe(4 + 4 * 100);
    const after = hart.jitStats()!;
    expect(after.stale).toBeGreaterThan(before.stale);
    expect(after.revalidations).toBeGreaterThan(before.revalidations);
  });

  it('a remote FENCE.I request is honoured at the next block boundary; a remote SFENCE.VMA does not recheck code', () => {
    const { hart, memory, board } = jitMachine(loopProgram(A.addi(0, 0, 0)));
    runToWfi(hart);
    const fenceWord = hartWord(0, HART_FENCE);
    // A remote SFENCE.VMA flushes the TLB only: the translation is not rechecked.
    const checked = hart.jitStats()!.revalidations;
    Atomics.store(board.block, fenceWord, FENCE_TLB);
    runToWfi(hart);
    expect(Atomics.load(board.block, fenceWord)).toBe(0);
    expect(hart.jitStats()!.revalidations).toBe(checked);
    expect(hart.x[5]).toBe(8);
    // A remote FENCE.I (SBI remote_fence_i) after another hart wrote the code: the new code runs.
    memory.writeU32(LOOP_BODY, A.addi(5, 5, 100));
    Atomics.store(board.block, fenceWord, FENCE_INSTRUCTIONS);
    runToWfi(hart);
    expect(hart.x[5]).toBe(8 + 4 * 100);
  });

  it('restoring a saved state drops every translation', () => {
    const { hart, memory } = jitMachine(loopProgram(A.addi(0, 0, 0)));
    runToWfi(hart);
    // Nobody tells the hart about this write, so its translation of the old code still runs (for the loop
    // iterations entered through the translated loop head)...
    memory.writeU32(LOOP_BODY, A.addi(5, 5, 100));
    runToWfi(hart);
    const x5 = hart.x[5];
    expect(x5 - 4).toBeLessThan(4 * 100);
    // ...until the state is restored (as a snapshot restore does): then the code in memory runs.
    hart.restoreState(hart.saveState());
    runToWfi(hart);
    expect(hart.x[5]).toBe(x5 + 4 * 100);
  });

  it('a load that faults in the middle of a translated loop traps precisely', () => {
    // Walks x1 down through RAM 4 bytes at a time until it leaves RAM: a load access fault on the first word
    // below 0x80000000, long after the loop was translated. The handler is a WFI.
    const program = [A.lw(2, 1, -4), A.addi(1, 1, -4), A.addi(3, 3, 1), A.jal(0, -12)];
    const handler = 64;
    while (program.length < handler) program.push(0);
    program.push(A.wfi());
    const run = (jit: boolean): Hart => {
      const { hart } = testMachine(program, { jit: { enabled: jit, threshold: 1 } });
      hart.mtvec = RAM_BASE + 4 * handler;
      hart.x[1] = RAM_BASE + 0x1000;
      runToWfi(hart);
      return hart;
    };
    const translated = run(true);
    const reference = run(false);
    expect(translated.jitStats()!.translated).toBeGreaterThan(0);
    expect(translated.mcause).toBe(C.CAUSE_LOAD_ACCESS);
    expect(translated.mepc >>> 0).toBe(RAM_BASE);
    expect(translated.mtval >>> 0).toBe(RAM_BASE - 4);
    expect(translated.x[3]).toBe(0x1000 / 4);
    expect(translated.saveState()).toEqual(reference.saveState());
  });

  it('accesses through one base share a TLB check only on paths that made it: a member after a join point checks again', () => {
    // A translated loop whose group head (pc 12) is skipped on its third pass, after the base moved from RAM to
    // the UART: the member at the join point (pc 16) must read the device, not RAM through the old page's delta.
    const UART_SCRATCH = 0x10000007;
    const data = RAM_BASE + 0x2000;
    const program = [
      A.sb(14, 15, 0), // 0: the UART scratch register holds 0x5a
      A.lbu(9, 10, 0), // 4: the data page is in the read TLB
      A.beq(6, 0, 8), // 8: loop head; on the last pass skip to the member
      A.lbu(5, 10, 0), // 12: group head
      A.lbu(7, 10, 0), // 16: group member, and a join point
      A.add(10, 10, 11), // 20: move the base (by 0 on the first pass)
      A.add(11, 0, 13), //  24
      A.addi(6, 6, -1), // 28
      A.addi(12, 12, -1), // 32
      A.bne(12, 0, -28), // 36: back to the loop head
      A.wfi(), // 40
    ];
    const run = (jit: boolean): Hart => {
      const { hart, memory } = testMachine(program, { jit: { enabled: jit, threshold: 1 } });
      memory.writeU32(data, 0x33);
      Object.assign(hart.x, {
        6: 2,
        10: data,
        11: 0,
        12: 3,
        13: UART_SCRATCH - data,
        14: 0x5a,
        15: UART_SCRATCH,
      });
      runToWfi(hart);
      return hart;
    };
    const translated = run(true);
    expect(translated.jitStats()!.translated).toBeGreaterThan(0);
    expect(translated.x[5]).toBe(0x33); // the head last ran on the second pass, over RAM
    expect(translated.x[7]).toBe(0x5a);
    expect(translated.saveState()).toEqual(run(false).saveState());
  });
});

describe('block translator switches', () => {
  const saved = process.env.TABVISOR_JIT;
  afterEach(() => {
    if (saved === undefined) delete process.env.TABVISOR_JIT;
    else process.env.TABVISOR_JIT = saved;
  });

  it('TABVISOR_JIT=0 turns it off and TABVISOR_JIT=1 on, unless a hart is told otherwise', () => {
    process.env.TABVISOR_JIT = '0';
    expect(jitByDefault()).toBe(false);
    expect(testMachine([]).hart.jitEnabled).toBe(false);
    expect(testMachine([], { jit: { enabled: true } }).hart.jitEnabled).toBe(true);
    process.env.TABVISOR_JIT = '1';
    expect(jitByDefault()).toBe(true);
    expect(testMachine([]).hart.jitEnabled).toBe(true);
    expect(testMachine([], { jit: { enabled: false } }).hart.jitEnabled).toBe(false);
  });

  it('where code generation from strings is forbidden (a CSP without unsafe-eval), harts just interpret', () => {
    const helper = new URL('../../helpers/test-machine.ts', import.meta.url).href;
    const encoder = new URL('../../helpers/rv-encoder.ts', import.meta.url).href;
    const script = `
      const { testMachine, step } = await import(${JSON.stringify(helper)});
      const A = await import(${JSON.stringify(encoder)});
      const { hart } = testMachine([A.addi(1, 0, 50), A.addi(2, 2, 3), A.addi(1, 1, -1), A.bne(1, 0, -8)], {
        jit: { enabled: true, threshold: 1 },
      });
      step(hart, 151);
      console.log(JSON.stringify({ enabled: hart.jitEnabled, x2: hart.x[2] }));
    `;
    const output = execFileSync(
      process.execPath,
      ['--disallow-code-generation-from-strings', '--import', 'tsx', '--input-type=module', '-e', script],
      { encoding: 'utf8' },
    );
    expect(JSON.parse(output)).toEqual({ enabled: false, x2: 150 });
  });
});
