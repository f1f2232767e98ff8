import { describe, expect, it } from 'vitest';
import { NetworkHub, resolveNic } from '../../../src/machine/networks.ts';
import type { NetChannel } from '../../../src/net/uplink.ts';

/** An Ethernet broadcast frame from `src` (a DHCP-less ARP-like payload). */
function broadcast(src: number): Uint8Array {
  const frame = new Uint8Array(60);
  frame.fill(0xff, 0, 6);
  frame.set([0x02, 0, 0, 0, 0, src], 6);
  frame[12] = 0x08;
  frame[13] = 0x06;
  return frame;
}

describe('NIC configuration', () => {
  it('fills in network default, access VLAN 1 and a random locally administered unicast MAC', () => {
    const nic = resolveNic({}, 0);
    expect(nic.network).toBe('default');
    expect(nic.mode).toEqual({ kind: 'access', vlan: 1 });
    expect(nic.mac).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(resolveNic({ mac: '52:54:00:AB:CD:EF' }, 0).mac).toBe('52:54:00:ab:cd:ef');
  });

  it('refuses a multicast MAC, VLAN 0 and 4095, and a bad network name, naming the NIC and the fix', () => {
    expect(() => resolveNic({ mac: '01:00:5e:00:00:01' }, 1)).toThrow(/NIC 1: .*unicast/);
    expect(() => resolveNic({ mode: { kind: 'access', vlan: 0 } }, 0)).toThrow(/VLAN 0/);
    expect(() => resolveNic({ mode: { kind: 'access', vlan: 4095 } }, 0)).toThrow(/4095/);
    expect(() => resolveNic({ network: '' }, 0)).toThrow(/NIC 0/);
  });
});

describe('NetworkHub', () => {
  it('a NIC port outlives its boots: frames reach the plugged card only, counters survive an unplug', () => {
    const hub = new NetworkHub();
    const a = hub.nic('a/eth0', resolveNic({ network: 'n' }, 0));
    const b = hub.nic('b/eth0', resolveNic({ network: 'n' }, 0));
    const got: Uint8Array[] = [];
    const plugA = a.plug({ deliver: () => true });
    b.plug({ deliver: (frame) => got.push(frame) > 0 });
    plugA.backend.send(broadcast(1));
    expect(got).toHaveLength(1);
    plugA.unplug();
    const view = hub.view('n');
    const port = view?.ports().find((p) => p.name === 'a/eth0');
    expect(port?.counters.rxFrames).toBe(1);
    // b -> a while a is unplugged: a's port answers busy.
    const plugB2 = b.plug({ deliver: () => true });
    plugB2.backend.send(broadcast(2));
    expect(view?.ports().find((p) => p.name === 'a/eth0')?.counters.drops.busy).toBe(1);
    a.dispose();
    expect(view?.ports().some((p) => p.name === 'a/eth0')).toBe(false);
    hub.dispose();
  });

  it('runs one DHCP server per VLAN in use, only once elected; standby until then', () => {
    const leads = new Map<string, () => void>();
    const released: string[] = [];
    const hub = new NetworkHub({
      elect: (lock, lead) => {
        leads.set(lock, lead);
        return () => released.push(lock);
      },
    });
    hub.nic('a/eth0', resolveNic({ network: 'n', mode: { kind: 'access', vlan: 10 } }, 0));
    hub.nic(
      'b/eth0',
      resolveNic({ network: 'n', mode: { kind: 'trunk', allowed: [10, 20], native: 30 } }, 0),
    );
    expect([...leads.keys()].sort()).toEqual([
      'tabvisor-dhcp:n:10',
      'tabvisor-dhcp:n:20',
      'tabvisor-dhcp:n:30',
    ]);
    const view = hub.view('n');
    expect(view?.dhcp().map((d) => d.role)).toEqual(['standby', 'standby', 'standby']);
    leads.get('tabvisor-dhcp:n:20')?.();
    expect(view?.dhcp().map((d) => `${d.vlan}:${d.role}:${d.serverIp ?? '-'}`)).toEqual([
      '10:standby:-',
      '20:leader:10.0.20.1',
      '30:standby:-',
    ]);
    expect(view?.ports().some((p) => p.name === 'dhcp-vlan20')).toBe(true);
    hub.dispose();
    expect(released.sort()).toEqual(['tabvisor-dhcp:n:10', 'tabvisor-dhcp:n:20', 'tabvisor-dhcp:n:30']);
  });

  it('joins other tabs through a channel named tabvisor-net:<network>, closed on dispose', () => {
    const opened: string[] = [];
    let closed = 0;
    const hub = new NetworkHub({
      channel: (name): NetChannel => {
        opened.push(name);
        return { postMessage: () => {}, onmessage: null, close: () => closed++ };
      },
    });
    hub.nic('a/eth0', resolveNic({ network: 'lab' }, 0));
    expect(opened).toEqual(['tabvisor-net:lab']);
    expect(
      hub
        .view('lab')
        ?.ports()
        .map((p) => p.role),
    ).toContain('uplink');
    hub.dispose();
    expect(closed).toBe(1);
  });

  it('a capture of a port records both directions as pcap; an unknown port is named with the existing ones', async () => {
    const hub = new NetworkHub();
    const a = hub.nic('a/eth0', resolveNic({ network: 'n' }, 0));
    const b = hub.nic('b/eth0', resolveNic({ network: 'n' }, 0));
    b.plug({ deliver: () => true });
    const plugA = a.plug({ deliver: () => true });
    const view = hub.view('n');
    const capture = view?.capture('b/eth0');
    plugA.backend.send(broadcast(1));
    expect(capture?.frames).toBe(1);
    expect(view?.ports().find((p) => p.name === 'b/eth0')?.capturing).toBe(true);
    const bytes = new Uint8Array((await capture?.stop().arrayBuffer()) ?? new ArrayBuffer(0));
    expect(new DataView(bytes.buffer).getUint32(0, true)).toBe(0xa1b2c3d4);
    expect(bytes.length).toBe(24 + 16 + 60);
    expect(view?.ports().find((p) => p.name === 'b/eth0')?.capturing).toBe(false);
    expect(() => view?.capture('nope')).toThrow(/no port "nope".*a\/eth0, b\/eth0/);
    hub.dispose();
  });
});
