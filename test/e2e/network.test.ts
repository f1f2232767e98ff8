import { rmSync } from 'node:fs';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable, buildApp, launchChromium, serveApp } from '../helpers/browser.ts';
import type { NicConfig } from '../../src/machine/hypervisor.ts';

const enabled = browserAvailable();
const BOOT_TIMEOUT_MS = 90_000;

/** Create VM `name` (1 vCPU, 64 MiB) with one NIC and wait for its shell prompt. */
function createVm(page: Page, name: string, nic: NicConfig): Promise<void> {
  return page.evaluate(
    async ([vmName, nicConfig, timeout]) => {
      const api = window.tabvisor;
      if (!api) throw new Error('no window.tabvisor');
      const vm = await api.createVM({ name: vmName, cpus: 1, memoryMiB: 64, nics: [nicConfig] });
      await vm.console.waitFor('# ', timeout);
    },
    [name, nic, BOOT_TIMEOUT_MS] as const,
  );
}

/** Run `command` in VM `name`, printing `<tag>=<its output>-END`; resolves with the output. */
function ask(page: Page, name: string, tag: string, command: string): Promise<string> {
  return page.evaluate(
    async ([vmName, tagName, text]) => {
      const vm = window.tabvisor?.vm(vmName);
      if (!vm) throw new Error(`no VM ${vmName}`);
      vm.console.write(`echo ${tagName.slice(0, 1)}''${tagName.slice(1)}=$(${text})-END\n`);
      const out = await vm.console.waitFor(new RegExp(`${tagName}=([^\\r\\n]*)-END`), 60_000);
      return new RegExp(`${tagName}=([^\\r\\n]*)-END`).exec(out)?.[1] ?? '';
    },
    [name, tag, command] as const,
  );
}

const ADDRESS =
  "for i in $(seq 1 60); do ip -4 addr show eth0 | grep -q 'inet ' && break; sleep 0.5; done; " +
  "ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'";
const ping = (to: string): string => `ping -c 3 -W 2 ${to} >/dev/null 2>&1 && echo ok || echo fail`;

describe.skipIf(!enabled)('virtio-net and the page switch in Chromium', () => {
  let outDir = '';
  let server: { url: string; close: () => Promise<void> } | undefined;
  let browser: { context: BrowserContext; close: () => Promise<void> } | undefined;
  let page: Page;
  let other: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    outDir = await buildApp();
    server = await serveApp(outDir);
    browser = await launchChromium();
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    await page.goto(`${server.url}?autostart=0`);
    await page.waitForFunction(() => window.tabvisor !== undefined);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (outDir) rmSync(outDir, { recursive: true, force: true });
  });

  it('two VMs on VLAN 10 get addresses by DHCP and ping each other; a VM on VLAN 20 cannot reach them', async () => {
    await Promise.all([
      createVm(page, 'a', { network: 'lab', mode: { kind: 'access', vlan: 10 } }),
      createVm(page, 'b', { network: 'lab', mode: { kind: 'access', vlan: 10 } }),
      createVm(page, 'c', { network: 'lab', mode: { kind: 'access', vlan: 20 } }),
    ]);
    const [ipA, ipB, ipC] = await Promise.all(['a', 'b', 'c'].map((vm) => ask(page, vm, 'ADDR', ADDRESS)));
    expect(ipA).toMatch(/^10\.0\.10\.1\d\d$/);
    expect(ipB).toMatch(/^10\.0\.10\.1\d\d$/);
    expect(ipC).toMatch(/^10\.0\.20\.1\d\d$/);
    expect(await ask(page, 'a', 'PING', ping(ipB))).toBe('ok');
    expect(await ask(page, 'b', 'PING', ping(ipA))).toBe('ok');
    await ask(page, 'c', 'ROUTE', 'ip addr add 10.0.10.250/24 dev eth0 && echo added');
    expect(await ask(page, 'c', 'PING', ping(ipA))).toBe('fail');
    const view = await page.evaluate(() => {
      const lab = window.tabvisor?.network?.('lab');
      return {
        ports: lab?.ports().map((p) => ({ name: p.name, mode: p.mode, rx: p.counters.rxFrames })),
        macs: lab?.macTable(),
        dhcp: lab?.dhcp().map((d) => ({ vlan: d.vlan, role: d.role, leases: d.leases.length })),
      };
    });
    expect(view.ports?.find((p) => p.name === 'a/eth0')?.mode).toEqual({ kind: 'access', vlan: 10 });
    expect(view.ports?.find((p) => p.name === 'a/eth0')?.rx).toBeGreaterThan(3);
    expect(view.macs?.some((m) => m.port === 'b/eth0' && m.vlan === 10)).toBe(true);
    expect(view.dhcp).toEqual([
      { vlan: 10, role: 'leader', leases: 2 },
      { vlan: 20, role: 'leader', leases: 1 },
    ]);
    // The teaching view shows the switch's ports.
    expect(await page.locator('#network-view [data-port="a/eth0"]').count()).toBe(1);
  }, 240_000);

  it('a capture of a port is a pcap file holding the pings', async () => {
    const result = await page.evaluate(async () => {
      const lab = window.tabvisor?.network?.('lab');
      if (!lab) throw new Error('no network lab');
      const capture = lab.capture('a/eth0');
      const vm = window.tabvisor?.vm('a');
      vm?.console.write('ping -c 2 10.0.10.1 >/dev/null; echo CAPTURED-$((40+2))\n');
      await vm?.console.waitFor('CAPTURED-42', 30_000);
      const bytes = new Uint8Array(await capture.stop().arrayBuffer());
      return {
        magic: new DataView(bytes.buffer).getUint32(0, true),
        size: bytes.length,
        frames: capture.frames,
      };
    });
    expect(result.magic).toBe(0xa1b2c3d4);
    expect(result.frames).toBeGreaterThanOrEqual(4);
  }, 60_000);

  it('a trunk port with Linux VLAN subinterfaces reaches VLAN 10 and VLAN 20', async () => {
    await createVm(page, 'trunk', { network: 'lab', mode: { kind: 'trunk', allowed: [10, 20] } });
    const setup = [
      'ip link set eth0 up',
      'ip link add link eth0 name eth0.10 type vlan id 10',
      'ip link add link eth0 name eth0.20 type vlan id 20',
      'ip addr add 10.0.10.60/24 dev eth0.10',
      'ip addr add 10.0.20.60/24 dev eth0.20',
      'ip link set eth0.10 up',
      'ip link set eth0.20 up',
      'echo up',
    ].join(' && ');
    expect(await ask(page, 'trunk', 'SETUP', setup)).toBe('up');
    expect(await ask(page, 'trunk', 'PING', ping('10.0.10.1'))).toBe('ok');
    expect(await ask(page, 'trunk', 'PING', ping('10.0.20.1'))).toBe('ok');
    const ipA = await ask(page, 'a', 'ADDR', ADDRESS);
    expect(await ask(page, 'trunk', 'PING', ping(ipA))).toBe('ok');
  }, 180_000);

  it('two VMs in two tabs on the same network ping each other (uplinks through the relay, one DHCP server)', async () => {
    other = await (browser as { context: BrowserContext }).context.newPage();
    other.on('pageerror', (error) => pageErrors.push(String(error)));
    await other.goto(`${server?.url}?autostart=0`);
    await other.waitForFunction(() => window.tabvisor !== undefined);
    await Promise.all([
      createVm(page, 'left', { network: 'tabs', mode: { kind: 'access', vlan: 30 } }),
      createVm(other, 'right', { network: 'tabs', mode: { kind: 'access', vlan: 30 } }),
    ]);
    const [ipLeft, ipRight] = await Promise.all([
      ask(page, 'left', 'ADDR', ADDRESS),
      ask(other, 'right', 'ADDR', ADDRESS),
    ]);
    expect(ipLeft).toMatch(/^10\.0\.30\.1\d\d$/);
    expect(ipRight).toMatch(/^10\.0\.30\.1\d\d$/);
    expect(ipLeft).not.toBe(ipRight);
    expect(await ask(page, 'left', 'PING', ping(ipRight))).toBe('ok');
    expect(await ask(other, 'right', 'PING', ping(ipLeft))).toBe('ok');
    // Exactly one tab runs the VLAN's DHCP server; the other stands by.
    const roles = await Promise.all(
      [page, other].map((p) =>
        p.evaluate(
          () =>
            window.tabvisor
              ?.network?.('tabs')
              ?.dhcp()
              .map((d) => d.role) ?? [],
        ),
      ),
    );
    expect(roles.flat().sort()).toEqual(['leader', 'standby']);
    // The tabs' frames went through the relay SharedWorker, not the BroadcastChannel fallback.
    const transports = await Promise.all(
      [page, other].map((p) => p.evaluate(() => window.tabvisor?.network?.('tabs')?.uplinkTransport())),
    );
    expect(transports).toEqual(['relay', 'relay']);
    expect(pageErrors).toEqual([]);
  }, 240_000);
});
