import { describe, expect, it } from 'vitest';
import { ELF_FIXTURES, elfFixture } from '../../helpers/elf-fixtures.ts';
import { prng } from '../../helpers/prng.ts';
import { UserError } from '../../../src/common/errors.ts';
import { PF_R, PF_W, PF_X, parseElf, type ElfImage } from '../../../src/machine/elf.ts';

const NAME = 'prog.elf';

/** A private copy of hello.elf with `edit` applied through a little-endian view. */
function edited(
  edit: (view: DataView, bytes: Uint8Array) => void,
  base = elfFixture('hello.elf'),
): Uint8Array {
  const bytes = base.slice();
  edit(new DataView(bytes.buffer), bytes);
  return bytes;
}

// ELF32 header and program header offsets (gABI), restated here so the test does not trust the parser's.
const E_TYPE = 16;
const E_MACHINE = 18;
const E_VERSION = 20;
const E_ENTRY = 24;
const E_PHOFF = 28;
const E_SHOFF = 32;
const E_FLAGS = 36;
const E_PHNUM = 44;
const PHDR_SIZE = 32;
const PT_LOAD = 1;

const SHDR_SIZE = 40;
const SH_TYPE = 4;
const SH_OFFSET = 16;
const SH_SIZE = 20;
const SH_LINK = 24;
const SH_ENTSIZE = 36;
const SHT_SYMTAB = 2;

/** Byte offset of the section header of `.symtab` in `bytes`. */
function symtabHeader(bytes: Uint8Array): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const shoff = view.getUint32(E_SHOFF, true);
  for (let i = 0; i < view.getUint16(48, true); i++) {
    if (view.getUint32(shoff + i * SHDR_SIZE + SH_TYPE, true) === SHT_SYMTAB) return shoff + i * SHDR_SIZE;
  }
  throw new Error('fixture has no .symtab');
}

/** Byte offset of program header `index` in `bytes`. */
function phdr(bytes: Uint8Array, index: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  return view.getUint32(E_PHOFF, true) + index * PHDR_SIZE;
}

/** Indexes of the PT_LOAD program headers of `bytes`. */
function loadHeaders(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const result: number[] = [];
  for (let i = 0; i < view.getUint16(E_PHNUM, true); i++) {
    if (view.getUint32(phdr(bytes, i), true) === PT_LOAD) result.push(i);
  }
  return result;
}

function parseError(bytes: Uint8Array): string {
  try {
    parseElf(bytes, NAME);
  } catch (error) {
    expect(error).toBeInstanceOf(UserError);
    return (error as UserError).message;
  }
  throw new Error('parseElf accepted the input');
}

describe('parseElf on the committed fixtures', () => {
  it('reads entry, segments and the HTIF symbols of hello.elf', () => {
    const image = parseElf(elfFixture('hello.elf'), 'hello.elf');
    expect(image.entry).toBe(0x8000_0000);
    expect(image.segments.length).toBeGreaterThanOrEqual(2);
    const [text] = image.segments;
    expect(text.gpa).toBe(0x8000_0000);
    expect(text.flags & (PF_R | PF_X)).toBe(PF_R | PF_X);
    expect(text.fileBytes.length).toBe(text.memSize);
    const tohost = image.symbols.get('tohost');
    expect(tohost).toBeDefined();
    expect((tohost as number) % 8).toBe(0);
    expect(image.symbols.get('fromhost')).toBe((tohost as number) + 8);
    expect(image.symbols.get('_start')).toBe(0x8000_0000);
    const holder = image.segments.find(
      (s) => s.gpa <= (tohost as number) && (tohost as number) < s.gpa + s.memSize,
    );
    expect(holder?.flags).toBe(PF_R | PF_W);
  });

  it('returns views into the input, not copies', () => {
    const bytes = elfFixture('hello.elf');
    const image = parseElf(bytes, 'hello.elf');
    for (const segment of image.segments) expect(segment.fileBytes.buffer).toBe(bytes.buffer);
    // The first instruction of _start is in the first segment's bytes.
    expect(image.segments[0].fileBytes.length).toBeGreaterThan(4);
  });

  it('keeps memSize beyond the file bytes for .bss (paging.elf)', () => {
    const image = parseElf(elfFixture('paging.elf'), 'paging.elf');
    const data = image.segments[image.segments.length - 1];
    expect(data.memSize).toBeGreaterThan(data.fileBytes.length);
  });

  it('parses every fixture and finds tohost in each', () => {
    for (const name of ELF_FIXTURES) {
      const image = parseElf(elfFixture(`${name}.elf`), `${name}.elf`);
      expect(image.entry, name).toBe(0x8000_0000);
      expect(image.symbols.has('tohost'), name).toBe(true);
    }
  });

  it('loads without symbols when the section header table is absent', () => {
    const image = parseElf(
      edited((v) => v.setUint32(E_SHOFF, 0, true)),
      NAME,
    );
    expect(image.symbols.size).toBe(0);
    expect(image.entry).toBe(0x8000_0000);
  });

  it('loads only PT_LOAD segments (the RISC-V attributes header is skipped)', () => {
    const bytes = elfFixture('hello.elf');
    const image: ElfImage = parseElf(bytes, NAME);
    expect(image.segments.length).toBe(loadHeaders(bytes).length);
  });
});

describe('parseElf rejects bad input with a message that names the problem and the fix', () => {
  it('not an ELF file', () => {
    expect(parseError(edited((_v, b) => (b[0] = 0x7e)))).toBe(
      `${NAME}: not an ELF file (bad magic); pass a RISC-V ELF executable`,
    );
    expect(parseError(new Uint8Array([0x7f, 0x45]))).toMatch(/bad magic/);
    expect(parseError(new Uint8Array(0))).toMatch(/bad magic/);
    expect(parseError(new TextEncoder().encode('#!/bin/sh\necho hi\n'))).toMatch(/bad magic/);
  });

  it('64-bit', () => {
    expect(parseError(edited((_v, b) => (b[4] = 2)))).toBe(
      `${NAME}: is a 64-bit ELF; tabvisor runs RV32 (build with -march=rv32ima -mabi=ilp32 and link with -m elf32lriscv)`,
    );
  });

  it('big-endian', () => {
    expect(parseError(edited((_v, b) => (b[5] = 2)))).toMatch(
      /^prog\.elf: is a big-endian ELF; .*little-endian/,
    );
  });

  it('bad class, data encoding and identification version', () => {
    expect(parseError(edited((_v, b) => (b[4] = 0)))).toMatch(/invalid ELF class 0/);
    expect(parseError(edited((_v, b) => (b[5] = 7)))).toMatch(/invalid ELF data encoding 7/);
    expect(parseError(edited((_v, b) => (b[6] = 0)))).toMatch(/identification version 0/);
    expect(parseError(edited((v) => v.setUint32(E_VERSION, 2, true)))).toMatch(/ELF version 2, expected 1/);
  });

  it('another machine', () => {
    expect(parseError(edited((v) => v.setUint16(E_MACHINE, 62, true)))).toBe(
      `${NAME}: is an ELF for machine 62 (x86-64), not RISC-V (243)`,
    );
    expect(parseError(edited((v) => v.setUint16(E_MACHINE, 183, true)))).toMatch(/machine 183 \(AArch64\)/);
    expect(parseError(edited((v) => v.setUint16(E_MACHINE, 4242, true)))).toBe(
      `${NAME}: is an ELF for machine 4242, not RISC-V (243)`,
    );
  });

  it('not an executable', () => {
    expect(parseError(edited((v) => v.setUint16(E_TYPE, 1, true)))).toMatch(/relocatable object .*link it/);
    expect(parseError(edited((v) => v.setUint16(E_TYPE, 3, true)))).toMatch(/-static -no-pie/);
    expect(parseError(edited((v) => v.setUint16(E_TYPE, 4, true)))).toMatch(/core dump/);
    expect(parseError(edited((v) => v.setUint16(E_TYPE, 0, true)))).toMatch(/ELF type 0, not an executable/);
  });

  it('compressed instructions or a hard-float ABI', () => {
    expect(parseError(edited((v) => v.setUint32(E_FLAGS, 1, true)))).toMatch(/compressed .*-march=rv32ima/);
    expect(parseError(edited((v) => v.setUint32(E_FLAGS, 4, true)))).toMatch(/hard-float .*-mabi=ilp32/);
  });

  it('truncated header', () => {
    expect(parseError(elfFixture('hello.elf').slice(0, 40))).toBe(
      `${NAME}: truncated: the ELF header needs 52 bytes but the file has 40`,
    );
  });

  it('truncated program header', () => {
    const whole = elfFixture('hello.elf');
    const cut = phdr(whole, 2) + 10;
    expect(parseError(whole.slice(0, cut))).toBe(
      `${NAME}: truncated: program header 2 runs past the end of the file (${cut} bytes)`,
    );
    expect(parseError(edited((v) => v.setUint32(E_PHOFF, 0xffff_fff0, true)))).toMatch(
      /truncated: program header 0 runs past the end/,
    );
  });

  it('segment data past the end of the file', () => {
    const bytes = edited((v, b) => {
      const at = phdr(b, loadHeaders(b)[0]);
      v.setUint32(at + 4, b.length - 2, true); // p_offset
    });
    expect(parseError(bytes)).toMatch(/truncated: segment \d+'s data runs past the end of the file/);
  });

  it('no loadable segments', () => {
    const noLoads = edited((v, b) => {
      for (const i of loadHeaders(b)) v.setUint32(phdr(b, i), 0, true);
    });
    expect(parseError(noLoads)).toMatch(/has no loadable segments/);
    expect(parseError(edited((v) => v.setUint16(E_PHNUM, 0, true)))).toMatch(/has no loadable segments/);
    const empty = edited((v, b) => {
      for (const i of loadHeaders(b)) {
        v.setUint32(phdr(b, i) + 16, 0, true);
        v.setUint32(phdr(b, i) + 20, 0, true);
      }
    });
    expect(parseError(empty)).toMatch(/has no loadable segments/);
  });

  it('filesz > memsz', () => {
    const bytes = edited((v, b) => {
      const at = phdr(b, loadHeaders(b)[0]);
      v.setUint32(at + 20, v.getUint32(at + 16, true) - 1, true);
    });
    expect(parseError(bytes)).toMatch(/more file bytes \(\d+\) than memory bytes \(\d+\)/);
  });

  it('overlapping segments', () => {
    const bytes = edited((v, b) => {
      const [first, second] = loadHeaders(b);
      const gpa = v.getUint32(phdr(b, first) + 12, true);
      v.setUint32(phdr(b, second) + 12, gpa + 4, true);
      v.setUint32(phdr(b, second) + 8, gpa + 4, true);
    });
    expect(parseError(bytes)).toMatch(
      /segments \d+ \[0x80000000, 0x[0-9a-f]+\) and \d+ .* overlap; fix the linker script/,
    );
  });

  it('addresses that overflow 32 bits', () => {
    const bytes = edited((v, b) => {
      const at = phdr(b, loadHeaders(b)[1]);
      v.setUint32(at + 12, 0xffff_ff00, true);
    });
    expect(parseError(bytes)).toMatch(
      /segment \d+ at 0xffffff00 \(\d+ bytes\) runs past the 32-bit address space/,
    );
    const virtualOverflow = edited((v, b) => {
      const at = phdr(b, loadHeaders(b)[1]);
      v.setUint32(at + 8, 0xffff_ff00, true);
    });
    expect(parseError(virtualOverflow)).toMatch(/at virtual 0xffffff00/);
  });

  it('an entry point outside every segment', () => {
    expect(parseError(edited((v) => v.setUint32(E_ENTRY, 0x1000, true)))).toBe(
      `${NAME}: entry point 0x1000 lies outside every loadable segment; check the linker script's ENTRY`,
    );
  });

  it('a broken section header table or symbol table', () => {
    expect(parseError(edited((v, b) => v.setUint32(E_SHOFF, b.length - 8, true)))).toMatch(
      /truncated: the section header table runs past/,
    );
    expect(parseError(edited((v, b) => v.setUint32(symtabHeader(b) + SH_ENTSIZE, 24, true)))).toMatch(
      /symbol table \(section \d+\) has 24-byte entries, expected 16/,
    );
    expect(parseError(edited((v, b) => v.setUint32(symtabHeader(b) + SH_LINK, 999, true)))).toMatch(
      /links to missing string table 999/,
    );
    expect(parseError(edited((v, b) => v.setUint32(symtabHeader(b) + SH_LINK, 1, true)))).toMatch(
      /links to section 1, which is not a string table/,
    );
    expect(parseError(edited((v, b) => v.setUint32(symtabHeader(b) + SH_SIZE, 0x7fff_0000, true)))).toMatch(
      /truncated: symbol table \(section \d+\) runs past the end of the file/,
    );
    const badName = edited((v, b) => {
      const table = v.getUint32(symtabHeader(b) + SH_OFFSET, true);
      v.setUint32(table + 16, 0x0fff_ffff, true); // symbol 1's st_name
    });
    expect(parseError(badName)).toMatch(/symbol 1 names string offset 268435455, past its string table/);
  });
});

describe('parseElf on hostile input', () => {
  const INTERESTING = [
    0, 1, 2, 31, 32, 52, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_fff0, 0xffff_ffff,
  ];

  function checkInvariants(image: ElfImage, input: Uint8Array): void {
    let previousEnd = 0;
    let entryFound = false;
    for (const segment of image.segments) {
      expect(segment.fileBytes.buffer).toBe(input.buffer);
      expect(segment.fileBytes.length).toBeLessThanOrEqual(segment.memSize);
      expect(segment.memSize).toBeGreaterThan(0);
      expect(segment.gpa).toBeGreaterThanOrEqual(previousEnd);
      expect(segment.gpa + segment.memSize).toBeLessThanOrEqual(0x1_0000_0000);
      previousEnd = segment.gpa + segment.memSize;
      if (image.entry >= segment.gpa && image.entry < segment.gpa + segment.memSize) entryFound = true;
    }
    expect(entryFound).toBe(true);
  }

  it('never throws anything but UserError, and what it accepts is consistent (20000 mutants)', () => {
    const seeds = ['hello.elf', 'paging.elf', 'rv32i.elf'].map(elfFixture);
    const random = prng(0x7ab71502);
    let accepted = 0;
    let rejected = 0;
    for (let round = 0; round < 20_000; round++) {
      const base = seeds[round % seeds.length];
      let bytes = base.slice();
      const view = new DataView(bytes.buffer);
      const phoff = view.getUint32(E_PHOFF, true);
      const shoff = view.getUint32(E_SHOFF, true);
      const edits = 1 + Math.floor(random() * 6);
      for (let e = 0; e < edits; e++) {
        // Aim at the structures the parser reads: the ELF header, the program headers, the section headers,
        // anywhere else now and then.
        const where = random();
        let offset: number;
        if (where < 0.35) offset = Math.floor(random() * 52);
        else if (where < 0.7) offset = phoff + Math.floor(random() * 3 * PHDR_SIZE);
        else if (where < 0.9) offset = shoff + Math.floor(random() * 8 * 40);
        else offset = Math.floor(random() * bytes.length);
        if (offset >= bytes.length) continue;
        if (random() < 0.5 && offset + 4 <= bytes.length) {
          const value =
            random() < 0.6
              ? INTERESTING[Math.floor(random() * INTERESTING.length)]
              : Math.floor(random() * 0x1_0000_0000);
          view.setUint32(offset, value, true);
        } else {
          bytes[offset] = Math.floor(random() * 256);
        }
      }
      if (random() < 0.15) bytes = bytes.slice(0, Math.floor(random() * bytes.length));
      let image: ElfImage | undefined;
      try {
        image = parseElf(bytes, NAME);
      } catch (error) {
        if (!(error instanceof UserError)) {
          throw new Error(`round ${round}: parseElf threw ${String(error)}`, { cause: error });
        }
        expect(error.message.startsWith(`${NAME}: `)).toBe(true);
        expect(error.message).not.toContain('\n');
        rejected++;
        continue;
      }
      checkInvariants(image, bytes);
      accepted++;
    }
    // Both outcomes occur, so the mutations reach past the first checks.
    expect(accepted).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(100);
  });

  it('never throws anything but UserError on random bytes behind a valid identification', () => {
    const random = prng(42);
    for (let round = 0; round < 2000; round++) {
      const bytes = new Uint8Array(Math.floor(random() * 400));
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
      bytes.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1].slice(0, bytes.length));
      try {
        parseElf(bytes, NAME);
      } catch (error) {
        expect(error).toBeInstanceOf(UserError);
      }
    }
  });
});
