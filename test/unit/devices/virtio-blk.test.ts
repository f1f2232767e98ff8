import { describe, it, expect } from 'vitest';
import { prng } from '../../helpers/prng.ts';
import { SharedLayout, createControlBlock } from '../../../src/common/shared-block.ts';
import type { BlockBackend } from '../../../src/devices/block-backend.ts';
import { BlockIoError } from '../../../src/devices/block-backend.ts';
import {
  VIRTIO_BLK_CONFIG_BLK_SIZE,
  VIRTIO_BLK_CONFIG_CAPACITY,
  VIRTIO_BLK_CONFIG_MAX_DISCARD_SEG,
  VIRTIO_BLK_CONFIG_SEG_MAX,
  VIRTIO_BLK_CONFIG_SIZE_MAX,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_MAX_DATA_BYTES,
  VIRTIO_BLK_MAX_DISCARD_SECTORS,
  VIRTIO_BLK_MAX_RANGES,
  VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_SEG_MAX,
  VIRTIO_BLK_SIZE_MAX,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_ID_BLOCK,
  VirtioBlkDevice,
  VirtioBlkHost,
  virtioBlkOptionsFor,
} from '../../../src/devices/virtio-blk.ts';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  VirtioMmioTransport,
  featureBit,
} from '../../../src/devices/virtio-mmio.ts';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../../src/devices/virtqueue.ts';
import { RAM_BASE } from '../../../src/mem/address-space.ts';
import { MemoryBlockBackend } from '../../../src/storage/memory-block-backend.ts';
import { OverlayBlockBackend, overlaySizeFor } from '../../../src/storage/overlay-block-backend.ts';
import {
  RecordingIrq,
  TestGuestRam,
  VirtioTestDriver,
  type TestBuffer,
} from '../../helpers/virtio-driver.ts';

const DISK_BYTES = 1 << 20;
const SECTORS = DISK_BYTES / 512;

interface Setup {
  readonly backend: BlockBackend;
  readonly host: VirtioBlkHost;
  readonly driver: VirtioTestDriver;
  readonly ram: TestGuestRam;
  readonly irq: RecordingIrq;
  readonly guestErrors: string[];
  readonly backendErrors: unknown[];
}

function setup(
  backend: BlockBackend = new MemoryBlockBackend(pattern(DISK_BYTES)),
  options: { ramBytes?: number; features?: bigint; initialize?: boolean } = {},
): Setup {
  const layout = new SharedLayout(1);
  const base = layout.alloc(VirtioMmioTransport.words(1));
  const block = createControlBlock(layout.words, true);
  const irq = new RecordingIrq();
  // Two objects over one region, as on a hart thread and on the I/O thread.
  const blkOptions = virtioBlkOptionsFor(backend, 'tabvisor-disk-0');
  const hartView = new VirtioMmioTransport(block, base, new VirtioBlkDevice(blkOptions), irq, 1);
  const ioView = new VirtioMmioTransport(block, base, new VirtioBlkDevice(blkOptions), irq, 1);
  const ram = new TestGuestRam(options.ramBytes ?? 4 << 20);
  const guestErrors: string[] = [];
  const backendErrors: unknown[] = [];
  const host = new VirtioBlkHost(ioView, ram.memory, backend, {
    onGuestError: (reason) => guestErrors.push(reason),
    onBackendError: (error) => backendErrors.push(error),
  });
  const driver = new VirtioTestDriver(hartView, ram);
  if (options.initialize ?? true) driver.initialize({ features: options.features });
  host.service(); // DRIVER_OK rang the doorbell; the queue is empty
  return { backend, host, driver, ram, irq, guestErrors, backendErrors };
}

/** Deterministic disk contents: byte i of sector s is (s * 7 + i) & 0xff. */
function pattern(bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = ((i >>> 9) * 7 + (i & 511)) & 0xff;
  return out;
}

function header(type: number, sector: number, sectorHi = 0): Uint8Array {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, true);
  view.setUint32(8, sector >>> 0, true);
  view.setUint32(12, sectorHi, true);
  return bytes;
}

function ranges(list: Array<[number, number, number?]>): Uint8Array {
  const bytes = new Uint8Array(16 * list.length);
  const view = new DataView(bytes.buffer);
  list.forEach(([sector, count, flags], i) => {
    view.setUint32(16 * i, sector, true);
    view.setUint32(16 * i + 8, count, true);
    view.setUint32(16 * i + 12, flags ?? 0, true);
  });
  return bytes;
}

/** A request as Linux builds it; returns where its status byte and data live. */
function submit(
  s: Setup,
  buffers: TestBuffer[],
  options: { indirect?: boolean; notify?: boolean } = {},
): { head: number; statusGpa: number; dataGpa: number } {
  const q = s.driver.queues[0];
  const statusGpa = s.ram.alloc(1, 1);
  s.ram.memory.writeU8(statusGpa, 0xff);
  const all = [...buffers, { gpa: statusGpa, length: 1, writable: true }];
  const resolved = all.map((b) =>
    'writableLength' in b
      ? { gpa: s.ram.alloc(b.writableLength, 1), length: b.writableLength, writable: true }
      : b,
  );
  const firstWritable = resolved.find((b) => 'gpa' in b && b.writable);
  const dataGpa = firstWritable !== undefined && 'gpa' in firstWritable ? firstWritable.gpa : 0;
  const head = q.add(resolved, options);
  if (options.notify ?? true) s.driver.notify(0);
  return { head, statusGpa, dataGpa };
}

function read(
  s: Setup,
  sector: number,
  bytes: number,
  options: { indirect?: boolean; notify?: boolean } = {},
) {
  return submit(s, [{ bytes: header(VIRTIO_BLK_T_IN, sector) }, { writableLength: bytes }], options);
}

function write(s: Setup, sector: number, data: Uint8Array, options: { indirect?: boolean } = {}) {
  return submit(s, [{ bytes: header(VIRTIO_BLK_T_OUT, sector) }, { bytes: data }], options);
}

function status(s: Setup, request: { statusGpa: number }): number {
  return s.ram.memory.readU8(request.statusGpa);
}

function needsReset(s: Setup): boolean {
  return (s.driver.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET) !== 0;
}

describe('virtio-blk device declaration', () => {
  it('is device 2 with one 256-entry queue, and offers VERSION_1, FLUSH, WRITE_ZEROES and DISCARD', () => {
    const s = setup(undefined, { initialize: false });
    expect(s.driver.probe()).toBe(VIRTIO_ID_BLOCK);
    const features = s.driver.deviceFeatures();
    for (const bit of [
      VIRTIO_F_VERSION_1,
      VIRTIO_BLK_F_FLUSH,
      VIRTIO_BLK_F_WRITE_ZEROES,
      VIRTIO_BLK_F_DISCARD,
    ]) {
      expect(features & featureBit(bit)).not.toBe(0n);
    }
    expect(features & featureBit(VIRTIO_BLK_F_RO)).toBe(0n);
  });

  it('config space holds capacity in sectors, size_max, seg_max, blk_size and discard limits', () => {
    const s = setup();
    const t = s.driver.transport;
    const cfg = (offset: number) => t.read(VIRTIO_MMIO_CONFIG + offset, 4);
    expect(cfg(VIRTIO_BLK_CONFIG_CAPACITY)).toBe(SECTORS);
    expect(cfg(VIRTIO_BLK_CONFIG_CAPACITY + 4)).toBe(0);
    expect(cfg(VIRTIO_BLK_CONFIG_SIZE_MAX)).toBe(VIRTIO_BLK_SIZE_MAX);
    expect(cfg(VIRTIO_BLK_CONFIG_SEG_MAX)).toBe(VIRTIO_BLK_SEG_MAX);
    expect(cfg(VIRTIO_BLK_CONFIG_BLK_SIZE)).toBe(512);
    expect(cfg(VIRTIO_BLK_CONFIG_MAX_DISCARD_SEG)).toBe(VIRTIO_BLK_MAX_RANGES);
    expect(t.read(VIRTIO_MMIO_CONFIG + 200, 1)).toBe(0);
  });

  it('a read-only backend makes a read-only device without discard or write zeroes', () => {
    const device = new VirtioBlkDevice(virtioBlkOptionsFor(new MemoryBlockBackend(4096, { readOnly: true })));
    expect(device.features & featureBit(VIRTIO_BLK_F_RO)).not.toBe(0n);
    expect(device.features & featureBit(VIRTIO_BLK_F_DISCARD)).toBe(0n);
    expect(device.features & featureBit(VIRTIO_BLK_F_WRITE_ZEROES)).toBe(0n);
  });

  it('refuses a disk that is not whole sectors and a serial longer than 20 bytes', () => {
    expect(
      () => new VirtioBlkDevice({ sizeBytes: 1000, readOnly: false, discard: false, serial: '' }),
    ).toThrow();
    expect(
      () => new VirtioBlkDevice({ sizeBytes: 512, readOnly: false, discard: false, serial: 'x'.repeat(21) }),
    ).toThrow();
  });
});

describe('virtio-blk requests', () => {
  it('reads sectors into buffers that cross guest pages, completes once and interrupts', () => {
    const s = setup();
    const r = read(s, 3, 8192);
    expect(s.driver.queues[0].usedIdx()).toBe(0); // the hart only rang the doorbell
    s.host.service();
    expect(status(s, r)).toBe(VIRTIO_BLK_S_OK);
    expect(s.ram.get(r.dataGpa, 8192)).toEqual(pattern(DISK_BYTES).subarray(3 * 512, 3 * 512 + 8192));
    expect(s.driver.queues[0].takeUsed()).toEqual([{ id: r.head, len: 8193 }]);
    expect(s.irq.level).toBe(true);
    expect(s.driver.handleInterrupt()).toBe(VIRTIO_MMIO_INT_VRING);
    expect(s.irq.level).toBe(false);
  });

  it('reads into buffers it reuses once a read finished, and each read gets exactly its own bytes', () => {
    const disk = new MemoryBlockBackend(pattern(DISK_BYTES));
    const lent: Uint8Array[] = [];
    const spy: BlockBackend = {
      sizeBytes: disk.sizeBytes,
      readOnly: false,
      queueDepth: disk.queueDepth,
      read: (offset, dst) => {
        lent.push(dst);
        return disk.read(offset, dst);
      },
      write: (offset, src) => disk.write(offset, src),
      flush: () => disk.flush(),
    };
    const s = setup(spy);
    const big = read(s, 10, 16384);
    s.host.service();
    const small = read(s, 40, 1024);
    s.host.service();
    expect(lent[1].buffer).toBe(lent[0].buffer);
    expect(lent[1].byteOffset).toBe(0);
    expect(lent[1].length).toBe(1024);
    expect(s.ram.get(big.dataGpa, 16384)).toEqual(pattern(DISK_BYTES).subarray(10 * 512, 10 * 512 + 16384));
    expect(s.ram.get(small.dataGpa, 1024)).toEqual(pattern(DISK_BYTES).subarray(40 * 512, 40 * 512 + 1024));
    // Two reads in flight at once get separate buffers.
    const a = read(s, 1, 512, { notify: false });
    const b = read(s, 2, 512);
    s.host.service();
    expect(lent[2].buffer).not.toBe(lent[3].buffer);
    expect(s.ram.get(a.dataGpa, 512)).toEqual(pattern(DISK_BYTES).subarray(512, 1024));
    expect(s.ram.get(b.dataGpa, 512)).toEqual(pattern(DISK_BYTES).subarray(1024, 1536));
  });

  it('gathers writes into buffers it reuses once a write settled, and each write stores exactly its own bytes', async () => {
    const disk = new MemoryBlockBackend(new Uint8Array(DISK_BYTES), { async: true });
    const lent: Uint8Array[] = [];
    const spy: BlockBackend = {
      sizeBytes: disk.sizeBytes,
      readOnly: false,
      queueDepth: disk.queueDepth,
      read: (offset, dst) => disk.read(offset, dst),
      write: (offset, src) => {
        lent.push(src);
        return disk.write(offset, src);
      },
      flush: () => disk.flush(),
    };
    const s = setup(spy);
    const big = pattern(16384);
    write(s, 10, big);
    s.host.service();
    await s.host.whenIdle();
    const small = new Uint8Array(1024).fill(0x5a);
    write(s, 60, small);
    s.host.service();
    // In flight: a second write now must not get the buffer the first one still holds.
    const other = new Uint8Array(512).fill(0x3c);
    write(s, 70, other);
    s.host.service();
    await s.host.whenIdle();
    expect(lent[1].buffer).toBe(lent[0].buffer);
    expect(lent[1].byteOffset).toBe(0);
    expect(lent[1].length).toBe(1024);
    expect(lent[2].buffer).not.toBe(lent[1].buffer);
    expect(disk.bytes.subarray(10 * 512, 10 * 512 + 16384)).toEqual(big);
    expect(disk.bytes.subarray(60 * 512, 60 * 512 + 1024)).toEqual(small);
    expect(disk.bytes.subarray(70 * 512, 70 * 512 + 512)).toEqual(other);
    expect(disk.bytes[60 * 512 + 1024]).toBe(0); // the reused buffer's older bytes went nowhere
  });

  it('writes sectors through direct and indirect chains; the last sector of the disk is reachable', () => {
    const s = setup();
    const data = new Uint8Array(1024).fill(0xab);
    const a = write(s, 0, data);
    const b = write(s, SECTORS - 2, data, { indirect: true });
    s.host.service();
    expect([status(s, a), status(s, b)]).toEqual([VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK]);
    const disk = (s.backend as MemoryBlockBackend).bytes;
    expect(disk.subarray(0, 1024).every((x) => x === 0xab)).toBe(true);
    expect(disk.subarray(DISK_BYTES - 1024).every((x) => x === 0xab)).toBe(true);
    expect(s.driver.queues[0].takeUsed().map((u) => u.len)).toEqual([1, 1]);
  });

  it('flush reaches the backend; GET_ID returns the serial NUL-padded', () => {
    const s = setup();
    const f = submit(s, [{ bytes: header(VIRTIO_BLK_T_FLUSH, 0) }]);
    const id = submit(s, [{ bytes: header(VIRTIO_BLK_T_GET_ID, 0) }, { writableLength: 20 }]);
    s.host.service();
    expect(status(s, f)).toBe(VIRTIO_BLK_S_OK);
    expect((s.backend as MemoryBlockBackend).flushCount).toBe(1);
    expect(status(s, id)).toBe(VIRTIO_BLK_S_OK);
    expect(new TextDecoder().decode(s.ram.get(id.dataGpa, 20))).toBe('tabvisor-disk-0\0\0\0\0\0');
  });

  it('discard and write zeroes clear their ranges; unmap is allowed only on write zeroes', () => {
    const s = setup();
    const d = submit(s, [{ bytes: header(VIRTIO_BLK_T_DISCARD, 0) }, { bytes: ranges([[8, 8]]) }]);
    const z = submit(s, [
      { bytes: header(VIRTIO_BLK_T_WRITE_ZEROES, 0) },
      {
        bytes: ranges([
          [100, 4, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP],
          [200, 300],
        ]),
      },
    ]);
    const bad = submit(s, [{ bytes: header(VIRTIO_BLK_T_DISCARD, 0) }, { bytes: ranges([[0, 1, 1]]) }]);
    s.host.service();
    return s.host.whenIdle().then(() => {
      const disk = (s.backend as MemoryBlockBackend).bytes;
      expect([status(s, d), status(s, z), status(s, bad)]).toEqual([
        VIRTIO_BLK_S_OK,
        VIRTIO_BLK_S_OK,
        VIRTIO_BLK_S_UNSUPP,
      ]);
      expect(disk.subarray(8 * 512, 16 * 512).every((x) => x === 0)).toBe(true);
      expect(disk.subarray(100 * 512, 104 * 512).every((x) => x === 0)).toBe(true);
      expect(disk.subarray(200 * 512, 500 * 512).every((x) => x === 0)).toBe(true);
      expect(disk[0]).toBe(pattern(1)[0]);
    });
  });

  it('on a copy-on-write overlay, discard and write zeroes make blocks read zero (not the base), with no data written', async () => {
    const base = new MemoryBlockBackend(pattern(DISK_BYTES), { readOnly: true });
    const stored = new MemoryBlockBackend(overlaySizeFor(DISK_BYTES), { async: true });
    const overlay = await OverlayBlockBackend.open(base, stored, 'sha256:test');
    const dataWrites: number[] = [];
    const write = stored.write.bind(stored);
    stored.write = (offset, src) => (dataWrites.push(offset), write(offset, src));
    const s = setup(overlay);
    expect(s.driver.deviceFeatures() & featureBit(VIRTIO_BLK_F_DISCARD)).not.toBe(0n);
    const d = submit(s, [{ bytes: header(VIRTIO_BLK_T_DISCARD, 0) }, { bytes: ranges([[8, 16]]) }]);
    const z = submit(s, [{ bytes: header(VIRTIO_BLK_T_WRITE_ZEROES, 0) }, { bytes: ranges([[64, 8]]) }]);
    s.host.service();
    await s.host.whenIdle();
    expect([status(s, d), status(s, z)]).toEqual([VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK]);
    expect(dataWrites).toEqual([]); // whole 4 KiB blocks: zero bits only
    const r = read(s, 0, 80 * 512);
    s.host.service();
    await s.host.whenIdle();
    const got = s.ram.get(r.dataGpa, 80 * 512);
    const expected = pattern(80 * 512);
    expected.fill(0, 8 * 512, 24 * 512);
    expected.fill(0, 64 * 512, 72 * 512);
    expect(got).toEqual(expected);
    expect(base.bytes).toEqual(pattern(DISK_BYTES));
  });

  it("write zeroes uses the backend's writeZeroes when it has one, instead of writing zero buffers", async () => {
    const inner = new MemoryBlockBackend(pattern(DISK_BYTES));
    const calls: string[] = [];
    const backend: BlockBackend = {
      sizeBytes: inner.sizeBytes,
      readOnly: false,
      queueDepth: 4,
      read: (offset, dst) => inner.read(offset, dst),
      write: (offset, src) => (calls.push(`write ${offset}+${src.length}`), inner.write(offset, src)),
      flush: () => inner.flush(),
      writeZeroes: (offset, length) => (
        calls.push(`zero ${offset}+${length}`),
        inner.writeZeroes(offset, length)
      ),
    };
    const s = setup(backend);
    expect(s.driver.deviceFeatures() & featureBit(VIRTIO_BLK_F_DISCARD)).toBe(0n); // no discard in this backend
    const z = submit(s, [{ bytes: header(VIRTIO_BLK_T_WRITE_ZEROES, 0) }, { bytes: ranges([[16, 256]]) }]);
    s.host.service();
    await s.host.whenIdle();
    expect(status(s, z)).toBe(VIRTIO_BLK_S_OK);
    expect(calls).toEqual([`zero ${16 * 512}+${256 * 512}`]);
    expect(inner.bytes.subarray(16 * 512, 272 * 512).every((x) => x === 0)).toBe(true);
  });

  it('unknown request types and features the driver did not accept are VIRTIO_BLK_S_UNSUPP', () => {
    const s = setup(undefined, { features: featureBit(VIRTIO_F_VERSION_1) });
    const unknown = submit(s, [{ bytes: header(99, 0) }]);
    const discard = submit(s, [{ bytes: header(VIRTIO_BLK_T_DISCARD, 0) }, { bytes: ranges([[0, 1]]) }]);
    s.host.service();
    expect([status(s, unknown), status(s, discard)]).toEqual([VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_S_UNSUPP]);
  });
});

describe('virtio-blk bounds against a hostile guest (each with the legitimate request next to it)', () => {
  it('sectors past the end are IOERR; the last whole sector is fine; a 64-bit sector does not wrap', () => {
    const s = setup();
    const last = read(s, SECTORS - 1, 512);
    const past = read(s, SECTORS - 1, 1024);
    const far = submit(s, [{ bytes: header(VIRTIO_BLK_T_IN, 0, 0x8000_0000) }, { writableLength: 512 }]);
    const wrap = submit(s, [{ bytes: header(VIRTIO_BLK_T_IN, 0, 1 << 23) }, { writableLength: 512 }]);
    s.host.service();
    expect([status(s, last), status(s, past), status(s, far), status(s, wrap)]).toEqual([
      VIRTIO_BLK_S_OK,
      VIRTIO_BLK_S_IOERR,
      VIRTIO_BLK_S_IOERR,
      VIRTIO_BLK_S_IOERR,
    ]);
    // Requests answered while parsing complete before the ones the backend carries out: any order is allowed.
    const lengths = new Map(s.driver.queues[0].takeUsed().map((u) => [u.id, u.len]));
    expect([last, past, far, wrap].map((r) => lengths.get(r.head))).toEqual([513, 1, 1, 1]);
  });

  it('writes to a read-only disk are IOERR and change nothing; reads still work', () => {
    const backend = new MemoryBlockBackend(pattern(DISK_BYTES), { readOnly: true });
    const s = setup(backend);
    const w = write(s, 0, new Uint8Array(512).fill(1));
    const z = submit(s, [{ bytes: header(VIRTIO_BLK_T_WRITE_ZEROES, 0) }, { bytes: ranges([[0, 1]]) }]);
    const r = read(s, 0, 512);
    s.host.service();
    expect([status(s, w), status(s, z), status(s, r)]).toEqual([
      VIRTIO_BLK_S_IOERR,
      VIRTIO_BLK_S_UNSUPP,
      VIRTIO_BLK_S_OK,
    ]);
    expect(backend.bytes).toEqual(pattern(DISK_BYTES));
  });

  it(`IN/OUT data is capped at ${VIRTIO_BLK_MAX_DATA_BYTES} bytes (seg_max * size_max); exactly the cap works`, () => {
    const s = setup(new MemoryBlockBackend(16 << 20), { ramBytes: 24 << 20 });
    const atCap = read(s, 0, VIRTIO_BLK_MAX_DATA_BYTES);
    const over = read(s, 0, VIRTIO_BLK_MAX_DATA_BYTES + 512);
    s.host.service();
    expect([status(s, atCap), status(s, over)]).toEqual([VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR]);
  });

  it('data that is not whole sectors is IOERR', () => {
    const s = setup();
    const r = read(s, 0, 100);
    const w = write(s, 0, new Uint8Array(700));
    s.host.service();
    expect([status(s, r), status(s, w)]).toEqual([VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_IOERR]);
  });

  it('a header shorter than 16 bytes is IOERR (a full one is fine)', () => {
    const s = setup();
    const short = submit(s, [{ bytes: header(VIRTIO_BLK_T_IN, 0).subarray(0, 12) }, { writableLength: 512 }]);
    const split = submit(s, [
      { bytes: header(VIRTIO_BLK_T_IN, 1).subarray(0, 5) },
      { bytes: header(VIRTIO_BLK_T_IN, 1).subarray(5) },
      { writableLength: 512 },
    ]);
    s.host.service();
    expect([status(s, short), status(s, split)]).toEqual([VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK]);
  });

  it('wrong directions are IOERR: a read with device-readable data, a write with device-writable data', () => {
    const s = setup();
    const readWithData = submit(s, [
      { bytes: header(VIRTIO_BLK_T_IN, 0) },
      { bytes: new Uint8Array(512) },
      { writableLength: 512 },
    ]);
    const writeIntoGuest = submit(s, [{ bytes: header(VIRTIO_BLK_T_OUT, 0) }, { writableLength: 512 }]);
    const headerWritable = submit(s, [{ writableLength: 16 }]);
    s.host.service();
    expect([status(s, readWithData), status(s, writeIntoGuest), status(s, headerWritable)]).toEqual([
      VIRTIO_BLK_S_IOERR,
      VIRTIO_BLK_S_IOERR,
      VIRTIO_BLK_S_IOERR,
    ]);
    expect((s.backend as MemoryBlockBackend).bytes).toEqual(pattern(DISK_BYTES));
  });

  it('data buffers outside RAM are IOERR and nothing is written anywhere', () => {
    const s = setup();
    const outside = submit(s, [
      { bytes: header(VIRTIO_BLK_T_IN, 0) },
      { gpa: RAM_BASE + s.ram.ramBytes - 256, length: 512, writable: true },
    ]);
    const high = submit(s, [
      { bytes: header(VIRTIO_BLK_T_OUT, 0) },
      { gpa: 0x1000, length: 512, writable: false },
    ]);
    s.host.service();
    expect([status(s, outside), status(s, high)]).toEqual([VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_IOERR]);
    expect(s.ram.get(RAM_BASE + s.ram.ramBytes - 256, 256).every((x) => x === 0)).toBe(true);
  });

  it(`discard and write zeroes: at most ${VIRTIO_BLK_MAX_RANGES} ranges, bounded sectors per range, whole ranges`, () => {
    const s = setup(new MemoryBlockBackend(8 << 20));
    const many = Array.from({ length: VIRTIO_BLK_MAX_RANGES }, (_, i): [number, number] => [i, 1]);
    const okMany = submit(s, [{ bytes: header(VIRTIO_BLK_T_DISCARD, 0) }, { bytes: ranges(many) }]);
    const tooMany = submit(s, [
      { bytes: header(VIRTIO_BLK_T_DISCARD, 0) },
      { bytes: ranges([...many, [0, 1]]) },
    ]);
    const zeroBig = submit(s, [
      { bytes: header(VIRTIO_BLK_T_WRITE_ZEROES, 0) },
      { bytes: ranges([[0, VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS + 1]]) },
    ]);
    const discardBig = submit(s, [
      { bytes: header(VIRTIO_BLK_T_DISCARD, 0) },
      { bytes: ranges([[0, VIRTIO_BLK_MAX_DISCARD_SECTORS + 1]]) },
    ]);
    const partial = submit(s, [
      { bytes: header(VIRTIO_BLK_T_DISCARD, 0) },
      { bytes: ranges([[0, 1]]).subarray(0, 12) },
    ]);
    const zeroAtMax = submit(s, [
      { bytes: header(VIRTIO_BLK_T_WRITE_ZEROES, 0) },
      { bytes: ranges([[0, VIRTIO_BLK_MAX_WRITE_ZEROES_SECTORS]]) },
    ]);
    s.host.service();
    return s.host.whenIdle().then(() => {
      expect([okMany, tooMany, zeroBig, discardBig, partial, zeroAtMax].map((r) => status(s, r))).toEqual([
        VIRTIO_BLK_S_OK,
        VIRTIO_BLK_S_IOERR,
        VIRTIO_BLK_S_IOERR,
        VIRTIO_BLK_S_IOERR,
        VIRTIO_BLK_S_IOERR,
        VIRTIO_BLK_S_OK,
      ]);
    });
  });

  it('a request without a status byte, or with its status byte outside RAM, needs a device reset', () => {
    for (const last of [
      { bytes: new Uint8Array(512) },
      { gpa: 0x2000, length: 1, writable: true },
    ] as TestBuffer[]) {
      const s = setup();
      const q = s.driver.queues[0];
      const good = read(s, 0, 512, {});
      q.add([{ bytes: header(VIRTIO_BLK_T_IN, 0) }, last]);
      s.driver.notify(0);
      s.host.service();
      // A failed device carries out nothing more, even the good request taken in the same pass.
      expect(status(s, good)).toBe(0xff);
      expect(needsReset(s)).toBe(true);
      expect(s.guestErrors.length).toBe(1);
      // The driver recovers with a reset and the device works again.
      s.driver.initialize();
      const again = read(s, 0, 512);
      s.host.service();
      expect(status(s, again)).toBe(VIRTIO_BLK_S_OK);
    }
  });

  it('a broken ring (available index jumping past the queue size) needs a reset and stops processing', () => {
    const s = setup();
    const q = s.driver.queues[0];
    const r = read(s, 0, 512, { notify: false });
    q.setAvailIdx(q.availIdx + 256);
    s.driver.notify(0);
    s.host.service();
    expect(needsReset(s)).toBe(true);
    expect(status(s, r)).toBe(0xff);
    expect(q.usedIdx()).toBe(0);
  });

  it('descriptor-level garbage (a loop) needs a reset, never throws', () => {
    const s = setup();
    const q = s.driver.queues[0];
    q.writeDescriptor(0, { addr: RAM_BASE, len: 16, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    q.writeDescriptor(1, { addr: RAM_BASE, len: 16, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 0 });
    q.publish(0);
    s.driver.notify(0);
    expect(() => s.host.service()).not.toThrow();
    expect(needsReset(s)).toBe(true);
  });
});

/** A backend whose operations complete only when the test says so. */
class ManualBackend implements BlockBackend {
  readonly sizeBytes = DISK_BYTES;
  readonly readOnly = false;
  readonly pending: Array<{
    op: string;
    offset: number;
    buffer: Uint8Array;
    resolve(): void;
    reject(e: Error): void;
  }> = [];
  constructor(readonly queueDepth = 64) {}
  read(offset: number, dst: Uint8Array): Promise<void> {
    return this.defer('read', offset, dst);
  }
  write(offset: number, src: Uint8Array): Promise<void> {
    return this.defer('write', offset, src);
  }
  flush(): Promise<void> {
    return this.defer('flush', 0, new Uint8Array(0));
  }
  private defer(op: string, offset: number, buffer: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => this.pending.push({ op, offset, buffer, resolve, reject }));
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('virtio-blk with an asynchronous backend', () => {
  it('completes requests out of order, each exactly once', async () => {
    const backend = new ManualBackend();
    const s = setup(backend);
    const requests = [0, 1, 2, 3].map((sector) => read(s, sector, 512));
    s.host.service();
    expect(s.host.inFlight).toBe(4);
    expect(backend.pending.length).toBe(4);
    for (const p of [...backend.pending].reverse()) {
      p.buffer.fill(p.offset / 512 + 1);
      p.resolve();
      await tick();
    }
    const used = s.driver.queues[0].takeUsed();
    expect(used.map((u) => u.id)).toEqual(requests.map((r) => r.head).reverse());
    requests.forEach((r, i) => {
      expect(status(s, r)).toBe(VIRTIO_BLK_S_OK);
      expect(s.ram.get(r.dataGpa, 512).every((x) => x === i + 1)).toBe(true);
    });
    expect(s.host.inFlight).toBe(0);
  });

  it('a failing backend gives VIRTIO_BLK_S_IOERR for that request only and reports the error', async () => {
    const backend = new ManualBackend();
    const s = setup(backend);
    const bad = read(s, 0, 512);
    const good = read(s, 1, 512);
    s.host.service();
    backend.pending[0].reject(new BlockIoError('disk on fire'));
    backend.pending[1].resolve();
    await s.host.whenIdle();
    expect([status(s, bad), status(s, good)]).toEqual([VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK]);
    expect(s.backendErrors.length).toBe(1);
    expect(needsReset(s)).toBe(false);
  });

  it('never exceeds the backend queue depth; the rest waits in the ring and is taken as slots free up', async () => {
    const backend = new ManualBackend(2);
    const s = setup(backend);
    const requests = [0, 1, 2, 3, 4].map((sector) => read(s, sector, 512));
    s.host.service();
    expect(backend.pending.length).toBe(2);
    for (let done = 0; done < 5; done++) {
      expect(s.host.inFlight).toBeLessThanOrEqual(2);
      backend.pending[done].resolve();
      await tick();
    }
    expect(requests.map((r) => status(s, r))).toEqual(Array(5).fill(VIRTIO_BLK_S_OK));
  });

  it('a reset while requests are in flight discards their completions; the device then works again', async () => {
    const backend = new ManualBackend();
    const s = setup(backend);
    const before = read(s, 0, 512);
    s.host.service();
    s.driver.reset();
    s.ram.memory.fill(before.dataGpa, 512, 0x77); // the driver reused the buffer
    backend.pending[0].buffer.fill(1);
    backend.pending[0].resolve();
    await tick();
    expect(status(s, before)).toBe(0xff);
    expect(s.ram.get(before.dataGpa, 512).every((x) => x === 0x77)).toBe(true);
    expect(s.irq.level).toBe(false);
    s.driver.initialize();
    s.host.service();
    const after = read(s, 0, 512);
    s.host.service();
    backend.pending[1].resolve();
    await s.host.whenIdle();
    expect(status(s, after)).toBe(VIRTIO_BLK_S_OK);
    expect(s.driver.queues[0].takeUsed()).toEqual([{ id: after.head, len: 513 }]);
  });
});

describe('virtio-blk randomized hostile guest', () => {
  it('random chains: no host exception, good requests complete exactly once and correctly, bad ones fail or reset', () => {
    const random = prng(0x7ab5);
    const int = (n: number) => Math.floor(random() * n);
    const backend = new MemoryBlockBackend(pattern(DISK_BYTES));
    const s = setup(backend, { ramBytes: 32 << 20 });
    const shadow = pattern(DISK_BYTES);
    const scratch = s.ram.alloc(64 * 1024, 16);
    for (let i = 0; i < 64 * 1024; i++) s.ram.memory.writeU8(scratch + i, int(256));
    let resets = 0;
    let goodDone = 0;
    let badSeen = 0;

    for (let round = 0; round < 300; round++) {
      const q = s.driver.queues[0];
      interface Expect {
        kind: 'good-in' | 'good-out' | 'bad' | 'garbage';
        head: number;
        statusGpa: number;
        dataGpa: number;
        sector: number;
        data?: Uint8Array;
      }
      const expected: Expect[] = [];
      const batch = 1 + int(6);
      for (let k = 0; k < batch && q.freeDescriptors > 140; k++) {
        const choice = random();
        const indirect = random() < 0.3;
        const sectors = 1 + int(16);
        if (choice < 0.55) {
          // Well-formed read or write, data split at random points.
          const sector = int(SECTORS - sectors);
          const isWrite = random() < 0.5;
          const bytes = sectors * 512;
          const data = new Uint8Array(bytes).map(() => int(256));
          const cuts = [0, ...Array.from({ length: int(4) }, () => 1 + int(bytes - 1)), bytes].sort(
            (a, b) => a - b,
          );
          const pieces: TestBuffer[] = [];
          let dataGpa = 0;
          for (let c = 0; c + 1 < cuts.length; c++) {
            const len = cuts[c + 1] - cuts[c];
            if (len === 0) continue;
            if (isWrite) pieces.push({ bytes: data.subarray(cuts[c], cuts[c + 1]) });
            else {
              const gpa = s.ram.alloc(len, 1);
              if (dataGpa === 0) dataGpa = gpa;
              pieces.push({ gpa, length: len, writable: true });
            }
          }
          const hdr = { bytes: header(isWrite ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, sector) };
          const r = submit(s, [hdr, ...pieces], { indirect, notify: false });
          const segs = pieces.filter(
            (p): p is { gpa: number; length: number; writable: boolean } => 'gpa' in p,
          );
          expected.push({
            kind: isWrite ? 'good-out' : 'good-in',
            head: r.head,
            statusGpa: r.statusGpa,
            dataGpa,
            sector,
            data: isWrite ? data : undefined,
          });
          if (!isWrite) (expected[expected.length - 1] as Expect & { segs?: typeof segs }).segs = segs;
        } else if (choice < 0.85) {
          // Semantically bad but answerable: past the end, odd length, short header, unknown type, bad range.
          const variant = int(5);
          const parts: TestBuffer[][] = [
            [{ bytes: header(VIRTIO_BLK_T_IN, SECTORS - 1 + int(4)) }, { writableLength: 1024 }],
            [{ bytes: header(VIRTIO_BLK_T_OUT, 0) }, { bytes: new Uint8Array(1 + int(511)) }],
            [{ bytes: header(VIRTIO_BLK_T_IN, 0).subarray(0, int(16)) }, { writableLength: 512 }],
            [{ bytes: header(1000 + int(1000), 0) }],
            [{ bytes: header(VIRTIO_BLK_T_DISCARD, 0) }, { bytes: ranges([[SECTORS, 1 + int(8)]]) }],
          ];
          const r = submit(s, parts[variant], { indirect, notify: false });
          expected.push({ kind: 'bad', head: r.head, statusGpa: r.statusGpa, dataGpa: 0, sector: 0 });
        } else {
          // Garbage descriptors with random flags, lengths, addresses (scratch, outside RAM) and next links.
          const count = 1 + int(4);
          const own = Array.from({ length: count }, () => q.add([{ writableLength: 1 }]));
          // `add` published them; rewrite each and keep only the first published entry meaningful.
          for (const index of own) {
            const addrChoice = int(3);
            q.writeDescriptor(index, {
              addr:
                addrChoice === 0 ? scratch + int(60 * 1024) : addrChoice === 1 ? int(0x1000_0000) : scratch,
              addrHi: random() < 0.05 ? 1 : 0,
              len: random() < 0.1 ? 0xffff_ffff : int(2048),
              flags: int(8),
              // Out-of-range links only: links into other requests' descriptors would corrupt good requests.
              next: random() < 0.8 ? own[int(own.length)] : 256 + int(0x10000 - 256),
            });
          }
          for (const index of own)
            expected.push({ kind: 'garbage', head: index, statusGpa: 0, dataGpa: 0, sector: 0 });
        }
      }
      s.driver.notify(0);
      expect(() => s.host.service()).not.toThrow();

      const used = q.takeUsed();
      const seen = new Map<number, number>();
      for (const u of used) seen.set(u.id, (seen.get(u.id) ?? 0) + 1);
      for (const count of seen.values()) expect(count).toBe(1);
      const broken = needsReset(s);
      // Completed requests, in completion order (a synchronous backend completes in ring order).
      for (const u of used) {
        const e = expected.find((x) => x.head === u.id && x.kind !== 'garbage');
        if (e === undefined) continue;
        const st = status(s, e);
        if (e.kind === 'bad') {
          badSeen++;
          expect(st === VIRTIO_BLK_S_IOERR || st === VIRTIO_BLK_S_UNSUPP).toBe(true);
        } else if (e.kind === 'good-out') {
          expect(st).toBe(VIRTIO_BLK_S_OK);
          shadow.set(e.data as Uint8Array, e.sector * 512);
          goodDone++;
        } else {
          expect(st).toBe(VIRTIO_BLK_S_OK);
          const segs = (e as Expect & { segs: Array<{ gpa: number; length: number }> }).segs;
          let at = e.sector * 512;
          for (const seg of segs) {
            expect(s.ram.get(seg.gpa, seg.length)).toEqual(shadow.subarray(at, at + seg.length));
            at += seg.length;
          }
          goodDone++;
        }
      }
      if (!broken) {
        // A healthy device answered every answerable request of the batch.
        for (const e of expected) if (e.kind !== 'garbage') expect(seen.get(e.head)).toBe(1);
      } else {
        resets++;
        s.driver.initialize();
        s.host.service();
      }
    }
    expect(backend.bytes).toEqual(shadow);
    expect(goodDone).toBeGreaterThan(200);
    expect(badSeen).toBeGreaterThan(50);
    expect(resets).toBeGreaterThan(5);
    expect(s.guestErrors.length).toBe(resets);
  });
});
