import { describe, expect, it } from 'vitest';
import { EthernetSwitch } from '../../../src/net/switch.ts';
import { PcapWriter, capturePort, parsePcap } from '../../../src/net/pcap.ts';
import { RecordingSink, hex, plainFrame, stationMac } from './net-test-helpers.ts';

describe('pcap writer', () => {
  it('writes the classic little-endian file header: magic, version 2.4, snaplen, LINKTYPE_ETHERNET', () => {
    const bytes = new PcapWriter({ snapLength: 65535 }).bytes();
    expect(bytes).toEqual(hex('d4c3b2a1 0200 0400 00000000 00000000 ffff0000 01000000'));
  });

  it('lays out each record as seconds, microseconds, captured and original length, then the bytes', () => {
    const writer = new PcapWriter();
    writer.add(hex('ffffffffffff 020000000001 0800 aabb'), 1_700_000_000_123.456);
    const bytes = writer.bytes();
    expect(bytes.length).toBe(24 + 16 + 16);
    expect(bytes.subarray(24, 40)).toEqual(
      new Uint8Array([
        ...[0x00, 0xf1, 0x53, 0x65], // 1_700_000_000 = 0x6553f100
        ...[0x40, 0xe2, 0x01, 0x00], // 123_456 us = 0x0001e240
        ...[16, 0, 0, 0],
        ...[16, 0, 0, 0],
      ]),
    );
    expect(bytes.subarray(40)).toEqual(hex('ffffffffffff 020000000001 0800 aabb'));
  });

  it('cuts frames to the snap length but records their original length', () => {
    const writer = new PcapWriter({ snapLength: 20, clock: () => 0 });
    writer.add(plainFrame(hex('ffffffffffff'), stationMac(1), 100));
    const file = parsePcap(writer.bytes());
    expect(file.records[0].data.length).toBe(20);
    expect(file.records[0].originalLength).toBe(114);
  });

  it('stops at maxBytes and counts what it dropped', () => {
    const writer = new PcapWriter({ maxBytes: 24 + 2 * (16 + 60), clock: () => 0 });
    for (let i = 0; i < 5; i++) writer.add(plainFrame(hex('ffffffffffff'), stationMac(1), 46));
    expect(writer.records).toBe(2);
    expect(writer.dropped).toBe(3);
    expect(writer.bytes().length).toBe(writer.size);
  });
});

describe('pcap parser', () => {
  it('round-trips a capture of a switch port in both directions with timestamps', () => {
    let wall = 1_000_000;
    const sw = new EthernetSwitch();
    const a = sw.addPort({ name: 'a', mode: { kind: 'access', vlan: 10 }, sink: new RecordingSink() });
    const b = sw.addPort({ name: 'b', mode: { kind: 'trunk', allowed: [10] }, sink: new RecordingSink() });
    const writer = new PcapWriter({ clock: () => (wall += 1.5) });
    const stop = capturePort(b, writer);
    a.receive(plainFrame(hex('ffffffffffff'), stationMac(1), 46));
    b.receive(hex('020000000001 020000000002 8100 000a 0800 0102'));
    stop();
    a.receive(plainFrame(hex('ffffffffffff'), stationMac(1), 46));
    const file = parsePcap(writer.bytes());
    expect(file).toMatchObject({
      littleEndian: true,
      nanoseconds: false,
      versionMajor: 2,
      versionMinor: 4,
      linkType: 1,
    });
    expect(file.records.map((r) => [r.seconds, r.fraction, r.data.length])).toEqual([
      [1000, 1_500, 64],
      [1000, 3_000, 20],
    ]);
    expect(file.records[0].data.subarray(12, 16)).toEqual(hex('8100000a'));
  });

  it('reads big-endian and nanosecond files', () => {
    const file = parsePcap(
      hex(
        'a1b23c4d 0002 0004 00000000 00000000 0000ffff 00000001' + '00000005 3b9ac9ff 00000002 00000002 abcd',
      ),
    );
    expect(file).toMatchObject({ littleEndian: false, nanoseconds: true, snapLength: 65535, linkType: 1 });
    expect(file.records).toMatchObject([{ seconds: 5, fraction: 999_999_999, originalLength: 2 }]);
  });

  it('rejects bad magic, truncated records and lengths beyond the snap length', () => {
    const good = new PcapWriter({ snapLength: 100, clock: () => 0 });
    good.add(new Uint8Array(30));
    const bytes = good.bytes();
    expect(() => parsePcap(bytes.subarray(0, 20))).toThrow(/file header/);
    expect(() => parsePcap(new Uint8Array(24))).toThrow(/magic/);
    expect(() => parsePcap(bytes.subarray(0, 30))).toThrow(/record header/);
    expect(() => parsePcap(bytes.subarray(0, bytes.length - 1))).toThrow(/record data/);
    const tooLong = bytes.slice();
    tooLong[24 + 8] = 200;
    tooLong[24 + 12] = 200;
    expect(() => parsePcap(tooLong)).toThrow(/captured length/);
  });
});
