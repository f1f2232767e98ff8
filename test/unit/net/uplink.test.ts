import { describe, expect, it } from 'vitest';
import { EthernetSwitch } from '../../../src/net/switch.ts';
import type { SwitchPort } from '../../../src/net/switch.ts';
import {
  UPLINK_PROTOCOL_VERSION,
  UPLINK_DROP_REASONS,
  Uplink,
  networkChannelName,
  parseUplinkMessage,
} from '../../../src/net/uplink.ts';
import type { NetChannel } from '../../../src/net/uplink.ts';
import { RecordingSink, hex, plainFrame, stationMac, tcpChecksumOk, tcpFrame } from './net-test-helpers.ts';
import { prng } from '../../helpers/prng.ts';

const BROADCAST = hex('ffffffffffff');

/**
 * A fake BroadcastChannel hub: every channel of a name gets every other channel's messages, structured-cloned
 * and delivered later (as the browser does), in order, when `flush` runs.
 */
class FakeHub {
  readonly #channels = new Set<FakeChannel>();
  readonly #queue: (() => void)[] = [];
  posted = 0;
  open(): FakeChannel {
    const channel = new FakeChannel(this);
    this.#channels.add(channel);
    return channel;
  }
  /** @internal */
  post(from: FakeChannel, data: unknown): void {
    this.posted++;
    const copy = structuredClone(data);
    for (const channel of this.#channels) {
      if (channel === from) continue;
      this.#queue.push(() => channel.onmessage?.({ data: structuredClone(copy) }));
    }
  }
  /** @internal */
  remove(channel: FakeChannel): void {
    this.#channels.delete(channel);
  }
  flush(): void {
    for (let guard = 0; this.#queue.length > 0; guard++) {
      if (guard > 100_000) throw new Error('message storm: the mesh loops');
      this.#queue.shift()!();
    }
  }
}

class FakeChannel implements NetChannel {
  onmessage: ((event: { data: unknown }) => void) | null = null;
  closed = false;
  constructor(private readonly hub: FakeHub) {}
  postMessage(data: unknown): void {
    if (this.closed) throw new Error('InvalidStateError: channel closed');
    this.hub.post(this, data);
  }
  close(): void {
    this.closed = true;
    this.hub.remove(this);
  }
}

/** A page: a switch with an uplink and access ports on VLAN 10 (x2) and VLAN 20. */
function page(hub: FakeHub, id: string) {
  const sw = new EthernetSwitch();
  const uplink = new Uplink(sw, hub.open(), { switchId: id });
  const sinks = { a10: new RecordingSink(), b10: new RecordingSink(), c20: new RecordingSink() };
  const ports: Record<keyof typeof sinks, SwitchPort> = {
    a10: sw.addPort({ name: `${id}-a10`, mode: { kind: 'access', vlan: 10 }, sink: sinks.a10 }),
    b10: sw.addPort({ name: `${id}-b10`, mode: { kind: 'access', vlan: 10 }, sink: sinks.b10 }),
    c20: sw.addPort({ name: `${id}-c20`, mode: { kind: 'access', vlan: 20 }, sink: sinks.c20 }),
  };
  return { sw, uplink, sinks, ports };
}

describe('uplink: switches in three tabs over one channel', () => {
  it('delivers a broadcast once to every port of its VLAN in every tab, and never loops', () => {
    const hub = new FakeHub();
    const tabs = [page(hub, 'one'), page(hub, 'two'), page(hub, 'three')];
    const frame = plainFrame(BROADCAST, stationMac(1));
    tabs[0].ports.a10.receive(frame);
    hub.flush();
    expect(hub.posted).toBe(1); // the other switches did not re-post it
    const counts = tabs.map((t) => [
      t.sinks.a10.frames.length,
      t.sinks.b10.frames.length,
      t.sinks.c20.frames.length,
    ]);
    expect(counts).toEqual([
      [0, 1, 0],
      [1, 1, 0],
      [1, 1, 0],
    ]);
    expect(tabs[1].sinks.a10.frames[0]).toEqual(frame); // untagged again at the access port
  });

  it('learns remote stations on the uplink: a unicast reply crosses to one tab and one port only', () => {
    const hub = new FakeHub();
    const tabs = [page(hub, 'one'), page(hub, 'two'), page(hub, 'three')];
    tabs[0].ports.a10.receive(plainFrame(BROADCAST, stationMac(1)));
    hub.flush();
    for (const t of tabs) Object.values(t.sinks).forEach((s) => s.clear());
    tabs[2].ports.b10.receive(plainFrame(stationMac(1), stationMac(3)));
    hub.flush();
    const counts = tabs.map((t) => [
      t.sinks.a10.frames.length,
      t.sinks.b10.frames.length,
      t.sinks.c20.frames.length,
    ]);
    // The channel reaches both other tabs; tab two learned station 1 behind its uplink, so it filters the frame.
    expect(counts[0]).toEqual([1, 0, 0]);
    expect(counts[1]).toEqual([0, 0, 0]);
    expect(tabs[1].uplink.port.counters.drops.filtered).toBe(1);
    expect(counts[2]).toEqual([0, 0, 0]);
  });

  it('keeps VLANs apart across tabs', () => {
    const hub = new FakeHub();
    const tabs = [page(hub, 'one'), page(hub, 'two')];
    tabs[0].ports.c20.receive(plainFrame(BROADCAST, stationMac(1)));
    hub.flush();
    expect(tabs[1].sinks.c20.frames.length).toBe(1);
    expect(tabs[1].sinks.a10.frames.length + tabs[1].sinks.b10.frames.length).toBe(0);
  });

  it('carries frames tagged on the channel with the protocol version and the sender id', () => {
    const hub = new FakeHub();
    const sw = new EthernetSwitch();
    const channel = hub.open();
    new Uplink(sw, channel, { switchId: 'me' });
    const spy = hub.open();
    const seen: unknown[] = [];
    spy.onmessage = (event) => seen.push(event.data);
    sw.addPort({ name: 'vm', mode: { kind: 'access', vlan: 10 }, sink: new RecordingSink() }).receive(
      plainFrame(BROADCAST, stationMac(1), 2),
    );
    hub.flush();
    expect(seen).toEqual([
      {
        v: UPLINK_PROTOCOL_VERSION,
        kind: 'frame',
        from: 'me',
        frame: hex('ffffffffffff 020000000001 8100 000a 0800 030a'),
      },
    ]);
  });

  it('posts a frame lent as a view into a larger buffer as a copy of just that frame (posting clones whole buffers)', () => {
    const posted: { frame: Uint8Array }[] = [];
    const channel: NetChannel = {
      onmessage: null,
      postMessage: (data) => posted.push(data as { frame: Uint8Array }),
      close: () => {},
    };
    const sw = new EthernetSwitch();
    new Uplink(sw, channel, { switchId: 'me' });
    const trunk = sw.addPort({
      name: 'vm',
      mode: { kind: 'trunk', allowed: [10] },
      sink: new RecordingSink(),
    });
    // A tagged frame goes out of the uplink as it came in: a view into a NIC's 64 KiB transmit buffer.
    const tagged = hex('ffffffffffff 020000000001 8100 000a 0800 030a');
    const lent = new Uint8Array(64 << 10);
    lent.set(tagged, 1000);
    trunk.receive(lent.subarray(1000, 1000 + tagged.length));
    lent.fill(0); // the NIC's next batch
    expect(posted).toHaveLength(1);
    expect(posted[0].frame).toEqual(tagged);
    expect(posted[0].frame.buffer.byteLength).toBe(tagged.length);
  });

  it('ignores its own messages echoed back', () => {
    const sw = new EthernetSwitch();
    const channel: NetChannel = { onmessage: null, postMessage: () => {}, close: () => {} };
    const uplink = new Uplink(sw, channel, { switchId: 'me' });
    const sink = new RecordingSink();
    sw.addPort({ name: 'vm', mode: { kind: 'access', vlan: 10 }, sink });
    const frame = hex('ffffffffffff 020000000001 8100 000a 0800 0000');
    channel.onmessage!({ data: { v: UPLINK_PROTOCOL_VERSION, kind: 'frame', from: 'me', frame } });
    expect(uplink.counters.ownMessages).toBe(1);
    expect(sink.frames).toEqual([]);
    channel.onmessage!({ data: { v: UPLINK_PROTOCOL_VERSION, kind: 'frame', from: 'other', frame } });
    expect(sink.frames.length).toBe(1);
  });

  it('counts a failing postMessage as a lost frame and a busy drop on the uplink port', () => {
    const sw = new EthernetSwitch();
    const channel: NetChannel = {
      onmessage: null,
      postMessage: () => {
        throw new Error('DataCloneError');
      },
      close: () => {},
    };
    const uplink = new Uplink(sw, channel);
    sw.addPort({ name: 'vm', mode: { kind: 'access', vlan: 10 }, sink: new RecordingSink() }).receive(
      plainFrame(BROADCAST, stationMac(1)),
    );
    expect(uplink.counters.postErrors).toBe(1);
    expect(uplink.port.counters.drops.busy).toBe(1);
  });

  it('close() removes the port, detaches the handler and closes the channel, once', () => {
    const hub = new FakeHub();
    const sw = new EthernetSwitch();
    const channel = hub.open();
    const uplink = new Uplink(sw, channel);
    uplink.close();
    uplink.close();
    expect(channel.closed).toBe(true);
    expect(channel.onmessage).toBeNull();
    expect(sw.ports).toEqual([]);
  });
});

describe('uplink: hostile messages from other tabs', () => {
  const good = () => ({
    v: UPLINK_PROTOCOL_VERSION,
    kind: 'frame',
    from: 'peer',
    frame: hex('ffffffffffff 020000000001 8100 000a 0800'),
  });

  it('names the reason for each malformed field', () => {
    expect(parseUplinkMessage(null)).toBe('not-object');
    expect(parseUplinkMessage([good()])).toBe('not-object');
    expect(parseUplinkMessage('frame')).toBe('not-object');
    expect(parseUplinkMessage({ ...good(), v: 1 })).toBe('bad-version');
    expect(parseUplinkMessage({ ...good(), v: '1' })).toBe('bad-version');
    expect(parseUplinkMessage({ ...good(), kind: 'hello' })).toBe('bad-kind');
    expect(parseUplinkMessage({ ...good(), from: '' })).toBe('bad-from');
    expect(parseUplinkMessage({ ...good(), from: 'x'.repeat(65) })).toBe('bad-from');
    expect(parseUplinkMessage({ ...good(), from: 'a b' })).toBe('bad-from');
    expect(parseUplinkMessage({ ...good(), from: 7 })).toBe('bad-from');
    expect(parseUplinkMessage({ ...good(), frame: [1, 2, 3] })).toBe('bad-frame-type');
    expect(parseUplinkMessage({ ...good(), frame: new Uint16Array(20) })).toBe('bad-frame-type');
    expect(parseUplinkMessage({ ...good(), frame: new ArrayBuffer(20) })).toBe('bad-frame-type');
    expect(parseUplinkMessage({ ...good(), frame: new Uint8Array(13) })).toBe('bad-frame-size');
    expect(parseUplinkMessage({ ...good(), frame: new Uint8Array(1519) })).toBe('bad-frame-size');
    expect(parseUplinkMessage({ ...good(), frame: new Uint8Array(16 * 1024 * 1024) })).toBe('bad-frame-size');
    expect(parseUplinkMessage(good())).toMatchObject({ from: 'peer' });
  });

  it('copies a frame that is a view into a larger or shared buffer', () => {
    const big = new Uint8Array(4096);
    const view = big.subarray(100, 120);
    const parsed = parseUplinkMessage({ ...good(), frame: view });
    expect(typeof parsed).toBe('object');
    if (typeof parsed === 'object') expect(parsed.frame.buffer).not.toBe(big.buffer);
    const shared = new Uint8Array(new SharedArrayBuffer(20));
    const parsedShared = parseUplinkMessage({ ...good(), frame: shared });
    if (typeof parsedShared === 'object') expect(parsedShared.frame.buffer).toBeInstanceOf(ArrayBuffer);
  });

  it('never throws on random objects, wrong versions, huge or wrong-typed frames, and counts every one', () => {
    const sw = new EthernetSwitch();
    const channel: NetChannel = { onmessage: null, postMessage: () => {}, close: () => {} };
    const uplink = new Uplink(sw, channel, { switchId: 'me' });
    const sink = new RecordingSink();
    sw.addPort({ name: 'vm', mode: { kind: 'trunk', allowed: 'all' }, sink });
    const random = prng(6);
    const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
    const randomValue = (depth: number): unknown => {
      const kind = Math.floor(random() * 12);
      switch (kind) {
        case 0:
          return null;
        case 1:
          return undefined;
        case 2:
          return random() * 1e9 - 5e8;
        case 3:
          return pick(['', 'frame', 'me', 'peer', '\u0000', 'x'.repeat(1000)]);
        case 4:
          return random() < 0.5;
        case 5:
          return new Uint8Array(Math.floor(random() * 3000)).map(() => Math.floor(random() * 256));
        case 6:
          return new Uint8Array(pick([0, 13, 14, 1518, 1519, 65536]));
        case 7:
          return pick([
            new ArrayBuffer(64),
            new DataView(new ArrayBuffer(64)),
            new Int8Array(64),
            new Float64Array(8),
          ]);
        case 8:
          return depth > 2 ? {} : Array.from({ length: 3 }, () => randomValue(depth + 1));
        case 9:
          return depth > 2
            ? []
            : Object.fromEntries(
                Array.from({ length: 4 }, () => [
                  pick(['v', 'kind', 'from', 'frame', 'x']),
                  randomValue(depth + 1),
                ]),
              );
        case 10:
          return BigInt(Math.floor(random() * 100));
        default:
          return {
            v: pick([1, 1, 1, 0, 2, '1', null, 1.5]),
            kind: pick(['frame', 'frame', 'Frame', 1, undefined]),
            from: pick(['peer', 'me', '', 'a'.repeat(65), 'bad id', 42]),
            frame: randomValue(3),
          };
      }
    };
    const hostile: unknown[] = [
      Object.defineProperty({}, 'v', {
        get() {
          throw new Error('getter bomb');
        },
      }),
      new Proxy(
        {},
        {
          get: () => {
            throw new Error('proxy bomb');
          },
        },
      ),
    ];
    const total = 5000;
    for (let i = 0; i < total; i++) {
      const data = i < hostile.length ? hostile[i] : randomValue(0);
      expect(() => channel.onmessage!({ data })).not.toThrow();
    }
    expect(() => channel.onmessage!(null as unknown as { data: unknown })).not.toThrow();
    const c = uplink.counters;
    const dropped = UPLINK_DROP_REASONS.reduce((sum, reason) => sum + c.dropped[reason], 0);
    expect(dropped + c.received + c.ownMessages).toBe(total + 1);
    expect(c.dropped.unreadable).toBe(2);
    expect(c.dropped['bad-version']).toBeGreaterThan(0);
    expect(c.dropped['bad-frame-size']).toBeGreaterThan(0);
    expect(c.dropped['bad-frame-type']).toBeGreaterThan(0);
    // What got through was checked again by the switch: nothing longer than a tagged frame reached a port.
    expect(sink.frames.every((f) => f.length >= 14 && f.length <= 1518)).toBe(true);
  });

  it('refuses unusable network names with a message that says what is allowed', () => {
    expect(networkChannelName('lab-1')).toEqual({ ok: true, name: 'tabvisor-net:lab-1' });
    const bad = networkChannelName('my net');
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.message).toMatch(/letters, digits/);
    expect(networkChannelName('x'.repeat(65)).ok).toBe(false);
  });
});

describe('uplink: offloaded frames cross the channel as they are', () => {
  it('carries a TCP super-frame as one message; the other tab segments it for a port that needs it', () => {
    const hub = new FakeHub();
    const left = page(hub, 'left');
    const right = page(hub, 'right');
    const big = tcpFrame({ payload: 3 * 1448 });
    // The right tab's a10 station must be known so the frame is unicast: it says hello first.
    const hello = plainFrame(BROADCAST, big.frame.subarray(0, 6));
    right.ports.a10.receive(hello);
    hub.flush();
    const posted = hub.posted;
    const offload = {
      csumStart: big.l4,
      csumOffset: 16,
      gso: 'tcp4' as const,
      gsoSize: 1448,
      dataValid: false,
    };
    left.ports.a10.receive(big.frame, offload);
    hub.flush();
    expect(hub.posted - posted).toBe(1);
    expect(right.sinks.a10.frames).toHaveLength(3);
    for (const f of right.sinks.a10.frames) expect(tcpChecksumOk(f, big.ip, big.l4, false)).toBe(true);
    expect(right.uplink.counters.received).toBe(1);
  });

  it('drops an offload of the wrong shape, and a super-frame size without a super-frame offload', () => {
    const base = {
      v: UPLINK_PROTOCOL_VERSION,
      kind: 'frame',
      from: 'peer',
      frame: new Uint8Array(3000),
    };
    const offload = { csumStart: 38, csumOffset: 16, gso: 'tcp4', gsoSize: 1448, dataValid: false };
    expect(parseUplinkMessage(base)).toBe('bad-frame-size');
    expect(parseUplinkMessage({ ...base, offload: { ...offload, gso: 'none' } })).toBe('bad-frame-size');
    expect(typeof parseUplinkMessage({ ...base, offload })).toBe('object');
    for (const broken of [
      null,
      'tcp4',
      [],
      { ...offload, gso: 'udp' },
      { ...offload, csumStart: '38' },
      { ...offload, gsoSize: 1.5 },
      { ...offload, dataValid: 1 },
      { csumStart: 38 },
    ])
      expect(parseUplinkMessage({ ...base, offload: broken })).toBe('bad-offload');
  });
});
