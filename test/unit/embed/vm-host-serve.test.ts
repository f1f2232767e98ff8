import { wrap, type Endpoint } from 'comlink';
import { describe, expect, it } from 'vitest';
import { serveVmHost, type VmHostApi } from '../../../src/embed/vm-host.ts';

/** A worker's end of a channel that holds its messages (as vm-host.worker.ts does) until `serve` is called. */
function heldEnd(): { readonly early: MessageEvent[]; serve(): void; readonly page: MessagePort } {
  const { port1, port2 } = new MessageChannel();
  const early: MessageEvent[] = [];
  const hold = (event: MessageEvent): void => {
    early.push(event);
  };
  port1.addEventListener('message', hold);
  port1.start();
  return {
    early,
    page: port2,
    serve() {
      port1.removeEventListener('message', hold);
      serveVmHost(port1 as unknown as Endpoint, early);
    },
  };
}

async function until(test: () => boolean): Promise<void> {
  while (!test()) await new Promise((resolve) => setTimeout(resolve, 1));
}

describe('the VM host worker answers messages that came before its module loaded', () => {
  it('answers held calls in order once served, then later ones directly', async () => {
    const end = heldEnd();
    const host = wrap<VmHostApi>(end.page);
    const answers: string[] = [];
    const note = (what: string) => (error: unknown) => answers.push(`${what}: ${String(error)}`);
    // Before the host is there: both calls wait in the held list.
    const first = host.snapshot().catch(note('first'));
    const second = host.start().catch(note('second'));
    await until(() => end.early.length === 2);
    expect(answers).toEqual([]);
    end.serve();
    await Promise.all([first, second]);
    expect(answers).toEqual([
      'first: Error: the VM host has no VM yet; call create first',
      'second: Error: the VM host has no VM yet; call create first',
    ]);
    expect(end.early).toEqual([]); // handed over, not kept
    await expect(host.pause()).rejects.toThrow(/no VM yet/);
    end.page.close();
  });
});
