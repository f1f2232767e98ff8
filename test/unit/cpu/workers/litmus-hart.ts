/**
 * Worker for the memory-ordering litmus test: one hart on its own board over RAM shared with the other
 * worker's hart, as two vCPU threads of a VM share guest RAM. Runs until the hart reaches `donePc` or the
 * deadline passes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { AddressSpaceInit } from '../../../../src/mem/address-space.ts';
import { Board, createBoardState } from '../../../../src/machine/board.ts';

/** What the test sends to each worker. */
export interface LitmusJob {
  readonly memory: AddressSpaceInit;
  readonly entry: number;
  readonly donePc: number;
  readonly jit: { enabled: boolean; threshold?: number };
  /** The hart's area in host RAM (`memory.memory`), for the WebAssembly tier; none: JavaScript only. */
  readonly area?: number;
  /** Date.now() after which the worker gives up. */
  readonly deadline: number;
}

const job = workerData as LitmusJob;
const { block, layout } = createBoardState(1, true);
const board = new Board({
  hartCount: 1,
  block,
  memory: job.memory,
  layout,
  firmware: false,
  ...(job.area !== undefined ? { hartAreas: [job.area] } : {}),
});
const hart = board.createHart(0, job.jit);
hart.reset(job.entry);
let instructions = 0;
while (hart.pc !== (job.donePc | 0) && Date.now() < job.deadline) instructions += hart.run(20_000);
parentPort?.postMessage({ done: hart.pc === (job.donePc | 0), instructions, wasm: hart.wasmEnabled });
