import { describe, expect, it } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import {
  MAX_SCREEN_CHARS,
  decodeSnapshot,
  decodeSnapshotBlob,
  encodeSnapshot,
  type VmSnapshot,
} from '../../src/machine/snapshot.ts';
import { VM_RAM_PENDING } from '../../src/common/shared-block.ts';
import { CooperativeThreads } from '../../src/machine/cooperative-threads.ts';
import { Vm, type VmNic } from '../../src/machine/vm.ts';
import { planBoard } from '../../src/machine/board.ts';
import { VIRTIO_MMIO_CONFIG, VIRTIO_STATUS_DRIVER_OK } from '../../src/devices/virtio-mmio.ts';
import { MemoryBlockBackend } from '../../src/storage/memory-block-backend.ts';
import { defaultSpec, watchConsole } from '../helpers/guest.ts';

describe('snapshots', () => {
  it('a VM restored from a snapshot of a booted guest continues at its shell, on new vCPU threads', async () => {
    const vm = Vm.create(await defaultSpec(2), nodeThreads);
    const original = watchConsole(vm);
    vm.start();
    await original.waitFor(':/root# ');
    original.type('export MARK=before-snapshot');
    await original.waitFor('export MARK=before-snapshot\r\n');
    await original.waitFor(':/root# ');

    const bytes = encodeSnapshot(await vm.snapshot());
    // A booted 64 MiB guest packs to far less than its RAM: zero pages are not stored.
    expect(bytes.length).toBeLessThan(32 << 20);
    await vm.stop();

    const restored = Vm.fromSnapshot(decodeSnapshot(bytes), nodeThreads);
    const console = watchConsole(restored);
    restored.start();
    console.type('echo $MARK-$((6*7)) cpus=$(nproc)');
    await console.waitFor('before-snapshot-42 cpus=2');
    console.type('poweroff');
    const event = await restored.whenPoweredOff();
    expect(event.kind).toBe('poweroff');

    // From a Blob (as the embed stores it): each vCPU thread reads and copies its share of the pages.
    const fromBlob = Vm.fromSnapshot(await decodeSnapshotBlob(new Blob([bytes])), nodeThreads);
    const blobConsole = watchConsole(fromBlob);
    // Typed before it starts: the input waits until the vCPU threads have put the guest's RAM back.
    blobConsole.type('echo $MARK-$((6*8)) cpus=$(nproc)');
    fromBlob.start();
    await blobConsole.waitFor('before-snapshot-48 cpus=2');
    await fromBlob.stop();
  });

  it('a corrupt or truncated snapshot is refused with a clear message', () => {
    expect(() => decodeSnapshot(new Uint8Array(100))).toThrow(/not a usable tabvisor snapshot/);
    const bogus = new Uint8Array(64);
    bogus.set([0x54, 0x56, 0x53, 0x4e, 0x41, 0x50, 0x00, 0x01]);
    new DataView(bogus.buffer).setUint32(8, 1 << 30, true);
    expect(() => decodeSnapshot(bogus)).toThrow(/header length/);
  });

  /** A NIC that goes nowhere. */
  const nic = (mac: string): VmNic => ({
    mac,
    plug: () => ({ backend: { send: () => undefined }, unplug: () => undefined }),
  });

  /** A snapshot of a 16 MiB, 1-vCPU board with `nics` NICs whose drivers are live. */
  function syntheticSnapshot(nics: number) {
    const layout = planBoard(1, 0, nics);
    const block = new Int32Array(layout.words);
    // virtio-mmio transport word 1 is the device status: a driver that has set the card up.
    for (const base of layout.nics ?? []) block[base + 1] = VIRTIO_STATUS_DRIVER_OK | 0xb;
    return { cpus: 1, memoryMiB: 16, bootargs: '', nics, ticks: 0, block, ram: new Uint8Array(16 << 20) };
  }

  it('a decoded snapshot reads its pages from the file: the same RAM, a restore copying only stored pages', async () => {
    const original = syntheticSnapshot(0);
    const ram = original.ram;
    ram.set([1, 2, 3], 5 * 4096 + 100); // page 5
    ram[4095 * 4096 - 1] = 9; // page 4094, last byte
    const bytes = encodeSnapshot(original);
    const decoded = decodeSnapshot(bytes);
    expect(decoded.pageData!.length).toBe(2 * 4096);
    expect(decoded.pageData!.buffer).toBe(bytes.buffer); // a view of the file, not a copy
    expect(Buffer.compare(decoded.ram, ram)).toBe(0); // (toEqual on 16 MiB would not finish)
    const vm = Vm.fromSnapshot(decodeSnapshot(bytes), nodeThreads);
    try {
      expect(vm.board.memory.readU32(0x80000000 + 5 * 4096 + 100)).toBe(0x030201);
      expect(vm.board.memory.readU8(0x80000000 + 4095 * 4096 - 1)).toBe(9);
      expect(vm.board.memory.readU32(0x80000000 + 6 * 4096)).toBe(0);
    } finally {
      await vm.stop();
    }
    // A bitmap that marks more pages than the file holds is refused.
    const bitmapAt = bytes.length - 2 * 4096 - (16 << 20) / 4096 / 8;
    const bad = bytes.slice();
    bad[bitmapAt] |= 1;
    expect(() => decodeSnapshot(bad)).toThrow(/page bitmap/);
  });

  it('a snapshot read from a Blob reads only its head: the same state, its pages left in the Blob for the vCPU threads', async () => {
    const original = syntheticSnapshot(0);
    original.ram.set([1, 2, 3], 5 * 4096 + 100);
    original.ram[9 * 4096] = 7;
    const bytes = encodeSnapshot({ ...original, screen: '# ' });
    const fromBytes = decodeSnapshot(bytes);
    const fromBlob = await decodeSnapshotBlob(new Blob([bytes]));
    for (const key of ['cpus', 'memoryMiB', 'bootargs', 'nics', 'screen', 'ticks'] as const)
      expect(fromBlob[key]).toEqual(fromBytes[key]);
    expect(fromBlob.block).toEqual(fromBytes.block);
    expect(fromBlob.storedPages).toEqual(fromBytes.storedPages);
    expect(new Uint8Array(await fromBlob.pageBlob!.arrayBuffer())).toEqual(fromBytes.pageData);
    expect(fromBlob.pageData).toBeUndefined();
    expect(() => fromBlob.ram).toThrow(/pageBlob/);

    // A head longer than the first read (a large control block) takes a second read.
    const bigBlock = new Int32Array(100_000).map((_, i) => i);
    const big = await decodeSnapshotBlob(new Blob([encodeSnapshot({ ...original, block: bigBlock })]));
    expect(big.block).toEqual(bigBlock);
    // A foreign, truncated or inconsistent file is refused as decodeSnapshot refuses it.
    await expect(decodeSnapshotBlob(new Blob([new Uint8Array(100)]))).rejects.toThrow(/not a usable/);
    await expect(decodeSnapshotBlob(new Blob([bytes.subarray(0, bytes.length - 1)]))).rejects.toThrow(/size/);
    await expect(decodeSnapshotBlob(new Blob([bytes.subarray(0, 20)]))).rejects.toThrow(/not a usable/);

    // Restored: the VM's frames get the pages only when its vCPU threads start, and then all of them.
    const vm = Vm.fromSnapshot(fromBlob, nodeThreads);
    try {
      expect(vm.board.memory.readU8(0x80000000 + 9 * 4096)).toBe(0);
      vm.pause(); // the harts copy their share, then park: the synthetic guest has no code
      vm.start();
      await expect.poll(() => Atomics.load(vm.board.block, VM_RAM_PENDING), { timeout: 10_000 }).toBe(0);
      expect(vm.board.memory.readU32(0x80000000 + 5 * 4096 + 100)).toBe(0x030201);
      expect(vm.board.memory.readU8(0x80000000 + 9 * 4096)).toBe(7);
    } finally {
      await vm.stop();
    }
    // Without threads that share memory there are none to copy them: loadSnapshotPages does, before the start.
    const unshared = Vm.fromSnapshot(await decodeSnapshotBlob(new Blob([bytes])), new CooperativeThreads());
    try {
      expect(unshared.board.memory.readU8(0x80000000 + 9 * 4096)).toBe(0);
      expect(() => unshared.start()).toThrow(/loadSnapshotPages first/);
      await unshared.loadSnapshotPages();
      expect(unshared.board.memory.readU32(0x80000000 + 5 * 4096 + 100)).toBe(0x030201);
      expect(unshared.board.memory.readU8(0x80000000 + 9 * 4096)).toBe(7);
      expect(unshared.board.memory.readU8(0x80000000 + 10 * 4096)).toBe(0);
    } finally {
      await unshared.stop();
    }
  });

  it("a vCPU thread that cannot read its share of a snapshot's pages fails the VM with the reason", async () => {
    const bytes = encodeSnapshot({ ...syntheticSnapshot(0), ram: new Uint8Array(16 << 20).fill(1) });
    const decoded = await decodeSnapshotBlob(new Blob([bytes]));
    // A Blob shorter than the pages the bitmap marks: the share reads too few bytes.
    // (Copied by descriptor: spreading would read `ram`, which a Blob-backed snapshot does not have.)
    const short = Object.defineProperties(
      {},
      {
        ...Object.getOwnPropertyDescriptors(decoded),
        pageBlob: { value: decoded.pageBlob!.slice(0, 4096), enumerable: true },
      },
    ) as VmSnapshot;
    const vm = Vm.fromSnapshot(short, nodeThreads);
    vm.start();
    const event = await vm.whenPoweredOff();
    expect(event.kind).toBe('failure');
    expect(event.kind === 'failure' && event.message).toMatch(
      /vCPU 0 could not read the boot snapshot's memory \(.*its pages are 4096 bytes, 16777216 expected/,
    );
    await vm.stop();
  });

  it('a snapshot file records its NICs (older files without the field have none)', () => {
    expect(decodeSnapshot(encodeSnapshot(syntheticSnapshot(2))).nics).toBe(2);
    expect(decodeSnapshot(encodeSnapshot(syntheticSnapshot(0))).nics).toBe(0);
  });

  it("a snapshot file keeps the console's last line (at most MAX_SCREEN_CHARS); a longer one in a file is refused", () => {
    const prompt = 'root@tabvisor:/root# ';
    expect(decodeSnapshot(encodeSnapshot({ ...syntheticSnapshot(0), screen: prompt })).screen).toBe(prompt);
    expect(decodeSnapshot(encodeSnapshot(syntheticSnapshot(0))).screen).toBeUndefined();
    const long = `${'x'.repeat(MAX_SCREEN_CHARS)}${prompt}`;
    expect(decodeSnapshot(encodeSnapshot({ ...syntheticSnapshot(0), screen: long })).screen).toBe(
      long.slice(-MAX_SCREEN_CHARS),
    );
    // A file whose header holds a longer line, or one that is not a string, was not written by us.
    const withHeader = (edit: (header: Record<string, unknown>) => void): Uint8Array => {
      const bytes = encodeSnapshot(syntheticSnapshot(0));
      const length = new DataView(bytes.buffer).getUint32(8, true);
      const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + length))) as Record<
        string,
        unknown
      >;
      edit(header);
      const json = new TextEncoder().encode(JSON.stringify(header));
      const out = new Uint8Array(12 + json.length + bytes.length - 12 - length);
      out.set(bytes.subarray(0, 12));
      new DataView(out.buffer).setUint32(8, json.length, true);
      out.set(json, 12);
      out.set(bytes.subarray(12 + length), 12 + json.length);
      return out;
    };
    expect(decodeSnapshot(withHeader((h) => (h.screen = prompt))).screen).toBe(prompt);
    expect(() => decodeSnapshot(withHeader((h) => (h.screen = 'S'.repeat(MAX_SCREEN_CHARS + 1))))).toThrow(
      /header/,
    );
    expect(() => decodeSnapshot(withHeader((h) => (h.screen = 42)))).toThrow(/header/);
  });

  it('a restore needs as many NICs as the snapshot, and says so', () => {
    expect(() => Vm.fromSnapshot(syntheticSnapshot(1), nodeThreads)).toThrow(
      /taken of a VM with 1 NIC\(s\), this VM has 0/,
    );
    expect(() =>
      Vm.fromSnapshot(syntheticSnapshot(0), nodeThreads, undefined, [nic('02:00:00:00:00:01')]),
    ).toThrow(/taken of a VM with 0 NIC\(s\), this VM has 1/);
  });

  it("restored NICs carry the new VM's MACs, with the link held down until the guest driver resets them", async () => {
    const macs = ['02:00:00:00:00:0a', '02:00:00:00:00:0b'];
    const vm = Vm.fromSnapshot(syntheticSnapshot(2), nodeThreads, undefined, macs.map(nic));
    for (const [i, transport] of vm.board.nics.entries()) {
      const mac = Array.from({ length: 6 }, (_, b) => transport.read(VIRTIO_MMIO_CONFIG + b, 1));
      expect(mac.map((b) => b.toString(16).padStart(2, '0')).join(':')).toBe(macs[i]);
      expect(transport.read(VIRTIO_MMIO_CONFIG + 6, 2)).toBe(0); // status without LINK_UP
    }
    await vm.stop();
  });

  it('a VM with a disk is not snapshotted, with the reason and what to do instead', async () => {
    const vm = Vm.create(
      { ...(await defaultSpec(1, 32)), disks: [new MemoryBlockBackend(1 << 20)] },
      nodeThreads,
    );
    await expect(vm.snapshot()).rejects.toThrow(
      /snapshots of VMs with disks are not supported: .*no longer matches its disk; snapshot a VM without disks/,
    );
    await vm.stop();
  });
});
