import { describe, expect, it } from 'vitest';
import type { FrameOffload, OffloadSupport } from '../../../src/common/frame-offload.ts';
import { FINISHED } from '../../../src/net/offload.ts';
import { EthernetSwitch, type PortMode, type PortSink } from '../../../src/net/switch.ts';
import { tcpChecksumOk, tcpFrame } from './net-test-helpers.ts';

/** A sink that records frames with the offload it was handed, and takes the offloads it is told to. */
class OffloadSink implements PortSink {
  readonly got: { frame: Uint8Array; offload: FrameOffload | undefined }[] = [];
  constructor(private readonly support?: OffloadSupport) {}
  deliver(frame: Uint8Array, offload?: FrameOffload): boolean {
    this.got.push({ frame, offload });
    return true;
  }
  offloads(): OffloadSupport {
    return this.support ?? { csum: false, tcp4: false, tcp6: false };
  }
}

const ALL: OffloadSupport = { csum: true, tcp4: true, tcp6: true };
const CSUM_ONLY: OffloadSupport = { csum: true, tcp4: false, tcp6: false };
const ACCESS_10: PortMode = { kind: 'access', vlan: 10 };
const TRUNK_10: PortMode = { kind: 'trunk', allowed: [10] };

function network(receivers: { mode: PortMode; support?: OffloadSupport; plain?: boolean }[]) {
  const sw = new EthernetSwitch();
  const sender = sw.addPort({ name: 'sender', mode: ACCESS_10, sink: new OffloadSink() });
  const sinks = receivers.map((r, i) => {
    const sink = new OffloadSink(r.support);
    const plainSink: PortSink = { deliver: (frame, offload) => sink.deliver(frame, offload) };
    sw.addPort({ name: `rx${i}`, mode: r.mode, sink: r.plain ? plainSink : sink });
    return sink;
  });
  return { sw, sender, sinks };
}

describe('switch: frames with offloads', () => {
  const mss = 1448;
  const superFrame = tcpFrame({ payload: 3 * mss + 10 });
  const offload: FrameOffload = {
    ...FINISHED,
    csumStart: superFrame.l4,
    csumOffset: 16,
    gso: 'tcp4',
    gsoSize: mss,
  };

  it('hands a super-frame as it is to a port that takes TSO, and segments it for the others', () => {
    const { sender, sinks } = network([
      { mode: ACCESS_10, support: ALL },
      { mode: ACCESS_10, support: CSUM_ONLY },
      { mode: ACCESS_10 },
      { mode: ACCESS_10, plain: true },
    ]);
    sender.receive(superFrame.frame, offload);
    const [tso, csum, none, plain] = sinks;
    expect(tso.got).toHaveLength(1);
    expect(tso.got[0].frame).toBe(superFrame.frame);
    expect(tso.got[0].offload).toEqual(offload);
    for (const sink of [csum, none, plain]) {
      expect(sink.got).toHaveLength(4);
      for (const { frame } of sink.got)
        expect(tcpChecksumOk(frame, superFrame.ip, superFrame.l4, false)).toBe(true);
    }
    // The segments are made once and shared by every port that needs them.
    expect(csum.got[0].frame).toBe(none.got[0].frame);
    // A receiver that takes checksum offload is told the switch computed the checksums.
    expect(csum.got.every((g) => g.offload?.dataValid === true && g.offload.csumStart === -1)).toBe(true);
    expect(none.got.every((g) => g.offload === undefined)).toBe(true);
    expect(plain.got.every((g) => g.offload === undefined)).toBe(true);
  });

  it('completes a pending checksum only for receivers that do not take it', () => {
    const small = tcpFrame({ payload: 100 });
    const partial: FrameOffload = { ...FINISHED, csumStart: small.l4, csumOffset: 16 };
    const { sender, sinks } = network([{ mode: ACCESS_10, support: CSUM_ONLY }, { mode: ACCESS_10 }]);
    sender.receive(small.frame, partial);
    expect(sinks[0].got[0]).toEqual({ frame: small.frame, offload: partial });
    expect(sinks[1].got[0].offload).toBeUndefined();
    expect(tcpChecksumOk(sinks[1].got[0].frame, small.ip, small.l4, false)).toBe(true);
  });

  it('moves the checksum offsets with the tag a trunk adds, and segments the tagged frame right', () => {
    const { sender, sinks } = network([{ mode: TRUNK_10, support: ALL }, { mode: TRUNK_10 }]);
    sender.receive(superFrame.frame, offload);
    const [tso, none] = sinks;
    expect(tso.got[0].offload?.csumStart).toBe(superFrame.l4 + 4);
    expect(tso.got[0].frame[12]).toBe(0x81);
    expect(none.got).toHaveLength(4);
    for (const { frame } of none.got) {
      expect(frame[12]).toBe(0x81);
      expect(tcpChecksumOk(frame, superFrame.ip + 4, superFrame.l4 + 4, false)).toBe(true);
    }
  });

  it('moves them back when a tagged super-frame leaves an access port untagged', () => {
    const sw = new EthernetSwitch();
    const trunk = sw.addPort({ name: 'trunk', mode: TRUNK_10, sink: new OffloadSink() });
    const sink = new OffloadSink(ALL);
    sw.addPort({ name: 'access', mode: ACCESS_10, sink });
    const tagged = tcpFrame({ payload: 2 * mss, vlan: 10 });
    trunk.receive(tagged.frame, { ...offload, csumStart: tagged.l4 });
    expect(sink.got[0].offload?.csumStart).toBe(tagged.l4 - 4);
    expect(sink.got[0].frame).toEqual(tcpFrame({ payload: 2 * mss }).frame);
  });

  it('drops a frame whose offload does not match its headers, counted as bad-offload', () => {
    const { sw, sender, sinks } = network([{ mode: ACCESS_10, support: ALL }]);
    sender.receive(superFrame.frame, { ...offload, csumStart: superFrame.l4 + 2 });
    expect(sinks[0].got).toHaveLength(0);
    expect(sw.ports[0].counters.drops['bad-offload']).toBe(1);
  });

  it('lets only super-frames exceed the MTU', () => {
    const { sw, sender, sinks } = network([{ mode: ACCESS_10, support: ALL }]);
    sender.receive(superFrame.frame);
    sender.receive(superFrame.frame, { ...FINISHED, csumStart: superFrame.l4, csumOffset: 16 });
    expect(sinks[0].got).toHaveLength(0);
    expect(sw.ports[0].counters.drops.oversize).toBe(2);
  });

  it('captures finished frames, as a wire would carry them', () => {
    const { sw, sender } = network([{ mode: ACCESS_10, support: ALL }]);
    const seen: { direction: string; frame: Uint8Array }[] = [];
    sw.ports[0].capture((frame, direction) => seen.push({ frame, direction }));
    sw.ports[1].capture((frame, direction) => seen.push({ frame, direction }));
    sender.receive(superFrame.frame, offload);
    expect(seen.filter((s) => s.direction === 'rx')).toHaveLength(4);
    expect(seen.filter((s) => s.direction === 'tx')).toHaveLength(4);
    for (const { frame } of seen)
      expect(tcpChecksumOk(frame, superFrame.ip, superFrame.l4, false)).toBe(true);
  });

  it('counts each segment a port sent', () => {
    const { sw, sender } = network([{ mode: ACCESS_10 }]);
    sender.receive(superFrame.frame, offload);
    expect(sw.ports[0].counters.rxFrames).toBe(1);
    expect(sw.ports[1].counters.txFrames).toBe(4);
  });
});
