import { RUN_STOP, VM_RAM_PENDING, VM_RUN_CONTROL } from '../common/shared-block.ts';
import { FRAME_SIZE } from '../mem/host-ram.ts';
import { RAM_BASE } from '../mem/address-space.ts';
import type { Hart } from '../cpu/hart.ts';
import { Board, type BoardInit } from './board.ts';
import { runHartOnThread } from './hart-runner.ts';
import { hartStateArea } from './hart-state-codec.ts';
import { readStoredPages } from './snapshot.ts';

/**
 * A vCPU thread's share of a boot snapshot's pages: it copies them into guest RAM before the VM runs (see
 * Vm.start), so the page's thread neither reads nor copies them.
 */
export interface RamShare {
  /** Guest page numbers, in the order their bytes are in `data`. */
  readonly pages: Int32Array;
  /** The pages' bytes, `pages.length` * 4 KiB (a slice of the snapshot file). */
  readonly data: Blob;
}

/** What a vCPU thread is started with. Structured-clone safe. */
export interface HartThreadInit {
  readonly board: BoardInit;
  readonly hartId: number;
  /** Set when the VM starts from a snapshot whose pages the vCPU threads restore. */
  readonly ramShare?: RamShare;
}

/** Messages a vCPU thread sends to the VMM. */
export type HartThreadMessage =
  | { readonly type: 'fatal'; readonly hartId: number; readonly message: string }
  | { readonly type: 'exit'; readonly hartId: number };

/**
 * The body of a vCPU thread: rebuild the board from shared memory, create the hart and run it until the VM
 * stops. Blocks the calling thread; all control after this point goes through the control block.
 */
export function runHartThread(init: HartThreadInit, post: (message: HartThreadMessage) => void): void {
  const board = new Board(init.board);
  // Built first (its WebAssembly tier compiles here), so that this overlaps reading the snapshot's pages.
  const hart = board.createHart(init.hartId);
  const share = init.ramShare;
  if (share) {
    restoreShare(board, share).then(
      (go) => {
        if (go) runHart(board, hart, init, post);
        else post({ type: 'exit', hartId: init.hartId });
      },
      (error: unknown) => {
        const reason = error instanceof Error ? error.message : String(error);
        post({
          type: 'fatal',
          hartId: init.hartId,
          message: `vCPU ${init.hartId} could not read the boot snapshot's memory (${reason}); delete the VM and create it again (it boots cold when no snapshot is stored)`,
        });
        post({ type: 'exit', hartId: init.hartId });
      },
    );
    return;
  }
  runHart(board, hart, init, post);
}

/**
 * Copy `share`'s pages into guest RAM (`memory`), reading its Blob a piece at a time (`readStoredPages`). Rejects
 * when the Blob cannot be read, has another size, or names a page outside the VM's memory.
 */
export async function copyRamShare(memory: Board['memory'], share: RamShare): Promise<void> {
  await readStoredPages(share.data, share.pages.length, (i, bytes) => {
    const page = share.pages[i];
    if (!memory.write(RAM_BASE + page * FRAME_SIZE, bytes)) {
      throw new Error(`guest page ${page} is outside the VM's memory`);
    }
  });
}

/**
 * Copy this thread's share of the snapshot's pages into guest RAM, count it done, and wait for the other vCPU
 * threads' shares. Resolves true to run, false when the VM was stopped meanwhile.
 */
async function restoreShare(board: Board, share: RamShare): Promise<boolean> {
  await copyRamShare(board.memory, share);
  const block = board.block;
  Atomics.sub(block, VM_RAM_PENDING, 1);
  Atomics.notify(block, VM_RAM_PENDING);
  for (let left = Atomics.load(block, VM_RAM_PENDING); left > 0; left = Atomics.load(block, VM_RAM_PENDING)) {
    if (Atomics.load(block, VM_RUN_CONTROL) === RUN_STOP) return false;
    Atomics.wait(block, VM_RAM_PENDING, left, 50);
  }
  return Atomics.load(block, VM_RUN_CONTROL) !== RUN_STOP;
}

/** Run the hart until the VM stops. */
function runHart(
  board: Board,
  hart: Hart,
  init: HartThreadInit,
  post: (message: HartThreadMessage) => void,
): void {
  const stateArea = hartStateArea(board.block, init.board.layout.hartStates, init.hartId);
  runHartOnThread(hart, board.block, stateArea, (message) =>
    post({ type: 'fatal', hartId: init.hartId, message }),
  );
  post({ type: 'exit', hartId: init.hartId });
}
