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
