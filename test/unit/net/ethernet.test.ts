import { describe, expect, it } from 'vitest';
import {
  ETHERTYPE_QINQ,
  ETHERTYPE_VLAN,
  MAX_PARSED_TAGS,
  buildFrame,
  decodeTci,
  formatMac,
  formatMacKey,
  isBroadcastMacAt,
  isGroupMacAt,
  isReservedMulticastAt,
  macKeyAt,
  makeTci,
  parseEthernet,
  parseMac,
  popVlanTag,
  pushVlanTag,
} from '../../../src/net/ethernet.ts';
import { hex } from './net-test-helpers.ts';

describe('MAC addresses', () => {
  it('formats and parses colon and dash forms, and rejects anything else', () => {
    const mac = hex('0a1b2c3d4e5f');
    expect(formatMac(mac)).toBe('0a:1b:2c:3d:4e:5f');
    expect(parseMac('0A:1b:2c:3d:4e:5f')).toEqual(mac);
    expect(parseMac('0a-1b-2c-3d-4e-5f')).toEqual(mac);
    for (const bad of [
      '',
      '0a:1b:2c:3d:4e',
      '0a:1b:2c:3d:4e:5f:00',
      '0a:1b-2c:3d:4e:5f',
      'zz:1b:2c:3d:4e:5f',
      '0a1b2c3d4e5f',
    ]) {
      expect(parseMac(bad)).toBeNull();
    }
  });

  it('keys a MAC exactly as a 48-bit integer and formats the key back', () => {
    const mac = hex('ffffffffffff');
    expect(macKeyAt(mac, 0)).toBe(2 ** 48 - 1);
    expect(formatMacKey(macKeyAt(hex('020000abcdef'), 0))).toBe('02:00:00:ab:cd:ef');
  });

  it('classifies group, broadcast and the 01:80:C2:00:00:0x reserved block', () => {
    expect(isGroupMacAt(hex('010000000000'), 0)).toBe(true);
    expect(isGroupMacAt(hex('020000000000'), 0)).toBe(false);
    expect(isBroadcastMacAt(hex('ffffffffffff'), 0)).toBe(true);
    expect(isBroadcastMacAt(hex('fffffffffffe'), 0)).toBe(false);
    for (let last = 0; last < 0x10; last++) {
      expect(isReservedMulticastAt(hex('0180c20000' + last.toString(16).padStart(2, '0')), 0)).toBe(true);
    }
    expect(isReservedMulticastAt(hex('0180c2000010'), 0)).toBe(false);
    expect(isReservedMulticastAt(hex('0180c2000100'), 0)).toBe(false);
  });
});

describe('802.1Q tags', () => {
  it('packs PCP, DEI and VID into a TCI as IEEE 802.1Q clause 9.6 lays them out', () => {
    expect(makeTci(10, 5, true)).toBe(0b101_1_000000001010);
    expect(decodeTci(ETHERTYPE_VLAN, 0xb00a)).toEqual({ tpid: ETHERTYPE_VLAN, pcp: 5, dei: true, vid: 10 });
  });

  it('parses untagged, single, S+C stacked and double-C frames', () => {
    const dst = hex('ffffffffffff');
    const src = hex('020000000001');
    const payload = hex('45000014');
    const untagged = buildFrame({ dst, src, etherType: 0x0800, payload });
    expect(parseEthernet(untagged)).toEqual({
      tags: [],
      truncated: false,
      etherType: 0x0800,
      payloadOffset: 14,
    });

    const stacked = buildFrame({
      dst,
      src,
      tags: [
        { tpid: ETHERTYPE_QINQ, vid: 100 },
        { vid: 20, pcp: 3 },
      ],
      etherType: 0x0800,
      payload,
    });
    expect(stacked.subarray(12, 22)).toEqual(hex('88a8 0064 8100 6014 0800'));
    const parsed = parseEthernet(stacked);
    expect(parsed.tags.map((t) => [t.tpid, t.vid, t.pcp])).toEqual([
      [ETHERTYPE_QINQ, 100, 0],
      [ETHERTYPE_VLAN, 20, 3],
    ]);
    expect(parsed.payloadOffset).toBe(22);
  });

  it('stops after MAX_PARSED_TAGS tags and when a tag runs past the end', () => {
    const deep = buildFrame({
      dst: hex('ffffffffffff'),
      src: hex('020000000001'),
      tags: Array.from({ length: MAX_PARSED_TAGS + 1 }, () => ({ vid: 1 })),
      etherType: 0x0800,
      payload: new Uint8Array(0),
    });
    expect(parseEthernet(deep).truncated).toBe(true);
    expect(parseEthernet(deep).tags.length).toBe(MAX_PARSED_TAGS);
    expect(parseEthernet(hex('ffffffffffff 020000000001 8100 00')).truncated).toBe(true);
  });

  it('inserts and removes an outer tag without touching the rest', () => {
    const frame = hex('ffffffffffff 020000000001 0806 0001 0800');
    const tagged = pushVlanTag(frame, makeTci(42, 1));
    expect(tagged).toEqual(hex('ffffffffffff 020000000001 8100 202a 0806 0001 0800'));
    expect(popVlanTag(tagged)).toEqual(frame);
  });
});
