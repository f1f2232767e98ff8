import { describe, expect, it } from 'vitest';
import { notifyWord, sleepLocally } from '../../../src/common/shared-block.ts';

describe('sleeps on one thread (single-worker mode) end at a notify', () => {
  it('a notify on memory that is not shared ends every sleep of this thread at once', async () => {
    const block = new Int32Array(4);
    let woken = 0;
    const sleeps = [sleepLocally(60_000), sleepLocally(60_000)].map((sleep) => sleep.then(() => woken++));
    await Promise.resolve();
    expect(woken).toBe(0);
    notifyWord(block, 2);
    await Promise.all(sleeps); // without the notify these would take a minute: the test would time out
    expect(woken).toBe(2);
  });

  it('a sleep nobody notifies ends after its time', async () => {
    const started = performance.now();
    await sleepLocally(5);
    expect(performance.now() - started).toBeGreaterThanOrEqual(4);
  });

  it("a notify that wakes an Atomics waiter leaves this thread's sleeps alone", async () => {
    const block = new Int32Array(new SharedArrayBuffer(16));
    const waiting = Atomics.waitAsync(block, 1, 0);
    expect(waiting.async).toBe(true);
    let woken = false;
    const sleep = sleepLocally(30).then(() => (woken = true));
    notifyWord(block, 1);
    await waiting.value;
    await Promise.resolve();
    expect(woken).toBe(false);
    await sleep;
  });
});
