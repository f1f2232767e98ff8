import { describe, expect, it } from 'vitest';
import { OUTPUT_FLUSH_MS, OutputBatcher } from '../../../src/embed/vm-host.ts';

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('the VM host batches console output for the page', () => {
  it('sends output after a quiet spell at the end of the turn, as one message', async () => {
    const sent: string[] = [];
    let now = 1000;
    const batcher = new OutputBatcher(
      (bytes) => sent.push(text(bytes)),
      () => now,
    );
    batcher.push(new TextEncoder().encode('e'));
    batcher.push(new TextEncoder().encode('cho'));
    expect(sent).toEqual([]); // not in the middle of the turn that produced it
    await Promise.resolve();
    expect(sent).toEqual(['echo']); // no timer: an echo is not held back
    // Quiet again: the next output goes at once too.
    now += OUTPUT_FLUSH_MS;
    batcher.push(new TextEncoder().encode('!'));
    await Promise.resolve();
    expect(sent).toEqual(['echo', '!']);
  });

  it('sends at most one message per interval while output keeps coming', async () => {
    const sent: string[] = [];
    let now = 1000;
    const batcher = new OutputBatcher(
      (bytes) => sent.push(text(bytes)),
      () => now,
    );
    batcher.push(new TextEncoder().encode('a'));
    await Promise.resolve();
    expect(sent).toEqual(['a']);
    now += 1;
    batcher.push(new TextEncoder().encode('b'));
    batcher.push(new TextEncoder().encode('c'));
    await Promise.resolve();
    expect(sent).toEqual(['a']); // within the interval: it waits for the rest of it
    await sleep(OUTPUT_FLUSH_MS * 3);
    expect(sent).toEqual(['a', 'bc']);
  });

  it('flushes on demand, and an empty flush sends nothing', async () => {
    const sent: string[] = [];
    const batcher = new OutputBatcher((bytes) => sent.push(text(bytes)));
    batcher.flush();
    batcher.push(new TextEncoder().encode('x'));
    batcher.flush();
    await sleep(OUTPUT_FLUSH_MS * 2);
    expect(sent).toEqual(['x']);
  });
});
