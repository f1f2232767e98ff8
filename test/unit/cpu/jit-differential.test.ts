import { describe, expect, it } from 'vitest';
import { runInLockstep, type Side } from '../../helpers/lockstep.ts';
import { prng } from '../../helpers/prng.ts';
import { randomProgram, type ProgramMode } from '../../helpers/random-program.ts';
import { testMachine } from '../../helpers/test-machine.ts';

const RAM_BYTES = 1 << 20;
/** Instructions each random program runs. */
const INSNS = 20_000;

/**
 * Run `seed`'s program on the interpreter and on the block translator (translating every block start on first
 * sight) in lockstep, in slices of random length, and compare the harts after every slice and RAM at the end.
 */
function runDifferential(seed: number, mode: ProgramMode): { translated: number } {
  const random = prng(seed);
  const program = randomProgram(random, mode);
  let nowMs = 0;
  const machine = (jit: boolean): Side => {
    const m = testMachine([], {
      ramBytes: RAM_BYTES,
      jit: { enabled: jit, threshold: 1 },
      nowMs: () => nowMs,
    });
    program.install(m.memory, m.hart);
    return m;
  };
  const reference = machine(false);
  const translated = machine(true);
  expect(translated.hart.jitEnabled).toBe(true);
  runInLockstep(reference, translated, {
    random,
    instructions: INSNS,
    ramBytes: RAM_BYTES,
    label: `seed ${seed} (${mode})`,
    advance: (n) => (nowMs += n / 10_000), // 10 MHz timebase: one tick per instruction
  });
  return { translated: translated.hart.jitStats()!.translated };
}

describe('block translator against the interpreter on random programs', () => {
  for (const mode of ['machine', 'supervisor', 'user'] as const) {
    it(`${mode} mode: registers, CSRs, counters, traps and memory match slice by slice`, () => {
      let translated = 0;
      for (let seed = 1; seed <= 40; seed++)
        translated += runDifferential(seed * 7919 + mode.length, mode).translated;
      // The comparison means something only if the translator did run code.
      expect(translated).toBeGreaterThan(40 * 20);
    });
  }
});
