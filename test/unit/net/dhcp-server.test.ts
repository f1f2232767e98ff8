/**
 * The DHCP server driven by a scripted client: packets are built here byte by byte (RFC 2131 Figure 1,
 * RFC 2132 options, RFC 791/768 headers), independently of the server's own builders.
 */
import { describe, expect, it } from 'vitest';
import { UserError } from '../../../src/common/errors.ts';
import { DhcpServer, DHCP_DROP_REASONS } from '../../../src/net/dhcp-server.ts';
import { EthernetSwitch } from '../../../src/net/switch.ts';
import type { SwitchPort } from '../../../src/net/switch.ts';
import { prng } from '../../helpers/prng.ts';
import { RecordingSink, hex, stationMac } from './net-test-helpers.ts';

const DISCOVER = 1;
const OFFER = 2;
const REQUEST = 3;
const ACK = 5;
const NAK = 6;
const RELEASE = 7;

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i] << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const ip = (text: string) => text.split('.').map(Number);
const be32 = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

/** Ethernet + IPv4 + UDP around `data`, from the client port 68 to the server port 67. */
function udpFrame(
  srcMac: Uint8Array,
  srcIp: string,
  dstIp: string,
  data: Uint8Array,
  dstMac = hex('ffffffffffff'),
): Uint8Array {
  const udpLength = 8 + data.length;
  const ipHeader = new Uint8Array([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, ...ip(srcIp), ...ip(dstIp)]);
  ipHeader[2] = (20 + udpLength) >>> 8;
  ipHeader[3] = (20 + udpLength) & 0xff;
  const sum = checksum(ipHeader);
  ipHeader[10] = sum >>> 8;
  ipHeader[11] = sum & 0xff;
  const udp = new Uint8Array([0, 68, 0, 67, udpLength >>> 8, udpLength & 0xff, 0, 0]); // checksum 0: none
  return new Uint8Array([...dstMac, ...srcMac, 0x08, 0x00, ...ipHeader, ...udp, ...data]);
}

interface ClientMessage {
  type: number;
  mac: Uint8Array;
  xid?: number;
  ciaddr?: string;
  requested?: string;
  serverId?: string;
  broadcast?: boolean;
  extraOptions?: number[];
  /** Replaces every option after the magic cookie. */
  rawOptions?: number[];
  chaddr?: Uint8Array;
}

/** A BOOTREQUEST with options 53, 50, 54 as given, then end. */
function bootRequest(m: ClientMessage): Uint8Array {
  const msg = new Uint8Array(240);
  msg[0] = 1; // BOOTREQUEST
  msg[1] = 1; // Ethernet
  msg[2] = 6;
  msg.set(be32(m.xid ?? 0x1234abcd), 4);
  if (m.broadcast) msg[10] = 0x80;
  if (m.ciaddr) msg.set(ip(m.ciaddr), 12);
  msg.set(m.chaddr ?? m.mac, 28);
  msg.set([99, 130, 83, 99], 236);
  const options = [53, 1, m.type];
  if (m.requested) options.push(50, 4, ...ip(m.requested));
  if (m.serverId) options.push(54, 4, ...ip(m.serverId));
  options.push(...(m.extraOptions ?? []), 55, 3, 1, 3, 6, 255);
  return new Uint8Array([...msg, ...(m.rawOptions ?? options)]);
}

function dhcpFrame(m: ClientMessage): Uint8Array {
  return udpFrame(m.mac, m.ciaddr ?? '0.0.0.0', m.ciaddr ? '10.0.10.1' : '255.255.255.255', bootRequest(m));
}

interface Reply {
  dstMac: string;
  dstIp: string;
  srcIp: string;
  type: number;
  yiaddr: string;
  xid: number;
  options: Map<number, Uint8Array>;
}

function parseReply(frame: Uint8Array): Reply {
  expect((frame[12] << 8) | frame[13]).toBe(0x0800);
  const ipHeader = frame.subarray(14, 34);
  expect(checksum(ipHeader)).toBe(0);
  const udp = frame.subarray(34);
  expect((udp[0] << 8) | udp[1]).toBe(67);
  expect((udp[2] << 8) | udp[3]).toBe(68);
  const udpLength = (udp[4] << 8) | udp[5];
  expect(14 + 20 + udpLength).toBe(frame.length);
  // UDP checksum over the pseudo header (RFC 768).
  const pseudo = new Uint8Array([
    ...ipHeader.subarray(12, 20),
    0,
    17,
    udpLength >>> 8,
    udpLength & 0xff,
    ...udp.subarray(0, udpLength),
  ]);
  expect(checksum(pseudo)).toBe(0);
  const bootp = udp.subarray(8, udpLength);
  expect(bootp.length).toBeGreaterThanOrEqual(300);
  expect(bootp[0]).toBe(2);
  expect([...bootp.subarray(236, 240)]).toEqual([99, 130, 83, 99]);
  const options = new Map<number, Uint8Array>();
  let i = 240;
  while (bootp[i] !== 255) {
    if (bootp[i] === 0) {
      i++;
      continue;
    }
    options.set(bootp[i], bootp.slice(i + 2, i + 2 + bootp[i + 1]));
    i += 2 + bootp[i + 1];
  }
  const dotted = (b: Uint8Array) => [...b].join('.');
  return {
    dstMac: [...frame.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':'),
    dstIp: dotted(ipHeader.subarray(16, 20)),
    srcIp: dotted(ipHeader.subarray(12, 16)),
    type: options.get(53)![0],
    yiaddr: dotted(bootp.subarray(16, 20)),
    xid: ((bootp[4] << 24) | (bootp[5] << 16) | (bootp[6] << 8) | bootp[7]) >>> 0,
    options,
  };
}

function rig(options: { leaseSeconds?: number; rangeEnd?: string } = {}) {
  let now = 0;
  const sw = new EthernetSwitch({ clock: () => now });
  const server = new DhcpServer(sw, 10, {
    subnet: '10.0.10.0/24',
    serverIp: '10.0.10.1',
    rangeStart: '10.0.10.100',
    rangeEnd: options.rangeEnd ?? '10.0.10.199',
    dnsServers: ['10.0.10.53'],
    leaseSeconds: options.leaseSeconds ?? 3600,
    clock: () => now,
  });
  const clients: { port: SwitchPort; sink: RecordingSink }[] = [];
  const client = (vlan = 10) => {
    const sink = new RecordingSink();
    const port = sw.addPort({ name: `vm${clients.length}`, mode: { kind: 'access', vlan }, sink });
    clients.push({ port, sink });
    return { port, sink };
  };
  /** Send and return the single reply (or null). */
  const exchange = (c: { port: SwitchPort; sink: RecordingSink }, frame: Uint8Array): Reply | null => {
    c.sink.clear();
    c.port.receive(frame);
    const replies = c.sink.frames.filter((f) => f.length > 34 && f[23] === 17);
    expect(replies.length).toBeLessThanOrEqual(1);
    return replies.length === 0 ? null : parseReply(replies[0]);
  };
  return { sw, server, client, exchange, advance: (ms: number) => (now += ms) };
}

describe('DHCP server: a scripted udhcpc', () => {
  it('hands out an address: DISCOVER -> OFFER, REQUEST -> ACK, with mask, router, DNS and lease', () => {
    const { server, client, exchange } = rig();
    const vm = client();
    const mac = stationMac(0x51);
    const offer = exchange(vm, dhcpFrame({ type: DISCOVER, mac, xid: 0xdeadbeef }))!;
    expect(offer.type).toBe(OFFER);
    expect(offer.xid).toBe(0xdeadbeef);
    expect(offer.yiaddr).toBe('10.0.10.100');
    expect(offer.dstMac).toBe('02:00:00:00:00:51'); // no broadcast flag: unicast to chaddr
    expect(offer.dstIp).toBe('10.0.10.100');
    expect(offer.srcIp).toBe('10.0.10.1');
    expect([...offer.options.get(54)!]).toEqual([10, 0, 10, 1]);
    expect([...offer.options.get(1)!]).toEqual([255, 255, 255, 0]);
    expect([...offer.options.get(3)!]).toEqual([10, 0, 10, 1]);
    expect([...offer.options.get(6)!]).toEqual([10, 0, 10, 53]);
    expect([...offer.options.get(28)!]).toEqual([10, 0, 10, 255]);
    expect([...offer.options.get(51)!]).toEqual(be32(3600));
    expect([...offer.options.get(58)!]).toEqual(be32(1800));

    const ack = exchange(
      vm,
      dhcpFrame({ type: REQUEST, mac, requested: offer.yiaddr, serverId: '10.0.10.1', broadcast: true }),
    )!;
    expect(ack.type).toBe(ACK);
    expect(ack.yiaddr).toBe('10.0.10.100');
    expect(ack.dstMac).toBe('ff:ff:ff:ff:ff:ff'); // broadcast flag honoured
    expect(ack.dstIp).toBe('255.255.255.255');
    expect(server.leases()).toMatchObject([{ mac: '02:00:00:00:00:51', ip: '10.0.10.100', state: 'bound' }]);
  });

  it('keeps a client address stable across requests and gives another client a different one', () => {
    const { client, exchange } = rig();
    const vm1 = client();
    const vm2 = client();
    const mac1 = stationMac(1);
    const mac2 = stationMac(2);
    const first = exchange(vm1, dhcpFrame({ type: DISCOVER, mac: mac1 }))!.yiaddr;
    exchange(vm1, dhcpFrame({ type: REQUEST, mac: mac1, requested: first, serverId: '10.0.10.1' }));
    const second = exchange(vm2, dhcpFrame({ type: DISCOVER, mac: mac2 }))!.yiaddr;
    expect(second).not.toBe(first);
    expect(exchange(vm1, dhcpFrame({ type: DISCOVER, mac: mac1 }))!.yiaddr).toBe(first);
    // Renewal (RENEWING: ciaddr set, unicast) is ACKed to the client address.
    const renew = exchange(vm1, dhcpFrame({ type: REQUEST, mac: mac1, ciaddr: first }))!;
    expect(renew.type).toBe(ACK);
    expect(renew.dstIp).toBe(first);
    // After RELEASE, the same client still gets the same address back.
    exchange(vm1, dhcpFrame({ type: RELEASE, mac: mac1, ciaddr: first, serverId: '10.0.10.1' }));
    expect(exchange(vm1, dhcpFrame({ type: DISCOVER, mac: mac1 }))!.yiaddr).toBe(first);
  });

  it('NAKs a request for an address it did not offer, and one from another subnet', () => {
    const { client, exchange, server } = rig();
    const vm = client();
    const mac = stationMac(7);
    exchange(vm, dhcpFrame({ type: DISCOVER, mac }));
    const nak = exchange(
      vm,
      dhcpFrame({ type: REQUEST, mac, requested: '10.0.10.150', serverId: '10.0.10.1' }),
    )!;
    expect(nak.type).toBe(NAK);
    expect(nak.yiaddr).toBe('0.0.0.0');
    expect(nak.dstMac).toBe('ff:ff:ff:ff:ff:ff');
    expect(nak.options.has(51)).toBe(false);
    const foreign = exchange(vm, dhcpFrame({ type: REQUEST, mac, requested: '192.168.1.5' }))!;
    expect(foreign.type).toBe(NAK);
    expect(server.counters.sent.nak).toBe(2);
  });

  it('NAKs an INIT-REBOOT for an address another client holds, and grants a free one (the tab may have lost its table)', () => {
    const { client, exchange } = rig();
    const vm1 = client();
    const vm2 = client();
    const taken = exchange(vm1, dhcpFrame({ type: DISCOVER, mac: stationMac(1) }))!.yiaddr;
    exchange(vm1, dhcpFrame({ type: REQUEST, mac: stationMac(1), requested: taken, serverId: '10.0.10.1' }));
    expect(exchange(vm2, dhcpFrame({ type: REQUEST, mac: stationMac(2), requested: taken }))!.type).toBe(NAK);
    const free = exchange(vm2, dhcpFrame({ type: REQUEST, mac: stationMac(2), requested: '10.0.10.150' }))!;
    expect([free.type, free.yiaddr]).toEqual([ACK, '10.0.10.150']);
  });

  it('stays silent when the client chose another server, and frees the offer', () => {
    const { client, exchange, server } = rig();
    const vm = client();
    const mac = stationMac(3);
    exchange(vm, dhcpFrame({ type: DISCOVER, mac }));
    expect(
      exchange(vm, dhcpFrame({ type: REQUEST, mac, requested: '10.0.10.100', serverId: '10.0.10.2' })),
    ).toBeNull();
    expect(server.leases()[0].state).toBe('released');
  });

  it('reuses expired addresses when the pool is exhausted, and offers nothing while all are live', () => {
    const { client, exchange, server, advance } = rig({ rangeEnd: '10.0.10.101', leaseSeconds: 60 });
    const vm = client();
    for (const n of [1, 2]) {
      const offer = exchange(vm, dhcpFrame({ type: DISCOVER, mac: stationMac(n) }))!;
      exchange(
        vm,
        dhcpFrame({ type: REQUEST, mac: stationMac(n), requested: offer.yiaddr, serverId: '10.0.10.1' }),
      );
    }
    expect(exchange(vm, dhcpFrame({ type: DISCOVER, mac: stationMac(3) }))).toBeNull();
    expect(server.counters.dropped['pool-exhausted']).toBe(1);
    advance(61_000);
    expect(exchange(vm, dhcpFrame({ type: DISCOVER, mac: stationMac(3) }))!.yiaddr).toBe('10.0.10.100');
  });

  it('serves only its own VLAN', () => {
    const { client, exchange } = rig();
    const other = client(20);
    expect(exchange(other, dhcpFrame({ type: DISCOVER, mac: stationMac(4) }))).toBeNull();
  });

  it('answers ARP for its own address and ping of it, so the gateway is reachable', () => {
    const { client } = rig();
    const vm = client();
    const mac = stationMac(0x20);
    const arpRequest = new Uint8Array([
      ...hex('ffffffffffff'),
      ...mac,
      0x08,
      0x06,
      ...[0, 1, 0x08, 0x00, 6, 4, 0, 1],
      ...mac,
      ...ip('10.0.10.100'),
      ...hex('000000000000'),
      ...ip('10.0.10.1'),
    ]);
    vm.port.receive(arpRequest);
    expect(vm.sink.frames.length).toBe(1);
    const reply = vm.sink.frames[0];
    expect(reply.subarray(0, 6)).toEqual(mac);
    expect(reply.subarray(12, 22)).toEqual(hex('0806 0001 0800 06 04 0002'));
    const serverMac = reply.subarray(6, 12);
    expect(reply.subarray(22, 28)).toEqual(serverMac);
    expect([...reply.subarray(28, 32)]).toEqual(ip('10.0.10.1'));
    expect(reply.subarray(32, 38)).toEqual(mac);
    expect([...reply.subarray(38, 42)]).toEqual(ip('10.0.10.100'));

    vm.sink.clear();
    const icmp = new Uint8Array([8, 0, 0, 0, 0x12, 0x34, 0, 1, ...new TextEncoder().encode('ping data!')]);
    const icmpSum = checksum(icmp);
    icmp[2] = icmpSum >>> 8;
    icmp[3] = icmpSum & 0xff;
    const ipHeader = new Uint8Array([
      0x45,
      0,
      0,
      20 + icmp.length,
      0,
      0,
      0x40,
      0,
      64,
      1,
      0,
      0,
      ...ip('10.0.10.100'),
      ...ip('10.0.10.1'),
    ]);
    const ipSum = checksum(ipHeader);
    ipHeader[10] = ipSum >>> 8;
    ipHeader[11] = ipSum & 0xff;
    vm.port.receive(new Uint8Array([...serverMac, ...mac, 0x08, 0x00, ...ipHeader, ...icmp]));
    expect(vm.sink.frames.length).toBe(1);
    const echo = vm.sink.frames[0];
    expect(checksum(echo.subarray(14, 34))).toBe(0);
    expect([...echo.subarray(26, 34)]).toEqual([...ip('10.0.10.1'), ...ip('10.0.10.100')]);
    expect(echo[34]).toBe(0); // echo reply
    expect(checksum(echo.subarray(34))).toBe(0);
    expect(echo.subarray(38)).toEqual(icmp.subarray(4));
  });
});

describe('DHCP server: hostile packets', () => {
  function cases() {
    const mac = stationMac(9);
    const valid = dhcpFrame({ type: DISCOVER, mac });
    const mutate = (f: (frame: Uint8Array) => void, frame = valid) => {
      const copy = frame.slice();
      f(copy);
      return copy;
    };
    const bootp = 14 + 20 + 8;
    return {
      'bad-cookie': mutate((f) => (f[bootp + 236] = 98)),
      'bad-ip-checksum': mutate((f) => (f[14 + 8] = 1)),
      'bad-ip-header': valid.subarray(0, 30),
      'bad-udp': mutate((f) => ((f[14 + 20 + 4] = 0xff), (f[14 + 20 + 5] = 0xff))),
      'bad-bootp': mutate((f) => (f[bootp] = 2)),
      'chaddr-mismatch': dhcpFrame({ type: DISCOVER, mac, chaddr: stationMac(10) }),
      'bad-options': dhcpFrame({ type: DISCOVER, mac, rawOptions: [53, 1, 1, 12, 200, 1, 2, 255] }),
      'unknown-type': dhcpFrame({ type: 99, mac }),
      relayed: mutate((f) => (f[bootp + 24] = 10)),
      fragment: mutate((f) => {
        f[14 + 6] = 0x20; // more fragments; fix the header checksum so only the fragment check fails
        f[14 + 10] = 0;
        f[14 + 11] = 0;
        const sum = checksum(f.subarray(14, 34));
        f[14 + 10] = sum >>> 8;
        f[14 + 11] = sum & 0xff;
      }),
    } as const;
  }

  it.each(Object.entries(cases()))('drops and counts %s, with no reply', (reason, frame) => {
    const { client, exchange, server } = rig();
    const vm = client();
    expect(exchange(vm, frame)).toBeNull();
    expect(server.counters.dropped[reason as (typeof DHCP_DROP_REASONS)[number]]).toBe(1);
    expect(server.leases()).toEqual([]);
  });

  it.each([
    ['no end option', [53, 1, 1]],
    ['message type of length 2', [53, 2, 1, 1, 255]],
    ['requested IP of length 3', [53, 1, 1, 50, 3, 10, 0, 10, 255]],
    ['length byte missing', [53, 1, 1, 12]],
  ])('refuses options with %s', (_name, rawOptions) => {
    const { client, exchange, server } = rig();
    const vm = client();
    expect(exchange(vm, dhcpFrame({ type: DISCOVER, mac: stationMac(9), rawOptions }))).toBeNull();
    expect(server.counters.dropped['bad-options']).toBe(1);
  });

  it('never throws on random mutations of valid requests', () => {
    const { client, server } = rig();
    const vm = client();
    const random = prng(2131);
    const seeds = [
      dhcpFrame({ type: DISCOVER, mac: stationMac(9) }),
      dhcpFrame({ type: REQUEST, mac: stationMac(9), requested: '10.0.10.100', serverId: '10.0.10.1' }),
    ];
    for (let i = 0; i < 5000; i++) {
      const frame = seeds[i % 2].slice(0, 14 + Math.floor(random() * (seeds[i % 2].length - 13)));
      const flips = 1 + Math.floor(random() * 8);
      for (let j = 0; j < flips; j++)
        frame[14 + Math.floor(random() * (frame.length - 14))] = Math.floor(random() * 256);
      expect(() => vm.port.receive(frame)).not.toThrow();
    }
    expect(server.leases().length).toBeLessThanOrEqual(100);
  });

  it('rejects a bad configuration with a message that names the field', () => {
    const sw = new EthernetSwitch();
    const base = {
      subnet: '10.0.10.0/24',
      serverIp: '10.0.10.1',
      rangeStart: '10.0.10.100',
      rangeEnd: '10.0.10.199',
    };
    expect(() => new DhcpServer(sw, 10, { ...base, subnet: '10.0.10.0' })).toThrow(UserError);
    expect(() => new DhcpServer(sw, 10, { ...base, serverIp: '10.0.11.1' })).toThrow(
      /server address 10.0.11.1 must be a host address inside/,
    );
    expect(() => new DhcpServer(sw, 10, { ...base, rangeEnd: '10.0.10.50' })).toThrow(/comes before/);
    expect(() => new DhcpServer(sw, 10, { ...base, rangeStart: '10.0.10.256' })).toThrow(
      /not an IPv4 address/,
    );
    expect(() => new DhcpServer(sw, 10, { ...base, leaseSeconds: 5 })).toThrow(/lease time/);
    expect(() => new DhcpServer(sw, 0, base)).toThrow(/VLAN 0/);
    expect(sw.ports).toEqual([]);
  });
});
