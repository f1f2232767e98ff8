import { describe, it, expect } from 'vitest';
import {
  PLIC_CLAIM,
  PLIC_CONTEXT,
  PLIC_CONTEXT_STRIDE,
  PLIC_ENABLE,
  PLIC_ENABLE_STRIDE,
  PLIC_PENDING,
  PLIC_PRIORITY,
  PLIC_SIZE,
  Plic,
} from '../../../src/devices/plic.ts';
import {
  HART_WAKE,
  HartLines,
  MIP_MEIP,
  MIP_SEIP,
  SharedLayout,
  createControlBlock,
  hartWord,
} from '../../../src/common/shared-block.ts';

function setup(hartCount = 2, sources?: number) {
  const layout = new SharedLayout(hartCount);
  const base = layout.alloc(Plic.words(hartCount, sources));
  const guard = layout.alloc(2); // a region after the PLIC's: must never be touched
  const block = createControlBlock(layout.words, true);
  block[guard] = 0x5a5a;
  block[guard + 1] = 0x5a5a;
  const lines = new HartLines(block, hartCount);
  const plic = new Plic(block, base, lines, sources);
  const ctx = {
    enable: (context: number, source: number) => {
      const offset = PLIC_ENABLE + PLIC_ENABLE_STRIDE * context + 4 * (source >>> 5);
      plic.write(offset, 4, plic.read(offset, 4) | (1 << (source & 31)));
    },
    threshold: (context: number, value: number) =>
      plic.write(PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * context, 4, value),
    claim: (context: number) => plic.read(PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * context + PLIC_CLAIM, 4),
    complete: (context: number, source: number) =>
      plic.write(PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * context + PLIC_CLAIM, 4, source),
    priority: (source: number, value: number) => plic.write(PLIC_PRIORITY + 4 * source, 4, value),
    pending: (word = 0) => plic.read(PLIC_PENDING + 4 * word, 4),
  };
  return { block, lines, plic, guard, ...ctx };
}

/** S-mode context of hart h. */
const sctx = (hart: number) => 2 * hart + 1;
/** M-mode context of hart h. */
const mctx = (hart: number) => 2 * hart;

describe('Plic', () => {
  it('has 95 sources and two contexts per hart by default', () => {
    const { plic } = setup(4);
    expect(plic.sources).toBe(95);
    expect(plic.contexts).toBe(8);
    expect(plic.size).toBe(PLIC_SIZE);
  });

  it('priorities are 3 bits and read back; source 0 has none', () => {
    const { plic, priority } = setup();
    priority(5, 0xff);
    expect(plic.read(PLIC_PRIORITY + 4 * 5, 4)).toBe(7);
    priority(0, 7);
    expect(plic.read(PLIC_PRIORITY, 4)).toBe(0);
  });

  it('a high level makes the source pending; the pending array is read-only', () => {
    const { plic, pending } = setup();
    plic.setLevel(10, true);
    plic.setLevel(33, true);
    expect(pending(0)).toBe(1 << 10);
    expect(pending(1)).toBe(1 << 1);
    plic.write(PLIC_PENDING, 4, 0);
    expect(pending(0)).toBe(1 << 10);
    plic.setLevel(10, false);
    expect(pending(0)).toBe(0);
  });

  it('raises SEIP on the hart whose S context has an enabled pending source above threshold, and wakes it', () => {
    const { plic, lines, block, enable, priority } = setup(2);
    priority(10, 1);
    enable(sctx(1), 10);
    const wake = block[hartWord(1, HART_WAKE)];
    plic.setLevel(10, true);
    expect(lines.lines(1) & MIP_SEIP).toBe(MIP_SEIP);
    expect(lines.lines(1) & MIP_MEIP).toBe(0);
    expect(lines.lines(0) & (MIP_SEIP | MIP_MEIP)).toBe(0);
    expect(block[hartWord(1, HART_WAKE)]).toBeGreaterThan(wake);
  });

  it('M contexts drive MEIP', () => {
    const { plic, lines, enable, priority } = setup(1);
    priority(3, 2);
    enable(mctx(0), 3);
    plic.setLevel(3, true);
    expect(lines.lines(0) & MIP_MEIP).toBe(MIP_MEIP);
    expect(lines.lines(0) & MIP_SEIP).toBe(0);
  });

  it('priority 0 never interrupts and a threshold masks priorities at or below it', () => {
    const { plic, lines, enable, priority, threshold, claim } = setup(1);
    enable(sctx(0), 4);
    plic.setLevel(4, true);
    expect(lines.lines(0) & MIP_SEIP).toBe(0);
    expect(claim(sctx(0))).toBe(0);
    priority(4, 3);
    expect(lines.lines(0) & MIP_SEIP).toBe(MIP_SEIP);
    threshold(sctx(0), 3);
    expect(lines.lines(0) & MIP_SEIP).toBe(0);
    expect(claim(sctx(0))).toBe(0);
    threshold(sctx(0), 2);
    expect(plic.read(PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * sctx(0), 4)).toBe(2);
    expect(claim(sctx(0))).toBe(4);
  });

  it('claim returns the highest priority first, ties to the lowest id, and clears pending', () => {
    const { plic, enable, priority, claim, pending } = setup(1);
    for (const s of [2, 7, 9, 40]) {
      enable(sctx(0), s);
      plic.setLevel(s, true);
    }
    priority(2, 1);
    priority(7, 5);
    priority(9, 5);
    priority(40, 6);
    expect(claim(sctx(0))).toBe(40);
    expect(claim(sctx(0))).toBe(7);
    expect(claim(sctx(0))).toBe(9);
    expect(claim(sctx(0))).toBe(2);
    expect(claim(sctx(0))).toBe(0);
    expect(pending(0)).toBe(0);
    expect(pending(1)).toBe(0);
  });

  it('a claimed source is in service: it does not re-pend until completed, then re-pends if still high', () => {
    const { plic, lines, enable, priority, claim, complete, pending } = setup(1);
    priority(10, 1);
    enable(sctx(0), 10);
    plic.setLevel(10, true);
    expect(claim(sctx(0))).toBe(10);
    expect(lines.lines(0) & MIP_SEIP).toBe(0);
    plic.setLevel(10, false);
    plic.setLevel(10, true); // still in service: no new request
    expect(pending()).toBe(0);
    complete(sctx(0), 10);
    expect(pending()).toBe(1 << 10);
    expect(lines.lines(0) & MIP_SEIP).toBe(MIP_SEIP);
    expect(claim(sctx(0))).toBe(10);
    plic.setLevel(10, false);
    complete(sctx(0), 10);
    expect(pending()).toBe(0);
    expect(lines.lines(0) & MIP_SEIP).toBe(0);
  });

  it('a source pending for two harts is delivered once: the first claim wins', () => {
    const { plic, lines, enable, priority, claim } = setup(2);
    priority(1, 1);
    enable(sctx(0), 1);
    enable(sctx(1), 1);
    plic.setLevel(1, true);
    expect(lines.lines(0) & MIP_SEIP).toBe(MIP_SEIP);
    expect(lines.lines(1) & MIP_SEIP).toBe(MIP_SEIP);
    expect(claim(sctx(1))).toBe(1);
    expect(lines.lines(0) & MIP_SEIP).toBe(0);
    expect(claim(sctx(0))).toBe(0);
  });

  it('disabling a source lowers the line; a source masked while in service can still be completed', () => {
    const { plic, lines, enable, priority, claim, complete, pending } = setup(1);
    priority(6, 1);
    enable(sctx(0), 6);
    plic.setLevel(6, true);
    expect(claim(sctx(0))).toBe(6);
    plic.write(PLIC_ENABLE + PLIC_ENABLE_STRIDE * sctx(0), 4, 0); // the handler masks it (Linux does)
    complete(sctx(0), 6);
    expect(pending()).toBe(1 << 6); // out of service; still high, so pending again
    expect(lines.lines(0) & MIP_SEIP).toBe(0); // but not enabled: no interrupt
    enable(sctx(0), 6);
    expect(lines.lines(0) & MIP_SEIP).toBe(MIP_SEIP);
  });

  it('the number of sources is a constructor parameter', () => {
    const { plic, enable, priority, claim } = setup(1, 40);
    priority(40, 1);
    enable(sctx(0), 40);
    plic.setLevel(40, true);
    expect(claim(sctx(0))).toBe(40);
    plic.setLevel(41, true);
    priority(41, 1);
    expect(plic.read(PLIC_PRIORITY + 4 * 41, 4)).toBe(0);
    expect(() => setup(1, 0)).toThrow(RangeError);
    expect(() => setup(1, 1024)).toThrow(RangeError);
  });

  describe('hostile guest', () => {
    it('claim of nothing returns 0, and completing a bogus id changes nothing', () => {
      const { plic, block, claim, complete } = setup(1);
      expect(claim(sctx(0))).toBe(0);
      const before = block.slice();
      for (const id of [0, 96, 1023, 0xffffffff, -1]) complete(sctx(0), id);
      complete(sctx(0), 5); // never claimed
      expect(block).toEqual(before);
      expect(plic.read(PLIC_CONTEXT + PLIC_CLAIM, 4)).toBe(0);
    });

    it('contexts and sources beyond the configuration read 0 and ignore writes, never touching other state', () => {
      const { plic, block, guard } = setup(1);
      const before = block.slice();
      const offsets = [
        PLIC_PRIORITY + 4 * 96,
        PLIC_PRIORITY + 4 * 1023,
        PLIC_PENDING + 4 * 3,
        PLIC_PENDING + 0xffc,
        PLIC_ENABLE + PLIC_ENABLE_STRIDE * 2,
        PLIC_ENABLE + PLIC_ENABLE_STRIDE * 0 + 4 * 3,
        PLIC_ENABLE + PLIC_ENABLE_STRIDE * 0 + 0x7c,
        PLIC_ENABLE + PLIC_ENABLE_STRIDE * 15871,
        PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * 2,
        PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * 2 + PLIC_CLAIM,
        PLIC_CONTEXT + PLIC_CONTEXT_STRIDE * 0 + 8,
        PLIC_SIZE - 4,
      ];
      for (const offset of offsets) {
        expect(plic.write(offset, 4, -1)).toBe(true);
        expect(plic.read(offset, 4)).toBe(0);
      }
      expect(block).toEqual(before);
      expect(block[guard]).toBe(0x5a5a);
    });

    it('enable bits of nonexistent sources (0, and above riscv,ndev) cannot be set', () => {
      const { plic } = setup(1);
      plic.write(PLIC_ENABLE + PLIC_ENABLE_STRIDE * 1, 4, -1);
      expect(plic.read(PLIC_ENABLE + PLIC_ENABLE_STRIDE * 1, 4)).toBe(0xfffffffe);
      const small = setup(1, 40).plic;
      small.write(PLIC_ENABLE + PLIC_ENABLE_STRIDE * 1 + 4, 4, -1);
      expect(small.read(PLIC_ENABLE + PLIC_ENABLE_STRIDE * 1 + 4, 4)).toBe(0x1ff); // sources 32..40
    });

    it('rejects non-word, misaligned and out-of-device accesses', () => {
      const { plic } = setup(1);
      expect(plic.read(PLIC_PRIORITY + 4, 1)).toBe(-1);
      expect(plic.read(PLIC_PRIORITY + 6, 4)).toBe(-1);
      expect(plic.write(PLIC_CONTEXT + PLIC_CLAIM, 2, 1)).toBe(false);
      expect(plic.read(PLIC_SIZE, 4)).toBe(-1);
      expect(plic.read(-4, 4)).toBe(-1);
    });

    it('setLevel of a source that does not exist is ignored', () => {
      const { plic, block } = setup(1);
      const before = block.slice();
      for (const irq of [0, -1, 96, 1024, 1.5, NaN]) plic.setLevel(irq, true);
      expect(block).toEqual(before);
    });
  });
});
