import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.ts';

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/elf/${name}`, import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'tabvisor-cli-'));

/** A bad-input run: exit status 2, exactly one line on stderr that says what is wrong, no stack trace. */
function expectOneLineError(result: { status: number | null; stderr: string }, pattern: RegExp): void {
  expect(result.status).toBe(2);
  const lines = result.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^tabvisor: /);
  expect(lines[0]).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

describe('tabvisor run-elf', () => {
  it('prints PASS, FAIL with the code and TIMEOUT per file, and exits non-zero unless all passed', async () => {
    const result = await runCli([
      'run-elf',
      fixture('hello.elf'),
      fixture('fail.elf'),
      fixture('spin.elf'),
      '--max-insns',
      '200000',
    ]);
    expect(result.stdout).toContain('hello from tabvisor');
    expect(result.stdout).toContain(`PASS ${fixture('hello.elf')}`);
    expect(result.stdout).toContain(`FAIL ${fixture('fail.elf')} (code 3)`);
    expect(result.stdout).toContain(`TIMEOUT ${fixture('spin.elf')}`);
    expect(result.status).toBe(1);
  });

  it('exits 0 when every program passes', async () => {
    const result = await runCli(['run-elf', fixture('rv32i.elf'), fixture('paging.elf')]);
    expect(result.status).toBe(0);
    expect(result.stdout.trim().split('\n')).toHaveLength(2);
  });

  it('rejects a truncated ELF with a one-line message', async () => {
    const path = join(scratch, 'truncated.elf');
    writeFileSync(path, readFileSync(fixture('hello.elf')).subarray(0, 100));
    expectOneLineError(await runCli(['run-elf', path]), /truncated\.elf/);
  });

  it('rejects an ELF for another machine', async () => {
    const bytes = new Uint8Array(readFileSync(fixture('hello.elf')));
    bytes[18] = 62; // e_machine = x86-64
    bytes[19] = 0;
    const path = join(scratch, 'x86.elf');
    writeFileSync(path, bytes);
    expectOneLineError(await runCli(['run-elf', path]), /RISC-V/);
  });

  it('names a missing file', async () => {
    expectOneLineError(await runCli(['run-elf', join(scratch, 'nope.elf')]), /nope\.elf: no such file/);
  });

  it('answers --help', async () => {
    const result = await runCli(['run-elf', '--help']);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('usage: tabvisor run-elf');
  });
});

describe('tabvisor boot: bad input', () => {
  it('refuses zero vCPUs', async () => {
    expectOneLineError(await runCli(['boot', '--cpus', '0']), /between 1 and 8 vCPUs/);
  });

  it('refuses too many vCPUs', async () => {
    expectOneLineError(await runCli(['boot', '--cpus', '9']), /--cpus 1\.\.8/);
  });

  it('refuses a kernel that does not fit in the requested memory and names the memory needed', async () => {
    expectOneLineError(await runCli(['boot', '--mem', '16']), /need at least \d+ MiB .* use --mem \d+/);
  });

  it('names a missing kernel file', async () => {
    expectOneLineError(
      await runCli(['boot', '--kernel', join(scratch, 'missing-Image')]),
      /missing-Image: no such file/,
    );
  });

  it('refuses a file that is not a Linux Image', async () => {
    expectOneLineError(await runCli(['boot', '--kernel', fixture('hello.elf')]), /ELF file .*pass the raw/);
  });

  it('refuses an unknown option with a pointer to --help', async () => {
    expectOneLineError(await runCli(['boot', '--frobnicate']), /--help/);
  });

  it('answers --help', async () => {
    const result = await runCli(['boot', '--help']);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('usage: tabvisor boot');
  });
});
