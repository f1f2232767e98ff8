import { describe, expect, it } from 'vitest';
import { MAX_RUN_LINE, runCommand } from '../../../src/machine/run-command.ts';
import { VmConsole } from '../../../src/machine/vm-console.ts';

const encode = (text: string): Uint8Array => new TextEncoder().encode(text);

/**
 * A tty's echo of typed lines as a line editor on a `columns`-wide terminal shows them: every `columns`
 * characters the line wraps with a redraw sequence in between (busybox moves the cursor; any bytes do for the
 * test).
 */
function wrappedEcho(typed: string, columns = 80): string {
  return typed
    .split('\n')
    .filter((line) => line !== '')
    .map((line, i) => {
      const shown = (i === 0 ? '' : '> ') + line;
      let out = '';
      for (let at = 0; at < shown.length; at += columns)
        out += (at > 0 ? ' \b\r\n\x1b[K' : '') + shown.slice(at, at + columns);
      return `${out}\r\n`;
    })
    .join('');
}

/**
 * A console whose "guest" is a tiny fake shell: it echoes what was typed as a tty does (wrapped at 80 columns),
 * then prints `reply` for it and a prompt.
 */
function fakeShell(reply: (typed: string) => string, columns = 80): { console: VmConsole; typed: string[] } {
  const typed: string[] = [];
  const console: VmConsole = new VmConsole((bytes) => {
    const text = new TextDecoder().decode(bytes);
    typed.push(text);
    setTimeout(() => {
      console.push(encode(wrappedEcho(text, columns)));
      console.push(encode(`${reply(text)}:/root# `));
    }, 1);
  });
  console.push(encode('Welcome\r\n:/root# '));
  return { console, typed };
}

/** What busybox prints for run's typed lines after their echo, given the command's output and status. */
function answer(output: string, status: number): (typed: string) => string {
  return (typed) => {
    const done = /echo (_D""\w+_)\$\?/.exec(typed)?.[1].replace('""', '');
    return `${output}${done}${status}\r\n`;
  };
}

describe('runCommand (vm.run)', () => {
  it('resolves with the command output (echo and prompt stripped, \\r\\n -> \\n) and the exit status', async () => {
    const { console, typed } = fakeShell(answer('Linux\r\n2\r\n', 0));
    expect(await runCommand(console, 'uname -s; nproc')).toEqual({ output: 'Linux\n2\n', exitStatus: 0 });
    expect(typed[0]).toMatch(/^\{ uname -s; nproc\n\};echo _D""\w+_\$\?\n$/);
  });

  it('reports a failing command status and its error output', async () => {
    const { console } = fakeShell(answer('ls: /x: No such file or directory\r\n', 1));
    expect(await runCommand(console, 'ls /x')).toEqual({
      output: 'ls: /x: No such file or directory\n',
      exitStatus: 1,
    });
  });

  it('a command far wider than the terminal: its wrapped, redrawn echo never reaches the output', async () => {
    const words = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
    const command = `echo ${words} | tr ' ' '\\n' | wc -l; echo ${words} | wc -c`;
    expect(command.length).toBeGreaterThan(200);
    const { console } = fakeShell(answer('40\r\n269\r\n', 0));
    expect(await runCommand(console, command)).toEqual({ output: '40\n269\n', exitStatus: 0 });
  });

  it('on a terminal so narrow that the echo of the marker line wraps, the output still starts after it', async () => {
    for (const columns of [7, 10, 13]) {
      const { console } = fakeShell(answer('\r\nfirst line after a blank one\r\n', 0), columns);
      expect(await runCommand(console, 'echo; echo first line after a blank one')).toEqual({
        output: '\nfirst line after a blank one\n',
        exitStatus: 0,
      });
    }
  });

  it('with the echo off (stty -echo: busybox prints its prompts and reads whole lines) the output is exact too', async () => {
    const console: VmConsole = new VmConsole((bytes) => {
      const text = new TextDecoder().decode(bytes);
      const reply = text.includes('quiet') ? answer('quiet\r\n', 4) : answer('', 0);
      setTimeout(() => console.push(encode(`> ${reply(text)}:/root# `)), 1);
    });
    console.push(encode('Welcome\r\n:/root# '));
    expect(await runCommand(console, 'echo quiet; (exit 4)')).toEqual({ output: 'quiet\n', exitStatus: 4 });
    expect(await runCommand(console, 'true')).toEqual({ output: '', exitStatus: 0 });
  });

  it('output without a final newline ends where the end marker starts', async () => {
    const { console } = fakeShell(answer('no newline', 3));
    expect(await runCommand(console, 'printf "no newline"; (exit 3)')).toEqual({
      output: 'no newline',
      exitStatus: 3,
    });
  });

  it('does not mistake the echoed command lines for the markers', async () => {
    // The echo arrives, then nothing: the run must still be waiting.
    const console: VmConsole = new VmConsole((bytes) => console.push(bytes));
    console.push(encode(':/root# '));
    const run = runCommand(console, 'sleep 100', { timeoutMs: 50 });
    await expect(run).rejects.toThrow(/did not print/);
  });

  it('waits for a prompt that a terminal resize redrew (prompt + ESC [ J) in the same output', async () => {
    const typed: string[] = [];
    const console: VmConsole = new VmConsole((bytes) => {
      const text = new TextDecoder().decode(bytes);
      typed.push(text);
      setTimeout(() => console.push(encode(`${wrappedEcho(text)}${answer('ok\r\n', 0)(text)}:/root# `)), 1);
    });
    // A freshly restored guest: its first prompt and a redraw after a resize arrive together.
    setTimeout(() => console.push(encode('\r\n:/root# \r:/root# \x1b[J')), 1);
    expect(await runCommand(console, 'echo ok', { timeoutMs: 2000 })).toEqual({
      output: 'ok\n',
      exitStatus: 0,
    });
    expect(typed).toHaveLength(1);
  });

  it('a trailing `&` or comment stays inside the braces (the newline before `}` ends it)', async () => {
    const { console, typed } = fakeShell(answer('', 0));
    await runCommand(console, 'sleep 1 &  ');
    expect(typed[0]).toMatch(/\{ sleep 1 &\n\};echo _D""/);
    await runCommand(console, 'ls # list the files');
    expect(typed[1]).toMatch(/\{ ls # list the files\n\};echo _D""/);
  });

  it('refuses an empty command and a line the guest shell would cut, saying what to do', async () => {
    const { console, typed } = fakeShell(answer('', 0));
    await expect(runCommand(console, '  \n')).rejects.toThrow(/needs a command/);
    await expect(runCommand(console, `echo ${'x'.repeat(MAX_RUN_LINE)}`)).rejects.toThrow(
      /too long for the guest's shell.*split it across lines/,
    );
    // Many lines, each short enough, are fine.
    const lines = Array.from({ length: 20 }, () => `echo ${'y'.repeat(100)}`).join('\n');
    await runCommand(console, lines);
    expect(typed).toHaveLength(1);
  });
});
