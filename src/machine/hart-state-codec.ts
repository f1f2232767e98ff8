import { HART_STATE_AREA_DOUBLES } from '../common/shared-block.ts';
import type { HartState } from '../cpu/hart.ts';

/**
 * A hart's state in its float64 state area of the control block (used to move state between a vCPU thread and
 * the VMM for snapshots). Layout, in doubles:
 *   [0, 32)   x0..x31            [32] pc          [33] priv
 *   [34, 53)  CSRs, in CSR_ORDER [53, 57) pmpcfg0..3  [57, 73) pmpaddr0..15
 *   [73] instret  [74] cycleOffset  [75] instretOffset
 */
const CSR_ORDER = [
  'mstatus',
  'medeleg',
  'mideleg',
  'mie',
  'mipSoft',
  'mtvec',
  'stvec',
  'mepc',
  'sepc',
  'mcause',
  'scause',
  'mtval',
  'stval',
  'mscratch',
  'sscratch',
  'satp',
  'mcounteren',
  'scounteren',
  'mcountinhibit',
] as const;

const X = 0;
const PC = 32;
const PRIV = 33;
const CSRS = 34;
const PMPCFG = CSRS + CSR_ORDER.length;
const PMPADDR = PMPCFG + 4;
const INSTRET = PMPADDR + 16;
const CYCLE_OFFSET = INSTRET + 1;
const INSTRET_OFFSET = INSTRET + 2;
const USED = INSTRET + 3;
if (USED > HART_STATE_AREA_DOUBLES) throw new Error('hart state area too small');

/** Write `state` into `area` (HART_STATE_AREA_DOUBLES doubles). */
export function encodeHartState(state: HartState, area: Float64Array): void {
  for (let i = 0; i < 32; i++) area[X + i] = state.x[i];
  area[PC] = state.pc;
  area[PRIV] = state.priv;
  CSR_ORDER.forEach((name, i) => (area[CSRS + i] = state.csr[name]));
  for (let i = 0; i < 4; i++) area[PMPCFG + i] = state.pmpcfg[i];
  for (let i = 0; i < 16; i++) area[PMPADDR + i] = state.pmpaddr[i];
  area[INSTRET] = state.instret;
  area[CYCLE_OFFSET] = state.cycleOffset;
  area[INSTRET_OFFSET] = state.instretOffset;
}

/** Read a state written by {@link encodeHartState}. Values are coerced to int32 where the hart keeps int32s. */
export function decodeHartState(area: Float64Array): HartState {
  const csr = Object.fromEntries(CSR_ORDER.map((name, i) => [name, area[CSRS + i] | 0])) as HartState['csr'];
  return {
    x: Array.from(area.subarray(X, X + 32), (v) => v | 0),
    pc: area[PC] | 0,
    priv: area[PRIV] | 0,
    csr,
    pmpcfg: Array.from(area.subarray(PMPCFG, PMPCFG + 4), (v) => v | 0),
    pmpaddr: Array.from(area.subarray(PMPADDR, PMPADDR + 16), (v) => v | 0),
    instret: area[INSTRET],
    cycleOffset: area[CYCLE_OFFSET],
    instretOffset: area[INSTRET_OFFSET],
  };
}

/** The state area of hart `hartId` as a Float64Array view on the control block. */
export function hartStateArea(block: Int32Array, areaBase: number, hartId: number): Float64Array {
  return new Float64Array(
    block.buffer,
    block.byteOffset + areaBase * 4 + hartId * HART_STATE_AREA_DOUBLES * 8,
    HART_STATE_AREA_DOUBLES,
  );
}
