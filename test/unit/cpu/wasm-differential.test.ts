import { describe, expect, it } from 'vitest';
import { wasmCoreModule } from '../../../src/cpu/wasm-core.ts';
import { expectSameHarts, runInLockstep, type Side } from '../../helpers/lockstep.ts';
import { prng } from '../../helpers/prng.ts';
import { randomProgram, type ProgramMode } from '../../helpers/random-program.ts';
import { step, testMachine } from '../../helpers/test-machine.ts';
import * as A from '../../helpers/rv-encoder.ts';
import { CSR_MSCRATCH } from '../../../src/cpu/csr.ts';

const RAM_BYTES = 1 << 20;
/** Instructions each random program runs. */
const INSNS = 20_000;

/**
 * Run `seed`'s program on the JavaScript interpreter and on the WebAssembly tier (with or without the block
 * translator, which then translates every block start on first sight) in lockstep, in slices of random length,
 * and compare the harts after every slice and RAM at the end. Returns the instructions the tier retired.
 */
function runDifferential(seed: number, mode: ProgramMode, jit: boolean): number {
  const random = prng(seed);
  const program = randomProgram(random, mode);
  let nowMs = 0;
  const machine = (wasm: boolean): Side => {
    const m = testMachine([], {
      ramBytes: RAM_BYTES,
      jit: { enabled: wasm && jit, threshold: 1 },
      nowMs: () => nowMs,
      wasm,
    });
    program.install(m.memory, m.hart);
    return m;
  };
  const reference = machine(false);
  const tier = machine(true);
  expect(tier.hart.wasmEnabled).toBe(true);
  expect(reference.hart.wasmEnabled).toBe(false);
  runInLockstep(reference, tier, {
    random,
    instructions: INSNS,
    ramBytes: RAM_BYTES,
    label: `seed ${seed} (${mode}${jit ? ', translated' : ''})`,
    advance: (n) => (nowMs += n / 10_000), // 10 MHz timebase: one tick per instruction
  });
  return tier.hart.wasmRetired;
}

describe('WebAssembly tier against the JavaScript interpreter on random programs', () => {
  for (const mode of ['machine', 'supervisor', 'user'] as const) {
    for (const jit of [false, true]) {
      it(`${mode} mode${jit ? ' with the block translator' : ''}: registers, CSRs, counters, traps and memory match slice by slice`, () => {
        let retired = 0;
        for (let seed = 1; seed <= 30; seed++)
          retired += runDifferential(seed * 6151 + mode.length, mode, jit);
        // The comparison means something only if the tier ran much of the code.
        expect(retired).toBeGreaterThan((30 * INSNS) / (jit ? 20 : 4));
      });
    }
  }

  it('LR/SC reservations carry between the tier and JavaScript: SC succeeds once after LR, and an AMO breaks it', () => {
    const program = [
      A.lui(5, 0x80080), // x5 = a data word
      A.addi(6, 0, 7),
      A.lrW(10, 5), // the page's first access: JavaScript fills the TLB (and takes the reservation)
      A.scW(11, 5, 6), // 0 (JavaScript, filling the write TLB); the word is 7
      A.scW(12, 5, 6), // 1: no reservation left (from here on, the tier)
      A.lrW(13, 5),
      A.scW(14, 5, 6), // 0: stores 7 again
      A.scW(15, 5, 6), // 1: the SC above dropped the reservation, though the word still holds 7
      A.lrW(16, 5),
      A.amo(0x08, 17, 5, 0), // AMOOR with 0 leaves the word as it is but drops the reservation
      A.scW(18, 5, 6), // 1
      A.lrW(19, 5),
      A.csrrs(20, CSR_MSCRATCH, 0), // JavaScript's
      A.scW(21, 5, 6), // 0: JavaScript kept the tier's reservation
      A.lrW(22, 5),
      A.sw(6, 5, 4), // a store to another word keeps it
      A.scW(23, 5, 6), // 0
    ];
    const run = (wasm: boolean): Side => {
      const m = testMachine(program, { wasm });
      step(m.hart, program.length);
      return m;
    };
    const reference = run(false);
    const tier = run(true);
    expectSameHarts(reference, tier, 'LR/SC program');
    expect([11, 12, 14, 15, 18, 21, 23].map((r) => tier.hart.x[r])).toEqual([0, 1, 0, 1, 1, 0, 0]);
    expect(tier.hart.wasmRetired).toBeGreaterThan(10);
  });

  it('the module validates for shared and unshared memory and stays small', () => {
    for (const shared of [false, true]) {
      const bytes = wasmCoreModule(shared);
      expect(WebAssembly.validate(bytes)).toBe(true);
      expect(bytes.length).toBeLessThan(8192);
    }
  });
});
