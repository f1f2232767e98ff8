/**
 * A small mutual-exclusion lock on one word of a control block, for device register files that several threads
 * touch (harts and the VMM's I/O side). Critical sections are a few dozen instructions long, so a contended
 * acquire first spins; a thread that may block then sleeps on the word (a futex: 0 free, 1 held, 2 held and
 * maybe waited for), and the releaser wakes one sleeper.
 *
 * Why sleep at all: with more runnable threads than cores, the holder can lose its core in its critical section.
 * The common case is a wake-up under the lock (the I/O side raises an interrupt and wakes the target hart, and
 * the kernel runs the woken hart at once on the waker's core): a spinning waiter would keep the core from the
 * holder until the scheduler's next tick, milliseconds later. A sleeping waiter gives it back. Threads that may
 * not block (a browser page's main thread) keep spinning.
 */
import { isSharedBuffer } from './shared-block.ts';

/** Failed attempts before a thread that may block sleeps: a few microseconds, longer than any critical section. */
const SPINS_BEFORE_SLEEP = 200;

const FREE = 0;
const HELD = 1;
const CONTENDED = 2;

/** Whether this thread may call Atomics.wait (a page's main thread may not); found out at the first need. */
let threadMayBlock: boolean | undefined;

function mayBlock(block: Int32Array, index: number): boolean {
  // Unshared memory (one thread runs every hart) is never contended for long, and cannot be waited on.
  if (!isSharedBuffer(block.buffer)) return false;
  if (threadMayBlock === undefined) {
    try {
      // The word is not -1 (FREE, HELD or CONTENDED), so this returns at once where waiting is allowed, and
      // throws (AgentCanSuspend) where it is not.
      Atomics.wait(block, index, -1, 0);
      threadMayBlock = true;
    } catch {
      threadMayBlock = false;
    }
  }
  return threadMayBlock;
}

export class SpinLock {
  constructor(
    private readonly block: Int32Array,
    private readonly index: number,
  ) {}

  acquire(): void {
    const { block, index } = this;
    if (Atomics.compareExchange(block, index, FREE, HELD) === FREE) return;
    for (let i = 0; i < SPINS_BEFORE_SLEEP; i++) {
      if (Atomics.load(block, index) === FREE && Atomics.compareExchange(block, index, FREE, HELD) === FREE)
        return;
    }
    if (!mayBlock(block, index)) {
      while (Atomics.compareExchange(block, index, FREE, HELD) !== FREE) {
        // This thread may not sleep: spin until the holder is done.
      }
      return;
    }
    // Mark the lock contended (so the holder's release wakes us) and sleep until it is free; the lock is then
    // ours, still marked contended, which at worst costs one needless wake-up at release.
    while (Atomics.exchange(block, index, CONTENDED) !== FREE) Atomics.wait(block, index, CONTENDED);
  }

  release(): void {
    if (Atomics.exchange(this.block, this.index, FREE) === CONTENDED)
      Atomics.notify(this.block, this.index, 1);
  }
}
