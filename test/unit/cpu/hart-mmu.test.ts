import { describe, expect, it } from 'vitest';
import * as C from '../../../src/cpu/csr.ts';
import * as A from '../../helpers/rv-encoder.ts';
import { step, testMachine } from '../../helpers/test-machine.ts';

const ROOT = 0x80010000; // level-1 table
const L0 = 0x80011000; // level-0 table for VA 0x00400000..0x007fffff
const DATA = 0x80020000;
const DATA_VA = 0x00400000;
const HANDLER = 0x80000400;

function pte(gpa: number, flags: number): number {
  return (((gpa >>> 12) << 10) | flags) >>> 0;
}

/** A hart in S-mode with Sv32 on: code identity-mapped by a megapage, one data page at DATA_VA. */
function pagedMachine(program: number[], dataFlags: number) {
  const m = testMachine([A.mret(), ...program]);
  const { memory, hart } = m;
  const V = C.PTE_V;
  // Identity megapage for RAM (VPN[1] = 0x200).
  memory.writeU32(ROOT + 0x200 * 4, pte(0x80000000, V | C.PTE_R | C.PTE_W | C.PTE_X | C.PTE_A | C.PTE_D));
  memory.writeU32(ROOT + (DATA_VA >>> 22) * 4, pte(L0, V));
  memory.writeU32(L0 + ((DATA_VA >>> 12) & 0x3ff) * 4, pte(DATA, dataFlags));
  memory.writeU32(DATA, 0xcafef00d);
  hart.satp = C.SATP_MODE_SV32 | (ROOT >>> 12) | 0;
  hart.writeCsr(C.CSR_SATP, hart.satp);
  hart.mepc = 0x80000004;
  hart.mstatus = 1 << 11; // MRET to S
  hart.mtvec = HANDLER;
  return m;
}

describe('Sv32 translation', () => {
  it('loads and stores go through the page table and set A and D', () => {
    const { hart, memory } = pagedMachine([A.lw(3, 1, 0), A.sw(2, 1, 4)], C.PTE_V | C.PTE_R | C.PTE_W);
    hart.x[1] = DATA_VA;
    hart.x[2] = 0x1234;
    step(hart, 3);
    expect(hart.x[3] >>> 0).toBe(0xcafef00d);
    expect(memory.readU32(DATA + 4)).toBe(0x1234);
    const leaf = memory.readU32(L0 + ((DATA_VA >>> 12) & 0x3ff) * 4);
    expect(leaf & C.PTE_A).toBe(C.PTE_A);
    expect(leaf & C.PTE_D).toBe(C.PTE_D);
  });

  it('a read leaves D clear', () => {
    const { hart, memory } = pagedMachine([A.lw(3, 1, 0)], C.PTE_V | C.PTE_R | C.PTE_W);
    hart.x[1] = DATA_VA;
    step(hart, 2);
    const leaf = memory.readU32(L0 + ((DATA_VA >>> 12) & 0x3ff) * 4);
    expect(leaf & (C.PTE_A | C.PTE_D)).toBe(C.PTE_A);
  });

  it('a store to a read-only page is a store page fault with the address in mtval', () => {
    const { hart } = pagedMachine([A.sw(2, 1, 8)], C.PTE_V | C.PTE_R);
    hart.x[1] = DATA_VA;
    step(hart, 2);
    expect(hart.mcause).toBe(15);
    expect(hart.mtval).toBe(DATA_VA + 8);
    expect(hart.mepc >>> 0).toBe(0x80000004);
  });

  it('an unmapped address is a load page fault', () => {
    const { hart } = pagedMachine([A.lw(3, 1, 0)], C.PTE_V | C.PTE_R);
    hart.x[1] = 0x00c00000;
    step(hart, 2);
    expect(hart.mcause).toBe(13);
    expect(hart.mtval).toBe(0x00c00000);
  });

  it('U pages are off limits to S-mode unless SUM is set', () => {
    const { hart } = pagedMachine(
      [A.lw(3, 1, 0), A.csrrs(0, C.CSR_SSTATUS, 4), A.lw(5, 1, 0)],
      C.PTE_V | C.PTE_R | C.PTE_U,
    );
    hart.x[1] = DATA_VA;
    hart.x[4] = C.MSTATUS_SUM;
    hart.medeleg = 0;
    step(hart, 2);
    expect(hart.mcause).toBe(13);
    // Resume in S after the fault, with SUM set.
    hart.mepc = 0x80000008;
    hart.mstatus = (1 << 11) | 0;
    hart.pc = 0x80000000 | 0;
    step(hart, 3);
    expect(hart.x[5] >>> 0).toBe(0xcafef00d);
  });

  it('execute-only pages are readable only with MXR', () => {
    const { hart } = pagedMachine([A.lw(3, 1, 0)], C.PTE_V | C.PTE_X);
    hart.x[1] = DATA_VA;
    step(hart, 2);
    expect(hart.mcause).toBe(13);
    const m2 = pagedMachine([A.lw(3, 1, 0)], C.PTE_V | C.PTE_X);
    m2.hart.x[1] = DATA_VA;
    m2.hart.mstatus |= C.MSTATUS_MXR;
    step(m2.hart, 2);
    expect(m2.hart.x[3] >>> 0).toBe(0xcafef00d);
  });

  it('SFENCE.VMA makes a changed PTE take effect', () => {
    const { hart, memory } = pagedMachine(
      [A.lw(3, 1, 0), A.lw(3, 1, 0), A.sfenceVma(), A.lw(4, 1, 0)],
      C.PTE_V | C.PTE_R,
    );
    hart.x[1] = DATA_VA;
    step(hart, 2);
    memory.writeU32(L0 + ((DATA_VA >>> 12) & 0x3ff) * 4, pte(DATA + 0x1000, C.PTE_V | C.PTE_R));
    memory.writeU32(DATA + 0x1000, 77);
    step(hart, 3);
    expect(hart.x[4]).toBe(77);
  });

  it('a misaligned megapage is a page fault', () => {
    const { hart, memory } = pagedMachine([A.lw(3, 1, 0)], C.PTE_V | C.PTE_R);
    memory.writeU32(ROOT + (0x00800000 >>> 22) * 4, pte(0x80001000, C.PTE_V | C.PTE_R));
    hart.x[1] = 0x00800000;
    step(hart, 2);
    expect(hart.mcause).toBe(13);
  });

  it('MPRV with MPP = S makes M-mode loads translate', () => {
    const m = testMachine([A.lw(3, 1, 0)]);
    const { hart, memory } = m;
    memory.writeU32(ROOT + (DATA_VA >>> 22) * 4, pte(L0, C.PTE_V));
    memory.writeU32(L0 + ((DATA_VA >>> 12) & 0x3ff) * 4, pte(DATA, C.PTE_V | C.PTE_R));
    memory.writeU32(DATA, 99);
    hart.writeCsr(C.CSR_SATP, C.SATP_MODE_SV32 | (ROOT >>> 12) | 0);
    hart.writeCsr(C.CSR_MSTATUS, C.MSTATUS_MPRV | (1 << 11));
    hart.x[1] = DATA_VA;
    step(hart, 1);
    expect(hart.x[3]).toBe(99);
  });
});

describe('hart state', () => {
  it('a saved state restored into a fresh hart continues identically, translation included', () => {
    const program = [A.lw(3, 1, 0), A.addi(3, 3, 1), A.sw(3, 1, 0), A.jal(0, -12)];
    const a = pagedMachine(program, C.PTE_V | C.PTE_R | C.PTE_W);
    a.hart.x[1] = DATA_VA;
    step(a.hart, 1 + 4 * 3);
    const saved = JSON.parse(JSON.stringify(a.hart.saveState()));
    const b = pagedMachine(program, C.PTE_V | C.PTE_R | C.PTE_W);
    b.memory.writeU32(DATA, a.memory.readU32(DATA));
    b.hart.restoreState(saved);
    step(a.hart, 40);
    step(b.hart, 40);
    expect(b.hart.pc).toBe(a.hart.pc);
    expect(Array.from(b.hart.x)).toEqual(Array.from(a.hart.x));
    expect(b.memory.readU32(DATA)).toBe(a.memory.readU32(DATA));
    expect(b.hart.priv).toBe(C.PRIV_S);
  });

  it('a malformed state is refused with a RangeError', () => {
    const { hart } = testMachine([]);
    const state = { ...hart.saveState(), x: [1, 2, 3] };
    expect(() => hart.restoreState(state)).toThrow(RangeError);
  });
});

/**
 * The TLB across address spaces: user entries carry satp's ASID, the kernel's global mappings survive a switch,
 * and what belongs to one address space or needs SUM goes when that changes. Run on the JavaScript interpreter
 * and on the WebAssembly tier, which reads the same TLB.
 */
describe.each([
  ['interpreter', false],
  ['WebAssembly tier', true],
])('TLB and ASIDs (%s)', (_name, wasm) => {
  const ROOT2 = 0x80012000;
  const L0_2 = 0x80013000;
  const DATA2 = 0x80021000;
  const V = C.PTE_V;
  const satpOf = (root: number, asid: number): number =>
    C.SATP_MODE_SV32 | (asid << C.SATP_ASID_SHIFT) | (root >>> 12) | 0;

  /** S-mode after one MRET; code identity-mapped (global megapage) in both roots; DATA_VA at DATA / DATA2. */
  function twoSpaces(program: number[], dataFlags: number) {
    const m = testMachine([A.mret(), ...program], { ramBytes: 8 << 20, wasm });
    const { memory, hart } = m;
    const code = pte(0x80000000, V | C.PTE_R | C.PTE_W | C.PTE_X | C.PTE_A | C.PTE_D | C.PTE_G);
    for (const [root, l0, data] of [
      [ROOT, L0, DATA],
      [ROOT2, L0_2, DATA2],
    ]) {
      memory.writeU32(root + 0x200 * 4, code);
      memory.writeU32(root + (DATA_VA >>> 22) * 4, pte(l0, V));
      memory.writeU32(l0 + ((DATA_VA >>> 12) & 0x3ff) * 4, pte(data, dataFlags | C.PTE_A | C.PTE_D));
    }
    memory.writeU32(DATA, 0x1111);
    memory.writeU32(DATA2, 0x2222);
    hart.writeCsr(C.CSR_SATP, satpOf(ROOT, 1));
    hart.mepc = 0x80000004;
    hart.mstatus = 1 << 11; // MRET to S
    hart.mtvec = HANDLER;
    hart.x[1] = DATA_VA;
    hart.x[5] = satpOf(ROOT2, 2);
    return m;
  }

  it('a new ASID does not see the last one’s entries for pages that are not global', () => {
    const { hart } = twoSpaces([A.lw(3, 1, 0), A.csrrw(0, C.CSR_SATP, 5), A.lw(4, 1, 0)], V | C.PTE_R);
    step(hart, 4);
    expect(hart.x[3]).toBe(0x1111);
    expect(hart.x[4]).toBe(0x2222);
  });

  it('a global mapping stays cached across an ASID switch until SFENCE.VMA', () => {
    // (Two roots that disagree on a global page break the spec's rule; it makes the cached entry visible.)
    const { hart } = twoSpaces(
      [A.lw(3, 1, 0), A.csrrw(0, C.CSR_SATP, 5), A.lw(4, 1, 0), A.sfenceVma(), A.lw(6, 1, 0)],
      V | C.PTE_R | C.PTE_G,
    );
    step(hart, 6);
    expect([hart.x[3], hart.x[4], hart.x[6]]).toEqual([0x1111, 0x1111, 0x2222]);
  });

  it('clearing SUM takes S-mode access to user pages away at once', () => {
    const { hart } = twoSpaces(
      [A.lw(3, 1, 0), A.csrrc(0, C.CSR_SSTATUS, 6), A.lw(4, 1, 0)],
      V | C.PTE_R | C.PTE_U,
    );
    hart.mstatus |= C.MSTATUS_SUM;
    hart.x[6] = C.MSTATUS_SUM;
    step(hart, 4);
    expect(hart.x[3]).toBe(0x1111);
    expect(hart.mcause).toBe(13);
    expect(hart.mtval).toBe(DATA_VA);
  });

  it('user entries keep their ASID across switches; SFENCE.VMA x0, asid drops them', () => {
    // M-mode with MPRV and MPP = U: data accesses translate as U-mode ones, and satp can be written in between.
    const m = testMachine(
      [
        A.lw(3, 1, 0),
        A.csrrw(0, C.CSR_SATP, 5),
        A.csrrw(0, C.CSR_SATP, 7),
        A.lw(4, 1, 0),
        A.sfenceVma(0, 8),
        A.lw(6, 1, 0),
      ],
      { ramBytes: 8 << 20, wasm },
    );
    const { memory, hart } = m;
    const leaf = L0 + ((DATA_VA >>> 12) & 0x3ff) * 4;
    memory.writeU32(ROOT + (DATA_VA >>> 22) * 4, pte(L0, V));
    memory.writeU32(leaf, pte(DATA, V | C.PTE_R | C.PTE_U | C.PTE_A));
    memory.writeU32(DATA, 0x1111);
    memory.writeU32(DATA2, 0x2222);
    hart.writeCsr(C.CSR_SATP, satpOf(ROOT, 1));
    hart.writeCsr(C.CSR_MSTATUS, C.MSTATUS_MPRV);
    hart.x[1] = DATA_VA;
    hart.x[5] = satpOf(ROOT2, 2);
    hart.x[7] = satpOf(ROOT, 1);
    hart.x[8] = 1;
    step(hart, 1);
    memory.writeU32(leaf, pte(DATA2, V | C.PTE_R | C.PTE_U | C.PTE_A)); // no fence yet
    step(hart, 5);
    expect([hart.x[3], hart.x[4], hart.x[6]]).toEqual([0x1111, 0x1111, 0x2222]);
  });

  it('SFENCE.VMA of one address in a megapage drops the whole megapage', () => {
    const MEGA_VA = 0x00800000;
    const { hart, memory } = twoSpaces([A.lw(3, 1, 0), A.sfenceVma(2), A.lw(4, 1, 0)], V | C.PTE_R);
    const entry = ROOT + (MEGA_VA >>> 22) * 4;
    memory.writeU32(entry, pte(0x80400000, V | C.PTE_R | C.PTE_A | C.PTE_G));
    memory.writeU32(0x80405000, 0x4444);
    memory.writeU32(0x80005000, 0x5555);
    hart.x[1] = MEGA_VA + 0x5000;
    hart.x[2] = MEGA_VA; // another 4 KiB page of the same megapage
    step(hart, 2);
    memory.writeU32(entry, pte(0x80000000, V | C.PTE_R | C.PTE_A | C.PTE_G));
    step(hart, 2);
    expect([hart.x[3], hart.x[4]]).toEqual([0x4444, 0x5555]);
  });

  it('a state restored into a hart that ran before uses none of its old entries', () => {
    const { hart } = twoSpaces([A.lw(3, 1, 0), A.lw(4, 1, 0)], V | C.PTE_R | C.PTE_G);
    step(hart, 2);
    expect(hart.x[3]).toBe(0x1111);
    const saved = hart.saveState();
    hart.restoreState({
      ...saved,
      pc: 0x80000008,
      csr: { ...saved.csr, satp: satpOf(ROOT2, 1) }, // the same ASID, another table
    });
    step(hart, 1);
    expect(hart.x[4]).toBe(0x2222);
  });

  it('more address-space entries than the TLB lists are all dropped at a switch', () => {
    const PAGES = 70;
    const walk: number[] = [];
    for (let k = 0; k < PAGES; k++) walk.push(A.lw(3, 1, 0), A.add(6, 6, 3), A.add(1, 1, 4));
    const program = [
      A.lui(4, 1),
      ...walk,
      A.csrrw(0, C.CSR_SATP, 5),
      A.addi(6, 0, 0),
      A.lui(1, DATA_VA >>> 12),
    ];
    program.push(...walk);
    const { hart, memory } = twoSpaces(program, V | C.PTE_R);
    for (let k = 0; k < PAGES; k++) {
      const va = DATA_VA + k * 4096;
      const first = 0x80100000 + k * 4096;
      const second = 0x80200000 + k * 4096;
      memory.writeU32(L0 + ((va >>> 12) & 0x3ff) * 4, pte(first, V | C.PTE_R | C.PTE_A));
      memory.writeU32(L0_2 + ((va >>> 12) & 0x3ff) * 4, pte(second, V | C.PTE_R | C.PTE_A));
      memory.writeU32(first, k);
      memory.writeU32(second, 1000 + k);
    }
    step(hart, program.length + 1);
    expect(hart.mcause).toBe(0);
    expect(hart.x[6]).toBe(PAGES * 1000 + (PAGES * (PAGES - 1)) / 2);
  });
});
