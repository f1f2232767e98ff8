import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { AddressSpace, RAM_BASE } from '../../../src/mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../../../src/mem/host-ram.ts';
import { addi, bge, blt, jal, li, lw, sb, slt, sw } from '../../helpers/rv-encoder.ts';
import type { LitmusJob } from './workers/litmus-hart.ts';

/** `fence rw,rw` (Linux's smp_mb()). */
const FENCE_RW_RW = 0x0330000f;
const ROUNDS = 40_000;
const RAM_BYTES = 1 << 20;
const LOOP = RAM_BASE + 0x100;
const FLAG = [RAM_BASE + 0x1000, RAM_BASE + 0x1040];
const SEEN = [RAM_BASE + 0x2000, RAM_BASE + 0x2000 + ROUNDS + 64];

/**
 * The store-buffering litmus test, in lockstep rounds: in round r each hart stores r to its own word, runs a
 * FENCE, and loads the other hart's word, recording whether it still held an older round. With the fence no
 * round may have both harts see the other's old value (whichever load comes last in any interleaving follows
 * both stores); a host that lets a load overtake a store still in its store buffer produces exactly that.
 * Each round starts once the other hart stored the previous one, so both race through the same round.
 */
function program(): Map<number, number[]> {
  const code = new Map<number, number[]>();
  for (const hart of [0, 1]) {
    const other = 1 - hart;
    const prologue = [...li(10, FLAG[hart]), ...li(11, FLAG[other]), ...li(12, SEEN[hart]), ...li(9, ROUNDS)];
    const base = RAM_BASE + hart * 0x40;
    code.set(base, [...prologue, jal(0, LOOP - (base + prologue.length * 4))]);
  }
  code.set(LOOP, [
    addi(8, 0, 1), //          s0 = round 1
    addi(5, 8, -1), // round:  t0 = s0 - 1
    lw(6, 11, 0), //   wait:   t1 = other's word
    blt(6, 5, -4), //          until the other stored the previous round
    sw(8, 10, 0), //           my word = round
    FENCE_RW_RW,
    lw(6, 11, 0), //           t1 = other's word
    slt(7, 6, 8), //           t2 = it still held an older round
    sb(7, 12, 0), //           seen[round - 1] = t2
    addi(12, 12, 1),
    addi(8, 8, 1),
    bge(9, 8, -40), //         next round while s0 <= ROUNDS
    jal(0, 0), //      done
  ]);
  return code;
}

async function runLitmus(jit: LitmusJob['jit'], wasm: boolean): Promise<{ bothOld: number; oneOld: number }> {
  const hostRam = new HostRam(RAM_BYTES, true);
  const areas = wasm ? hostRam.allocateHartAreas(2) : [];
  const memory = new AddressSpace({
    ram: hostRam.buffer,
    memory: hostRam.memory,
    table: AddressSpace.tableFor(hostRam.allocate(RAM_BYTES / FRAME_SIZE), true),
    ramBase: RAM_BASE,
    ramSize: RAM_BYTES,
  });
  for (const [address, words] of program()) words.forEach((w, i) => memory.writeU32(address + 4 * i, w));
  const donePc = LOOP + 12 * 4;
  const deadline = Date.now() + 60_000;
  const workers = [0, 1].map(
    (hart) =>
      new Worker(new URL('./workers/bootstrap.mjs', import.meta.url), {
        workerData: {
          memory: memory.init,
          entry: RAM_BASE + hart * 0x40,
          donePc,
          jit,
          ...(wasm ? { area: areas[hart] } : {}),
          deadline,
        } satisfies LitmusJob,
      }),
  );
  try {
    const results = await Promise.all(
      workers.map(
        (worker) =>
          new Promise<{ done: boolean; wasm: boolean }>((resolve, reject) => {
            worker.once('message', resolve);
            worker.once('error', reject);
            worker.once('exit', (code) => reject(new Error(`litmus worker exited early (${code})`)));
          }),
      ),
    );
    expect(results.map((r) => r.done)).toEqual([true, true]);
    expect(results.map((r) => r.wasm)).toEqual([wasm, wasm]);
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  let bothOld = 0;
  let oneOld = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const a = memory.readU8(SEEN[0] + r);
    const b = memory.readU8(SEEN[1] + r);
    if (a && b) bothOld++;
    else if (a || b) oneOld++;
  }
  return { bothOld, oneOld };
}

describe('guest FENCE between harts on two threads', () => {
  for (const [name, jit, wasm] of [
    ['interpreted', { enabled: false }, false],
    ['translated', { enabled: true, threshold: 1 }, false],
    ['WebAssembly tier', { enabled: false }, true],
  ] as const) {
    it(`fence rw,rw keeps a store before a later load (store buffering, ${name})`, async () => {
      const { bothOld, oneOld } = await runLitmus(jit, wasm);
      // The harts did race: in some rounds one of them saw the other's previous round.
      expect(oneOld).toBeGreaterThan(0);
      expect(bothOld).toBe(0);
    }, 90_000);
  }
});
