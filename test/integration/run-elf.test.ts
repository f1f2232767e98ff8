import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runElf } from '../../src/machine/run-elf.ts';

/**
 * The bare-metal programs of test/fixtures/elf (see its README) run to their verdict on the emulator. Each check
 * program exits 0 when every check passed, or with the number of the first check that failed.
 */

const FIXTURES = new URL('../fixtures/elf/', import.meta.url);
const MAX_INSNS = 50_000_000;

function fixture(name: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(name, FIXTURES)));
}

const CHECK_PROGRAMS = ['rv32i', 'rv32m', 'rv32a', 'csr', 'traps', 'paging', 'interrupts', 'misaligned'];

describe('run-elf on the bare-metal fixtures', () => {
  for (const name of CHECK_PROGRAMS) {
    it(`${name}.elf passes every check`, async () => {
      const result = await runElf(fixture(`${name}.elf`), `${name}.elf`, { maxInsns: MAX_INSNS });
      // On failure the code names the check: look it up in test/fixtures/elf/src/<name>.S.
      expect(result).toEqual({ kind: 'pass' });
    });
  }

  it('hello.elf prints its greeting through HTIF putchar and passes', async () => {
    const bytes: number[] = [];
    const result = await runElf(fixture('hello.elf'), 'hello.elf', {
      maxInsns: MAX_INSNS,
      onConsole: (byte) => bytes.push(byte),
    });
    expect(result).toEqual({ kind: 'pass' });
    expect(String.fromCharCode(...bytes)).toBe('hello from tabvisor\n');
  });

  it('fail.elf reports its exit code 3', async () => {
    const result = await runElf(fixture('fail.elf'), 'fail.elf', { maxInsns: MAX_INSNS });
    expect(result).toEqual({ kind: 'fail', code: 3 });
  });

  it('spin.elf times out after maxInsns', async () => {
    const result = await runElf(fixture('spin.elf'), 'spin.elf', { maxInsns: 1_000_000 });
    expect(result).toEqual({ kind: 'timeout' });
  });
});
