import type { Vm } from '../machine/vm.ts';

/** The escape key (Ctrl-A), as in QEMU: Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A. */
const ESCAPE = 0x01;

export interface AttachedConsole {
  /** Resolves with 'quit' when the user types Ctrl-A x on a TTY. */
  readonly quit: Promise<'quit'>;
  /** Restore the terminal and stop listening. */
  detach(): void;
}

/**
 * Make this process's terminal the guest's console. On a TTY, raw mode (every key goes to the guest, Ctrl-A x
 * quits); from a pipe, every byte is handed to the VM, which holds it until the guest reads it. End of input
 * does not stop the guest. When the output is a terminal, the guest is told its size now and whenever it
 * changes (Node's 'resize' event, which follows SIGWINCH).
 */
export function attachConsole(vm: Vm, input: NodeJS.ReadStream, output: NodeJS.WriteStream): AttachedConsole {
  const unsubscribe = vm.onOutput((bytes) => output.write(bytes));
  const isTty = input.isTTY === true;
  const passSize = (): void => {
    const { columns, rows } = output;
    // A terminal that reports no size (0 x 0) leaves the guest's size as it was.
    if (columns >= 1 && rows >= 1) vm.resizeConsole(Math.min(columns, 0xffff), Math.min(rows, 0xffff));
  };
  if (output.isTTY === true) {
    passSize();
    output.on('resize', passSize);
  }
  let resolveQuit: (value: 'quit') => void = () => {};
  const quit = new Promise<'quit'>((resolve) => (resolveQuit = resolve));
  let escaped = false;

  const onData = (chunk: Buffer): void => {
    if (!isTty) {
      vm.write(chunk);
      return;
    }
    const out: number[] = [];
    for (const byte of chunk) {
      if (escaped) {
        escaped = false;
        if (byte === 0x78 /* x */) {
          resolveQuit('quit');
          return;
        }
        if (byte === ESCAPE) out.push(ESCAPE);
        continue;
      }
      if (byte === ESCAPE) escaped = true;
      else out.push(byte);
    }
    if (out.length > 0) vm.write(Uint8Array.from(out));
  };

  if (isTty) input.setRawMode(true);
  input.on('data', onData);
  input.resume();

  return {
    quit,
    detach(): void {
      unsubscribe();
      output.off('resize', passSize);
      input.off('data', onData);
      if (isTty) input.setRawMode(false);
      input.pause();
    },
  };
}
