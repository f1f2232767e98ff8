import { describe, expect, it } from 'vitest';
import { STOP_WFI } from '../../src/cpu/hart.ts';
import { loadElf, type ElfMachine, type ElfResult } from '../../src/machine/run-elf.ts';
import { expectSameHarts, expectSameRam } from '../helpers/lockstep.ts';
import { ELF_FIXTURES, elfFixture } from '../helpers/elf-fixtures.ts';
import { prng } from '../helpers/prng.ts';

/**
 * The bare-metal fixtures (test/fixtures/elf) on the interpreter and on the block translator (translating every
 * block start on first sight), in lockstep on a deterministic clock (one 10 MHz tick per instruction, advanced
 * between slices): the harts must agree after every slice of random length, RAM at the end, and the verdicts.
 */

const RAM_BYTES = 4 << 20;
const MAX_INSNS = 5_000_000;

function lockstep(name: string, seed: number): { verdict: ElfResult | undefined; translated: number } {
  const bytes = elfFixture(`${name}.elf`);
  let nowMs = 0;
  const load = (enabled: boolean): ElfMachine =>
    loadElf(bytes, `${name}.elf`, {
      memoryBytes: RAM_BYTES,
      jit: { enabled, threshold: 1 },
      nowMs: () => nowMs,
    });
  const reference = load(false);
  const translated = load(true);
  const random = prng(seed);
  let executed = 0;
  let verdict: ElfResult | undefined;
  while (executed < MAX_INSNS && verdict === undefined) {
    const slice = 1 + Math.floor(random() * 2000);
    const a = reference.hart.run(slice);
    const b = translated.hart.run(slice);
    const context = `${name} after ${executed} + ${a} instructions`;
    expect(b, `${context}: instructions run`).toBe(a);
    expectSameHarts(reference, translated, context);
    executed += a;
    nowMs += a / 10_000;
    verdict = reference.serviceHtif();
    expect(translated.serviceHtif(), `${context}: verdict`).toEqual(verdict);
    if (reference.hart.stopReason === STOP_WFI) {
      const pending = reference.hart.interruptPending();
      expect(translated.hart.interruptPending()).toBe(pending);
      if (!pending) {
        // Sleep until the timer deadline on the shared fake clock (both harts armed the same compare).
        const deadline = reference.hart.timecmp();
        if (deadline === Infinity) break;
        nowMs += reference.hart.msUntilTicks(deadline);
      }
    }
  }
  expectSameRam(reference, translated, RAM_BYTES, `${name} at the end`);
  return { verdict, translated: translated.hart.jitStats()!.translated };
}

describe('block translator against the interpreter on the bare-metal fixtures', () => {
  for (const [i, name] of ELF_FIXTURES.entries()) {
    it(`${name}.elf runs identically, slice by slice`, () => {
      const { verdict, translated } = lockstep(name, 1000 + i);
      if (name === 'fail') expect(verdict).toEqual({ kind: 'fail', code: 3 });
      else if (name === 'spin') expect(verdict).toBeUndefined();
      else expect(verdict).toEqual({ kind: 'pass' });
      expect(translated).toBeGreaterThan(0);
    });
  }
});
