import { UserError } from '../common/errors.ts';
import { MIP_MTIP } from '../cpu/csr.ts';
import { STOP_FATAL, STOP_WFI, type Hart } from '../cpu/hart.ts';
import { AddressSpace, RAM_BASE } from '../mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../mem/host-ram.ts';
import { Board, createBoardState } from './board.ts';
import { parseElf } from './elf.ts';

/** Outcome of a bare-metal program. */
export type ElfResult = { kind: 'pass' } | { kind: 'fail'; code: number } | { kind: 'timeout' };

export interface RunElfOptions {
  /** Give up after this many instructions. */
  readonly maxInsns: number;
  /** Bytes the program prints through HTIF putchar. */
  readonly onConsole?: (byte: number) => void;
  /** Guest RAM in bytes (default 64 MiB). */
  readonly memoryBytes?: number;
}

/** How {@link loadElf} builds the machine. */
export interface ElfMachineOptions {
  /** Bytes the program prints through HTIF putchar. */
  readonly onConsole?: (byte: number) => void;
  /** Guest RAM in bytes (default 64 MiB). */
  readonly memoryBytes?: number;
  /** Block translator on or off, and its threshold (default: the hart's defaults). */
  readonly jit?: { readonly enabled: boolean; readonly threshold?: number };
  /** The host time the VM clock counts from (default the wall clock; tests pass a deterministic one). */
  readonly nowMs?: () => number;
}

/** A bare-metal program loaded on a one-hart board, ready to run. */
export interface ElfMachine {
  readonly board: Board;
  readonly hart: Hart;
  readonly memory: AddressSpace;
  /** Look at tohost after running: the verdict once the program exited, else undefined (requests served). */
  serviceHtif(): ElfResult | undefined;
}

/** Instructions between two looks at tohost. */
const HTIF_POLL_INSNS = 1000;
const HTIF_DEVICE_CONSOLE = 1;
const HTIF_CONSOLE_PUTCHAR = 1;

/**
 * Load a bare-metal RV32 ELF on the virt board with its one hart reset to the entry in M-mode. Throws a
 * UserError when the file is not such a program.
 */
export function loadElf(bytes: Uint8Array, fileName: string, options: ElfMachineOptions = {}): ElfMachine {
  const image = parseElf(bytes, fileName);
  const tohost = image.symbols.get('tohost');
  if (tohost === undefined) {
    throw new UserError(
      `${fileName}: has no 'tohost' symbol; run-elf needs the HTIF tohost/fromhost convention`,
    );
  }
  const fromhost = image.symbols.get('fromhost');
  const memoryBytes = options.memoryBytes ?? 64 << 20;
  const hostRam = new HostRam(memoryBytes, false);
  const frames = hostRam.allocate(memoryBytes / FRAME_SIZE);
  const memory = new AddressSpace({
    ram: hostRam.buffer,
    table: AddressSpace.tableFor(frames, false),
    ramBase: RAM_BASE,
    ramSize: memoryBytes,
  });
  for (const segment of image.segments) {
    if (!memory.isRam(segment.gpa, segment.memSize)) {
      throw new UserError(
        `${fileName}: segment at 0x${(segment.gpa >>> 0).toString(16)} (${segment.memSize} bytes) lies outside RAM ` +
          `[0x80000000, 0x${(RAM_BASE + memoryBytes).toString(16)}); link it at 0x80000000`,
      );
    }
    memory.write(segment.gpa, segment.fileBytes);
  }
  if (!memory.isRam(tohost, 8)) throw new UserError(`${fileName}: 'tohost' is not in RAM`);

  const { block, layout } = createBoardState(1, false);
  const board = new Board(
    { hartCount: 1, block, memory: memory.init, layout, firmware: false },
    options.nowMs,
  );
  if (options.nowMs !== undefined) board.clock.reset();
  const hart = board.createHart(0, options.jit);
  hart.reset(image.entry);

  let incompleteSeen = false;
  const serviceHtif = (): ElfResult | undefined => {
    const lo = memory.readU32(tohost);
    const hi = memory.readU32((tohost + 4) >>> 0);
    if (hi !== 0 && lo === 0 && !incompleteSeen) {
      // The high word is written first; a poll can land before the low word (the trigger) follows. Give the
      // program one more poll interval to complete the request (a putchar of byte 0 is then still honoured).
      incompleteSeen = true;
    } else if (lo !== 0 || hi !== 0) {
      incompleteSeen = false;
      if (hi === 0 && (lo & 1) === 1) {
        const code = lo >>> 1;
        return code === 0 ? { kind: 'pass' } : { kind: 'fail', code };
      }
      if (hi >>> 24 === HTIF_DEVICE_CONSOLE && ((hi >>> 16) & 0xff) === HTIF_CONSOLE_PUTCHAR) {
        options.onConsole?.(lo & 0xff);
      }
      memory.writeU32(tohost, 0);
      memory.writeU32((tohost + 4) >>> 0, 0);
      if (fromhost !== undefined && memory.isRam(fromhost, 8)) memory.writeU32(fromhost, 1);
    }
    return undefined;
  };
  return { board, hart, memory: board.memory, serviceHtif };
}

/**
 * Run a bare-metal RV32 ELF from its entry in M-mode on the virt board, honouring the HTIF convention of the
 * Spike simulator: the program writes `(code << 1) | 1` to its 64-bit `tohost` symbol to exit with `code`, or
 * `(1 << 56) | (1 << 48) | byte` to print `byte`; the host clears tohost (and sets fromhost) after each request.
 * On rv32 the program writes the high word first; the low word is the trigger.
 */
export async function runElf(
  bytes: Uint8Array,
  fileName: string,
  options: RunElfOptions,
): Promise<ElfResult> {
  const { hart, serviceHtif } = loadElf(bytes, fileName, options);
  let executed = 0;
  while (executed < options.maxInsns) {
    executed += hart.run(Math.min(HTIF_POLL_INSNS, options.maxInsns - executed));
    if (hart.stopReason === STOP_FATAL) throw new Error(hart.fatalMessage);
    const verdict = serviceHtif();
    if (verdict !== undefined) return verdict;
    if (hart.stopReason === STOP_WFI && !hart.interruptPending()) {
      const deadline = hart.timecmp();
      // Only the machine timer can wake a lone bare-metal hart; without it armed and enabled, WFI is a hang.
      if (deadline === Infinity || (hart.mie & MIP_MTIP) === 0) return { kind: 'timeout' };
      // Sleep until the timer deadline (bare programs wake on their CLINT timer), in short steps.
      const ms = Math.min(10, hart.msUntilTicks(deadline));
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
  }
  return { kind: 'timeout' };
}
