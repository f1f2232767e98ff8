/**
 * A tiny mutual-exclusion lock on one word of a control block, for device register files that several hart
 * threads touch. Critical sections are a few dozen instructions long, so spinning is cheaper than sleeping.
 */
export class SpinLock {
  constructor(
    private readonly block: Int32Array,
    private readonly index: number,
  ) {}

  acquire(): void {
    while (Atomics.compareExchange(this.block, this.index, 0, 1) !== 0) {
      // Another thread holds it for a few instructions; spin.
    }
  }

  release(): void {
    Atomics.store(this.block, this.index, 0);
  }
}
