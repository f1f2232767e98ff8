import { describe, expect, it } from 'vitest';
import type { FrameOffload } from '../../../src/common/frame-offload.ts';
import { ETH_MAX_TAGGED_FRAME } from '../../../src/net/ethernet.ts';
import {
  FINISHED,
  GSO_MAX_FRAME,
  GSO_MIN_SEGMENT,
  acceptsOffload,
  checkOffload,
  finishFrame,
  shiftOffload,
} from '../../../src/net/offload.ts';
import {
  TCP_ACK,
  TCP_CWR,
  TCP_FIN,
  TCP_PSH,
  onesSum,
  put16,
  tcpChecksumOk,
  tcpFrame,
  u16,
  u32,
} from './net-test-helpers.ts';
import { prng } from '../../helpers/prng.ts';

function gsoOffload(l4: number, v6: boolean, mss: number): FrameOffload {
  return { csumStart: l4, csumOffset: 16, gso: v6 ? 'tcp6' : 'tcp4', gsoSize: mss, dataValid: false };
}

describe('offload: completing a partial checksum', () => {
  it('fills in the TCP checksum a receiver verifies, and leaves the input untouched', () => {
    const { frame, ip, l4 } = tcpFrame({ payload: 333 });
    const before = frame.slice();
    const offload = checkOffload(frame, { ...FINISHED, csumStart: l4, csumOffset: 16 });
    expect(typeof offload).toBe('object');
    const [done] = finishFrame(frame, offload as FrameOffload);
    expect(frame).toEqual(before);
    expect(done.length).toBe(frame.length);
    expect(tcpChecksumOk(done, ip, l4, false)).toBe(true);
    // Only the checksum field changed.
    const changed = [...done].flatMap((b, i) => (b !== frame[i] ? [i] : []));
    expect(changed.every((i) => i === l4 + 16 || i === l4 + 17)).toBe(true);
  });

  it('passes a frame that needs nothing through as the same array', () => {
    const { frame } = tcpFrame({ payload: 10 });
    expect(finishFrame(frame, FINISHED)[0]).toBe(frame);
  });
});

describe('offload: TCP segmentation', () => {
  for (const v6 of [false, true]) {
    for (const vlan of [undefined, 10]) {
      it(`cuts a TCP/IPv${v6 ? 6 : 4}${vlan ? ' tagged' : ''} super-frame into MSS segments with correct headers`, () => {
        const mss = 1448 - (v6 ? 20 : 0);
        const payload = 5 * mss + 77;
        const flags = TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR;
        const { frame, ip, l4, headerEnd } = tcpFrame({ v6, vlan, payload, flags, options: 12 });
        const checked = checkOffload(frame, gsoOffload(l4, v6, mss - 12));
        expect(typeof checked).toBe('object');
        const segments = finishFrame(frame, checked as FrameOffload);
        const segmentPayload = mss - 12;
        expect(segments).toHaveLength(Math.ceil(payload / segmentPayload));
        const data: number[] = [];
        segments.forEach((segment, i) => {
          expect(segment.length).toBeLessThanOrEqual(vlan ? ETH_MAX_TAGGED_FRAME : ETH_MAX_TAGGED_FRAME - 4);
          expect(segment.subarray(0, ip)).toEqual(frame.subarray(0, ip));
          if (v6) {
            expect(u16(segment, ip + 4)).toBe(segment.length - ip - 40);
          } else {
            expect(u16(segment, ip + 2)).toBe(segment.length - ip);
            expect(u16(segment, ip + 4)).toBe((0x1234 + i) & 0xffff);
            expect(onesSum(segment, ip, ip + 20)).toBe(0xffff);
          }
          expect(u32(segment, l4 + 4)).toBe((0xfffff000 + i * segmentPayload) >>> 0);
          const last = i === segments.length - 1;
          const expectedFlags = TCP_ACK | (last ? TCP_PSH | TCP_FIN : 0) | (i === 0 ? TCP_CWR : 0);
          expect(segment[l4 + 13]).toBe(expectedFlags);
          expect(tcpChecksumOk(segment, ip, l4, v6)).toBe(true);
          data.push(...segment.subarray(headerEnd));
        });
        expect(Uint8Array.from(data)).toEqual(frame.subarray(headerEnd));
      });
    }
  }

  it('moves offsets with a VLAN tag, and a shifted offload still segments the re-tagged frame', () => {
    const plain = tcpFrame({ payload: 4000 });
    const offload = checkOffload(plain.frame, gsoOffload(plain.l4, false, 1000)) as FrameOffload;
    const tagged = tcpFrame({ payload: 4000, vlan: 7 });
    const shifted = shiftOffload(offload, 4);
    expect(shifted.csumStart).toBe(tagged.l4);
    expect(checkOffload(tagged.frame, shifted)).toEqual(shifted);
    expect(finishFrame(tagged.frame, shifted)).toHaveLength(4);
    expect(shiftOffload(FINISHED, 4)).toBe(FINISHED);
  });
});

describe('offload: hostile requests are refused with a reason', () => {
  const v4 = tcpFrame({ payload: 3000 });
  const good = gsoOffload(v4.l4, false, 1448);
  const cases: [string, Uint8Array, FrameOffload][] = [
    ['segmentation without a pending checksum', v4.frame, { ...good, csumStart: -1 }],
    ['unknown segmentation type', v4.frame, { ...good, gso: 'udp' as never }],
    ['checksum start not the TCP header', v4.frame, { ...good, csumStart: v4.l4 + 4 }],
    ['checksum offset not the TCP checksum', v4.frame, { ...good, csumOffset: 6 }],
    ['segment size below the floor', v4.frame, { ...good, gsoSize: GSO_MIN_SEGMENT - 1 }],
    ['segments larger than the MTU', v4.frame, { ...good, gsoSize: 1461 }],
    ['IPv6 segmentation of IPv4', v4.frame, { ...good, gso: 'tcp6' }],
    ['checksum field past the end', v4.frame, { ...good, gso: 'none', csumStart: v4.frame.length - 1 }],
    ['checksum start inside the Ethernet header', v4.frame, { ...good, gso: 'none', csumStart: 4 }],
    ['fractional offsets', v4.frame, { ...good, gso: 'none', csumStart: 34.5 }],
    ['negative checksum offset', v4.frame, { ...good, gso: 'none', csumOffset: -2 }],
  ];
  const udp = tcpFrame({ payload: 3000 });
  udp.frame[udp.ip + 9] = 17;
  cases.push(['segmentation of UDP', udp.frame, good]);
  const fragment = tcpFrame({ payload: 3000 });
  put16(fragment.frame, fragment.ip + 6, 0x2000);
  cases.push(['segmentation of a fragment', fragment.frame, good]);
  const empty = tcpFrame({ payload: 0 });
  cases.push(['a super-frame without payload', empty.frame, good]);
  const badTcp = tcpFrame({ payload: 100 });
  badTcp.frame[badTcp.l4 + 12] = 0x40; // data offset 16 bytes
  cases.push(['a TCP header shorter than 20 bytes', badTcp.frame, good]);
  const truncated = tcpFrame({ payload: 0 }).frame.subarray(0, v4.l4 + 10);
  cases.push(['a truncated TCP header', truncated, good]);

  for (const [name, frame, offload] of cases) {
    it(name, () => {
      expect(typeof checkOffload(frame, offload)).toBe('string');
    });
  }

  it('accepts a frame with only the checks-done hint, and normalizes what needs nothing', () => {
    expect(checkOffload(v4.frame, { ...FINISHED, dataValid: true })).toEqual({
      ...FINISHED,
      dataValid: true,
    });
    expect(checkOffload(v4.frame, { ...FINISHED, gsoSize: 99, csumOffset: 3 })).toEqual(FINISHED);
  });

  it('never throws and never produces an oversized frame on random requests (seeded fuzz)', () => {
    const random = prng(0x0ff10ad);
    const kinds = ['none', 'tcp4', 'tcp6'] as const;
    for (let round = 0; round < 3000; round++) {
      const v6 = random() < 0.5;
      const base = tcpFrame({
        v6,
        vlan: random() < 0.3 ? 5 : undefined,
        payload: Math.floor(random() * 9000),
        options: 4 * Math.floor(random() * 4),
      });
      const frame = base.frame;
      // Corrupt a few random bytes of the headers.
      for (let k = Math.floor(random() * 3); k > 0; k--)
        frame[Math.floor(random() * base.headerEnd)] ^= 1 << (round % 8);
      const offload: FrameOffload = {
        csumStart: random() < 0.8 ? base.l4 : Math.floor(random() * 200) - 50,
        csumOffset: random() < 0.8 ? 16 : Math.floor(random() * 40),
        gso: kinds[Math.floor(random() * 3)],
        gsoSize: Math.floor(random() * 2000),
        dataValid: random() < 0.1,
      };
      const checked = checkOffload(frame, offload);
      if (typeof checked === 'string') continue;
      for (const piece of finishFrame(frame, checked)) {
        if (checked.gso !== 'none') expect(piece.length).toBeLessThanOrEqual(ETH_MAX_TAGGED_FRAME);
        else expect(piece.length).toBe(frame.length);
      }
    }
  });

  it('the largest super-frame is 64 KiB of payload behind tagged IPv6 headers', () => {
    expect(GSO_MAX_FRAME).toBe(14 + 4 + 40 + 65535);
  });
});

describe('offload: which receivers take what', () => {
  const none = { csum: false, tcp4: false, tcp6: false };
  const csum = { csum: true, tcp4: false, tcp6: false };
  const all = { csum: true, tcp4: true, tcp6: true };
  const partial: FrameOffload = { ...FINISHED, csumStart: 34, csumOffset: 16 };
  const tso4: FrameOffload = { ...partial, gso: 'tcp4', gsoSize: 1448 };
  const tso6: FrameOffload = { ...partial, gso: 'tcp6', gsoSize: 1428 };
  it('matches each offload to the receiver support it needs', () => {
    expect([none, csum, all].map((s) => acceptsOffload(s, partial))).toEqual([false, true, true]);
    expect([none, csum, all].map((s) => acceptsOffload(s, tso4))).toEqual([false, false, true]);
    expect([none, csum, all].map((s) => acceptsOffload(s, tso6))).toEqual([false, false, true]);
    expect(acceptsOffload({ csum: false, tcp4: true, tcp6: true }, tso4)).toBe(false);
    expect(acceptsOffload(none, { ...FINISHED, dataValid: true })).toBe(true);
  });
});
