import { describe, expect, it } from 'vitest';
import * as A from '../../helpers/rv-encoder.ts';
import { step, testMachine } from '../../helpers/test-machine.ts';

/** Run `program` and return the registers. */
function exec(program: number[], preset: Record<number, number> = {}): Int32Array {
  const { hart } = testMachine(program);
  for (const [r, v] of Object.entries(preset)) hart.x[Number(r)] = v;
  step(hart, program.length);
  return hart.x;
}

describe('RV32I register-immediate and register-register', () => {
  it('adds, wraps around and ignores writes to x0', () => {
    const x = exec([
      A.addi(1, 0, 5),
      A.addi(2, 1, -7),
      A.addi(0, 0, 9),
      ...A.li(3, 0x7fffffff),
      A.addi(4, 3, 1),
    ]);
    expect(x[1]).toBe(5);
    expect(x[2]).toBe(-2);
    expect(x[0]).toBe(0);
    expect(x[4]).toBe(-0x80000000);
  });

  it('compares signed and unsigned', () => {
    const x = exec([A.slti(3, 1, 0), A.sltiu(4, 1, 0), A.slt(5, 1, 2), A.sltu(6, 1, 2), A.sltiu(7, 2, -1)], {
      1: -1,
      2: 1,
    });
    expect([x[3], x[4], x[5], x[6], x[7]]).toEqual([1, 0, 1, 0, 1]);
  });

  it('shifts mask the amount to 5 bits and keep the sign only for arithmetic shifts', () => {
    const x = exec([A.sll(3, 1, 2), A.srl(4, 1, 2), A.sra(5, 1, 2), A.srai(6, 1, 31), A.srli(7, 1, 31)], {
      1: -8,
      2: 33,
    });
    expect(x[3]).toBe(-16);
    expect(x[4]).toBe(0x7ffffffc);
    expect(x[5]).toBe(-4);
    expect(x[6]).toBe(-1);
    expect(x[7]).toBe(1);
  });

  it('logic ops and LUI/AUIPC', () => {
    const x = exec(
      [A.xori(3, 1, -1), A.ori(4, 1, 0x0f0), A.andi(5, 1, 0xff), A.lui(6, 0xabcde), A.auipc(7, 1)],
      {
        1: 0x1234,
      },
    );
    expect(x[3]).toBe(~0x1234);
    expect(x[4]).toBe(0x12f4);
    expect(x[5]).toBe(0x34);
    expect(x[6] >>> 0).toBe(0xabcde000);
    expect(x[7] >>> 0).toBe(0x80000010 + 0x1000);
  });
});

describe('M extension', () => {
  it('multiplies with full 64-bit high halves', () => {
    const x = exec([A.mul(3, 1, 2), A.mulh(4, 1, 2), A.mulhu(5, 1, 2), A.mulhsu(6, 1, 2)], {
      1: -3,
      2: 0x7fffffff,
    });
    expect(x[3]).toBe(Math.imul(-3, 0x7fffffff));
    const signed = BigInt(-3) * BigInt(0x7fffffff);
    expect(x[4]).toBe(Number(BigInt.asIntN(32, signed >> 32n)));
    const unsigned = BigInt(0xfffffffd) * BigInt(0x7fffffff);
    expect(x[5]).toBe(Number(BigInt.asIntN(32, unsigned >> 32n)));
    expect(x[6]).toBe(Number(BigInt.asIntN(32, signed >> 32n)));
  });

  it('mulhu of the largest operands is exact', () => {
    const x = exec([A.mulhu(3, 1, 1), A.mulh(4, 1, 1)], { 1: -1 });
    expect(x[3] >>> 0).toBe(0xfffffffe);
    expect(x[4]).toBe(0);
  });

  it('divides by zero and overflows as the spec defines', () => {
    const x = exec(
      [A.div(3, 1, 0), A.divu(4, 1, 0), A.rem(5, 1, 0), A.remu(6, 1, 0), A.div(7, 2, 8), A.rem(9, 2, 8)],
      {
        1: 7,
        2: -0x80000000,
        8: -1,
      },
    );
    expect([x[3], x[4], x[5], x[6]]).toEqual([-1, -1, 7, 7]);
    expect(x[7]).toBe(-0x80000000);
    expect(x[9]).toBe(0);
  });

  it('signed division truncates toward zero', () => {
    const x = exec([A.div(3, 1, 2), A.rem(4, 1, 2), A.divu(5, 1, 2)], { 1: -7, 2: 2 });
    expect([x[3], x[4]]).toEqual([-3, -1]);
    expect(x[5]).toBe(0x7ffffffc);
  });
});

describe('control flow', () => {
  it('takes and skips branches both ways', () => {
    // beq taken skips the addi; bne not taken falls through.
    const x = exec([A.beq(1, 1, 8), A.addi(3, 0, 1), A.bne(1, 1, 8), A.addi(4, 0, 1)], { 1: 5 });
    expect(x[3]).toBe(0);
    expect(x[4]).toBe(1);
  });

  it('JAL and JALR link and clear the low bit of the target', () => {
    const { hart } = testMachine([A.jal(1, 8), A.addi(3, 0, 1), A.addi(5, 0, 0x11), A.jalr(2, 5, 0)]);
    hart.x[5] = 0;
    step(hart, 2);
    expect(hart.x[1] >>> 0).toBe(0x80000004);
    expect(hart.pc >>> 0).toBe(0x8000000c);
    hart.x[5] = 0x80000021;
    step(hart, 1);
    expect(hart.pc >>> 0).toBe(0x80000020);
    expect(hart.x[2] >>> 0).toBe(0x80000010);
  });

  it('a jump to an address that is not 4-byte aligned traps with the target in mtval', () => {
    const { hart } = testMachine([A.jalr(1, 5, 0)]);
    hart.x[5] = 0x80000102;
    hart.mtvec = 0x80000200;
    step(hart, 1);
    expect(hart.mcause).toBe(0);
    expect(hart.mtval >>> 0).toBe(0x80000102);
    expect(hart.mepc >>> 0).toBe(0x80000000);
    expect(hart.x[1]).toBe(0);
  });
});

describe('loads and stores', () => {
  it('sign- and zero-extend sub-word loads', () => {
    const { hart, memory } = testMachine([
      A.lb(3, 1, 0),
      A.lbu(4, 1, 0),
      A.lh(5, 1, 0),
      A.lhu(6, 1, 0),
      A.lw(7, 1, 0),
    ]);
    memory.writeU32(0x80001000, 0x8081f0f1);
    hart.x[1] = 0x80001000 | 0;
    step(hart, 5);
    expect(hart.x[3]).toBe(-15);
    expect(hart.x[4]).toBe(0xf1);
    expect(hart.x[5]).toBe((0xf0f1 << 16) >> 16);
    expect(hart.x[6]).toBe(0xf0f1);
    expect(hart.x[7] >>> 0).toBe(0x8081f0f1);
  });

  it('performs misaligned loads and stores transparently, also across pages', () => {
    const { hart, memory } = testMachine([A.sw(2, 1, 0), A.lw(3, 1, 0), A.lh(4, 1, 1), A.sh(2, 1, 5)]);
    hart.x[1] = 0x80001ffe | 0;
    hart.x[2] = 0x11223344;
    step(hart, 4);
    expect(memory.readU32(0x80001ffe)).toBe(0x11223344);
    expect(hart.x[3]).toBe(0x11223344);
    expect(hart.x[4]).toBe(0x2233);
    expect(memory.readU16(0x80002003)).toBe(0x3344);
  });

  it('an access outside RAM and devices is an access fault, never a host exception', () => {
    const { hart } = testMachine([A.lw(3, 1, 0), A.sw(3, 1, 0)]);
    hart.x[1] = 0x80100000 | 0; // just past 1 MiB of RAM
    hart.mtvec = 0x80000100;
    step(hart, 1);
    expect(hart.mcause).toBe(5);
    expect(hart.mtval >>> 0).toBe(0x80100000);
    hart.pc = 0x80000004 | 0;
    step(hart, 1);
    expect(hart.mcause).toBe(7);
  });
});

describe('A extension', () => {
  it('LR/SC succeeds once and SC without a reservation fails', () => {
    const { hart, memory } = testMachine([A.lrW(3, 1), A.scW(4, 1, 2), A.scW(5, 1, 2)]);
    memory.writeU32(0x80001000, 41);
    hart.x[1] = 0x80001000 | 0;
    hart.x[2] = 42;
    step(hart, 3);
    expect(hart.x[3]).toBe(41);
    expect(hart.x[4]).toBe(0);
    expect(hart.x[5]).toBe(1);
    expect(memory.readU32(0x80001000)).toBe(42);
  });

  it('AMOs return the old value and store the result', () => {
    const { hart, memory } = testMachine([
      A.amoaddW(3, 1, 2),
      A.amominW(4, 1, 5),
      A.amomaxuW(6, 1, 5),
      A.amoswapW(7, 1, 2),
    ]);
    memory.writeU32(0x80001000, 10);
    hart.x[1] = 0x80001000 | 0;
    hart.x[2] = 5;
    hart.x[5] = -1;
    step(hart, 4);
    expect(hart.x[3]).toBe(10);
    expect(hart.x[4]).toBe(15);
    expect(hart.x[6]).toBe(-1);
    expect(hart.x[7]).toBe(-1);
    expect(memory.readU32(0x80001000)).toBe(5);
  });

  it('a misaligned AMO raises a store/AMO address-misaligned trap', () => {
    const { hart } = testMachine([A.amoaddW(3, 1, 2)]);
    hart.x[1] = 0x80001002 | 0;
    step(hart, 1);
    expect(hart.mcause).toBe(6);
  });
});
