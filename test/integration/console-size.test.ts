import { describe, expect, it } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import { decodeSnapshot, encodeSnapshot } from '../../src/machine/snapshot.ts';
import { Vm } from '../../src/machine/vm.ts';
import { ask, defaultSpec, watchConsole, type ConsoleWatch } from '../helpers/guest.ts';

/** Wait until `pattern` matches the console text after `from`; resolves with the match. */
async function waitForMatch(c: ConsoleWatch, pattern: RegExp, from: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const match = pattern.exec(c.text().slice(from));
    if (match) return match;
    if (Date.now() > deadline)
      throw new Error(`no ${String(pattern)} in the console:\n${c.text().slice(-1500)}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('console size (virtio console, hvc1)', () => {
  it('the guest starts with the size set before boot, follows resizes, and a SIGWINCH trap sees them', async () => {
    const vm = Vm.create({ ...(await defaultSpec(1)), consoleSize: { cols: 100, rows: 37 } }, nodeThreads);
    const c = watchConsole(vm);
    vm.start();
    await c.waitFor(':/root# ');
    expect(await ask(c, 'TTY', 'tty')).toBe('/dev/hvc1');
    expect(await ask(c, 'SIZE', 'stty size')).toBe('37 100');

    vm.resizeConsole(132, 43);
    expect(vm.consoleSize()).toEqual({ cols: 132, rows: 43 });
    expect(await ask(c, 'SIZE', 'stty size')).toBe('43 132');

    // A foreground program that traps SIGWINCH is told about the next resize.
    c.type(`echo "trap 'echo WINCH=\\$(stty size)-END' WINCH" > /tmp/w`);
    c.type(`echo "echo READY=1-END; while :; do sleep 0.1; done" >> /tmp/w`);
    c.type('sh /tmp/w');
    const from = c.text().length;
    await waitForMatch(c, /\nREADY=1-END/, from);
    vm.resizeConsole(90, 20);
    const winch = await waitForMatch(c, /\nWINCH=(\d+ \d+)-END/, from);
    expect(winch[1]).toBe('20 90');
    c.type('\x03'); // Ctrl-C ends the loop
    expect(await ask(c, 'SIZE', 'stty size')).toBe('20 90');

    // A burst larger than the transmit ring (16 KiB, 4 KiB per write) arrives whole and in order.
    const burstFrom = c.text().length;
    c.type(`head -c 40000 /dev/zero | tr '\\0' x; echo; echo B""URST-END`);
    await waitForMatch(c, /\nBURST-END/, burstFrom);
    const burst = c.text().slice(burstFrom);
    expect(burst).toMatch(/\nx{40000}\r\nBURST-END/);

    c.type('poweroff');
    expect((await vm.whenPoweredOff()).kind).toBe('poweroff');
    await vm.stop();
    const text = c.text();
    // One console stream: the early console's output, then the virtio console's, without the boot console's
    // copies of what the virtio console showed; after the driver reset at power-off, the UART's last words.
    expect(text.match(/Linux version 6\.1/g)).toHaveLength(1);
    expect(text.match(/printk: console \[hvc1\] enabled/g)).toHaveLength(1);
    // The last kernel message before init (after it, sysctl.kernel.printk=4 lets only errors through).
    expect(text.match(/Kernel memory protection not selected by kernel config/g)).toHaveLength(1);
    expect(text.indexOf('Requesting system poweroff')).toBeLessThan(text.indexOf('reboot: Power down'));
  });

  it('a VM restored from a snapshot keeps its shell on the virtio console and takes a new size', async () => {
    const vm = Vm.create(await defaultSpec(1), nodeThreads);
    const c = watchConsole(vm);
    vm.start();
    await c.waitFor(':/root# ');
    expect(await ask(c, 'SIZE', 'stty size')).toBe('24 80');
    const bytes = encodeSnapshot(await vm.snapshot());
    await vm.stop();

    const restored = Vm.fromSnapshot(decodeSnapshot(bytes), nodeThreads);
    const r = watchConsole(restored);
    expect(restored.consoleSize()).toEqual({ cols: 80, rows: 24 });
    restored.resizeConsole(120, 50);
    restored.start();
    expect(await ask(r, 'SIZE', 'stty size')).toBe('50 120');
    r.type('poweroff');
    expect((await restored.whenPoweredOff()).kind).toBe('poweroff');
    await restored.stop();
  });

  it('a guest whose console is the UART (console=ttyS0) runs its shell there, with the same input and output', async () => {
    const vm = Vm.create(await defaultSpec(1, 64, 'console=ttyS0 earlycon=sbi'), nodeThreads);
    const c = watchConsole(vm);
    vm.start();
    await c.waitFor(':/root# ');
    expect(await ask(c, 'TTY', 'tty')).toBe('/dev/ttyS0');
    // The virtio console is still there: what the guest writes to it joins the stream.
    expect(await ask(c, 'HVC', 'echo via-hvc > /dev/hvc1; echo sent')).toBe('sent');
    await c.waitFor('via-hvc');
    c.type('poweroff');
    expect((await vm.whenPoweredOff()).kind).toBe('poweroff');
    await vm.stop();
    expect(c.text()).toContain('reboot: Power down');
  });

  it('refuses a console size outside 1..65535 with a clear message', async () => {
    const vm = Vm.create(await defaultSpec(1), nodeThreads);
    expect(() => vm.resizeConsole(0, 24)).toThrow(
      /whole numbers of columns and rows from 1 to 65535, not 0 x 24/,
    );
    expect(() => vm.resizeConsole(80, 70000)).toThrow(/from 1 to 65535/);
    expect(() => vm.resizeConsole(80.5, 24)).toThrow(/from 1 to 65535/);
    expect(vm.consoleSize()).toEqual({ cols: 80, rows: 24 });
    await vm.stop();
  });
});
