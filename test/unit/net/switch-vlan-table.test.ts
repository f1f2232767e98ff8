/**
 * The exhaustive table: every ingress port (each mode) x every tag form x VLAN, against the explicit egress
 * set of each VLAN. Frames are broadcast, so every port of the VLAN must get each one exactly once.
 */
import { describe, expect, it } from 'vitest';
import { EthernetSwitch } from '../../../src/net/switch.ts';
import type { DropReason, PortConfig, SwitchPort } from '../../../src/net/switch.ts';
import { RecordingSink, hex, plainFrame } from './net-test-helpers.ts';

const PORTS: Record<string, Omit<PortConfig, 'sink' | 'name'>> = {
  A: { mode: { kind: 'access', vlan: 10 } },
  B: { mode: { kind: 'access', vlan: 10 } },
  C: { mode: { kind: 'access', vlan: 20 } },
  T1: { mode: { kind: 'trunk', allowed: [10, 20, 30], native: 10 } },
  T2: { mode: { kind: 'trunk', allowed: [10, 20] } },
  T3: { mode: { kind: 'trunk', allowed: 'all', native: 30 } },
  U: { mode: { kind: 'trunk', allowed: 'all' }, role: 'uplink' },
  U2: { mode: { kind: 'trunk', allowed: [10, 20] }, role: 'uplink' },
};
type PortName = keyof typeof PORTS;

/** VLAN -> port -> how the frame leaves it ('u' untagged, 't' tagged with the VLAN). Written out, not derived. */
const EGRESS: Record<number, Partial<Record<PortName, 'u' | 't'>>> = {
  10: { A: 'u', B: 'u', T1: 'u', T2: 't', T3: 't', U: 't', U2: 't' },
  20: { C: 'u', T1: 't', T2: 't', T3: 't', U: 't', U2: 't' },
  30: { T1: 't', T3: 'u', U: 't' },
  40: { T3: 't', U: 't' },
};

/** Tag forms on ingress: the bytes that replace the EtherType slot (0800 follows). PCP 5 where tagged. */
const TAGS = {
  none: '',
  prio0: '8100 a000',
  vid10: '8100 a00a',
  vid20: '8100 a014',
  vid30: '8100 a01e',
  vid40: '8100 a028',
  vid4095: '8100 afff',
  stag10: '88a8 a00a',
  legacyStag10: '9100 a00a',
  double10over20: '8100 a00a 8100 a014',
  prio0over20: '8100 a000 8100 a014',
} as const;
type TagName = keyof typeof TAGS;

const ACCESS_ROW = (vlan: number): Record<TagName, number | DropReason> => ({
  none: vlan,
  prio0: 'tagged-on-access',
  vid10: 'tagged-on-access',
  vid20: 'tagged-on-access',
  vid30: 'tagged-on-access',
  vid40: 'tagged-on-access',
  vid4095: 'tagged-on-access',
  stag10: 'tagged-on-access',
  legacyStag10: 'tagged-on-access',
  double10over20: 'tagged-on-access',
  prio0over20: 'tagged-on-access',
});
const STACKED = {
  stag10: 'stacked-tag',
  legacyStag10: 'stacked-tag',
  double10over20: 'stacked-tag',
  prio0over20: 'stacked-tag',
} as const;

/** Ingress port x tag -> the VLAN the frame is classified into, or the drop reason. Written out. */
const CLASSIFY: Record<PortName, Record<TagName, number | DropReason>> = {
  A: ACCESS_ROW(10),
  B: ACCESS_ROW(10),
  C: ACCESS_ROW(20),
  T1: {
    none: 10,
    prio0: 10,
    vid10: 10,
    vid20: 20,
    vid30: 30,
    vid40: 'vlan-not-allowed',
    vid4095: 'reserved-vid',
    ...STACKED,
  },
  T2: {
    none: 'untagged-not-allowed',
    prio0: 'untagged-not-allowed',
    vid10: 10,
    vid20: 20,
    vid30: 'vlan-not-allowed',
    vid40: 'vlan-not-allowed',
    vid4095: 'reserved-vid',
    ...STACKED,
    prio0over20: 'untagged-not-allowed', // no native VLAN: refused before the inner tag is looked at
  },
  T3: {
    none: 30,
    prio0: 30,
    vid10: 10,
    vid20: 20,
    vid30: 30,
    vid40: 40,
    vid4095: 'reserved-vid',
    ...STACKED,
  },
  U: {
    none: 'untagged-not-allowed',
    prio0: 'untagged-not-allowed',
    vid10: 10,
    vid20: 20,
    vid30: 30,
    vid40: 40,
    vid4095: 'reserved-vid',
    ...STACKED,
    prio0over20: 'untagged-not-allowed', // no native VLAN: refused before the inner tag is looked at
  },
  U2: {
    none: 'untagged-not-allowed',
    prio0: 'untagged-not-allowed',
    vid10: 10,
    vid20: 20,
    vid30: 'vlan-not-allowed',
    vid40: 'vlan-not-allowed',
    vid4095: 'reserved-vid',
    ...STACKED,
    prio0over20: 'untagged-not-allowed', // no native VLAN: refused before the inner tag is looked at
  },
};

const SRC = hex('020000000077');
const BODY = plainFrame(hex('ffffffffffff'), SRC, 50); // untagged reference frame

function ingressFrame(tag: TagName): Uint8Array {
  const tagBytes = hex(TAGS[tag]);
  const frame = new Uint8Array(BODY.length + tagBytes.length);
  frame.set(BODY.subarray(0, 12), 0);
  frame.set(tagBytes, 12);
  frame.set(BODY.subarray(12), 12 + tagBytes.length);
  return frame;
}

function setup() {
  const sw = new EthernetSwitch({ clock: () => 0 });
  const ports = {} as Record<PortName, { port: SwitchPort; sink: RecordingSink }>;
  for (const [name, config] of Object.entries(PORTS) as [PortName, (typeof PORTS)[PortName]][]) {
    const sink = new RecordingSink();
    ports[name] = { port: sw.addPort({ ...config, name, sink }), sink };
  }
  return { sw, ports };
}

const cases: [PortName, TagName][] = [];
for (const port of Object.keys(PORTS) as PortName[])
  for (const tag of Object.keys(TAGS) as TagName[]) cases.push([port, tag]);

describe('switch: ingress mode x tag x VLAN -> egress ports and tags', () => {
  it.each(cases)('from %s with tag %s', (ingressName, tag) => {
    const { ports } = setup();
    const ingress = ports[ingressName];
    ingress.port.receive(ingressFrame(tag));
    const expected = CLASSIFY[ingressName][tag];
    const counters = ingress.port.counters;
    expect(counters.rxFrames).toBe(1);

    if (typeof expected === 'string') {
      expect(counters.drops[expected]).toBe(1);
      for (const { sink } of Object.values(ports)) expect(sink.frames).toEqual([]);
      return;
    }
    const fromUplink = PORTS[ingressName].role === 'uplink';
    const ingressPcp = tag === 'none' ? 0 : 5;
    for (const [name, { sink }] of Object.entries(ports) as [PortName, { sink: RecordingSink }][]) {
      let how = name === ingressName ? undefined : EGRESS[expected][name];
      if (fromUplink && PORTS[name].role === 'uplink') how = undefined; // split horizon
      if (how === undefined) {
        expect(sink.frames, `${name} must not get the frame`).toEqual([]);
        continue;
      }
      expect(sink.frames.length, `${name} gets it exactly once`).toBe(1);
      const out = sink.frames[0];
      if (how === 'u') {
        expect(out, `${name} untagged`).toEqual(BODY);
      } else {
        expect(out.length).toBe(BODY.length + 4);
        expect(out.subarray(0, 12)).toEqual(BODY.subarray(0, 12));
        expect((out[12] << 8) | out[13]).toBe(0x8100);
        const tci = (out[14] << 8) | out[15];
        expect(tci & 0xfff, `${name} VID`).toBe(expected);
        expect(tci >>> 13, `${name} PCP kept`).toBe(ingressPcp);
        expect(out.subarray(16)).toEqual(BODY.subarray(12));
      }
    }
  });
});
