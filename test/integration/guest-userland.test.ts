import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.ts';

/** Each line prints a marker only when the applet ran and did its job. */
const SCRIPT = [
  'for a in ip ifconfig udhcpc ping nc wget httpd devmem top free dd md5sum vi mount poweroff reboot; do command -v $a >/dev/null && echo have-$a; done',
  'mount | grep -q "proc on /proc" && echo mounted-proc',
  'mount | grep -q "sysfs on /sys" && echo mounted-sys',
  'mount | grep -q "devtmpfs on /dev" && echo mounted-dev',
  'mount | grep -q "devpts on /dev/pts" && echo mounted-devpts',
  'mount | grep -q "tmpfs on /tmp" && echo mounted-tmp',
  'echo host=$(hostname)',
  'dd if=/dev/zero bs=1024 count=64 2>/dev/null | md5sum',
  'free | grep -q Mem && echo free-ok',
  'ip link show lo | grep -q LOOPBACK && echo ip-ok',
  'devmem 0x10000005 8',
  'grep -c processor /proc/cpuinfo',
  'poweroff',
  '',
].join('\n');

describe('the default guest userland', () => {
  it('has the applets a teacher needs, mounts the pseudo filesystems and takes the hostname from the command line', async () => {
    const result = await runCli(
      ['boot', '--cpus', '2', '--append', 'console=ttyS0 earlycon=sbi hostname=lab1'],
      SCRIPT,
      90_000,
    );
    expect(result.status).toBe(0);
    for (const applet of [
      'ip',
      'ifconfig',
      'udhcpc',
      'ping',
      'nc',
      'wget',
      'httpd',
      'devmem',
      'top',
      'free',
      'dd',
      'md5sum',
      'vi',
      'mount',
      'poweroff',
      'reboot',
    ]) {
      expect(result.stdout).toContain(`have-${applet}`);
    }
    for (const fs of ['proc', 'sys', 'dev', 'devpts', 'tmp'])
      expect(result.stdout).toContain(`mounted-${fs}`);
    expect(result.stdout).toContain('host=lab1');
    // md5 of 64 KiB of zeros
    expect(result.stdout).toContain('fcd6bcb56c1689fcef28b57c22475bad');
    expect(result.stdout).toContain('free-ok');
    expect(result.stdout).toContain('ip-ok');
    // The UART's line status register, read from the guest through /dev/mem: THRE and TEMT set.
    expect(result.stdout).toMatch(/0x6[0-9A-F]/);
    // The motd names the four parts of the VM and where to look at each.
    for (const part of [
      'processor',
      'memory',
      'network',
      'storage',
      '/proc/cpuinfo',
      '/proc/meminfo',
      'ip link',
      '/sys/block',
    ]) {
      expect(result.stdout).toContain(part);
    }
  });

  it("shows the boot log, then keeps the kernel's warnings off the console (in dmesg) and lets its errors through", async () => {
    // The typed lines split each marker with "", so only the kernel's copy of a message contains it whole.
    const script = [
      'echo "<4>tabvisor-""warn-x" > /dev/kmsg',
      'echo "<3>tabvisor-""err-x" > /dev/kmsg',
      "echo in-dmesg=$(dmesg | grep -c 'tabvisor-wa[r]n-x')",
      'poweroff',
      '',
    ].join('\n');
    const result = await runCli(['boot', '--cpus', '1'], script, 90_000);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('Linux version 6.1');
    expect(result.stdout).toContain('in-dmesg=1');
    expect(result.stdout).toContain('tabvisor-err-x');
    expect(result.stdout).not.toContain('tabvisor-warn-x');
  });
});
