import { describe, expect, it } from 'vitest';
import {
  HART_START_ADDR,
  HART_START_OPAQUE,
  HART_STATE,
  HART_STATE_START_PENDING,
  hartWord,
} from '../../src/common/shared-block.ts';
import { STOP_WFI } from '../../src/cpu/hart.ts';
import { Board, createBoardState } from '../../src/machine/board.ts';
import { stepHart } from '../../src/machine/hart-runner.ts';
import { hartStateArea } from '../../src/machine/hart-state-codec.ts';
import { loadLinux } from '../../src/machine/linux-boot.ts';
import { AddressSpace, RAM_BASE } from '../../src/mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../../src/mem/host-ram.ts';
import { defaultSpec } from '../helpers/guest.ts';
import { expectSameHarts, expectSameRam } from '../helpers/lockstep.ts';

/**
 * The default Linux guest on two boards, one interpreting and one translating blocks that ran 32 times, in
 * lockstep on a deterministic clock, with 1 and 2 harts (stepped round-robin on this thread, so SMP is
 * deterministic too): the kernel boots, the shell runs a few commands, and every hart agrees after every slice
 * (registers, pc, privilege, CSRs, counters) and RAM agrees now and then.
 */

const RAM_BYTES = 64 << 20;
const COMMANDS = 'md5sum /bin/busybox; ls /proc | wc -l; echo DONE-$((6*7))\n';

describe('block translator against the interpreter on Linux', () => {
  for (const cpus of [1, 2]) {
    it(`boots the default guest with ${cpus} hart(s) and runs shell commands identically, slice by slice`, async () => {
      // The shell on the UART (ttyS0): this harness drains the UART's rings itself; the virtio console (the
      // image's default hvc1) needs an I/O side to serve its queues.
      const spec = await defaultSpec(cpus, RAM_BYTES >> 20, 'console=ttyS0 earlycon=sbi');
      let nowMs = 0;
      const machine = (jit: boolean) => {
        const ram = new HostRam(RAM_BYTES, false);
        const frames = ram.allocate(RAM_BYTES / FRAME_SIZE);
        const memory = new AddressSpace({
          ram: ram.buffer,
          table: AddressSpace.tableFor(frames, false),
          ramBase: RAM_BASE,
          ramSize: RAM_BYTES,
        });
        const plan = loadLinux(memory, cpus, spec);
        const { block, layout } = createBoardState(cpus, false);
        block[hartWord(0, HART_START_ADDR)] = plan.entry;
        block[hartWord(0, HART_START_OPAQUE)] = plan.dtbGpa;
        block[hartWord(0, HART_STATE)] = HART_STATE_START_PENDING;
        const board = new Board(
          { hartCount: cpus, block, memory: memory.init, layout, firmware: true },
          () => nowMs,
        );
        board.clock.reset();
        const harts = Array.from({ length: cpus }, (_, h) =>
          board.createHart(h, { enabled: jit, threshold: 32 }),
        );
        const areas = harts.map((_, h) => hartStateArea(block, layout.hartStates, h));
        return { board, harts, memory: board.memory, areas, out: '' };
      };
      const reference = machine(false);
      const translated = machine(true);
      const decoder = new TextDecoder();
      let typed = false;
      for (let slice = 1; slice < 20_000; slice++) {
        for (const m of [reference, translated]) {
          m.harts.forEach((hart, h) =>
            stepHart(hart, m.board.block, m.areas[h], (message) => {
              throw new Error(message);
            }),
          );
          if (m.board.uart.txRing.size > 0) {
            m.out += decoder.decode(m.board.uart.txRing.drain());
            m.board.uart.txNotify();
          }
        }
        reference.harts.forEach((hart, h) =>
          expectSameHarts(
            { hart, memory: reference.memory },
            { hart: translated.harts[h], memory: translated.memory },
            `hart ${h}, slice ${slice}`,
          ),
        );
        if (slice % 1000 === 0) expectSameRam(reference, translated, RAM_BYTES, `slice ${slice}`);
        if (!typed && reference.out.endsWith(':/root# ')) {
          typed = true;
          for (const m of [reference, translated]) {
            m.board.uart.rxRing.pushMany(new TextEncoder().encode(COMMANDS));
            m.board.uart.rxNotify();
          }
        }
        if (reference.out.includes('DONE-42')) break;
        // One 10 MHz tick per instruction; an idle hart sleeps until its timer.
        nowMs += 2;
        const boot = reference.harts[0];
        if (boot.stopReason === STOP_WFI && boot.timecmp() !== Infinity)
          nowMs += boot.msUntilTicks(boot.timecmp());
      }
      expect(reference.out).toContain('DONE-42');
      expect(translated.out).toBe(reference.out);
      expect(reference.out).toMatch(/[0-9a-f]{32} {2}\/bin\/busybox/);
      expectSameRam(reference, translated, RAM_BYTES, 'at the end');
      expect(translated.harts[0].jitStats()!.translated).toBeGreaterThan(1000);
    }, 240_000);
  }
});
