import { gzipSync } from 'node:zlib';
import { describe, expect, it, vi } from 'vitest';
import { BlockIoError } from '../../../src/devices/block-backend.ts';
import {
  HttpChunkedImage,
  KeyValueChunkCache,
  openChunkedImage,
  parseChunkIndex,
  type ChunkCache,
} from '../../../src/storage/chunked-image.ts';
import { MemoryKeyValueStore } from '../../../src/storage/idb-block-backend.ts';
import { FakeImageServer, packImage, sha256 } from '../../helpers/chunked-image.ts';

const CHUNK = 4096;
const SIZE = 64 * CHUNK;

/** An image with data in some chunks, zeroes in the rest (chunks 10-29 and 40-63 are all zero). */
function sampleImage(): Uint8Array {
  const raw = new Uint8Array(SIZE);
  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  for (let c = 0; c < 64; c++) {
    if ((c >= 10 && c < 30) || c >= 40) continue;
    for (let i = 0; i < CHUNK; i++) raw[c * CHUNK + i] = c % 3 === 0 ? random() : (i * 7 + c) & 0xff;
  }
  return raw;
}

async function setup(options: { cache?: ChunkCache; memoryBytes?: number } = {}) {
  const raw = sampleImage();
  const packed = packImage(raw, CHUNK);
  const server = new FakeImageServer(packed.data, packed.indexText);
  const image = new HttpChunkedImage({
    index: parseChunkIndex(packed.indexText, 'disk.json'),
    dataUrl: server.dataUrl,
    fetch: server.fetch,
    cache: options.cache,
    memoryBytes: options.memoryBytes,
  });
  return { raw, packed, server, image };
}

async function readAt(image: HttpChunkedImage, offset: number, length: number): Promise<Uint8Array> {
  const dst = new Uint8Array(length);
  await image.read(offset, dst);
  return dst;
}

/** Request `bytes=a-b` for chunks `first..last` of `packed`. */
function rangeOf(indexText: string, first: number, last: number): string {
  const chunks = (JSON.parse(indexText) as { chunks: [number, number, string][] }).chunks;
  return `bytes=${chunks[first][0]}-${chunks[last][0] + chunks[last][1] - 1}`;
}

describe('HttpChunkedImage: the base image over HTTP ranges', () => {
  it('reads back exactly the image, across chunk edges, at any sector offset', async () => {
    const { raw, image } = await setup();
    expect(await readAt(image, 0, SIZE)).toEqual(raw);
    for (const [offset, length] of [
      [512, 512],
      [CHUNK - 512, 1024],
      [9 * CHUNK + 512, 3 * CHUNK],
      [SIZE - 512, 512],
    ]) {
      expect(await readAt(image, offset, length)).toEqual(raw.subarray(offset, offset + length));
    }
  });

  it('fetches only the chunks a read touches, consecutive ones in one request, and never a zero chunk', async () => {
    const { packed, server, image } = await setup();
    await readAt(image, 3 * CHUNK + 1024, 2 * CHUNK); // chunks 3, 4 and 5
    expect(server.ranges).toEqual([rangeOf(packed.indexText, 3, 5)]);
    await readAt(image, 12 * CHUNK, 8 * CHUNK); // all zero: nothing to fetch
    expect(server.ranges).toHaveLength(1);
    await readAt(image, 9 * CHUNK, 22 * CHUNK); // chunk 9, zeroes, chunk 30: members not adjacent
    expect(server.ranges.slice(1).sort()).toEqual(
      [rangeOf(packed.indexText, 9, 9), rangeOf(packed.indexText, 30, 30)].sort(),
    );
    expect(image.stats.fetchedChunks).toBe(5);
    expect(image.stats.fetchedBytes).toBeLessThan(packed.data.length);
  });

  it('a chunk read again comes from memory; concurrent reads of one chunk share one request', async () => {
    const { server, image } = await setup();
    await Promise.all([readAt(image, 0, 512), readAt(image, 1024, 512), readAt(image, 0, CHUNK)]);
    expect(server.ranges).toHaveLength(1);
    await readAt(image, 2048, 512);
    expect(server.ranges).toHaveLength(1);
  });

  it('keeps at most its memory budget of chunks, fetching evicted ones again', async () => {
    const { raw, server, image } = await setup({ memoryBytes: 2 * CHUNK });
    for (const c of [0, 1, 2, 0]) await readAt(image, c * CHUNK, 512);
    expect(server.ranges).toHaveLength(4); // chunk 0 was evicted by chunks 1 and 2
    expect(await readAt(image, 0, CHUNK)).toEqual(raw.subarray(0, CHUNK));
  });

  it('a corrupt chunk fails the read with a message naming it; the guest gets none of it; other chunks still read', async () => {
    const { raw, packed, server, image } = await setup();
    const entry = (JSON.parse(packed.indexText) as { chunks: [number, number, string][] }).chunks[4];
    server.data = packed.data.slice();
    server.data[entry[0] + Math.floor(entry[1] / 2)] ^= 0x55; // a bit flip inside chunk 4's deflate data
    const dst = new Uint8Array(CHUNK).fill(0xee);
    const failure = await image.read(4 * CHUNK, dst).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(BlockIoError);
    expect(String(failure)).toMatch(/base image is corrupt: chunk 4 \(disk bytes \[16384, 20480\)\)/);
    expect(String(failure)).toMatch(/Redeploy public\/images/);
    expect(dst.every((b) => b === 0xee)).toBe(true);
    expect(await readAt(image, 5 * CHUNK, CHUNK)).toEqual(raw.subarray(5 * CHUNK, 6 * CHUNK));
  });

  it('a member that decompresses but does not match its sha256 is refused (a swapped or stale chunk)', async () => {
    const raw = sampleImage();
    const packed = packImage(raw, CHUNK);
    const index = JSON.parse(packed.indexText) as { chunks: ([number, number, string] | null)[] };
    const [a, b] = [index.chunks[1]!, index.chunks[2]!];
    index.chunks[1] = [b[0], b[1], a[2]]; // chunk 1 points at chunk 2's member
    const server = new FakeImageServer(packed.data, JSON.stringify(index));
    const image = new HttpChunkedImage({
      index: parseChunkIndex(server.indexText, 'disk.json'),
      dataUrl: server.dataUrl,
      fetch: server.fetch,
    });
    await expect(readAt(image, CHUNK, 512)).rejects.toThrow(/chunk 1 .* does not match its sha256/);
  });

  it('a member that inflates past its chunk (a gzip bomb) is cut off and refused', async () => {
    const raw = sampleImage();
    const packed = packImage(raw, CHUNK);
    const bomb = gzipSync(new Uint8Array(64 * CHUNK), { level: 9 });
    const data = new Uint8Array(packed.data.length + bomb.length);
    data.set(packed.data);
    data.set(bomb, packed.data.length);
    const index = JSON.parse(packed.indexText) as {
      dataSize: number;
      chunks: ([number, number, string] | null)[];
    };
    index.dataSize = data.length;
    index.chunks[0] = [packed.data.length, bomb.length, sha256(raw.subarray(0, CHUNK))];
    const server = new FakeImageServer(data, JSON.stringify(index));
    const image = new HttpChunkedImage({
      index: parseChunkIndex(server.indexText, 'disk.json'),
      dataUrl: server.dataUrl,
      fetch: server.fetch,
    });
    await expect(readAt(image, 0, 512)).rejects.toThrow(/does not decompress \(more than 4096 bytes\)/);
  });

  it('a server without Range support sends the whole file once; every later read uses it', async () => {
    const { raw, packed, server, image } = await setup();
    server.ignoreRange = true;
    expect(await readAt(image, 2 * CHUNK, 512)).toEqual(raw.subarray(2 * CHUNK, 2 * CHUNK + 512));
    expect(await readAt(image, 0, SIZE)).toEqual(raw);
    expect(server.ranges).toHaveLength(1);
    expect(image.stats.fetchedBytes).toBe(packed.data.length);
  });

  it('retries a dropped request once; a lasting failure fails that read only, and a later read fetches again', async () => {
    const { raw, server, image } = await setup();
    server.failures = 1;
    expect(await readAt(image, 0, 512)).toEqual(raw.subarray(0, 512));
    server.failures = 2;
    await expect(readAt(image, CHUNK, 512)).rejects.toThrow(/cannot fetch the base image .*Failed to fetch/);
    expect(await readAt(image, CHUNK, 512)).toEqual(raw.subarray(CHUNK, CHUNK + 512));
  });

  it('a range answered with the wrong bytes or an HTTP error is a clear error', async () => {
    const { packed, server, image } = await setup();
    const wrong = new HttpChunkedImage({
      index: parseChunkIndex(packed.indexText, 'disk.json'),
      dataUrl: server.dataUrl,
      fetch: async () => new Response(new Uint8Array(10), { status: 206 }),
    });
    await expect(readAt(wrong, 0, 512)).rejects.toThrow(/answered 10 bytes .*mangles range requests/);
    const missing = new HttpChunkedImage({
      index: parseChunkIndex(packed.indexText, 'disk.json'),
      dataUrl: 'http://images.test/gone.chunked',
      fetch: server.fetch,
    });
    await expect(readAt(missing, 0, 512)).rejects.toThrow(/answered 404 Not Found .*serve public\/images/);
    await expect(image.read(SIZE - 512, new Uint8Array(1024))).rejects.toThrow(/outside/);
  });

  it('chunks are cached (compressed) in a key-value store: a second page fetches nothing', async () => {
    const kv = new MemoryKeyValueStore();
    const sum = sha256(sampleImage());
    const first = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    const lookups: string[][] = [];
    const getMany = kv.getMany.bind(kv);
    kv.getMany = (keys) => (lookups.push([...keys]), getMany(keys));
    await readAt(first.image, 0, 8 * CHUNK);
    expect(lookups).toEqual([]); // the cache knows it holds none of them: no lookup delays the fetch
    await new Promise((resolve) => setTimeout(resolve, 0)); // cache writes are not awaited by reads
    expect([...kv.map.keys()].sort()).toEqual([...Array(8).keys()].map((c) => `base/${sum}/${c}`).sort());
    const second = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    expect(await readAt(second.image, 0, 8 * CHUNK)).toEqual(first.raw.subarray(0, 8 * CHUNK));
    expect(second.server.ranges).toEqual([]);
    expect(second.image.stats.cachedChunks).toBe(8);
  });

  it('warmAtFirstMiss: the first read that misses brings every cached chunk into memory in one cache read', async () => {
    const kv = new MemoryKeyValueStore();
    const sum = sha256(sampleImage());
    const first = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    await readAt(first.image, 0, 8 * CHUNK); // a "last boot" that read chunks 0-7
    await readAt(first.image, 32 * CHUNK, 2 * CHUNK); // and 32-33
    await new Promise((resolve) => setTimeout(resolve, 0));
    const second = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    const lookups: string[][] = [];
    const getMany = kv.getMany.bind(kv);
    kv.getMany = (keys) => (lookups.push(keys.map((k) => k.slice(k.lastIndexOf('/') + 1))), getMany(keys));
    second.image.warmAtFirstMiss();
    expect(lookups).toEqual([]); // nothing before the guest reads
    expect(await readAt(second.image, 3 * CHUNK, 512)).toEqual(
      first.raw.subarray(3 * CHUNK, 3 * CHUNK + 512),
    );
    // The missed chunk on its own, then every other cached chunk in one read.
    expect(lookups).toEqual([['3'], ['0', '1', '2', '4', '5', '6', '7', '32', '33']]);
    await vi.waitFor(() => expect(second.image.stats.cachedChunks).toBe(10));
    expect(await readAt(second.image, 0, 8 * CHUNK)).toEqual(first.raw.subarray(0, 8 * CHUNK));
    expect(await readAt(second.image, 32 * CHUNK, 2 * CHUNK)).toEqual(
      first.raw.subarray(32 * CHUNK, 34 * CHUNK),
    );
    expect(lookups).toHaveLength(2); // every later read came from memory
    expect(second.server.ranges).toEqual([]);
    // Only once: a later miss (chunk 8, never cached) is fetched alone.
    await readAt(second.image, 8 * CHUNK, 512);
    expect(lookups).toHaveLength(2);
    expect(second.server.ranges).toHaveLength(1);
  });

  it('warmFromCache keeps to its byte budget and to the chunks with data; a failing cache read only costs fetches later', async () => {
    const kv = new MemoryKeyValueStore();
    const sum = sha256(sampleImage());
    const first = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    await readAt(first.image, 0, 10 * CHUNK);
    await new Promise((resolve) => setTimeout(resolve, 0));
    const second = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    expect(await second.image.warmFromCache(3 * CHUNK)).toBe(3);
    expect(second.image.stats.cachedChunks).toBe(3);
    expect(await second.image.warmFromCache(3 * CHUNK)).toBe(3); // the next three
    expect(second.image.stats.cachedChunks).toBe(6);
    const third = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    kv.getMany = () => Promise.reject(new Error('IndexedDB is gone'));
    // The cache read failed, so the load fell back to the network: the chunks are still loaded and correct.
    expect(await third.image.warmFromCache()).toBe(10);
    expect(await readAt(third.image, 0, 10 * CHUNK)).toEqual(first.raw.subarray(0, 10 * CHUNK));
    expect(await new HttpChunkedImage({ index: third.image.index, dataUrl: 'x' }).warmFromCache()).toBe(0);
  });

  it('a damaged cache entry is dropped and the chunk fetched again', async () => {
    const kv = new MemoryKeyValueStore();
    const sum = sha256(sampleImage());
    const first = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    await readAt(first.image, 0, 512);
    await new Promise((resolve) => setTimeout(resolve, 0));
    const member = kv.map.get(`base/${sum}/0`) as Uint8Array;
    member[member.length - 5] ^= 1; // the gzip trailer's CRC no longer matches
    const second = await setup({ cache: await KeyValueChunkCache.open(kv, sum) });
    expect(await readAt(second.image, 0, CHUNK)).toEqual(first.raw.subarray(0, CHUNK));
    expect(second.server.ranges).toHaveLength(1);
  });

  it('opening the cache for a new image deletes the chunks of the old one', async () => {
    const kv = new MemoryKeyValueStore();
    const [oldSum, newSum] = ['a'.repeat(64), 'b'.repeat(64)];
    await kv.setMany([
      [`base/${oldSum}/0`, new Uint8Array(1)],
      [`base/${newSum}/3`, new Uint8Array(1)],
      ['vm/x/disk/0/0', new Uint8Array(1)],
    ]);
    await KeyValueChunkCache.open(kv, newSum);
    expect([...kv.map.keys()].sort()).toEqual([`base/${newSum}/3`, 'vm/x/disk/0/0']);
  });
});

describe('openChunkedImage and parseChunkIndex: the index is checked before any chunk is read', () => {
  it('opens an image whose index matches the manifest sha256', async () => {
    const raw = sampleImage();
    const packed = packImage(raw, CHUNK);
    const server = new FakeImageServer(packed.data, packed.indexText);
    const image = await openChunkedImage({
      indexUrl: server.indexUrl,
      indexSha256: sha256(new TextEncoder().encode(packed.indexText)),
      fetch: server.fetch,
    });
    expect(image.sizeBytes).toBe(SIZE);
    expect(await readAt(image, 0, SIZE)).toEqual(raw);
  });

  it('refuses an index that does not match the manifest', async () => {
    const packed = packImage(sampleImage(), CHUNK);
    const server = new FakeImageServer(packed.data, packed.indexText);
    await expect(
      openChunkedImage({ indexUrl: server.indexUrl, indexSha256: '0'.repeat(64), fetch: server.fetch }),
    ).rejects.toThrow(/does not match the sha256 in manifest.json/);
  });

  it('refuses damaged or hostile indexes with the reason', () => {
    const packed = packImage(sampleImage(), CHUNK);
    const good = JSON.parse(packed.indexText) as Record<string, unknown> & {
      chunks: ([number, number, string] | null)[];
    };
    const variant = (change: (index: typeof good) => void): string => {
      const copy = JSON.parse(packed.indexText) as typeof good;
      change(copy);
      return JSON.stringify(copy);
    };
    const cases: [string, RegExp][] = [
      ['{', /not JSON/],
      [variant((i) => (i.version = 2)), /version 2/],
      [variant((i) => (i.data = '../secret')), /data file name/],
      [variant((i) => (i.data = 'a/b')), /data file name/],
      [variant((i) => i.chunks.pop()), /must list 64 chunks/],
      [variant((i) => (i.chunks[0] = [i.dataSize as number, 100, 'f'.repeat(64)])), /chunk 0's member/],
      [variant((i) => (i.chunks[0] = [0, 10 * CHUNK, 'f'.repeat(64)])), /chunk 0's member/],
      [variant((i) => (i.chunks[0] = [0, 100, 'xyz'])), /chunk 0's hash is not a sha256/],
      [variant((i) => (i.chunkSize = 3000)), /chunkSize/],
      [variant((i) => (i.size = 1000)), /size 1000/],
    ];
    for (const [text, reason] of cases) {
      expect(() => parseChunkIndex(text, 'disk.json')).toThrow(reason);
      expect(() => parseChunkIndex(text, 'disk.json')).toThrow(/rebuild public\/images/);
    }
    expect(parseChunkIndex(packed.indexText, 'disk.json').chunks.filter((c) => c === null)).toHaveLength(44);
  });
});
