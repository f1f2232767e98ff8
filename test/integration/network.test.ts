import { afterAll, describe, expect, it } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import { NetworkHub, resolveNic } from '../../src/machine/networks.ts';
import type { PortMode } from '../../src/net/switch.ts';
import { Vm } from '../../src/machine/vm.ts';
import { ask, defaultSpec, watchConsole, WAIT_FOR_ADDRESS, type ConsoleWatch } from '../helpers/guest.ts';

const hub = new NetworkHub();
const vms: Vm[] = [];

afterAll(async () => {
  await Promise.all(vms.map((vm) => vm.stop()));
  hub.dispose();
});

async function boot(name: string, mode: PortMode): Promise<{ vm: Vm; console: ConsoleWatch }> {
  const nic = hub.nic(`${name}/eth0`, resolveNic({ network: 'lab', mode }, 0));
  const vm = Vm.create({ ...(await defaultSpec(1, 64)), nics: [nic] }, nodeThreads);
  vms.push(vm);
  const console = watchConsole(vm);
  vm.start();
  await console.waitFor('# ', 60_000);
  return { vm, console };
}

describe('virtio-net in Node: VMs on one switch with a DHCP server', () => {
  it('two VMs on VLAN 10 get addresses by DHCP and ping each other; a VM on VLAN 20 cannot reach them', async () => {
    const [a, b, c] = await Promise.all([
      boot('a', { kind: 'access', vlan: 10 }),
      boot('b', { kind: 'access', vlan: 10 }),
      boot('c', { kind: 'access', vlan: 20 }),
    ]);
    const [ipA, ipB, ipC] = await Promise.all([
      ask(a.console, 'ADDR', WAIT_FOR_ADDRESS),
      ask(b.console, 'ADDR', WAIT_FOR_ADDRESS),
      ask(c.console, 'ADDR', WAIT_FOR_ADDRESS),
    ]);
    expect(ipA).toMatch(/^10\.0\.10\.1\d\d$/);
    expect(ipB).toMatch(/^10\.0\.10\.1\d\d$/);
    expect(ipA).not.toBe(ipB);
    expect(ipC).toMatch(/^10\.0\.20\.1\d\d$/);
    const ping = (from: ConsoleWatch, to: string): Promise<string> =>
      ask(from, 'PING', `ping -c 3 -W 2 ${to} >/dev/null 2>&1 && echo ok || echo fail`);
    expect(await ping(a.console, ipB)).toBe('ok');
    expect(await ping(b.console, ipA)).toBe('ok');
    expect(await ping(a.console, '10.0.10.1')).toBe('ok'); // the DHCP server answers its own address
    // VLAN 20 reaches neither VM on VLAN 10, even with a route to their subnet.
    await ask(c.console, 'ROUTE', 'ip addr add 10.0.10.250/24 dev eth0 && echo added');
    expect(await ping(c.console, ipA)).toBe('fail');
    const lab = hub.view('lab');
    const macs = lab?.macTable() ?? [];
    expect(macs.filter((m) => m.port === 'c/eth0').every((m) => m.vlan === 20)).toBe(true);
    expect(lab?.ports().find((p) => p.name === 'a/eth0')?.counters.rxFrames).toBeGreaterThan(3);
  }, 180_000);
});
