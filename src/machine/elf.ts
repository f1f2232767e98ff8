import { UserError } from '../common/errors.ts';

/**
 * ELF32 little-endian reader for RISC-V executables (bare-metal test programs and firmware).
 *
 * The input is untrusted: every offset, count and size is checked against the file before it is read, and every
 * problem is reported as a `UserError` whose message names the file, the problem and the fix. Only `PT_LOAD`
 * segments are loaded. Layouts are those of the System V gABI ("ELF header", "Program header", "Sections",
 * "Symbol table") and the RISC-V ELF psABI (e_machine 243, e_flags bits).
 */

/** One loadable segment: `fileBytes` go to `[gpa, gpa + fileBytes.length)`, the rest up to `memSize` is zero. */
export interface ElfSegment {
  /** Guest-physical load address (`p_paddr`). */
  readonly gpa: number;
  /** The segment's bytes in the file: a view into the input, not a copy. */
  readonly fileBytes: Uint8Array;
  /** Bytes the segment occupies in memory (`p_memsz`), at least `fileBytes.length`. */
  readonly memSize: number;
  /** `p_flags`: PF_X = 1, PF_W = 2, PF_R = 4. */
  readonly flags: number;
}

/** A parsed executable. */
export interface ElfImage {
  /** Guest-physical address of the first instruction (`e_entry`, translated from virtual to physical). */
  readonly entry: number;
  /** Loadable segments, sorted by `gpa`, none empty, none overlapping. */
  readonly segments: readonly ElfSegment[];
  /**
   * Named symbols of `.symtab` (empty when the file has none). A value inside a loadable segment's virtual range
   * is translated to its guest-physical address, like `entry`; other values (absolute symbols) are kept.
   */
  readonly symbols: Map<string, number>;
}

/** Program-header flag: the segment is executable. */
export const PF_X = 1;
/** Program-header flag: the segment is writable. */
export const PF_W = 2;
/** Program-header flag: the segment is readable. */
export const PF_R = 4;

// e_ident (gABI "ELF Identification").
const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
const EI_CLASS = 4;
const EI_DATA = 5;
const EI_VERSION = 6;
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ELFDATA2MSB = 2;
const EV_CURRENT = 1;

// ELF32 header fields (gABI "ELF Header"), byte offsets.
const EHDR_SIZE = 52;
const E_TYPE = 16;
const E_MACHINE = 18;
const E_VERSION = 20;
const E_ENTRY = 24;
const E_PHOFF = 28;
const E_SHOFF = 32;
const E_FLAGS = 36;
const E_PHENTSIZE = 42;
const E_PHNUM = 44;
const E_SHENTSIZE = 46;
const E_SHNUM = 48;

const ET_REL = 1;
const ET_EXEC = 2;
const ET_DYN = 3;
const ET_CORE = 4;
const EM_RISCV = 243;

// RISC-V psABI e_flags.
const EF_RISCV_RVC = 0x1;
const EF_RISCV_FLOAT_ABI_MASK = 0x6;

// ELF32 program header (gABI "Program Header"), byte offsets.
const PHDR_SIZE = 32;
const P_TYPE = 0;
const P_OFFSET = 4;
const P_VADDR = 8;
const P_PADDR = 12;
const P_FILESZ = 16;
const P_MEMSZ = 20;
const P_FLAGS = 24;
const PT_LOAD = 1;
/** e_phnum value meaning "the real count is elsewhere" (gABI extended numbering). */
const PN_XNUM = 0xffff;

// ELF32 section header (gABI "Sections"), byte offsets.
const SHDR_SIZE = 40;
const SH_TYPE = 4;
const SH_OFFSET = 16;
const SH_SIZE = 20;
const SH_LINK = 24;
const SH_ENTSIZE = 36;
const SHT_SYMTAB = 2;
const SHT_STRTAB = 3;

// ELF32 symbol (gABI "Symbol Table"), byte offsets.
const SYM_SIZE = 16;
const ST_NAME = 0;
const ST_VALUE = 4;
const ST_INFO = 12;
const ST_SHNDX = 14;
const SHN_UNDEF = 0;
const STB_LOCAL = 0;
const STT_SECTION = 3;
const STT_FILE = 4;

/** The address space is 32 bits: a segment must end at or below this. */
const ADDRESS_LIMIT = 0x1_0000_0000;

/** Names of the machines people most often hand us by mistake. */
const MACHINE_NAMES: ReadonlyMap<number, string> = new Map([
  [0, 'none'],
  [2, 'SPARC'],
  [3, 'x86'],
  [8, 'MIPS'],
  [20, 'PowerPC'],
  [21, 'PowerPC64'],
  [22, 'S/390'],
  [40, 'ARM'],
  [50, 'IA-64'],
  [62, 'x86-64'],
  [183, 'AArch64'],
  [258, 'LoongArch'],
]);

const BUILD_HINT = 'build with -march=rv32ima -mabi=ilp32 and link with -m elf32lriscv';

/** Hex of a non-negative address or end address (an end may be 2^32). */
function hex(value: number): string {
  return '0x' + value.toString(16);
}

/**
 * Parse a RISC-V ELF32 executable.
 *
 * @param bytes the whole file
 * @param fileName shown in error messages
 * @throws UserError when the file is not a loadable little-endian RV32 executable, with the fix in the message
 */
export function parseElf(bytes: Uint8Array, fileName: string): ElfImage {
  const bad = (problem: string): UserError => new UserError(`${fileName}: ${problem}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = bytes.byteLength;

  // Identification: magic, class, data encoding, version.
  if (size < ELF_MAGIC.length || ELF_MAGIC.some((byte, i) => bytes[i] !== byte)) {
    throw bad('not an ELF file (bad magic); pass a RISC-V ELF executable');
  }
  if (size <= EI_VERSION)
    throw bad(`truncated: the ELF header needs ${EHDR_SIZE} bytes but the file has ${size}`);
  const elfClass = bytes[EI_CLASS];
  if (elfClass === ELFCLASS64) throw bad(`is a 64-bit ELF; tabvisor runs RV32 (${BUILD_HINT})`);
  if (elfClass !== ELFCLASS32)
    throw bad(`has an invalid ELF class ${elfClass}; pass a 32-bit RISC-V ELF executable`);
  const data = bytes[EI_DATA];
  if (data === ELFDATA2MSB) throw bad('is a big-endian ELF; RISC-V is little-endian, rebuild it for riscv32');
  if (data !== ELFDATA2LSB)
    throw bad(`has an invalid ELF data encoding ${data}; pass a little-endian RISC-V ELF`);
  if (bytes[EI_VERSION] !== EV_CURRENT) {
    throw bad(
      `has ELF identification version ${bytes[EI_VERSION]}, expected ${EV_CURRENT}; the file is corrupt`,
    );
  }
  if (size < EHDR_SIZE)
    throw bad(`truncated: the ELF header needs ${EHDR_SIZE} bytes but the file has ${size}`);

  const u16 = (offset: number): number => view.getUint16(offset, true);
  const u32 = (offset: number): number => view.getUint32(offset, true);

  // Header fields.
  const type = u16(E_TYPE);
  if (type !== ET_EXEC) {
    if (type === ET_REL)
      throw bad(`is a relocatable object (ELF type 1), not an executable; link it (${BUILD_HINT})`);
    if (type === ET_DYN) {
      throw bad(
        'is a shared object or position-independent executable (ELF type 3); link it with -static -no-pie',
      );
    }
    if (type === ET_CORE)
      throw bad('is a core dump (ELF type 4), not an executable; pass a RISC-V ELF executable');
    throw bad(`has ELF type ${type}, not an executable (2); pass a RISC-V ELF executable`);
  }
  const machine = u16(E_MACHINE);
  if (machine !== EM_RISCV) {
    const name = MACHINE_NAMES.get(machine);
    throw bad(
      `is an ELF for machine ${machine}${name === undefined ? '' : ` (${name})`}, not RISC-V (${EM_RISCV})`,
    );
  }
  if (u32(E_VERSION) !== EV_CURRENT)
    throw bad(`has ELF version ${u32(E_VERSION)}, expected 1; the file is corrupt`);
  const flags = u32(E_FLAGS);
  if ((flags & EF_RISCV_RVC) !== 0) {
    throw bad(
      'uses compressed instructions (e_flags RVC), which tabvisor does not run yet; build with -march=rv32ima',
    );
  }
  if ((flags & EF_RISCV_FLOAT_ABI_MASK) !== 0) {
    throw bad('uses a hard-float ABI (e_flags), which tabvisor does not run yet; build with -mabi=ilp32');
  }
  // RV32E code (e_flags 0x8) uses a subset of RV32I and runs unchanged, so it is accepted.

  // Program headers: loadable segments.
  const phoff = u32(E_PHOFF);
  const phnum = u16(E_PHNUM);
  if (phnum === PN_XNUM)
    throw bad('uses extended program-header numbering (e_phnum 0xffff); relink with fewer segments');
  if (phnum === 0) throw bad('has no loadable segments (no program headers); link it as an executable');
  if (u16(E_PHENTSIZE) !== PHDR_SIZE) {
    throw bad(`has program headers of ${u16(E_PHENTSIZE)} bytes, expected ${PHDR_SIZE}; the file is corrupt`);
  }
  interface Loadable extends ElfSegment {
    readonly index: number;
    readonly vaddr: number;
  }
  // The whole table first, so that a cut file reports its first missing header rather than a segment.
  for (let index = 0; index < phnum; index++) {
    if (phoff + (index + 1) * PHDR_SIZE > size) {
      throw bad(`truncated: program header ${index} runs past the end of the file (${size} bytes)`);
    }
  }
  const loadables: Loadable[] = [];
  for (let index = 0; index < phnum; index++) {
    const at = phoff + index * PHDR_SIZE;
    if (u32(at + P_TYPE) !== PT_LOAD) continue;
    const offset = u32(at + P_OFFSET);
    const vaddr = u32(at + P_VADDR);
    const gpa = u32(at + P_PADDR);
    const fileSize = u32(at + P_FILESZ);
    const memSize = u32(at + P_MEMSZ);
    if (fileSize > memSize) {
      throw bad(
        `segment ${index} has more file bytes (${fileSize}) than memory bytes (${memSize}); the file is corrupt`,
      );
    }
    if (offset + fileSize > size) {
      throw bad(`truncated: segment ${index}'s data runs past the end of the file (${size} bytes)`);
    }
    if (gpa + memSize > ADDRESS_LIMIT) {
      throw bad(
        `segment ${index} at ${hex(gpa)} (${memSize} bytes) runs past the 32-bit address space; fix the link address`,
      );
    }
    if (vaddr + memSize > ADDRESS_LIMIT) {
      throw bad(
        `segment ${index} at virtual ${hex(vaddr)} (${memSize} bytes) runs past the 32-bit address space`,
      );
    }
    if (memSize === 0) continue;
    loadables.push({
      index,
      vaddr,
      gpa,
      fileBytes: bytes.subarray(offset, offset + fileSize),
      memSize,
      flags: u32(at + P_FLAGS),
    });
  }
  if (loadables.length === 0)
    throw bad('has no loadable segments (no non-empty PT_LOAD); link it as an executable');
  loadables.sort((a, b) => a.gpa - b.gpa);
  for (let i = 1; i < loadables.length; i++) {
    const before = loadables[i - 1];
    const after = loadables[i];
    if (before.gpa + before.memSize > after.gpa) {
      throw bad(
        `segments ${before.index} [${hex(before.gpa)}, ${hex(before.gpa + before.memSize)}) and ${after.index} ` +
          `[${hex(after.gpa)}, ${hex(after.gpa + after.memSize)}) overlap; fix the linker script`,
      );
    }
  }

  /** Virtual -> physical through the segments' ranges; undefined when no segment holds the address. */
  const toPhysical = (virtual: number): number | undefined => {
    for (const segment of loadables) {
      if (virtual >= segment.vaddr && virtual - segment.vaddr < segment.memSize) {
        return segment.gpa + (virtual - segment.vaddr);
      }
    }
    return undefined;
  };
  const entryVirtual = u32(E_ENTRY);
  const entry = toPhysical(entryVirtual);
  if (entry === undefined) {
    throw bad(
      `entry point ${hex(entryVirtual)} lies outside every loadable segment; check the linker script's ENTRY`,
    );
  }

  const symbols = readSymbols(bytes, view, bad, toPhysical);
  const segments = loadables.map(({ gpa, fileBytes, memSize, flags: segmentFlags }) => ({
    gpa,
    fileBytes,
    memSize,
    flags: segmentFlags,
  }));
  return { entry, segments, symbols };
}

/** Read `.symtab` (every SHT_SYMTAB section) into name -> value; globals win over locals of the same name. */
function readSymbols(
  bytes: Uint8Array,
  view: DataView,
  bad: (problem: string) => UserError,
  toPhysical: (virtual: number) => number | undefined,
): Map<string, number> {
  const size = bytes.byteLength;
  const u16 = (offset: number): number => view.getUint16(offset, true);
  const u32 = (offset: number): number => view.getUint32(offset, true);
  const symbols = new Map<string, number>();
  const shoff = u32(E_SHOFF);
  const shnum = u16(E_SHNUM);
  // No section table (or extended numbering we do not need): the image still loads, without symbols.
  if (shoff === 0 || shnum === 0) return symbols;
  if (u16(E_SHENTSIZE) !== SHDR_SIZE) {
    throw bad(`has section headers of ${u16(E_SHENTSIZE)} bytes, expected ${SHDR_SIZE}; the file is corrupt`);
  }
  if (shoff + shnum * SHDR_SIZE > size) {
    throw bad(`truncated: the section header table runs past the end of the file (${size} bytes)`);
  }
  const decoder = new TextDecoder('utf-8');
  const isLocal = new Set<string>();
  for (let index = 0; index < shnum; index++) {
    const header = shoff + index * SHDR_SIZE;
    if (u32(header + SH_TYPE) !== SHT_SYMTAB) continue;
    const tableOffset = u32(header + SH_OFFSET);
    const tableSize = u32(header + SH_SIZE);
    if (tableOffset + tableSize > size) {
      throw bad(`truncated: symbol table (section ${index}) runs past the end of the file (${size} bytes)`);
    }
    if (u32(header + SH_ENTSIZE) !== SYM_SIZE) {
      throw bad(
        `symbol table (section ${index}) has ${u32(header + SH_ENTSIZE)}-byte entries, expected ${SYM_SIZE}`,
      );
    }
    const link = u32(header + SH_LINK);
    if (link >= shnum) throw bad(`symbol table (section ${index}) links to missing string table ${link}`);
    const strings = shoff + link * SHDR_SIZE;
    if (u32(strings + SH_TYPE) !== SHT_STRTAB) {
      throw bad(`symbol table (section ${index}) links to section ${link}, which is not a string table`);
    }
    const stringsOffset = u32(strings + SH_OFFSET);
    const stringsSize = u32(strings + SH_SIZE);
    if (stringsOffset + stringsSize > size) {
      throw bad(`truncated: string table (section ${link}) runs past the end of the file (${size} bytes)`);
    }
    const stringBytes = bytes.subarray(stringsOffset, stringsOffset + stringsSize);
    const count = Math.floor(tableSize / SYM_SIZE);
    for (let n = 0; n < count; n++) {
      const sym = tableOffset + n * SYM_SIZE;
      const nameOffset = u32(sym + ST_NAME);
      const info = bytes[sym + ST_INFO];
      const symbolType = info & 0xf;
      if (nameOffset !== 0 && nameOffset >= stringsSize) {
        throw bad(
          `symbol ${n} names string offset ${nameOffset}, past its string table (${stringsSize} bytes)`,
        );
      }
      if (nameOffset === 0 || u16(sym + ST_SHNDX) === SHN_UNDEF) continue;
      if (symbolType === STT_SECTION || symbolType === STT_FILE) continue;
      const end = stringBytes.indexOf(0, nameOffset);
      if (end < 0)
        throw bad(`symbol ${n}'s name is not NUL-terminated inside its string table; the file is corrupt`);
      const name = decoder.decode(stringBytes.subarray(nameOffset, end));
      const local = info >> 4 === STB_LOCAL;
      // First definition wins, except that a global replaces a local of the same name.
      if (symbols.has(name) && (local || !isLocal.has(name))) continue;
      const value = u32(sym + ST_VALUE);
      symbols.set(name, toPhysical(value) ?? value);
      if (local) isLocal.add(name);
      else isLocal.delete(name);
    }
  }
  return symbols;
}
