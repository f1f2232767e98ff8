import { readFile } from 'node:fs/promises';
import { nodeThreads } from '../src/cli/node-threads.ts';
import { HART_INSTRET_HI, HART_INSTRET_LO, hartWord } from '../src/common/shared-block.ts';
import { maybeGunzip } from '../src/machine/gzip.ts';
import { Vm } from '../src/machine/vm.ts';

const images = new URL('../public/images/', import.meta.url);

/** A booted default guest in Node, driven through its console. */
export class NodeGuest {
  private text = '';
  private readonly decoder = new TextDecoder();

  private constructor(
    readonly vm: Vm,
    readonly cpus: number,
  ) {
    vm.onOutput((bytes) => (this.text += this.decoder.decode(bytes, { stream: true })));
  }

  /** Create and start a VM from the default image; returns once threads are spawned. */
  static async start(cpus: number, memoryMiB = 128): Promise<NodeGuest> {
    const manifest = JSON.parse(await readFile(new URL('manifest.json', images), 'utf8')) as {
      bootargs: string;
      files: { role: string; path: string }[];
    };
    const file = async (role: string): Promise<Uint8Array> =>
      maybeGunzip(
        new Uint8Array(await readFile(new URL(manifest.files.find((f) => f.role === role)!.path, images))),
      );
    const vm = Vm.create(
      {
        cpus,
        memoryMiB,
        kernel: await file('kernel'),
        kernelName: 'Image',
        initrd: await file('initrd'),
        bootargs: manifest.bootargs,
      },
      nodeThreads,
    );
    const guest = new NodeGuest(vm, cpus);
    vm.start();
    return guest;
  }

  /** Resolve when the console output (since the last `consume`) contains `marker`. */
  async waitFor(marker: string | RegExp, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (typeof marker === 'string' ? this.text.includes(marker) : marker.test(this.text)) return;
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${String(marker)}; console:\n${this.text.slice(-2000)}`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  /** Forget the output seen so far. */
  consume(): string {
    const seen = this.text;
    this.text = '';
    return seen;
  }

  /** Type a line. */
  type(line: string): void {
    this.vm.write(new TextEncoder().encode(line + '\n'));
  }

  /** Instructions retired by all harts so far. */
  instret(): number {
    let total = 0;
    for (let h = 0; h < this.cpus; h++) {
      const block = this.vm.board.block;
      total +=
        (block[hartWord(h, HART_INSTRET_HI)] >>> 0) * 2 ** 32 + (block[hartWord(h, HART_INSTRET_LO)] >>> 0);
    }
    return total;
  }

  /** Power the guest off and wait for it. */
  async powerOff(): Promise<void> {
    this.type('poweroff');
    await this.vm.whenPoweredOff();
  }
}
