import { describe, expect, it } from 'vitest';
import * as C from '../../../src/cpu/csr.ts';
import { STOP_BUDGET, STOP_PAUSE_LOOP, STOP_WFI } from '../../../src/cpu/hart.ts';
import { hartWord, HART_LINES, MIP_MSIP } from '../../../src/common/shared-block.ts';
import * as A from '../../helpers/rv-encoder.ts';
import { step, testMachine } from '../../helpers/test-machine.ts';

const HANDLER = 0x80000400;

describe('CSRs', () => {
  it('misa reports RV32 with A, I, M, S, U', () => {
    const { hart } = testMachine([A.csrrs(1, C.CSR_MISA, 0)]);
    step(hart, 1);
    expect(hart.x[1] >>> 0).toBe(0x40141101);
  });

  it('CSRRS/CSRRC with x0 read without writing, the immediate forms write', () => {
    const { hart } = testMachine([
      A.csrrw(0, C.CSR_MSCRATCH, 1),
      A.csrrs(2, C.CSR_MSCRATCH, 0),
      A.csrrsi(3, C.CSR_MSCRATCH, 0x10),
      A.csrrci(4, C.CSR_MSCRATCH, 0x3),
      A.csrrs(5, C.CSR_MSCRATCH, 0),
    ]);
    hart.x[1] = 0x0f;
    step(hart, 5);
    expect(hart.x[2]).toBe(0x0f);
    expect(hart.x[3]).toBe(0x0f);
    expect(hart.x[4]).toBe(0x1f);
    expect(hart.x[5]).toBe(0x1c);
  });

  it('writing a read-only CSR is an illegal instruction with the bits in mtval', () => {
    const insn = A.csrrw(1, C.CSR_MVENDORID, 2);
    const { hart } = testMachine([insn]);
    hart.mtvec = HANDLER;
    step(hart, 1);
    expect(hart.mcause).toBe(2);
    expect(hart.mtval >>> 0).toBe(insn);
    expect(hart.pc >>> 0).toBe(HANDLER);
  });

  it('an unknown CSR traps', () => {
    const { hart } = testMachine([A.csrrs(1, 0x7c0, 0)]);
    hart.mtvec = HANDLER;
    step(hart, 1);
    expect(hart.mcause).toBe(2);
  });

  it('satp keeps MODE, all nine ASID bits and PPN', () => {
    const { hart } = testMachine([A.csrrw(0, C.CSR_SATP, 1), A.csrrs(2, C.CSR_SATP, 0)]);
    hart.x[1] = -1;
    step(hart, 2);
    expect(hart.x[2] >>> 0).toBe(0xffffffff);
  });
});

describe('traps and privilege', () => {
  it('MRET to U-mode, then ECALL from U traps to M with cause 8 and mepc at the ecall', () => {
    const { hart } = testMachine([A.mret(), A.ecall()]);
    hart.mtvec = HANDLER;
    hart.mepc = 0x80000004;
    hart.mstatus = C.MSTATUS_MPIE; // MPP = U
    step(hart, 2);
    expect(hart.mcause).toBe(8);
    expect(hart.mepc >>> 0).toBe(0x80000004);
    expect(hart.priv).toBe(C.PRIV_M);
    expect((hart.mstatus & C.MSTATUS_MPP) >>> 11).toBe(C.PRIV_U);
  });

  it('medeleg sends a U-mode ECALL to the S handler with SPP = U, and SRET returns', () => {
    const { hart } = testMachine([A.mret(), A.ecall(), A.addi(5, 0, 7)]);
    hart.stvec = HANDLER;
    hart.medeleg = 1 << 8;
    hart.mepc = 0x80000004;
    hart.mstatus = 0;
    hart.writeCsr(C.CSR_SSTATUS, C.MSTATUS_SIE);
    // The S handler: sepc += 4; sret.
    const handler = [A.csrrs(6, C.CSR_SEPC, 0), A.addi(6, 6, 4), A.csrrw(0, C.CSR_SEPC, 6), A.sret()];
    const { memory } = {
      memory: (hart as unknown as { memory: import('../../../src/mem/address-space.ts').AddressSpace })
        .memory,
    };
    handler.forEach((w, i) => memory.writeU32(HANDLER + 4 * i, w));
    step(hart, 2);
    expect(hart.priv).toBe(C.PRIV_S);
    expect(hart.scause).toBe(8);
    expect(hart.sepc >>> 0).toBe(0x80000004);
    expect(hart.mstatus & C.MSTATUS_SPP).toBe(0);
    expect(hart.mstatus & C.MSTATUS_SPIE).toBe(C.MSTATUS_SPIE);
    expect(hart.mstatus & C.MSTATUS_SIE).toBe(0);
    step(hart, 5);
    expect(hart.priv).toBe(C.PRIV_U);
    expect(hart.x[5]).toBe(7);
  });

  it('S-mode cannot touch M-mode CSRs and U-mode cannot SRET', () => {
    const { hart } = testMachine([A.mret(), A.csrrs(1, C.CSR_MSTATUS, 0)]);
    hart.mtvec = HANDLER;
    hart.mepc = 0x80000004;
    hart.mstatus = 1 << 11; // MPP = S
    step(hart, 2);
    expect(hart.mcause).toBe(2);
    expect((hart.mstatus & C.MSTATUS_MPP) >>> 11).toBe(C.PRIV_S);
  });

  it('EBREAK traps with cause 3 and mepc at the instruction', () => {
    const { hart } = testMachine([A.addi(1, 0, 1), A.ebreak()]);
    hart.mtvec = HANDLER;
    step(hart, 2);
    expect(hart.mcause).toBe(3);
    expect(hart.mepc >>> 0).toBe(0x80000004);
  });

  it('FENCE with unusual fields (PAUSE) and FENCE.I are no-ops', () => {
    const { hart } = testMachine([0x0100000f, A.fence(), A.fenceI(), A.addi(1, 0, 3)]);
    step(hart, 4);
    expect(hart.x[1]).toBe(3);
    expect(hart.mcause).toBe(0);
  });
});

describe('interrupts', () => {
  it('a machine software interrupt is taken when MIE and MSIE are set, with the interrupt bit in mcause', () => {
    const { hart, board } = testMachine([A.addi(1, 0, 1), A.addi(1, 0, 2)]);
    hart.mtvec = HANDLER;
    hart.mie = C.MIP_MSIP;
    hart.mstatus = C.MSTATUS_MIE;
    board.lines.raise(0, MIP_MSIP);
    expect(board.block[hartWord(0, HART_LINES)] & MIP_MSIP).toBe(MIP_MSIP);
    hart.run(0); // a slice of zero instructions only looks at interrupts
    expect(hart.mcause >>> 0).toBe(0x80000003);
    expect(hart.mepc >>> 0).toBe(0x80000000);
  });

  it('vectored mtvec jumps to base + 4 * cause for interrupts', () => {
    const { hart } = testMachine([A.addi(1, 0, 1)]);
    hart.mtvec = HANDLER | 1;
    hart.mie = C.MIP_MTIP;
    hart.mstatus = C.MSTATUS_MIE;
    hart.writeCsr(C.CSR_MIE, C.MIP_MTIP);
    // timecmp = 0: due immediately.
    const board = (hart as unknown as { block: Int32Array }).block;
    board[hartWord(0, 3)] = 0;
    board[hartWord(0, 4)] = 0;
    hart.run(0);
    expect(hart.mcause >>> 0).toBe(0x80000007);
    expect(hart.pc >>> 0).toBe(HANDLER + 4 * 7);
  });

  it('WFI with nothing pending stops the slice; interrupts globally disabled still wake it without a trap', () => {
    const { hart, board } = testMachine([A.wfi(), A.addi(1, 0, 9)]);
    hart.mie = C.MIP_MSIP;
    hart.run(10);
    expect(hart.stopReason).toBe(STOP_WFI);
    expect(hart.pc >>> 0).toBe(0x80000004);
    board.lines.raise(0, MIP_MSIP);
    expect(hart.interruptPending()).toBe(true);
    hart.run(1);
    expect(hart.x[1]).toBe(9);
  });

  it('supervisor interrupts are delegated through mideleg and respect SIE in S-mode', () => {
    const { hart } = testMachine([A.mret(), A.addi(1, 0, 1), A.addi(1, 0, 2)]);
    hart.mepc = 0x80000004;
    hart.mstatus = 1 << 11; // to S, SIE = 0
    hart.mideleg = C.MIP_SSIP;
    hart.mie = C.MIP_SSIP;
    hart.stvec = HANDLER;
    hart.mipSoft = C.MIP_SSIP;
    step(hart, 2);
    expect(hart.priv).toBe(C.PRIV_S);
    expect(hart.x[1]).toBe(1); // not taken: SIE = 0
    hart.writeCsr(C.CSR_SSTATUS, C.MSTATUS_SIE);
    hart.run(0);
    expect(hart.scause >>> 0).toBe(0x80000001);
    expect(hart.pc >>> 0).toBe(HANDLER);
  });
});

describe('pause-loop exit', () => {
  it('a hart spinning on PAUSE ends its slice early so the runner can yield the host core', () => {
    // loop: pause; j loop
    const { hart } = testMachine([0x0100000f, A.jal(0, -4)]);
    const executed = hart.run(100_000);
    expect(hart.stopReason).toBe(STOP_PAUSE_LOOP);
    expect(executed).toBeLessThan(1000);
  });

  it('an occasional PAUSE does not end the slice', () => {
    const { hart } = testMachine([
      0x0100000f,
      ...Array.from({ length: 100 }, () => A.addi(1, 1, 1)),
      A.jal(0, -404),
    ]);
    hart.run(10_000);
    expect(hart.stopReason).toBe(STOP_BUDGET);
  });
});
