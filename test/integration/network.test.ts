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

  it('a TCP stream between two guests travels as TSO super-frames, arrives intact, and captures as MTU-sized segments', async () => {
    const [a, b] = await Promise.all([
      boot('tx', { kind: 'access', vlan: 30 }),
      boot('rx', { kind: 'access', vlan: 30 }),
    ]);
    await ask(a.console, 'ADDR', WAIT_FOR_ADDRESS);
    const ipB = await ask(b.console, 'ADDR', WAIT_FOR_ADDRESS);
    const bytes = 3 << 20;
    const sent = await ask(
      a.console,
      'SUM',
      `dd if=/dev/urandom of=/tmp/f bs=65536 count=${bytes >> 16} 2>/dev/null; md5sum < /tmp/f | cut -d' ' -f1`,
    );
    b.console.type('nc -l -p 7000 < /dev/null > /tmp/got &');
    await ask(b.console, 'LISTEN', 'sleep 0.5; echo listening');
    const capture = hub.view('lab')!.capture('tx/eth0');
    const txBefore = hub
      .view('lab')!
      .ports()
      .find((p) => p.name === 'tx/eth0')!.counters.rxFrames;
    a.console.type(`nc ${ipB} 7000 < /tmp/f &`);
    const got = await ask(
      b.console,
      'GOT',
      `while [ $(wc -c < /tmp/got) -lt ${bytes} ]; do sleep 0.2; done; md5sum < /tmp/got | cut -d' ' -f1`,
      120_000,
    );
    expect(got).toBe(sent);
    const pcap = new Uint8Array(await capture.stop().arrayBuffer());
    // The sender's card handed the switch far fewer frames than MTU-sized segments: TSO was negotiated and used.
    const txFrames =
      hub
        .view('lab')!
        .ports()
        .find((p) => p.name === 'tx/eth0')!.counters.rxFrames - txBefore;
    expect(txFrames).toBeLessThan(bytes / 1448 / 2);
    // The capture shows what a wire would carry: segments no longer than 1514 bytes, TCP checksums valid.
    const view = new DataView(pcap.buffer);
    let tcpSegments = 0;
    for (let at = 24; at + 16 <= pcap.length;) {
      const length = view.getUint32(at + 8, true);
      const frame = pcap.subarray(at + 16, at + 16 + length);
      at += 16 + length;
      expect(frame.length).toBeLessThanOrEqual(1514);
      if (((frame[12] << 8) | frame[13]) !== 0x0800 || frame[23] !== 6) continue;
      tcpSegments++;
      expect(tcpChecksumValid(frame)).toBe(true);
    }
    expect(tcpSegments).toBeGreaterThan(bytes / 1448);
  }, 240_000);
});

/** Verify the TCP checksum of an untagged IPv4 frame (RFC 1071 sum over pseudo header and segment). */
function tcpChecksumValid(frame: Uint8Array): boolean {
  const ip = 14;
  const l4 = ip + (frame[ip] & 0x0f) * 4;
  const totalLength = (frame[ip + 2] << 8) | frame[ip + 3];
  const end = ip + totalLength;
  let sum = 6 + (end - l4);
  for (let i = ip + 12; i < ip + 20; i += 2) sum += (frame[i] << 8) | frame[i + 1];
  for (let i = l4; i < end; i += 2) sum += (frame[i] << 8) | (i + 1 < end ? frame[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}
