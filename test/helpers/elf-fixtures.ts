import { readFileSync } from 'node:fs';

/** Every bare-metal program in test/fixtures/elf (see its README), by name without `.elf`. */
export const ELF_FIXTURES = [
  'rv32i',
  'rv32m',
  'rv32a',
  'csr',
  'traps',
  'paging',
  'interrupts',
  'misaligned',
  'hello',
  'fail',
  'spin',
] as const;

const FIXTURES = new URL('../fixtures/elf/', import.meta.url);

/** The bytes of fixture file `fileName` (e.g. `paging.elf`). */
export function elfFixture(fileName: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(fileName, FIXTURES)));
}
