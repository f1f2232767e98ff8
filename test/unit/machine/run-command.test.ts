import { describe, expect, it } from 'vitest';
import { runCommand } from '../../../src/machine/run-command.ts';
import { VmConsole } from '../../../src/machine/vm-console.ts';

const encode = (text: string): Uint8Array => new TextEncoder().encode(text);

/**
 * A console whose "guest" is a tiny fake shell: it echoes each typed line as a tty does, then prints `reply`
 * for it and a prompt.
 */
function fakeShell(reply: (line: string) => string): { console: VmConsole; typed: string[] } {
  const typed: string[] = [];
  const console: VmConsole = new VmConsole((bytes) => {
    const line = new TextDecoder().decode(bytes);
    typed.push(line);
    setTimeout(() => {
      console.push(encode(`${line.replace(/\n$/, '\r\n')}`));
      console.push(encode(`${reply(line)}:/root# `));
    }, 1);
  });
  console.push(encode('Welcome\r\n:/root# '));
  return { console, typed };
}

/** What busybox prints for `<command>; echo <marker>$?` given the command's output and status. */
function answer(output: string, status: number): (line: string) => string {
  return (line) => {
    const marker = /echo (__TV_D""ONE_\w+__)\$\?/.exec(line)?.[1].replace('""', '');
    return `${output}${marker}${status}\r\n`;
  };
}

describe('runCommand (vm.run)', () => {
  it('resolves with the command output (echo and prompt stripped, \\r\\n -> \\n) and the exit status', async () => {
    const { console, typed } = fakeShell(answer('Linux\r\n2\r\n', 0));
    expect(await runCommand(console, 'uname -s; nproc')).toEqual({ output: 'Linux\n2\n', exitStatus: 0 });
    expect(typed[0]).toMatch(/^uname -s; nproc; echo __TV_D""ONE_\w+__\$\?\n$/);
  });

  it('reports a failing command status and its error output', async () => {
    const { console } = fakeShell(answer('ls: /x: No such file or directory\r\n', 1));
    expect(await runCommand(console, 'ls /x')).toEqual({
      output: 'ls: /x: No such file or directory\n',
      exitStatus: 1,
    });
  });

  it('does not mistake the echoed command line for the end marker', async () => {
    // The echo arrives, then nothing: the run must still be waiting.
    const console: VmConsole = new VmConsole((bytes) => console.push(bytes));
    console.push(encode(':/root# '));
    const run = runCommand(console, 'sleep 100', { timeoutMs: 50 });
    await expect(run).rejects.toThrow(/did not print/);
  });

  it('waits for a prompt that a terminal resize redrew (prompt + ESC [ J) in the same output', async () => {
    const console: VmConsole = new VmConsole((bytes) => {
      const line = new TextDecoder().decode(bytes);
      const marker = /echo (__TV_D""ONE_\w+__)\$\?/.exec(line)?.[1].replace('""', '');
      setTimeout(() => console.push(encode(`${line.replace(/\n$/, '\r\n')}ok\r\n${marker}0\r\n:/root# `)), 1);
    });
    // A freshly restored guest: its first prompt and a redraw after a resize arrive together.
    setTimeout(() => console.push(encode('\r\n:/root# \r:/root# \x1b[J')), 1);
    expect(await runCommand(console, 'echo ok', { timeoutMs: 2000 })).toEqual({
      output: 'ok\n',
      exitStatus: 0,
    });
  });

  it('puts no `;` after a trailing `&` (a syntax error in sh)', async () => {
    const { console, typed } = fakeShell(answer('', 0));
    await runCommand(console, 'sleep 1 &  ');
    expect(typed[0]).toMatch(/^sleep 1 & echo __TV_D""ONE_/);
  });
});
