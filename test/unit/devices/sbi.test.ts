import { describe, it, expect } from 'vitest';
import {
  DBCN_MAX_BYTES_PER_CALL,
  SBI_ERR_ALREADY_AVAILABLE,
  SBI_ERR_FAILED,
  SBI_ERR_INVALID_ADDRESS,
  SBI_ERR_INVALID_PARAM,
  SBI_ERR_NOT_SUPPORTED,
  SBI_EXT_BASE,
  SBI_EXT_DBCN,
  SBI_EXT_HSM,
  SBI_EXT_IPI,
  SBI_EXT_RFENCE,
  SBI_EXT_SRST,
  SBI_EXT_TIME,
  SBI_IMPL_ID,
  SBI_SUCCESS,
  Sbi,
} from '../../../src/devices/sbi.ts';
import type { SbiConsole } from '../../../src/devices/sbi.ts';
import type { SbiCallContext } from '../../../src/common/firmware.ts';
import { AddressSpace } from '../../../src/mem/address-space.ts';
import {
  FENCE_INSTRUCTIONS,
  FENCE_TLB,
  HART_FENCE,
  HART_SBI_IPI,
  HART_START_ADDR,
  HART_START_OPAQUE,
  HART_STATE,
  HART_STATE_CRASHED,
  HART_STATE_RUNNING,
  HART_STATE_START_PENDING,
  HART_STATE_STOPPED,
  HART_STATE_WFI,
  HART_WAKE,
  HartLines,
  MIP_SSIP,
  POWER_FAIL,
  POWER_OFF,
  POWER_REBOOT,
  RUN_STOP,
  SharedLayout,
  VM_EVENT,
  VM_POWER,
  VM_POWER_CODE,
  VM_RUN_CONTROL,
  createControlBlock,
  hartWord,
} from '../../../src/common/shared-block.ts';

const RAM_BASE = 0x8000_0000;
const RAM_SIZE = 64 * 1024;

/** A fake hart: registers, and a record of what the SBI asked of it. */
class FakeHart implements SbiCallContext {
  readonly x = new Int32Array(32);
  flushes = 0;
  /** Local FENCE.I requests (instruction cache flushes). */
  fenceIs = 0;
  stopped = false;
  waiting = false;
  /** Guest-virtual words loadVirtualU32 can see. */
  readonly virtual = new Map<number, number>();
  constructor(readonly hartId: number) {}
  flushTlb(): void {
    this.flushes++;
  }
  flushInstructionCache(): void {
    this.fenceIs++;
  }
  loadVirtualU32(gva: number): number | undefined {
    return this.virtual.get(gva >>> 0);
  }
  stopAfterCall(): void {
    this.stopped = true;
  }
  waitAfterCall(): void {
    this.waiting = true;
  }
  /** Make the call eid/fid(args) and return [a0, a1]. */
  call(eid: number, fid: number, ...args: number[]): [number, number] {
    this.x.fill(0x7777, 10, 18);
    args.forEach((a, i) => (this.x[10 + i] = a));
    this.x[16] = fid;
    this.x[17] = eid;
    sbi.ecall(this);
    return [this.x[10], this.x[11]];
  }
}

class FakeConsole implements SbiConsole {
  readonly out: number[] = [];
  readonly input: number[] = [];
  capacity = Infinity;
  consolePut(byte: number): boolean {
    if (this.out.length >= this.capacity) return false;
    this.out.push(byte);
    return true;
  }
  consoleGet(): number {
    return this.input.shift() ?? -1;
  }
}

let sbi: Sbi;

function setup(hartCount = 4) {
  const layout = new SharedLayout(hartCount);
  const base = layout.alloc(Sbi.words());
  const block = createControlBlock(layout.words, true);
  const lines = new HartLines(block, hartCount);
  const frames = Int32Array.from({ length: RAM_SIZE / 4096 }, (_, i) => i);
  const memory = new AddressSpace({
    ram: new ArrayBuffer(RAM_SIZE),
    table: AddressSpace.tableFor(frames, false),
    ramBase: RAM_BASE,
    ramSize: RAM_SIZE,
  });
  const console = new FakeConsole();
  sbi = new Sbi(block, base, { lines, memory, console });
  for (let h = 0; h < hartCount; h++) block[hartWord(h, HART_STATE)] = h === 0 ? HART_STATE_RUNNING : 0;
  const harts = Array.from({ length: hartCount }, (_, h) => new FakeHart(h));
  const word = (hart: number, w: number) => block[hartWord(hart, w)];
  return { block, lines, memory, console, harts, word };
}

describe('Sbi', () => {
  describe('BASE', () => {
    it('reports spec 2.0, our implementation id and version, and zero machine ids', () => {
      const { harts } = setup();
      const h = harts[0];
      expect(h.call(SBI_EXT_BASE, 0)).toEqual([SBI_SUCCESS, 0x0200_0000]);
      expect(h.call(SBI_EXT_BASE, 1)).toEqual([SBI_SUCCESS, SBI_IMPL_ID]);
      expect(h.call(SBI_EXT_BASE, 2)[0]).toBe(SBI_SUCCESS);
      for (const fid of [4, 5, 6]) expect(h.call(SBI_EXT_BASE, fid)).toEqual([SBI_SUCCESS, 0]);
      expect(h.call(SBI_EXT_BASE, 7)[0]).toBe(SBI_ERR_NOT_SUPPORTED);
    });

    it('probe_extension finds every implemented extension and nothing else', () => {
      const { harts } = setup();
      const h = harts[0];
      const present = [SBI_EXT_BASE, SBI_EXT_TIME, SBI_EXT_IPI, SBI_EXT_RFENCE, SBI_EXT_HSM, SBI_EXT_SRST];
      for (const eid of [...present, SBI_EXT_DBCN, 0, 1, 8])
        expect(h.call(SBI_EXT_BASE, 3, eid)).toEqual([0, 1]);
      for (const eid of [9, 0x0f, 0x504d55, 0x48534d + 1, -1])
        expect(h.call(SBI_EXT_BASE, 3, eid)).toEqual([0, 0]);
    });
  });

  it('TIME set_timer stores the 64-bit deadline (a0 low, a1 high) in the calling hart slot', () => {
    const { harts, lines } = setup();
    expect(harts[2].call(SBI_EXT_TIME, 0, 0x9000_0000 | 0, 3)).toEqual([SBI_SUCCESS, 0]);
    expect(lines.timecmp(2)).toBe(3 * 2 ** 32 + 0x9000_0000);
    expect(lines.timecmp(0)).toBe(0);
    expect(harts[2].call(SBI_EXT_TIME, 1)[0]).toBe(SBI_ERR_NOT_SUPPORTED);
  });

  describe('IPI', () => {
    it('sets HART_SBI_IPI on each hart of the mask (relative to the base) and wakes it', () => {
      const { harts, word } = setup();
      const wake = word(3, HART_WAKE);
      expect(harts[0].call(SBI_EXT_IPI, 0, 0b101, 1)).toEqual([SBI_SUCCESS, 0]);
      expect([0, 1, 2, 3].map((h) => word(h, HART_SBI_IPI))).toEqual([0, 1, 0, 1]);
      expect(word(3, HART_WAKE)).toBeGreaterThan(wake);
    });

    it('hart_mask_base -1 means every hart, whatever the mask', () => {
      const { harts, word } = setup();
      expect(harts[1].call(SBI_EXT_IPI, 0, 0, -1)[0]).toBe(SBI_SUCCESS);
      expect([0, 1, 2, 3].map((h) => word(h, HART_SBI_IPI))).toEqual([1, 1, 1, 1]);
    });

    it('a mask naming a hart that does not exist is invalid and delivers nothing', () => {
      const { harts, word } = setup(4);
      expect(harts[0].call(SBI_EXT_IPI, 0, 0b11, 3)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(harts[0].call(SBI_EXT_IPI, 0, -1, 0)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(harts[0].call(SBI_EXT_IPI, 0, 1, 0x7fff_ffff)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(harts[0].call(SBI_EXT_IPI, 0, 1, -2)[0]).toBe(SBI_ERR_INVALID_PARAM); // base 0xfffffffe
      expect([0, 1, 2, 3].map((h) => word(h, HART_SBI_IPI))).toEqual([0, 0, 0, 0]);
      expect(harts[0].call(SBI_EXT_IPI, 0, 0, 1000)[0]).toBe(SBI_SUCCESS); // empty mask: nothing to do
    });
  });

  describe('RFENCE', () => {
    it('remote fences set their kind in HART_FENCE on other harts and flush the caller directly', () => {
      for (const fid of [0, 1, 2]) {
        const { harts, word } = setup();
        expect(harts[1].call(SBI_EXT_RFENCE, fid, 0b1011, 0, 0x1000, 0x2000, 1)[0]).toBe(SBI_SUCCESS);
        const kind = fid === 0 ? FENCE_INSTRUCTIONS : FENCE_TLB;
        expect([0, 1, 2, 3].map((h) => word(h, HART_FENCE))).toEqual([kind, 0, 0, kind]);
        expect(harts[1].flushes).toBe(1);
        expect(harts[1].fenceIs).toBe(fid === 0 ? 1 : 0);
      }
    });

    it('a remote fence.i and a remote sfence.vma to the same hart both stay requested', () => {
      const { harts, word } = setup(2);
      harts[0].call(SBI_EXT_RFENCE, 0, 0b10, 0);
      harts[0].call(SBI_EXT_RFENCE, 1, 0b10, 0, 0, 0);
      expect(word(1, HART_FENCE)).toBe(FENCE_INSTRUCTIONS | FENCE_TLB);
    });

    it('rejects invalid masks and the hypervisor fences', () => {
      const { harts, word } = setup(2);
      expect(harts[0].call(SBI_EXT_RFENCE, 1, 0b100, 0)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(word(1, HART_FENCE)).toBe(0);
      for (const fid of [3, 4, 5, 6, 7])
        expect(harts[0].call(SBI_EXT_RFENCE, fid, 1, 0)[0]).toBe(SBI_ERR_NOT_SUPPORTED);
      expect(harts[0].flushes).toBe(0);
    });
  });

  describe('HSM', () => {
    it('hart_start of a stopped hart records the start address and opaque, marks it start-pending, wakes it', () => {
      const { harts, word } = setup();
      const wake = word(2, HART_WAKE);
      expect(harts[0].call(SBI_EXT_HSM, 0, 2, RAM_BASE + 0x100, 0xabc)[0]).toBe(SBI_SUCCESS);
      expect(word(2, HART_STATE)).toBe(HART_STATE_START_PENDING);
      expect(word(2, HART_START_ADDR) >>> 0).toBe(RAM_BASE + 0x100);
      expect(word(2, HART_START_OPAQUE)).toBe(0xabc);
      expect(word(2, HART_WAKE)).toBeGreaterThan(wake);
      expect(harts[0].call(SBI_EXT_HSM, 2, 2)).toEqual([SBI_SUCCESS, 2]); // START_PENDING
      expect(harts[0].call(SBI_EXT_HSM, 0, 2, RAM_BASE, 0)[0]).toBe(SBI_ERR_ALREADY_AVAILABLE);
    });

    it('hart_start of a running hart, an invalid hart or a start address outside RAM fails', () => {
      const { harts, word, block } = setup();
      expect(harts[0].call(SBI_EXT_HSM, 0, 0, RAM_BASE, 0)[0]).toBe(SBI_ERR_ALREADY_AVAILABLE);
      expect(harts[0].call(SBI_EXT_HSM, 0, 4, RAM_BASE, 0)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(harts[0].call(SBI_EXT_HSM, 0, -1, RAM_BASE, 0)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(harts[0].call(SBI_EXT_HSM, 0, 1, 0x1000_0000, 0)[0]).toBe(SBI_ERR_INVALID_ADDRESS);
      expect(harts[0].call(SBI_EXT_HSM, 0, 1, RAM_BASE + RAM_SIZE - 2, 0)[0]).toBe(SBI_ERR_INVALID_ADDRESS);
      expect(word(1, HART_STATE)).toBe(HART_STATE_STOPPED);
      block[hartWord(3, HART_STATE)] = HART_STATE_CRASHED;
      expect(harts[0].call(SBI_EXT_HSM, 0, 3, RAM_BASE, 0)[0]).toBe(SBI_ERR_FAILED);
    });

    it('hart_get_status maps hart states to SBI states', () => {
      const { harts, block } = setup();
      const states: Array<[number, number]> = [
        [HART_STATE_RUNNING, 0],
        [HART_STATE_WFI, 0],
        [HART_STATE_STOPPED, 1],
        [HART_STATE_START_PENDING, 2],
        [HART_STATE_CRASHED, 1],
      ];
      for (const [state, sbiState] of states) {
        block[hartWord(1, HART_STATE)] = state;
        expect(harts[0].call(SBI_EXT_HSM, 2, 1)).toEqual([SBI_SUCCESS, sbiState]);
      }
      expect(harts[0].call(SBI_EXT_HSM, 2, 4)[0]).toBe(SBI_ERR_INVALID_PARAM);
    });

    it('hart_stop stops the caller after the call', () => {
      const { harts } = setup();
      expect(harts[1].call(SBI_EXT_HSM, 1)[0]).toBe(SBI_SUCCESS);
      expect(harts[1].stopped).toBe(true);
    });

    it('retentive suspend waits like WFI; non-retentive is not supported; reserved types are invalid', () => {
      const { harts } = setup();
      expect(harts[1].call(SBI_EXT_HSM, 3, 0, 0, 0)[0]).toBe(SBI_SUCCESS);
      expect(harts[1].waiting).toBe(true);
      const h = harts[2];
      expect(h.call(SBI_EXT_HSM, 3, 0x8000_0000 | 0, RAM_BASE, 0)[0]).toBe(SBI_ERR_NOT_SUPPORTED);
      for (const type of [1, 0x0fff_ffff, 0x1000_0000, 0x8000_0001 | 0, -1]) {
        expect(h.call(SBI_EXT_HSM, 3, type, RAM_BASE, 0)[0]).toBe(SBI_ERR_INVALID_PARAM);
      }
      expect(h.waiting).toBe(false);
      expect(h.call(SBI_EXT_HSM, 4)[0]).toBe(SBI_ERR_NOT_SUPPORTED);
    });
  });

  describe('SRST', () => {
    const cases: Array<[number, number, number]> = [
      [0, 0, POWER_OFF],
      [1, 0, POWER_REBOOT],
      [2, 0, POWER_REBOOT],
      [0, 1, POWER_FAIL],
      [1, 1, POWER_FAIL],
    ];
    for (const [type, reason, power] of cases) {
      it(`system_reset type ${type} reason ${reason} requests power state ${power} and stops every hart`, () => {
        const { harts, block, word } = setup();
        const wakes = [0, 1, 2, 3].map((h) => word(h, HART_WAKE));
        expect(harts[1].call(SBI_EXT_SRST, 0, type, reason)[0]).toBe(SBI_SUCCESS);
        expect(block[VM_POWER]).toBe(power);
        expect(block[VM_POWER_CODE]).toBe(reason);
        expect(block[VM_EVENT]).toBe(1);
        expect(block[VM_RUN_CONTROL]).toBe(RUN_STOP);
        expect(harts[1].stopped).toBe(true);
        [0, 1, 2, 3].forEach((h) => expect(word(h, HART_WAKE)).toBeGreaterThan(wakes[h]));
      });
    }

    it('reserved reset types and reasons are invalid and change nothing', () => {
      const { harts, block } = setup();
      for (const [type, reason] of [
        [3, 0],
        [0xf000_0000 | 0, 0],
        [0, 2],
        [0, 0xe000_0000 | 0],
        [0, -1],
      ]) {
        expect(harts[0].call(SBI_EXT_SRST, 0, type, reason)[0]).toBe(SBI_ERR_INVALID_PARAM);
      }
      expect(block[VM_POWER]).toBe(0);
      expect(block[VM_EVENT]).toBe(0);
      expect(harts[0].stopped).toBe(false);
      expect(harts[0].call(SBI_EXT_SRST, 1, 0, 0)[0]).toBe(SBI_ERR_NOT_SUPPORTED);
    });

    it('the first power request wins', () => {
      const { harts, block } = setup();
      harts[0].call(SBI_EXT_SRST, 0, 1, 0);
      harts[1].call(SBI_EXT_SRST, 0, 0, 1);
      expect(block[VM_POWER]).toBe(POWER_REBOOT);
      expect(block[VM_POWER_CODE]).toBe(0);
      expect(block[VM_EVENT]).toBe(2);
    });
  });

  describe('DBCN', () => {
    it('console_write copies guest-physical bytes to the console and reports the count', () => {
      const { harts, memory, console } = setup();
      memory.write(RAM_BASE + 0x200, Uint8Array.from([104, 105, 10]));
      expect(harts[0].call(SBI_EXT_DBCN, 0, 3, RAM_BASE + 0x200, 0)).toEqual([SBI_SUCCESS, 3]);
      expect(console.out).toEqual([104, 105, 10]);
    });

    it('console_write stops at a full console and reports the partial count', () => {
      const { harts, memory, console } = setup();
      console.capacity = 2;
      memory.write(RAM_BASE, Uint8Array.from([1, 2, 3, 4]));
      expect(harts[0].call(SBI_EXT_DBCN, 0, 4, RAM_BASE, 0)).toEqual([SBI_SUCCESS, 2]);
    });

    it('console_read copies waiting input into guest memory', () => {
      const { harts, memory, console } = setup();
      console.input.push(0x61, 0x62);
      expect(harts[0].call(SBI_EXT_DBCN, 1, 16, RAM_BASE + 8, 0)).toEqual([SBI_SUCCESS, 2]);
      expect(memory.readU8(RAM_BASE + 8)).toBe(0x61);
      expect(memory.readU8(RAM_BASE + 9)).toBe(0x62);
      expect(harts[0].call(SBI_EXT_DBCN, 1, 16, RAM_BASE + 8, 0)).toEqual([SBI_SUCCESS, 0]);
    });

    it('console_write_byte writes one byte, failing when the console is full', () => {
      const { harts, console } = setup();
      expect(harts[0].call(SBI_EXT_DBCN, 2, 0x141)[0]).toBe(SBI_SUCCESS);
      expect(console.out).toEqual([0x41]);
      console.capacity = 1;
      expect(harts[0].call(SBI_EXT_DBCN, 2, 0x42)[0]).toBe(SBI_ERR_FAILED);
    });

    it('buffers outside RAM or above 4 GiB are invalid; huge lengths are capped per call', () => {
      const { harts, console, memory } = setup();
      expect(harts[0].call(SBI_EXT_DBCN, 0, 4, 0x1000_0000, 0)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(harts[0].call(SBI_EXT_DBCN, 0, 4, RAM_BASE, 1)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(harts[0].call(SBI_EXT_DBCN, 0, 16, RAM_BASE + RAM_SIZE - 8, 0)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(harts[0].call(SBI_EXT_DBCN, 1, 16, RAM_BASE + RAM_SIZE - 8, 0)[0]).toBe(SBI_ERR_INVALID_PARAM);
      expect(console.out).toEqual([]);
      memory.fill(RAM_BASE, RAM_SIZE, 0x2e);
      expect(harts[0].call(SBI_EXT_DBCN, 0, -1, RAM_BASE, 0)).toEqual([SBI_SUCCESS, DBCN_MAX_BYTES_PER_CALL]);
      expect(console.out.length).toBe(DBCN_MAX_BYTES_PER_CALL);
      expect(harts[0].call(SBI_EXT_DBCN, 3)[0]).toBe(SBI_ERR_NOT_SUPPORTED);
    });
  });

  describe('legacy extensions', () => {
    /** A legacy call returns in a0 only; a1 is left alone. */
    function legacy(h: FakeHart, eid: number, ...args: number[]): number {
      const [a0, a1] = h.call(eid, 0, ...args);
      if (args.length < 2) expect(a1).toBe(0x7777);
      return a0;
    }

    it('0x00 set_timer', () => {
      const { harts, lines } = setup();
      expect(legacy(harts[1], 0x00, 1234, 1)).toBe(0);
      expect(lines.timecmp(1)).toBe(2 ** 32 + 1234);
    });

    it('0x01 console_putchar reports a full console as a failure; 0x02 console_getchar returns -1 when empty', () => {
      const { harts, console } = setup();
      expect(legacy(harts[0], 0x01, 0x68)).toBe(0);
      console.capacity = 1;
      expect(legacy(harts[0], 0x01, 0x69)).toBe(SBI_ERR_FAILED);
      expect(console.out).toEqual([0x68]);
      expect(legacy(harts[0], 0x02)).toBe(-1);
      console.input.push(0x71);
      expect(legacy(harts[0], 0x02)).toBe(0x71);
    });

    it('0x03 clear_ipi clears the calling hart only', () => {
      const { harts, word, lines, block } = setup();
      block[hartWord(1, HART_SBI_IPI)] = 1;
      block[hartWord(2, HART_SBI_IPI)] = 1;
      lines.raise(1, MIP_SSIP);
      expect(legacy(harts[1], 0x03)).toBe(0);
      expect(word(1, HART_SBI_IPI)).toBe(0);
      expect(lines.lines(1) & MIP_SSIP).toBe(0);
      expect(word(2, HART_SBI_IPI)).toBe(1);
    });

    it('0x04 send_ipi reads the hart mask through the caller virtual address space', () => {
      const { harts, word } = setup();
      harts[0].virtual.set(0xc000_1000, 0b0110);
      expect(legacy(harts[0], 0x04, 0xc000_1000 | 0)).toBe(0);
      expect([0, 1, 2, 3].map((h) => word(h, HART_SBI_IPI))).toEqual([0, 1, 1, 0]);
    });

    it('0x04 send_ipi with a null mask pointer targets every hart; an unreadable mask is an address error', () => {
      const { harts, word } = setup();
      expect(legacy(harts[0], 0x04, 0xdead_0000 | 0)).toBe(SBI_ERR_INVALID_ADDRESS);
      expect([0, 1, 2, 3].map((h) => word(h, HART_SBI_IPI))).toEqual([0, 0, 0, 0]);
      expect(legacy(harts[0], 0x04, 0)).toBe(0);
      expect([0, 1, 2, 3].map((h) => word(h, HART_SBI_IPI))).toEqual([1, 1, 1, 1]);
    });

    it('0x05..0x07 remote fences', () => {
      for (const eid of [0x05, 0x06, 0x07]) {
        const { harts, word } = setup();
        harts[2].virtual.set(0x1000, 0b1100);
        expect(legacy(harts[2], eid, 0x1000, 0, 0x1000)).toBe(0);
        const kind = eid === 0x05 ? FENCE_INSTRUCTIONS : FENCE_TLB;
        expect([0, 1, 2, 3].map((h) => word(h, HART_FENCE))).toEqual([0, 0, 0, kind]);
        expect(harts[2].flushes).toBe(1);
        expect(harts[2].fenceIs).toBe(eid === 0x05 ? 1 : 0);
      }
    });

    it('a legacy mask naming harts that do not exist is invalid', () => {
      const { harts, word } = setup(2);
      harts[0].virtual.set(0x1000, 0xffff_ffff);
      expect(legacy(harts[0], 0x04, 0x1000)).toBe(SBI_ERR_INVALID_PARAM);
      expect(word(1, HART_SBI_IPI)).toBe(0);
    });

    it('0x08 shutdown powers off', () => {
      const { harts, block } = setup();
      expect(legacy(harts[0], 0x08)).toBe(0);
      expect(block[VM_POWER]).toBe(POWER_OFF);
      expect(block[VM_RUN_CONTROL]).toBe(RUN_STOP);
      expect(harts[0].stopped).toBe(true);
    });
  });

  describe('hostile guest', () => {
    it('unknown extensions and functions return NOT_SUPPORTED without touching state or throwing', () => {
      const { harts, block } = setup();
      const before = block.slice();
      for (const eid of [0x09, 0x0f, 0x11, 0x0a00_0000, 0x4853_4d00, 0x7fff_ffff, -1, -0x8000_0000]) {
        for (const fid of [0, 1, 0x7fff_ffff, -1]) {
          expect(harts[0].call(eid, fid, -1, -1, -1, -1, -1, -1)).toEqual([SBI_ERR_NOT_SUPPORTED, 0]);
        }
      }
      for (const eid of [SBI_EXT_BASE, SBI_EXT_TIME, SBI_EXT_IPI, SBI_EXT_HSM, SBI_EXT_SRST, SBI_EXT_DBCN]) {
        expect(harts[0].call(eid, -1, -1, -1)[0]).toBe(SBI_ERR_NOT_SUPPORTED);
      }
      expect(block).toEqual(before);
    });

    it('every extension and function survives all-ones and random arguments without throwing', () => {
      const { harts } = setup(2);
      let seed = 12345;
      const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) | 0);
      const eids = [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        SBI_EXT_BASE,
        SBI_EXT_TIME,
        SBI_EXT_IPI,
        SBI_EXT_RFENCE,
        SBI_EXT_HSM,
      ];
      eids.push(SBI_EXT_DBCN);
      for (let i = 0; i < 2000; i++) {
        const eid = eids[i % eids.length];
        const fid = i % 8;
        expect(() =>
          harts[i & 1].call(eid, fid, rand(), rand(), rand(), rand(), rand(), rand()),
        ).not.toThrow();
      }
    });
  });
});
