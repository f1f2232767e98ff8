import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FDT_MAGIC, FdtNode, decodeFdt, encodeFdt } from '../../../src/devices/fdt.ts';

const DTC = '/usr/bin/dtc';

function sampleTree(): FdtNode {
  const root = new FdtNode('');
  root.u32('#address-cells', 2).u32('#size-cells', 2).string('compatible', 'test,board');
  const cpus = root.child('cpus');
  cpus.u32('#address-cells', 1).u32('#size-cells', 0);
  const cpu = cpus.child('cpu@0');
  cpu.u32('reg', 0).string('device_type', 'cpu');
  cpu.child('interrupt-controller').empty('interrupt-controller').u32('#interrupt-cells', 1).phandle(1);
  const soc = root.child('soc');
  soc.u32('#address-cells', 2).u32('#size-cells', 2).empty('ranges');
  soc
    .child('uart@10000000')
    .string('compatible', 'ns16550a')
    .cells('reg', [0, 0x1000_0000, 0, 0x100])
    .u32('interrupt-parent', 1)
    .u64('big', 0x1_2345_6789)
    .strings('list', ['a', 'bc', ''])
    .bytes('raw', Uint8Array.of(1, 2, 3));
  root.child('chosen').string('bootargs', 'console=ttyS0 é');
  return root;
}

describe('fdt', () => {
  it('writes a header with magic, versions, sizes and block offsets that are consistent and aligned', () => {
    const blob = encodeFdt(sampleTree(), { bootCpuId: 3 });
    const { header } = decodeFdt(blob);
    expect(header.magic).toBe(FDT_MAGIC);
    expect(header.version).toBe(17);
    expect(header.lastCompatibleVersion).toBe(16);
    expect(header.totalSize).toBe(blob.length);
    expect(header.bootCpuId).toBe(3);
    expect(header.reservationsOffset % 8).toBe(0);
    expect(header.structOffset % 4).toBe(0);
    expect(header.structSize % 4).toBe(0);
    expect(header.reservationsOffset).toBeGreaterThanOrEqual(40);
    expect(header.structOffset).toBeGreaterThanOrEqual(header.reservationsOffset + 16);
    expect(header.stringsOffset).toBe(header.structOffset + header.structSize);
    expect(header.stringsOffset + header.stringsSize).toBe(blob.length);
    expect(new DataView(blob.buffer).getUint32(0)).toBe(0xd00dfeed); // big-endian on the wire
  });

  it('round-trips nodes, property values of every kind and phandles', () => {
    const { root, reservations } = decodeFdt(encodeFdt(sampleTree()));
    expect(reservations).toEqual([]);
    expect(root.name).toBe('');
    expect(root.children.map((c) => c.name)).toEqual(['cpus', 'soc', 'chosen']);
    expect(root.getU32('#address-cells')).toBe(2);
    expect(root.getString('compatible')).toBe('test,board');
    const uart = root.find('/soc/uart@10000000');
    expect(uart?.getCells('reg')).toEqual([0, 0x1000_0000, 0, 0x100]);
    expect(uart?.getU64('big')).toBe(0x1_2345_6789);
    expect(uart?.getStrings('list')).toEqual(['a', 'bc', '']);
    expect(uart?.get('raw')).toEqual(Uint8Array.of(1, 2, 3));
    expect(root.find('soc/uart@10000000/nothing')).toBeUndefined();
    const intc = root.findByPhandle(uart?.getU32('interrupt-parent') ?? 0);
    expect(intc?.name).toBe('interrupt-controller');
    expect(intc?.get('interrupt-controller')?.length).toBe(0);
    expect(root.find('chosen')?.getString('bootargs')).toBe('console=ttyS0 é');
  });

  it('stores each property name once in the strings block', () => {
    const blob = encodeFdt(sampleTree());
    const { header } = decodeFdt(blob);
    const strings = new TextDecoder().decode(
      blob.subarray(header.stringsOffset, header.stringsOffset + header.stringsSize),
    );
    const names = strings.split('\0').slice(0, -1);
    expect(new Set(names).size).toBe(names.length);
    expect(names.filter((n) => n === '#address-cells')).toHaveLength(1);
    expect(names).toContain('phandle');
  });

  it('writes memory reservations and reads them back', () => {
    const reservations = [
      { address: 0x8000_0000, size: 0x1000 },
      { address: 0x1_0000_0000, size: 0x20 },
    ];
    const decoded = decodeFdt(encodeFdt(sampleTree(), { reservations }));
    expect(decoded.reservations).toEqual(reservations);
    expect(decoded.root.find('cpus/cpu@0')?.getU32('reg')).toBe(0);
  });

  it('a later value for a property replaces the earlier one', () => {
    const root = new FdtNode('');
    root.u32('x', 1).u32('x', 2);
    expect(decodeFdt(encodeFdt(root)).root.properties).toEqual([
      { name: 'x', value: Uint8Array.of(0, 0, 0, 2) },
    ]);
  });

  it('rejects programming errors when building', () => {
    const root = new FdtNode('');
    expect(() => root.child('a/b')).toThrow();
    expect(() => root.child('')).toThrow();
    expect(() => root.u32('x'.repeat(32), 1)).toThrow();
    expect(() => root.string('s', 'a\0b')).toThrow(RangeError);
    expect(() => root.u32('v', 2 ** 32)).toThrow(RangeError);
    expect(() => root.u64('v', -1)).toThrow(RangeError);
    expect(() => root.phandle(0)).toThrow(RangeError);
    root.child('dup');
    expect(() => root.child('dup')).toThrow();
    expect(() => encodeFdt(new FdtNode('named'))).toThrow();
  });

  describe('malformed blobs', () => {
    const good = () => encodeFdt(sampleTree());
    const setU32 = (blob: Uint8Array, offset: number, value: number) =>
      new DataView(blob.buffer, blob.byteOffset).setUint32(offset, value);

    it('are rejected with an error, never read out of bounds', () => {
      expect(() => decodeFdt(new Uint8Array(8))).toThrow(/shorter/);
      const badMagic = good();
      setU32(badMagic, 0, 0x12345678);
      expect(() => decodeFdt(badMagic)).toThrow(/magic/);
      expect(() => decodeFdt(good().subarray(0, 100))).toThrow(/truncated/);
      const hugeStruct = good();
      setU32(hugeStruct, 36, 0xffff_fff0);
      expect(() => decodeFdt(hugeStruct)).toThrow(/outside/);
      const newer = good();
      setU32(newer, 24, 18);
      expect(() => decodeFdt(newer)).toThrow(/version/);
    });

    it('truncated and corrupted structure blocks are rejected', () => {
      const blob = good();
      const { header } = decodeFdt(blob);
      const cut = blob.slice();
      setU32(cut, 36, header.structSize - 8);
      expect(() => decodeFdt(cut)).toThrow();
      const badToken = blob.slice();
      setU32(badToken, header.structOffset, 7);
      expect(() => decodeFdt(badToken)).toThrow(/token|start/);
      const deep = new FdtNode('');
      let node = deep;
      for (let i = 0; i < 100; i++) node = node.child('n');
      expect(() => decodeFdt(encodeFdt(deep))).toThrow(/deeply/);
    });
  });

  it.skipIf(!existsSync(DTC))('dtc decompiles the blob to the same tree', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabvisor-fdt-'));
    try {
      const path = join(dir, 'test.dtb');
      writeFileSync(
        path,
        encodeFdt(sampleTree(), { reservations: [{ address: 0x8000_0000, size: 0x1000 }] }),
      );
      const dts = execFileSync(DTC, ['-I', 'dtb', '-O', 'dts', path], { encoding: 'utf8' });
      expect(dts).toMatch(/\/memreserve\/\s+0x0*80000000 0x0*1000;/);
      expect(dts).toContain('compatible = "test,board";');
      expect(dts).toMatch(/uart@10000000 \{[^}]*reg = <0x0+ 0x10000000 0x0+ 0x100>;/s);
      expect(dts).toContain('list = "a\\0bc\\0";');
      expect(dts).toMatch(/phandle = <0x0*1>;/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
