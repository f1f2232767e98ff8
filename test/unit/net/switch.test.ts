import { describe, expect, it } from 'vitest';
import { UserError } from '../../../src/common/errors.ts';
import { ETH_MAX_TAGGED_FRAME, ETH_MAX_UNTAGGED_FRAME, formatMac } from '../../../src/net/ethernet.ts';
import { EthernetSwitch, MAX_FORWARDING_DEPTH } from '../../../src/net/switch.ts';
import type { PortMode, PortSink, SwitchOptions } from '../../../src/net/switch.ts';
import { RecordingSink, hex, plainFrame, stationMac } from './net-test-helpers.ts';

const BROADCAST = hex('ffffffffffff');

function rig(options: SwitchOptions = {}, modes: PortMode[] = []) {
  let now = 1_000;
  const sw = new EthernetSwitch({ clock: () => now, ...options });
  const sinks = modes.map(() => new RecordingSink());
  const ports = modes.map((mode, i) => sw.addPort({ name: `p${i}`, mode, sink: sinks[i] }));
  return {
    sw,
    sinks,
    ports,
    advance: (ms: number) => (now += ms),
    clearAll: () => sinks.forEach((s) => s.clear()),
  };
}

const access = (vlan: number): PortMode => ({ kind: 'access', vlan });

describe('switch: MAC learning', () => {
  it('floods unknown unicast within the VLAN, then sends to the learned port only', () => {
    const { sinks, ports, clearAll } = rig({}, [access(10), access(10), access(10), access(20)]);
    const a = stationMac(1);
    const b = stationMac(2);
    ports[0].receive(plainFrame(b, a)); // b unknown: flooded to p1, p2 (not p3 on VLAN 20, not back to p0)
    expect(sinks.map((s) => s.frames.length)).toEqual([0, 1, 1, 0]);
    clearAll();
    ports[1].receive(plainFrame(a, b)); // a was learned on p0
    expect(sinks.map((s) => s.frames.length)).toEqual([1, 0, 0, 0]);
    clearAll();
    ports[0].receive(plainFrame(b, a)); // and now b is known on p1
    expect(sinks.map((s) => s.frames.length)).toEqual([0, 1, 0, 0]);
  });

  it('learns per VLAN: the same MAC in two VLANs is two independent entries', () => {
    const { sw, ports, sinks, clearAll } = rig({}, [
      { kind: 'trunk', allowed: [10, 20] },
      access(10),
      access(20),
    ]);
    const station = stationMac(9);
    ports[1].receive(plainFrame(BROADCAST, station));
    ports[2].receive(plainFrame(BROADCAST, station));
    expect(sw.macTable().map((e) => [e.mac, e.vlan, e.port.name])).toEqual([
      [formatMac(station), 10, 'p1'],
      [formatMac(station), 20, 'p2'],
    ]);
    clearAll();
    const toStationVlan20 = hex('020000000009 020000000005 8100 0014 0800 00000000');
    ports[0].receive(toStationVlan20);
    expect(sinks.map((s) => s.frames.length)).toEqual([0, 0, 1]);
  });

  it('ages entries out after the ageing time, then floods again; the table view shows ages', () => {
    const { sw, sinks, ports, advance, clearAll } = rig({ ageingMs: 10_000 }, [
      access(10),
      access(10),
      access(10),
    ]);
    ports[1].receive(plainFrame(BROADCAST, stationMac(2)));
    advance(4_000);
    expect(sw.macTable()).toMatchObject([{ mac: '02:00:00:00:00:02', vlan: 10, ageMs: 4_000 }]);
    clearAll();
    ports[0].receive(plainFrame(stationMac(2), stationMac(1)));
    expect(sinks[2].frames.length).toBe(0);
    advance(6_000); // 10 s since learned: expired
    clearAll();
    ports[0].receive(plainFrame(stationMac(2), stationMac(1)));
    expect(sinks.map((s) => s.frames.length)).toEqual([0, 1, 1]);
    expect(sw.macTable().map((e) => e.mac)).toEqual(['02:00:00:00:00:01']);
  });

  it('a flooding port cannot evict other ports entries: it churns only its own, up to its limit', () => {
    const { sw, ports } = rig({ maxMacs: 64, maxMacsPerPort: 16 }, [access(10), access(10), access(10)]);
    ports[1].receive(plainFrame(BROADCAST, stationMac(0xb)));
    ports[2].receive(plainFrame(BROADCAST, stationMac(0xc)));
    for (let i = 0; i < 10_000; i++) ports[0].receive(plainFrame(BROADCAST, stationMac(0x10000 + i)));
    const table = sw.macTable();
    expect(table.filter((e) => e.port === ports[0]).length).toBe(16);
    expect(table.filter((e) => e.port !== ports[0]).map((e) => e.mac)).toEqual([
      '02:00:00:00:00:0b',
      '02:00:00:00:00:0c',
    ]);
    expect(sw.macCount).toBe(18);
  });

  it('when the whole table is full, a new port is refused learning instead of evicting live entries; expired ones make room', () => {
    const { sw, ports, advance } = rig({ maxMacs: 8, maxMacsPerPort: 8, ageingMs: 1_000 }, [
      access(10),
      access(10),
    ]);
    for (let i = 0; i < 8; i++) ports[0].receive(plainFrame(BROADCAST, stationMac(100 + i)));
    ports[1].receive(plainFrame(BROADCAST, stationMac(7)));
    expect(ports[1].counters.learnRefused).toBe(1);
    expect(sw.macTable().every((e) => e.port === ports[0])).toBe(true);
    advance(1_000);
    ports[1].receive(plainFrame(BROADCAST, stationMac(7)));
    expect(sw.macTable().map((e) => [e.mac, e.port.name])).toEqual([['02:00:00:00:00:07', 'p1']]);
  });

  it('a MAC that moves port is re-learned on the new port and the move counted', () => {
    const { sw, ports } = rig({}, [access(10), access(10)]);
    ports[0].receive(plainFrame(BROADCAST, stationMac(5)));
    ports[1].receive(plainFrame(BROADCAST, stationMac(5)));
    expect(sw.macTable().map((e) => e.port.name)).toEqual(['p1']);
    expect(ports[1].counters.macMoves).toBe(1);
  });

  it('never sends a frame back out of its ingress port: unicast to a MAC behind the ingress port is filtered', () => {
    const { sinks, ports } = rig({}, [access(10), access(10)]);
    ports[0].receive(plainFrame(BROADCAST, stationMac(1)));
    ports[0].receive(plainFrame(stationMac(1), stationMac(2)));
    expect(sinks[0].frames.length).toBe(0);
    expect(sinks[1].frames.length).toBe(1); // only the first broadcast
    expect(ports[0].counters.drops.filtered).toBe(1);
  });

  it('changing a port mode or removing the port forgets its addresses', () => {
    const { sw, ports } = rig({}, [access(10), access(10)]);
    ports[0].receive(plainFrame(BROADCAST, stationMac(1)));
    ports[1].receive(plainFrame(BROADCAST, stationMac(2)));
    ports[0].setMode(access(20));
    expect(sw.macTable().map((e) => e.port.name)).toEqual(['p1']);
    sw.removePort(ports[1]);
    expect(sw.macTable()).toEqual([]);
    expect(ports[1].attached).toBe(false);
    expect(sw.ports).toEqual([ports[0]]);
  });
});

describe('switch: frames it must not forward', () => {
  it('never forwards 01:80:C2:00:00:00..0F, but does forward 01:80:C2:00:00:10', () => {
    const { sinks, ports } = rig({}, [access(10), access(10)]);
    for (let last = 0; last < 16; last++)
      ports[0].receive(plainFrame(hex('0180c20000' + last.toString(16).padStart(2, '0')), stationMac(1)));
    expect(sinks[1].frames.length).toBe(0);
    expect(ports[0].counters.drops['reserved-multicast']).toBe(16);
    ports[0].receive(plainFrame(hex('0180c2000010'), stationMac(1)));
    expect(sinks[1].frames.length).toBe(1);
  });

  it('drops runts and oversize frames and counts them; MTU-sized frames pass', () => {
    const { sinks, ports } = rig({}, [access(10), { kind: 'trunk', allowed: [10] }]);
    ports[0].receive(new Uint8Array(13));
    ports[0].receive(plainFrame(BROADCAST, stationMac(1), ETH_MAX_UNTAGGED_FRAME - 14 + 1));
    ports[0].receive(plainFrame(BROADCAST, stationMac(1), ETH_MAX_UNTAGGED_FRAME - 14));
    expect(ports[0].counters.drops.runt).toBe(1);
    expect(ports[0].counters.drops.oversize).toBe(1);
    expect(sinks[1].frames.map((f) => f.length)).toEqual([ETH_MAX_TAGGED_FRAME]);
    const tagged = new Uint8Array(ETH_MAX_TAGGED_FRAME + 1);
    tagged.set(hex('ffffffffffff 020000000003 8100 000a 0800'));
    ports[1].receive(tagged);
    ports[1].receive(hex('ffffffffffff 020000000003 8100 00')); // tag cut short
    expect(ports[1].counters.drops.oversize).toBe(1);
    expect(ports[1].counters.drops.runt).toBe(1);
  });

  it('drops frames with a group or zero source address', () => {
    const { sinks, ports } = rig({}, [access(10), access(10)]);
    ports[0].receive(plainFrame(BROADCAST, hex('010000000001')));
    ports[0].receive(plainFrame(BROADCAST, hex('000000000000')));
    expect(sinks[1].frames.length).toBe(0);
    expect(ports[0].counters.drops['bad-source']).toBe(2);
  });
});

describe('switch: ports and sinks', () => {
  it('rejects VLAN 0, 4095 and out-of-range VLANs in configuration with an error that says what to use', () => {
    const sw = new EthernetSwitch();
    const sink = new RecordingSink();
    expect(() => sw.addPort({ name: 'vm1', mode: access(0), sink })).toThrow(UserError);
    expect(() => sw.addPort({ name: 'vm1', mode: access(0), sink })).toThrow(
      /VLAN 0.*priority-tagged.*1 to 4094/,
    );
    expect(() => sw.addPort({ name: 'vm1', mode: access(4095), sink })).toThrow(/VLAN 4095.*reserved/);
    expect(() => sw.addPort({ name: 'vm1', mode: access(4096), sink })).toThrow(/1 to 4094/);
    expect(() => sw.addPort({ name: 'vm1', mode: access(1.5), sink })).toThrow(/integer/);
    expect(() => sw.addPort({ name: 't', mode: { kind: 'trunk', allowed: [10, 0] }, sink })).toThrow(
      /VLAN 0/,
    );
    expect(() =>
      sw.addPort({ name: 't', mode: { kind: 'trunk', allowed: 'all', native: 4095 }, sink }),
    ).toThrow(/4095/);
    expect(sw.ports).toEqual([]);
    const trunk = sw.addPort({ name: 't', mode: { kind: 'trunk', allowed: [30, 10, 10], native: 20 }, sink });
    expect(trunk.mode).toEqual({ kind: 'trunk', allowed: [10, 20, 30], native: 20 });
  });

  it('counts a busy sink as a drop on that port without affecting the others, and never queues', () => {
    const { sinks, ports } = rig({}, [access(10), access(10), access(10)]);
    sinks[1].busy = true;
    ports[0].receive(plainFrame(BROADCAST, stationMac(1)));
    expect(ports[1].counters.drops.busy).toBe(1);
    expect(sinks[2].frames.length).toBe(1);
    sinks[1].busy = false;
    ports[0].receive(plainFrame(BROADCAST, stationMac(1)));
    expect(sinks[1].frames.length).toBe(1); // only the new one: nothing was held back
  });

  it('survives a sink that throws: that port counts a sink-error, the others still get the frame', () => {
    const sw = new EthernetSwitch();
    const bad = sw.addPort({
      name: 'bad',
      mode: access(10),
      sink: {
        deliver: () => {
          throw new Error('boom');
        },
      },
    });
    const good = new RecordingSink();
    sw.addPort({ name: 'good', mode: access(10), sink: good });
    const src = sw.addPort({ name: 'src', mode: access(10), sink: new RecordingSink() });
    src.receive(plainFrame(BROADCAST, stationMac(1)));
    expect(bad.counters.drops['sink-error']).toBe(1);
    expect(good.frames.length).toBe(1);
  });

  it('bounds sinks that answer from inside deliver: two echoing sinks stop at MAX_FORWARDING_DEPTH', () => {
    const sw = new EthernetSwitch();
    const echo = (mac: number): PortSink & { port?: ReturnType<EthernetSwitch['addPort']>; got: number } => {
      const sink = {
        got: 0,
        port: undefined as ReturnType<EthernetSwitch['addPort']> | undefined,
        deliver(frame: Uint8Array) {
          sink.got++;
          sink.port?.receive(plainFrame(BROADCAST, stationMac(mac), frame.length - 14));
          return true;
        },
      };
      return sink;
    };
    const s1 = echo(1);
    const s2 = echo(2);
    s1.port = sw.addPort({ name: 'e1', mode: access(10), sink: s1 });
    s2.port = sw.addPort({ name: 'e2', mode: access(10), sink: s2 });
    s1.port.receive(plainFrame(BROADCAST, stationMac(1)));
    expect(s1.got + s2.got).toBe(MAX_FORWARDING_DEPTH);
    expect(s1.port.counters.drops.reentrancy + s2.port.counters.drops.reentrancy).toBe(1);
  });

  it('makes no copy where no tag changes: every untagged receiver gets the ingress array, trunks share one tagged copy', () => {
    const { sinks, ports } = rig({}, [
      access(10),
      access(10),
      { kind: 'trunk', allowed: [10] },
      { kind: 'trunk', allowed: 'all' },
    ]);
    const frame = plainFrame(BROADCAST, stationMac(1));
    ports[0].receive(frame);
    expect(sinks[1].lent[0]).toBe(frame);
    expect(sinks[2].lent[0]).toBe(sinks[3].lent[0]);
    expect(sinks[2].lent[0]).not.toBe(frame);
    expect(sinks[2].frames[0]).toEqual(sinks[3].frames[0]);
  });

  it('builds retagged forms in buffers lent per forwarding depth: a sink that sends meanwhile does not change what later ports get', () => {
    const sw = new EthernetSwitch();
    const late = [new RecordingSink(), new RecordingSink()];
    const trunk = { kind: 'trunk', allowed: [10, 20] } as const;
    const replyFrom = sw.addPort({ name: 'replier', mode: trunk, sink: new RecordingSink() });
    const reply = hex('ffffffffffff 020000000009 8100 0014 0800 aabbccdd'); // VLAN 20, other bytes
    let replied = 0;
    // The first access port answers from inside deliver (as the DHCP server does): a nested forward.
    const replier: PortSink = {
      deliver: () => {
        if (replied++ === 0) replyFrom.receive(reply);
        return true;
      },
    };
    const ingress = sw.addPort({ name: 'in', mode: trunk, sink: new RecordingSink() });
    sw.addPort({ name: 'first', mode: access(10), sink: replier });
    late.forEach((sink, i) => sw.addPort({ name: `late${i}`, mode: access(10), sink }));
    const vlan20 = new RecordingSink();
    sw.addPort({ name: 'vlan20', mode: access(20), sink: vlan20 });
    const untagged = plainFrame(BROADCAST, stationMac(1));
    const tagged = hex('ffffffffffff 020000000001 8100 000a 0800');
    const frame = new Uint8Array(tagged.length + untagged.length - 14);
    frame.set(tagged);
    frame.set(untagged.subarray(14), tagged.length);
    ingress.receive(frame);
    expect(replied).toBe(1);
    for (const sink of late) expect(sink.frames).toEqual([untagged]);
    expect(vlan20.frames).toEqual([hex('ffffffffffff 020000000009 0800 aabbccdd')]);
    // The next frame at the same depth reuses the buffer the first one was lent in.
    const second = plainFrame(BROADCAST, stationMac(2));
    const secondTagged = new Uint8Array(frame.length);
    secondTagged.set(frame);
    secondTagged.set(stationMac(2), 6);
    ingress.receive(secondTagged);
    expect(late[0].lent[1].buffer).toBe(late[0].lent[0].buffer);
    expect(late[0].frames[1]).toEqual(second);
    expect(late[0].frames[0]).toEqual(untagged);
  });

  it('counts rx/tx frames and bytes per port with each side its own tagging', () => {
    const { ports } = rig({}, [access(10), { kind: 'trunk', allowed: [10] }]);
    ports[0].receive(plainFrame(BROADCAST, stationMac(1), 50));
    expect(ports[0].counters).toMatchObject({ rxFrames: 1, rxBytes: 64, txFrames: 0, txBytes: 0 });
    expect(ports[1].counters).toMatchObject({ rxFrames: 0, rxBytes: 0, txFrames: 1, txBytes: 68 });
  });

  it('calls capture hooks with rx frames as received and tx frames as delivered, until unsubscribed', () => {
    const { ports } = rig({}, [access(10), { kind: 'trunk', allowed: [10] }]);
    const seen: [string, number, number][] = [];
    const stop = ports[1].capture((frame, direction, timeMs) => seen.push([direction, frame.length, timeMs]));
    ports[0].receive(plainFrame(BROADCAST, stationMac(1), 50));
    ports[1].receive(hex('ffffffffffff 020000000002 8100 000a 0800 0000'));
    stop();
    ports[0].receive(plainFrame(BROADCAST, stationMac(1), 50));
    expect(seen).toEqual([
      ['tx', 68, 1_000],
      ['rx', 20, 1_000],
    ]);
  });
});
