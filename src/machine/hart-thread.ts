import { Board, type BoardInit } from './board.ts';
import { runHartOnThread } from './hart-runner.ts';
import { hartStateArea } from './hart-state-codec.ts';

/** What a vCPU thread is started with. Structured-clone safe. */
export interface HartThreadInit {
  readonly board: BoardInit;
  readonly hartId: number;
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
  const hart = board.createHart(init.hartId);
  const stateArea = hartStateArea(board.block, init.board.layout.hartStates, init.hartId);
  runHartOnThread(hart, board.block, stateArea, (message) =>
    post({ type: 'fatal', hartId: init.hartId, message }),
  );
  post({ type: 'exit', hartId: init.hartId });
}
