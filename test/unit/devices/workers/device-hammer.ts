/**
 * Worker for the cross-thread device tests: rebuilds a device over the shared control block, as every hart
 * thread does, and hammers it. Every loop is bounded by a deadline, so a broken device fails the test instead of
 * spinning forever.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Uart16550 } from '../../../../src/devices/uart-16550.ts';
import { Plic, PLIC_CLAIM, PLIC_CONTEXT, PLIC_CONTEXT_STRIDE } from '../../../../src/devices/plic.ts';
import { HartLines, MIP_SEIP } from '../../../../src/common/shared-block.ts';
import type { IrqSink } from '../../../../src/devices/mmio.ts';
import { SpinLock } from '../../../../src/common/spin-lock.ts';

/** What the test sends to each worker. */
export interface HammerJob {
  /**
   * uart-tx: write `count` bytes to THR. plic-claim: claim and complete interrupts on hart `id`'s S context until
   * all harts together have claimed `count`. plic-io: raise a source's level `count` times (cycling through
   * `sources`), each time waiting until a hart claimed and serviced it (the claimer lowers the level).
   * lock: `count` times take the SpinLock at `base`, add one to the plain (non-atomic) word `base + 1`, and
   * release; every `holdEvery`-th time hold the lock for `holdMs` first (so others must wait for it). All
   * workers start together (`tally[0]` counts arrivals); `tally[1]` counts releases that found a sleeper.
   */
  readonly kind: 'uart-tx' | 'plic-claim' | 'plic-io' | 'lock';
  readonly block: Int32Array;
  readonly base: number;
  readonly hartCount: number;
  readonly id: number;
  readonly count: number;
  /** plic-*: claims per source (index = source id); index 0 holds the total. */
  readonly tally?: Int32Array;
  readonly sources?: readonly number[];
  /** lock: hold the lock for `holdMs` on every `holdEvery`-th turn. */
  readonly holdEvery?: number;
  readonly holdMs?: number;
  /** Date.now() after which the worker gives up. */
  readonly deadline: number;
}

/** The worker's answer: how much of its job it did. */
export interface HammerResult {
  readonly done: number;
}

const job = workerData as HammerJob;
const noIrq: IrqSink = { setLevel: () => undefined };
let done = 0;

if (job.kind === 'lock') {
  const lock = new SpinLock(job.block, job.base);
  const tally = job.tally ?? new Int32Array(2);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  Atomics.add(tally, 0, 1);
  while (Atomics.load(tally, 0) < job.hartCount && Date.now() < job.deadline) {
    // wait for the others, so the turns overlap
  }
  for (; done < job.count && Date.now() < job.deadline; done++) {
    lock.acquire();
    const value = job.block[job.base + 1];
    if (job.holdEvery !== undefined && done % job.holdEvery === 0) Atomics.wait(pause, 0, 0, job.holdMs ?? 1);
    job.block[job.base + 1] = value + 1;
    if (Atomics.load(job.block, job.base) === 2) Atomics.add(tally, 1, 1);
    lock.release();
  }
} else if (job.kind === 'uart-tx') {
  const uart = new Uart16550(job.block, job.base, noIrq, 10);
  // Each byte carries the writer id in the top bit and a 7-bit sequence number.
  for (; done < job.count; done++) uart.write(0, 1, (job.id << 7) | (done & 0x7f));
} else {
  const lines = new HartLines(job.block, job.hartCount);
  const plic = new Plic(job.block, job.base, lines);
  const tally = job.tally ?? new Int32Array(1);
  if (job.kind === 'plic-claim') {
    const claimOffset = PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * (2 * job.id + 1) + PLIC_CLAIM;
    // Stop when all harts together have claimed `count` interrupts.
    while (Atomics.load(tally, 0) < job.count && Date.now() < job.deadline) {
      // Like a hart, claim only when the PLIC raised our external interrupt line.
      if ((lines.lines(job.id) & MIP_SEIP) === 0) continue;
      const source = plic.read(claimOffset, 4);
      if (source === 0) continue;
      // The handler services the device, which drops its line, and only then completes (as Linux does).
      plic.setLevel(source, false);
      Atomics.add(tally, source, 1);
      Atomics.add(tally, 0, 1);
      done++;
      plic.write(claimOffset, 4, source);
    }
  } else {
    const sources = job.sources ?? [1];
    while (done < job.count && Date.now() < job.deadline) {
      const source = sources[done % sources.length];
      const before = Atomics.load(tally, 0);
      plic.setLevel(source, true);
      while (Atomics.load(tally, 0) === before && Date.now() < job.deadline) {
        // a hart will claim it and service the device
      }
      done++;
    }
  }
}
parentPort?.postMessage({ done } satisfies HammerResult);
