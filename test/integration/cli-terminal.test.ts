import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TABVISOR_BIN } from '../helpers/cli.ts';

/** util-linux `script` runs a command on a fresh pseudo-terminal, which is what a terminal size needs. */
const hasScript = spawnSync('script', ['--version']).status === 0;

describe.skipIf(!hasScript)('tabvisor boot on a terminal', () => {
  it("tells the guest the terminal's size at boot and again when the terminal is resized (SIGWINCH)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabvisor-tty-'));
    const resizeNow = join(dir, 'resize');
    // On the pseudo-terminal: 30 x 100 to start with; a helper resizes it to 40 x 120 when the test says so,
    // and the kernel sends SIGWINCH to the terminal's foreground process group, the CLI's.
    const shell =
      `stty rows 30 cols 100; ` +
      `(while [ ! -e '${resizeNow}' ]; do sleep 0.05; done; stty rows 40 cols 120 </dev/tty) & ` +
      `exec '${process.execPath}' '${TABVISOR_BIN}' boot`;
    const child = spawn('script', ['-qfec', shell, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    const until = async (pattern: RegExp): Promise<void> => {
      const deadline = Date.now() + 60_000;
      while (!pattern.test(out)) {
        if (Date.now() > deadline)
          throw new Error(`no ${String(pattern)} on the terminal:\n${out.slice(-1500)}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    try {
      await until(/# $/);
      child.stdin.write('stty size\r'); // a TTY: raw mode, Enter is a carriage return
      await until(/\n30 100\r*\n/);
      writeFileSync(resizeNow, '');
      // The shell redraws its prompt when the guest's tty gets the new size: then it has it.
      await until(/\n30 100\r*\n[^\n]*# \r[^\n]*# /);
      child.stdin.write('stty size\r');
      await until(/\n40 120\r*\n/);
      child.stdin.write('poweroff\r');
      expect(await closed).toBe(0);
      expect(out).toContain('reboot: Power down');
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
