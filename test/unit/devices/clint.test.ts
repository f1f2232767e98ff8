import { describe, it, expect } from 'vitest';
import { Clint, CLINT_MSIP, CLINT_MTIME, CLINT_MTIMECMP, CLINT_SIZE } from '../../../src/devices/clint.ts';
import {
  HART_WAKE,
  HartLines,
  MIP_MSIP,
  SharedLayout,
  VmClock,
  createControlBlock,
  hartWord,
} from '../../../src/common/shared-block.ts';

function setup(hartCount = 2) {
  const layout = new SharedLayout(hartCount);
  const block = createControlBlock(layout.words, true);
  const lines = new HartLines(block, hartCount);
  let nowMs = 1000;
  const clock = new VmClock(block, () => nowMs);
  clock.reset();
  const clint = new Clint(lines, clock);
  return {
    block,
    lines,
    clint,
    advanceMs(ms: number) {
      nowMs += ms;
    },
  };
}

describe('Clint', () => {
  it('needs no control-block words and decodes 64 KiB', () => {
    expect(Clint.words()).toBe(0);
    expect(setup().clint.size).toBe(CLINT_SIZE);
  });

  it('msip bit 0 raises and lowers MSIP on the addressed hart only, and reads back the line', () => {
    const { clint, lines, block } = setup();
    const wakeBefore = block[hartWord(1, HART_WAKE)];
    expect(clint.write(CLINT_MSIP + 4, 4, 1)).toBe(true);
    expect(lines.lines(1) & MIP_MSIP).toBe(MIP_MSIP);
    expect(lines.lines(0) & MIP_MSIP).toBe(0);
    expect(block[hartWord(1, HART_WAKE)]).toBeGreaterThan(wakeBefore);
    expect(clint.read(CLINT_MSIP + 4, 4)).toBe(1);
    expect(clint.read(CLINT_MSIP, 4)).toBe(0);
    clint.write(CLINT_MSIP + 4, 4, 0xfffffffe); // bit 0 clear: lowers, other bits ignored
    expect(lines.lines(1) & MIP_MSIP).toBe(0);
    expect(clint.read(CLINT_MSIP + 4, 4)).toBe(0);
  });

  it('mtimecmp halves are stored in the hart slot and read back', () => {
    const { clint, lines } = setup();
    clint.write(CLINT_MTIMECMP + 8, 4, 0x89abcdef);
    clint.write(CLINT_MTIMECMP + 12, 4, 0x12);
    expect(lines.timecmp(1)).toBe(0x12 * 2 ** 32 + 0x89abcdef);
    expect(clint.read(CLINT_MTIMECMP + 8, 4)).toBe(0x89abcdef);
    expect(clint.read(CLINT_MTIMECMP + 12, 4)).toBe(0x12);
    clint.write(CLINT_MTIMECMP + 8, 4, 5); // low half only: the high half is kept
    expect(lines.timecmp(1)).toBe(0x12 * 2 ** 32 + 5);
    expect(clint.read(CLINT_MTIMECMP, 4)).toBe(0); // hart 0 untouched
  });

  it('all-ones mtimecmp means never', () => {
    const { clint, lines } = setup();
    clint.write(CLINT_MTIMECMP, 4, -1);
    clint.write(CLINT_MTIMECMP + 4, 4, -1);
    expect(lines.timecmp(0)).toBe(Infinity);
  });

  it('mtime reads the shared 10 MHz clock and ignores writes', () => {
    const { clint, advanceMs } = setup();
    expect(clint.read(CLINT_MTIME, 4)).toBe(0);
    advanceMs(2);
    expect(clint.read(CLINT_MTIME, 4)).toBe(20_000);
    expect(clint.write(CLINT_MTIME, 4, 0)).toBe(true);
    expect(clint.read(CLINT_MTIME, 4)).toBe(20_000);
    advanceMs(500_000); // 5e9 ticks: crosses 2^32
    const ticks = 20_000 + 5_000_000_000;
    expect(clint.read(CLINT_MTIME + 4, 4)).toBe(Math.floor(ticks / 2 ** 32));
    expect(clint.read(CLINT_MTIME, 4)).toBe(ticks % 2 ** 32);
  });

  describe('hostile guest', () => {
    it('harts that do not exist read 0 and ignore writes', () => {
      const { clint, lines, block } = setup(2);
      const before = block.slice();
      expect(clint.write(CLINT_MSIP + 4 * 2, 4, 1)).toBe(true);
      expect(clint.write(CLINT_MSIP + 4 * 4094, 4, 1)).toBe(true);
      expect(clint.write(CLINT_MTIMECMP + 8 * 2, 4, 1)).toBe(true);
      expect(clint.write(CLINT_MTIMECMP + 8 * 4094 + 4, 4, 1)).toBe(true);
      expect(block).toEqual(before);
      expect(clint.read(CLINT_MSIP + 4 * 3, 4)).toBe(0);
      expect(clint.read(CLINT_MTIMECMP + 8 * 3, 4)).toBe(0);
      expect(lines.lines(0)).toBe(0);
    });

    it('rejects non-word and misaligned accesses and offsets outside the device', () => {
      const { clint } = setup();
      expect(clint.read(CLINT_MSIP, 1)).toBe(-1);
      expect(clint.read(CLINT_MSIP + 2, 4)).toBe(-1);
      expect(clint.write(CLINT_MSIP, 2, 1)).toBe(false);
      expect(clint.read(CLINT_SIZE, 4)).toBe(-1);
      expect(clint.read(-4, 4)).toBe(-1);
      expect(clint.write(0x7fff_fffc, 4, 1)).toBe(false);
    });

    it('the gap between the mtimecmp array and mtime reads 0', () => {
      const { clint } = setup();
      expect(clint.read(0xbff0, 4)).toBe(0);
      expect(clint.read(0x3ffc, 4)).toBe(0);
    });
  });
});
