import { expect } from 'vitest';
import type { Hart } from '../../src/cpu/hart.ts';
import { RAM_BASE, type AddressSpace } from '../../src/mem/address-space.ts';

/** One machine of a differential run: its hart and its guest memory. */
export interface Side {
  readonly hart: Hart;
  readonly memory: AddressSpace;
}

/** Architectural state of both harts must match: registers, pc, privilege, CSRs, counters, why they stopped. */
export function expectSameHarts(reference: Side, translated: Side, context: string): void {
  expect(translated.hart.saveState(), `${context}: hart state`).toEqual(reference.hart.saveState());
  expect(translated.hart.stopReason, `${context}: stop reason`).toBe(reference.hart.stopReason);
}

/** Guest RAM `[RAM_BASE, RAM_BASE + bytes)` of both machines must match; names the first differing word. */
export function expectSameRam(
  reference: Pick<Side, 'memory'>,
  translated: Pick<Side, 'memory'>,
  bytes: number,
  context: string,
): void {
  const a = new Uint8Array(bytes);
  const b = new Uint8Array(bytes);
  reference.memory.read(RAM_BASE, a);
  translated.memory.read(RAM_BASE, b);
  const wordsA = new Int32Array(a.buffer);
  const wordsB = new Int32Array(b.buffer);
  for (let i = 0; i < wordsA.length; i++) {
    if (wordsA[i] !== wordsB[i]) {
      const gpa = (RAM_BASE + 4 * i).toString(16);
      expect(wordsB[i] >>> 0, `${context}: RAM word at 0x${gpa}`).toBe(wordsA[i] >>> 0);
    }
  }
}

/**
 * Run two machines holding the same program in lockstep: slices of random length (1-3000 instructions, from
 * `random`) until `instructions` ran, comparing instruction counts and harts after every slice and the first
 * `ramBytes` of RAM at the end. `advance` hears each slice's count (to move a clock both machines read); `label`
 * names the run in failures.
 */
export function runInLockstep(
  reference: Side,
  other: Side,
  run: {
    readonly random: () => number;
    readonly instructions: number;
    readonly ramBytes: number;
    readonly label: string;
    readonly advance: (instructions: number) => void;
  },
): void {
  let executed = 0;
  while (executed < run.instructions) {
    const slice = 1 + Math.floor(run.random() * 3000);
    const a = reference.hart.run(slice);
    const b = other.hart.run(slice);
    const context = `${run.label} after ${executed} + ${a} instructions`;
    expect(b, `${context}: instructions run`).toBe(a);
    expectSameHarts(reference, other, context);
    executed += a;
    run.advance(a);
  }
  expectSameRam(reference, other, run.ramBytes, run.label);
}
