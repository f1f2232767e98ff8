import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.ts';

const SCRIPT = 'uname -a\ncat /proc/cpuinfo\necho cpus=$(nproc)\npoweroff\n';

describe('tabvisor boot (default image, vCPU worker threads)', () => {
  for (const cpus of [1, 4]) {
    it(`boots to a shell with ${cpus} vCPU(s), runs commands from a pipe and powers off with status 0`, async () => {
      const result = await runCli(['boot', '--cpus', String(cpus)], SCRIPT, 90_000);
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expect(result.stdout).toMatch(/Linux tabvisor 6\.1\.\d+ .* riscv32 GNU\/Linux/);
      expect(result.stdout).toContain(`cpus=${cpus}`);
      const harts = result.stdout.match(/^hart\s*: \d+/gm) ?? [];
      expect(harts).toHaveLength(cpus);
      expect(result.stdout).toContain('isa\t\t: rv32ima');
      expect(result.stdout).toContain('reboot: Power down');
    });
  }
});

describe('tabvisor boot: reboot', () => {
  it('a guest reboot starts the VM again and input typed meanwhile is not lost', async () => {
    const result = await runCli(['boot'], 'reboot\necho after-reboot-$((6*7))\npoweroff\n', 90_000);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('reboot: Restarting system');
    expect(result.stdout.match(/Linux version 6\.1/g)).toHaveLength(2);
    expect(result.stdout).toContain('after-reboot-42');
  });
});

describe('tabvisor boot: piped input', () => {
  it('a program that reads its input without a prompt still gets the next line, and nothing is dropped', async () => {
    const result = await runCli(['boot'], 'read answer\nforty-two\necho got-$answer\npoweroff\n', 90_000);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('got-forty-two');
  });
});
