import { describe, it, expect } from 'vitest';
import { Worker } from 'node:worker_threads';
import { Uart16550 } from '../../../src/devices/uart-16550.ts';
import { PLIC_ENABLE, PLIC_ENABLE_STRIDE, PLIC_PRIORITY, Plic } from '../../../src/devices/plic.ts';
import { HartLines, MIP_SEIP, SharedLayout, createControlBlock } from '../../../src/common/shared-block.ts';
import type { HammerJob, HammerResult } from './workers/device-hammer.ts';

const TIME_LIMIT_MS = 30_000;

/** Run the hammer jobs on worker threads (each with the shared block); always terminates them. */
async function runAll(jobs: Array<Omit<HammerJob, 'deadline'>>): Promise<number[]> {
  const deadline = Date.now() + TIME_LIMIT_MS;
  const workers = jobs.map(
    (job) =>
      new Worker(new URL('./workers/bootstrap.mjs', import.meta.url), { workerData: { ...job, deadline } }),
  );
  try {
    return await Promise.all(
      workers.map(
        (worker) =>
          new Promise<number>((resolve, reject) => {
            worker.once('message', (result: HammerResult) => resolve(result.done));
            worker.once('error', reject);
            worker.once('exit', (code) => reject(new Error(`hammer worker exited early (${code})`)));
          }),
      ),
    );
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

describe('devices shared between threads', () => {
  it('the register lock excludes across threads, and waiters sleep while a holder keeps it (then are woken)', async () => {
    const perThread = 4000;
    const threads = 3; // more than the test machine's cores: holders lose their core now and then
    const layout = new SharedLayout(1);
    const base = layout.alloc(2); // the lock word, then a counter changed only under the lock
    const block = createControlBlock(layout.words, true);
    const tally = new Int32Array(new SharedArrayBuffer(8));
    const done = await runAll(
      Array.from({ length: threads }, (_, id) => ({
        kind: 'lock' as const,
        block,
        base,
        hartCount: threads,
        id,
        count: perThread,
        tally,
        holdEvery: 400,
        holdMs: 2,
      })),
    );
    expect(done).toEqual(Array(threads).fill(perThread));
    expect(block[base + 1]).toBe(threads * perThread); // no increment lost: the lock excluded
    expect(Atomics.load(block, base)).toBe(0); // free at the end
    // A holder that kept the lock for 2 ms had waiters asleep on it (they marked it), and woke them.
    expect(Atomics.load(tally, 1)).toBeGreaterThan(0);
  });

  it('two harts writing THR at once lose and reorder nothing (the register lock serialises the ring)', async () => {
    const perWriter = 6000;
    const layout = new SharedLayout(2);
    const base = layout.alloc(Uart16550.words()); // default rings, as the workers build them
    const block = createControlBlock(layout.words, true);
    const done = await runAll(
      [0, 1].map((id) => ({ kind: 'uart-tx' as const, block, base, hartCount: 2, id, count: perWriter })),
    );
    expect(done).toEqual([perWriter, perWriter]);
    const uart = new Uart16550(block, base, { setLevel: () => undefined }, 10);
    const bytes = uart.txRing.drain();
    expect(bytes.length).toBe(2 * perWriter);
    for (const id of [0, 1]) {
      const mine = Array.from(
        bytes.filter((b) => b >> 7 === id),
        (b) => b & 0x7f,
      );
      expect(mine).toEqual(Array.from({ length: perWriter }, (_, i) => i & 0x7f));
    }
  });

  it('two harts claiming while the I/O thread pulses levels: every request is claimed exactly once', async () => {
    const pulses = 1500;
    const layout = new SharedLayout(2);
    const base = layout.alloc(Plic.words(2));
    const block = createControlBlock(layout.words, true);
    const tally = new Int32Array(new SharedArrayBuffer(4 * 96));
    const lines = new HartLines(block, 2);
    const plic = new Plic(block, base, lines);
    const sources = [1, 2, 3, 10];
    for (const s of sources) plic.write(PLIC_PRIORITY + 4 * s, 4, 1);
    for (const hart of [0, 1])
      plic.write(PLIC_ENABLE + PLIC_ENABLE_STRIDE * (2 * hart + 1), 4, 0b100_0000_1110);
    const common = { block, base, hartCount: 2, tally, sources };
    const done = await runAll([
      { kind: 'plic-io', id: 0, count: pulses, ...common },
      { kind: 'plic-claim', id: 0, count: pulses, ...common },
      { kind: 'plic-claim', id: 1, count: pulses, ...common },
    ]);
    expect(done[0]).toBe(pulses);
    expect(done[1] + done[2]).toBe(pulses);
    expect(Atomics.load(tally, 0)).toBe(pulses);
    expect(sources.reduce((n, s) => n + tally[s], 0)).toBe(pulses);
    expect(lines.lines(0) & MIP_SEIP).toBe(0);
    expect(lines.lines(1) & MIP_SEIP).toBe(0);
  }, 60_000);
});
