import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  VIRT_CONSOLE_SLOT,
  buildVirtDeviceTree,
  virtioSlotBase,
} from '../../../src/devices/virt-device-tree.ts';
import type { VirtDeviceTreeConfig } from '../../../src/devices/virt-device-tree.ts';
import { decodeFdt } from '../../../src/devices/fdt.ts';
import type { FdtNode } from '../../../src/devices/fdt.ts';

const DTC = '/usr/bin/dtc';

function config(hartCount: number, extra: Partial<VirtDeviceTreeConfig> = {}): VirtDeviceTreeConfig {
  return {
    hartCount,
    ramBase: 0x8000_0000,
    ramSize: 128 * 1024 * 1024,
    bootargs: 'console=ttyS0 earlycon=sbi',
    ...extra,
  };
}

function build(cfg: VirtDeviceTreeConfig): FdtNode {
  return decodeFdt(buildVirtDeviceTree(cfg)).root;
}

function must(node: FdtNode | undefined): FdtNode {
  if (node === undefined) throw new Error('node missing');
  return node;
}

describe('buildVirtDeviceTree', () => {
  for (const hartCount of [1, 4]) {
    describe(`with ${hartCount} hart(s)`, () => {
      const root = build(config(hartCount));
      const plic = must(root.find('/soc/plic@c000000'));
      const plicPhandle = plic.getU32('phandle');

      it('has the virt root, chosen and memory nodes', () => {
        expect(root.getU32('#address-cells')).toBe(2);
        expect(root.getU32('#size-cells')).toBe(2);
        expect(root.getString('compatible')).toBe('riscv-virtio');
        expect(root.getString('model')).toBe('riscv-virtio,qemu');
        const chosen = must(root.find('chosen'));
        expect(chosen.getString('bootargs')).toBe('console=ttyS0 earlycon=sbi');
        expect(chosen.getString('stdout-path')).toBe('/soc/serial@10000000');
        expect(chosen.has('linux,initrd-start')).toBe(false);
        const memory = must(root.find('memory@80000000'));
        expect(memory.getString('device_type')).toBe('memory');
        expect(memory.getCells('reg')).toEqual([0, 0x8000_0000, 0, 128 * 1024 * 1024]);
      });

      it('describes each hart with its own interrupt controller', () => {
        const cpus = must(root.find('cpus'));
        expect(cpus.getU32('timebase-frequency')).toBe(10_000_000);
        expect(cpus.getU32('#address-cells')).toBe(1);
        expect(cpus.getU32('#size-cells')).toBe(0);
        expect(cpus.children.map((c) => c.name)).toEqual(
          Array.from({ length: hartCount }, (_, h) => `cpu@${h.toString(16)}`),
        );
        const phandles = new Set<number>();
        cpus.children.forEach((cpu, h) => {
          expect(cpu.getString('device_type')).toBe('cpu');
          expect(cpu.getU32('reg')).toBe(h);
          expect(cpu.getString('status')).toBe('okay');
          expect(cpu.getString('compatible')).toBe('riscv');
          expect(cpu.getString('riscv,isa')).toBe('rv32ima_zicsr_zifencei_zihintpause');
          expect(cpu.getString('riscv,isa')).not.toContain('sstc');
          expect(cpu.getString('mmu-type')).toBe('riscv,sv32');
          const intc = must(cpu.find('interrupt-controller'));
          expect(intc.getString('compatible')).toBe('riscv,cpu-intc');
          expect(intc.getU32('#interrupt-cells')).toBe(1);
          expect(intc.has('interrupt-controller')).toBe(true);
          phandles.add(intc.getU32('phandle') ?? 0);
        });
        expect(phandles.size).toBe(hartCount);
        expect(phandles.has(0)).toBe(false);
        expect(phandles.has(plicPhandle ?? 0)).toBe(false);
      });

      it('wires the CLINT to each hart: machine software (3) and timer (7)', () => {
        const clint = must(root.find('soc/clint@2000000'));
        expect(clint.getStrings('compatible')).toEqual(['sifive,clint0', 'riscv,clint0']);
        expect(clint.getCells('reg')).toEqual([0, 0x0200_0000, 0, 0x1_0000]);
        const cells = clint.getCells('interrupts-extended');
        const expected: number[] = [];
        for (let h = 0; h < hartCount; h++) {
          const intc =
            must(root.find(`cpus/cpu@${h.toString(16)}/interrupt-controller`)).getU32('phandle') ?? 0;
          expected.push(intc, 3, intc, 7);
        }
        expect(cells).toEqual(expected);
      });

      it('wires the PLIC contexts 2h = M external (11), 2h+1 = S external (9)', () => {
        expect(plic.getStrings('compatible')).toEqual(['sifive,plic-1.0.0', 'riscv,plic0']);
        expect(plic.getCells('reg')).toEqual([0, 0x0c00_0000, 0, 0x60_0000]);
        expect(plic.getU32('riscv,ndev')).toBe(95);
        expect(plic.getU32('#interrupt-cells')).toBe(1);
        expect(plic.has('interrupt-controller')).toBe(true);
        const cells = plic.getCells('interrupts-extended') ?? [];
        expect(cells.length).toBe(4 * hartCount);
        for (let h = 0; h < hartCount; h++) {
          const intc = must(root.find(`cpus/cpu@${h.toString(16)}/interrupt-controller`)).getU32('phandle');
          expect(cells.slice(4 * h, 4 * h + 4)).toEqual([intc, 11, intc, 9]);
        }
      });

      it('has the ns16550a UART on PLIC source 10', () => {
        const uart = must(root.find('soc/serial@10000000'));
        expect(uart.getString('compatible')).toBe('ns16550a');
        expect(uart.getCells('reg')).toEqual([0, 0x1000_0000, 0, 0x100]);
        expect(uart.getU32('clock-frequency')).toBe(3_686_400);
        expect(uart.getU32('interrupts')).toBe(10);
        expect(uart.getU32('interrupt-parent')).toBe(plicPhandle);
        expect(must(root.find('aliases')).getString('serial0')).toBe('/soc/serial@10000000');
      });

      it('lists the 8 virtio-mmio slots and the console slot 9, with source n at 0x10000000 + n * 0x1000', () => {
        for (let n = 1; n <= 9; n++) {
          const base = virtioSlotBase(n);
          expect(base).toBe(0x1000_0000 + n * 0x1000);
          const node = must(root.find(`soc/virtio_mmio@${base.toString(16)}`));
          expect(node.getString('compatible')).toBe('virtio,mmio');
          expect(node.getCells('reg')).toEqual([0, base, 0, 0x1000]);
          expect(node.getU32('interrupts')).toBe(n);
          expect(node.getU32('interrupt-parent')).toBe(plicPhandle);
        }
        const soc = must(root.find('soc'));
        expect(soc.getString('compatible')).toBe('simple-bus');
        expect(soc.has('ranges')).toBe(true);
        expect(soc.children.filter((c) => c.name.startsWith('virtio_mmio@'))).toHaveLength(9);
        expect(virtioSlotBase(VIRT_CONSOLE_SLOT)).toBe(0x1000_9000);
      });
    });
  }

  it('lists an initrd in /chosen as 64-bit linux,initrd-start and -end', () => {
    const root = build(config(1, { initrd: { start: 0x8600_0000, end: 0x8612_3456 } }));
    const chosen = must(root.find('chosen'));
    expect(chosen.getU64('linux,initrd-start')).toBe(0x8600_0000);
    expect(chosen.getU64('linux,initrd-end')).toBe(0x8612_3456);
  });

  it('honours the optional isa, model, stdout path and timebase, and the memory node follows the RAM', () => {
    const root = build(
      config(2, {
        isa: 'rv32imac_zicsr',
        model: 'tabvisor,virt',
        stdoutPath: '/soc/virtio_mmio@10001000',
        timebaseHz: 1_000_000,
        ramSize: 0x30_0000,
      }),
    );
    expect(root.getString('model')).toBe('tabvisor,virt');
    expect(root.find('cpus/cpu@1')?.getString('riscv,isa')).toBe('rv32imac_zicsr');
    expect(root.find('cpus')?.getU32('timebase-frequency')).toBe(1_000_000);
    expect(root.find('chosen')?.getString('stdout-path')).toBe('/soc/virtio_mmio@10001000');
    expect(root.find('memory@80000000')?.getCells('reg')).toEqual([0, 0x8000_0000, 0, 0x30_0000]);
  });

  it('rejects impossible configurations with a clear error', () => {
    expect(() => buildVirtDeviceTree(config(0))).toThrow(/hartCount/);
    expect(() => buildVirtDeviceTree(config(33))).toThrow(/hartCount/);
    expect(() => buildVirtDeviceTree(config(1, { ramSize: 0 }))).toThrow(/ramSize/);
    expect(() => buildVirtDeviceTree(config(1, { initrd: { start: 10, end: 5 } }))).toThrow(/initrd/);
    expect(() => buildVirtDeviceTree(config(1, { bootargs: 'a\0b' }))).toThrow(/NUL/);
  });

  it.skipIf(!existsSync(DTC))('dtc accepts the 4-hart tree without warnings', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tabvisor-virt-'));
    try {
      const path = join(dir, 'virt.dtb');
      writeFileSync(
        path,
        buildVirtDeviceTree(config(4, { initrd: { start: 0x8600_0000, end: 0x8610_0000 } })),
      );
      const result = spawnSync(DTC, ['-I', 'dtb', '-O', 'dts', path], { encoding: 'utf8' });
      expect(result.status).toBe(0);
      expect(result.stderr).toBe('');
      expect(result.stdout).toContain('riscv,isa = "rv32ima_zicsr_zifencei_zihintpause";');
      expect(result.stdout).toContain('cpu@3 {');
      expect(result.stdout).toMatch(/linux,initrd-start = <0x0+ 0x86000000>;/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
