/**
 * The read-only base image of root disks, fetched over HTTP in ranges, a chunk at a time, only when the guest
 * reads it, and kept in the browser's storage so a reload fetches nothing again.
 *
 * Format (made by scripts/pack-disk-image.sh): the data file is one gzip file of many members (RFC 1952
 * section 2.2), one per `chunkSize` chunk of the image that holds a non-zero byte and one per run of all-zero
 * chunks, so `gzip -dc` gives the whole image back. The index (JSON) lists, per chunk, `null` (all zeroes:
 * never fetched) or `[offset, length, sha256]`: the chunk's member is `data[offset, offset + length)` and its
 * uncompressed bytes have that sha256. The manifest holds the index's sha256, so every byte the guest reads is
 * checked against the manifest: a corrupt chunk fails the guest's read with VIRTIO_BLK_S_IOERR and a message
 * naming the chunk, and never reaches the guest.
 *
 * Any static host works: with Range support (vite's dev and preview servers, nginx, GitHub Pages, S3, most CDNs)
 * each read fetches just the members it needs (consecutive ones in one request); a host that ignores Range
 * answers 200 with the whole data file, which is then kept and used for every later read.
 */
import { BlockIoError, type BlockBackend } from '../devices/block-backend.ts';
import type { KeyValueStore } from './idb-block-backend.ts';

/** `format` and `version` of an index this code reads. */
export const CHUNK_INDEX_FORMAT = 'tabvisor-gzip-chunks';
export const CHUNK_INDEX_VERSION = 1;
/** Requests the base image accepts at once (reads of chunks already here complete at once). */
export const CHUNKED_IMAGE_QUEUE_DEPTH = 16;
/** Decompressed chunks kept in memory for every VM of the page (the guest's page cache holds the rest). */
export const CHUNK_MEMORY_BYTES = 16 << 20;
/** Smallest and largest chunk size an index may use (pack-disk-image.sh checks the same). */
const MIN_CHUNK_BYTES = 4096;
const MAX_CHUNK_BYTES = 4 << 20;
/** Largest image an index may describe (disk offsets stay exact far below 2^53). */
const MAX_IMAGE_BYTES = 2 ** 40;
/** A data file name: one path segment next to the index. */
const DATA_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** Fetch attempts per range: one retry for a dropped connection or a 5xx answer. */
const FETCH_ATTEMPTS = 2;

/** Where chunk `i` lives in the data file, and the sha256 of its uncompressed bytes. */
export interface ChunkEntry {
  readonly offset: number;
  readonly length: number;
  readonly sha256: string;
}

/** A parsed, checked chunk index. */
export interface ChunkIndex {
  /** The data file's name, next to the index. */
  readonly data: string;
  readonly dataSize: number;
  readonly dataSha256: string;
  /** The image's size in bytes and its sha256. */
  readonly size: number;
  readonly sha256: string;
  readonly chunkSize: number;
  /** One entry per chunk; null for an all-zero chunk. */
  readonly chunks: readonly (ChunkEntry | null)[];
}

/** The most bytes a gzip member of `chunkSize` bytes may take (stored blocks cost 5 bytes per 64 KiB). */
function maxMemberBytes(chunkSize: number): number {
  return chunkSize + Math.ceil(chunkSize / 1000) + 1024;
}

/**
 * Parse and check the index text read from `source` (a URL or file name, for messages). Everything is bounded
 * and cross-checked, so a hostile or damaged index is refused here instead of misleading reads later.
 */
export function parseChunkIndex(text: string, source: string): ChunkIndex {
  const fail = (why: string): never => {
    throw new Error(
      `${source} is not a usable chunk index (${why}); rebuild public/images with scripts/build-guest-image.sh`,
    );
  };
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return fail('not JSON');
  }
  if (typeof raw !== 'object' || raw === null) return fail('not an object');
  if (raw.format !== CHUNK_INDEX_FORMAT || raw.version !== CHUNK_INDEX_VERSION) {
    return fail(`format ${String(raw.format)} version ${String(raw.version)}`);
  }
  const int = (name: string, min: number, max: number): number => {
    const value = raw[name];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max)
      return fail(`${name} ${String(value)}`);
    return value;
  };
  const hash = (value: unknown, what: string): string =>
    typeof value === 'string' && SHA256_HEX.test(value) ? value : fail(`${what} is not a sha256`);
  const data = raw.data;
  if (typeof data !== 'string' || !DATA_NAME.test(data) || data.includes('..')) return fail('data file name');
  const dataSize = int('dataSize', 1, MAX_IMAGE_BYTES);
  const size = int('size', 512, MAX_IMAGE_BYTES);
  if (size % 512 !== 0) fail(`size ${size} is not whole 512-byte sectors`);
  const chunkSize = int('chunkSize', MIN_CHUNK_BYTES, MAX_CHUNK_BYTES);
  if ((chunkSize & (chunkSize - 1)) !== 0) fail(`chunkSize ${chunkSize} is not a power of two`);
  const list = raw.chunks;
  const count = Math.ceil(size / chunkSize);
  if (!Array.isArray(list) || list.length !== count) return fail(`it must list ${count} chunks`);
  const maxMember = maxMemberBytes(chunkSize);
  const chunks = list.map((entry: unknown, i): ChunkEntry | null => {
    if (entry === null) return null;
    if (!Array.isArray(entry) || entry.length !== 3) return fail(`chunk ${i}`);
    const [offset, length, sha256] = entry as unknown[];
    if (
      typeof offset !== 'number' ||
      typeof length !== 'number' ||
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 18 || // a gzip header and trailer alone
      length > maxMember ||
      offset + length > dataSize
    ) {
      return fail(`chunk ${i}'s member [${String(offset)}, +${String(length)})`);
    }
    return { offset, length, sha256: hash(sha256, `chunk ${i}'s hash`) };
  });
  return {
    data,
    dataSize,
    dataSha256: hash(raw.dataSha256, 'dataSha256'),
    size,
    sha256: hash(raw.sha256, 'sha256'),
    chunkSize,
    chunks,
  };
}

/** Where verified chunk members are kept between page loads. Errors are not fatal: the chunk is fetched. */
export interface ChunkCache {
  /** Whether chunk `c` is stored (known without a lookup, so a cold cache costs a read nothing). */
  has(chunk: number): boolean;
  /** The chunks stored, in ascending order. */
  list(): number[];
  /** The stored members of `chunks` (undefined where there is none). */
  getMany(chunks: readonly number[]): Promise<(Uint8Array | undefined)[]>;
  put(chunk: number, member: Uint8Array): Promise<void>;
  delete(chunk: number): Promise<void>;
}

/** Key prefix of the chunks of the image with sha256 `imageSha256`. */
function cachePrefix(imageSha256: string): string {
  return `base/${imageSha256}/`;
}

/**
 * Chunk members in a {@link KeyValueStore} (IndexedDB in the page), keyed by the image's sha256 and the chunk
 * number, stored compressed as fetched (and checked again when read back).
 */
export class KeyValueChunkCache implements ChunkCache {
  private constructor(
    private readonly kv: KeyValueStore,
    private readonly prefix: string,
    /** The chunks stored, listed once when opened. */
    private readonly stored: Set<number>,
  ) {}

  /** The cache of image `imageSha256`; chunks of every other image are deleted (a new image replaced them). */
  static async open(kv: KeyValueStore, imageSha256: string): Promise<KeyValueChunkCache> {
    if (!SHA256_HEX.test(imageSha256)) throw new TypeError(`bad image sha256 ${imageSha256}`);
    const prefix = cachePrefix(imageSha256);
    const keys = await kv.keysWithPrefix('base/');
    const stale = keys.filter((key) => !key.startsWith(prefix));
    if (stale.length > 0) await kv.delMany(stale);
    const stored = new Set<number>();
    for (const key of keys) {
      const chunk = Number(key.slice(prefix.length));
      if (key.startsWith(prefix) && Number.isSafeInteger(chunk) && chunk >= 0) stored.add(chunk);
    }
    return new KeyValueChunkCache(kv, prefix, stored);
  }

  has(chunk: number): boolean {
    return this.stored.has(chunk);
  }

  list(): number[] {
    return [...this.stored].sort((a, b) => a - b);
  }

  async getMany(chunks: readonly number[]): Promise<(Uint8Array | undefined)[]> {
    const values = await this.kv.getMany(chunks.map((c) => `${this.prefix}${c}`));
    return values.map((value) => (value instanceof Uint8Array ? value : undefined));
  }

  async put(chunk: number, member: Uint8Array): Promise<void> {
    await this.kv.set(`${this.prefix}${chunk}`, member);
    this.stored.add(chunk);
  }

  async delete(chunk: number): Promise<void> {
    this.stored.delete(chunk);
    await this.kv.delMany([`${this.prefix}${chunk}`]);
  }
}

/** The subset of `fetch` the image uses (injected by tests). */
export type RangeFetch = (url: string, init: { headers: Record<string, string> }) => Promise<Response>;

/** Options of {@link HttpChunkedImage}. */
export interface ChunkedImageOptions {
  readonly index: ChunkIndex;
  /** The data file's absolute URL. */
  readonly dataUrl: string;
  readonly fetch?: RangeFetch;
  readonly cache?: ChunkCache;
  /** Bytes of decompressed chunks kept in memory (default {@link CHUNK_MEMORY_BYTES}). */
  readonly memoryBytes?: number;
}

/** What the image has fetched and found so far. */
export interface ChunkedImageStats {
  /** HTTP requests made, and response body bytes received. */
  requests: number;
  fetchedBytes: number;
  /** Chunks fetched over HTTP, and chunks found in the cache. */
  fetchedChunks: number;
  cachedChunks: number;
}

/** A read-only {@link BlockBackend} over a chunked image served over HTTP. */
export class HttpChunkedImage implements BlockBackend {
  readonly readOnly = true;
  readonly queueDepth = CHUNKED_IMAGE_QUEUE_DEPTH;
  readonly sizeBytes: number;
  readonly stats: ChunkedImageStats = { requests: 0, fetchedBytes: 0, fetchedChunks: 0, cachedChunks: 0 };
  readonly index: ChunkIndex;
  private readonly dataUrl: string;
  private readonly fetchRange: RangeFetch;
  private readonly cache: ChunkCache | undefined;
  private readonly memoryBytes: number;
  /** Decompressed chunks, least recently used first. */
  private readonly memory = new Map<number, Uint8Array>();
  private memoryUsed = 0;
  private warmOnFirstMiss = false;
  /** Chunks being loaded: reads that need one wait for the same promise. */
  private readonly loading = new Map<number, Promise<Uint8Array>>();
  /** The whole data file, once a server answered a range request with all of it. */
  private whole: Uint8Array | undefined;

  constructor(options: ChunkedImageOptions) {
    this.index = options.index;
    this.sizeBytes = options.index.size;
    this.dataUrl = options.dataUrl;
    this.fetchRange = options.fetch ?? ((url, init) => fetch(url, init));
    this.cache = options.cache;
    this.memoryBytes = options.memoryBytes ?? CHUNK_MEMORY_BYTES;
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + dst.length > this.sizeBytes) {
      throw new BlockIoError(
        `range [${offset}, ${offset + dst.length}) is outside the ${this.sizeBytes}-byte disk`,
      );
    }
    if (dst.length === 0) return;
    const size = this.index.chunkSize;
    const first = Math.floor(offset / size);
    const last = Math.floor((offset + dst.length - 1) / size);
    const sources: (Uint8Array | Promise<Uint8Array> | null)[] = [];
    const missing: number[] = [];
    for (let c = first; c <= last; c++) {
      const source = this.index.chunks[c] === null ? null : (this.recall(c) ?? this.loading.get(c));
      if (source === undefined) missing.push(c);
      sources.push(source ?? null);
    }
    if (missing.length > 0) {
      this.load(missing);
      for (const c of missing) sources[c - first] = this.loading.get(c) ?? null;
      if (this.warmOnFirstMiss) {
        this.warmOnFirstMiss = false;
        void this.warmFromCache();
      }
    }
    const chunks = await Promise.all(sources);
    for (let c = first; c <= last; c++) {
      const start = Math.max(offset, c * size);
      const end = Math.min(offset + dst.length, (c + 1) * size);
      const target = dst.subarray(start - offset, end - offset);
      const bytes = chunks[c - first];
      if (bytes === null) target.fill(0);
      else target.set(bytes.subarray(start - c * size, end - c * size));
    }
  }

  /**
   * Warm the memory from the cache ({@link warmFromCache}) at the first read that misses it: a booting guest
   * reads its root file system in a burst (after the kernel's own start, which needs no disk), and what the
   * cache holds is mostly what the last boot read.
   */
  warmAtFirstMiss(): void {
    this.warmOnFirstMiss = true;
  }

  /**
   * Read the chunks the cache holds into memory now, in one cache read, at most `maxBytes` of them (default
   * half the memory budget), lowest first, so the guest's reads that follow find them in memory instead of
   * waiting for the cache one read at a time. Resolves with the number of chunks loaded; a chunk that fails
   * is simply read again when asked for.
   */
  async warmFromCache(maxBytes = this.memoryBytes / 2): Promise<number> {
    const cache = this.cache;
    if (!cache) return 0;
    const wanted: number[] = [];
    let bytes = 0;
    for (const c of cache.list()) {
      if (!this.index.chunks[c] || this.memory.has(c) || this.loading.has(c)) continue;
      bytes += this.chunkBytes(c);
      if (bytes > maxBytes) break;
      wanted.push(c);
    }
    if (wanted.length === 0) return 0;
    this.load(wanted);
    const loaded = await Promise.all(
      wanted.map(
        (c) =>
          this.loading.get(c)?.then(
            () => 1,
            () => 0,
          ) ?? 0,
      ),
    );
    return loaded.reduce<number>((sum, n) => sum + n, 0);
  }

  write(): never {
    throw new BlockIoError('the base image is read-only');
  }

  flush(): void {}

  /** Bytes of chunk `c`: `chunkSize`, or what is left of the image for the last one. */
  private chunkBytes(c: number): number {
    return Math.min(this.index.chunkSize, this.sizeBytes - c * this.index.chunkSize);
  }

  /** Chunk `c` from memory (and mark it recently used). */
  private recall(c: number): Uint8Array | undefined {
    const bytes = this.memory.get(c);
    if (bytes) {
      this.memory.delete(c);
      this.memory.set(c, bytes);
    }
    return bytes;
  }

  private remember(c: number, bytes: Uint8Array): void {
    if (this.memory.has(c)) return;
    this.memory.set(c, bytes);
    this.memoryUsed += bytes.length;
    for (const [old, kept] of this.memory) {
      if (this.memoryUsed <= this.memoryBytes || old === c) break;
      this.memory.delete(old);
      this.memoryUsed -= kept.length;
    }
  }

  /** Start loading `chunks` (none loaded or loading): from the cache where it has them, else over HTTP. */
  private load(chunks: readonly number[]): void {
    const settle = new Map<number, { resolve(bytes: Uint8Array): void; reject(error: unknown): void }>();
    for (const c of chunks) {
      this.loading.set(c, new Promise<Uint8Array>((resolve, reject) => settle.set(c, { resolve, reject })));
    }
    const done = (c: number, bytes: Uint8Array | undefined, error?: unknown): void => {
      const waiter = settle.get(c);
      if (!waiter) return;
      settle.delete(c);
      this.loading.delete(c);
      if (bytes) {
        this.remember(c, bytes);
        waiter.resolve(bytes);
      } else waiter.reject(error);
    };
    void (async () => {
      try {
        const fetchList = await this.fromCache(chunks, done);
        await Promise.all(this.runs(fetchList).map((run) => this.fromNetwork(run, done)));
      } finally {
        for (const c of chunks)
          done(c, undefined, new BlockIoError(`chunk ${c} of the base image was not loaded`));
      }
    })();
  }

  /** Settle the chunks the cache holds intact; returns the others. */
  private async fromCache(
    chunks: readonly number[],
    done: (c: number, bytes: Uint8Array) => void,
  ): Promise<number[]> {
    const cache = this.cache;
    const stored = cache ? chunks.filter((c) => cache.has(c)) : [];
    if (!cache || stored.length === 0) return [...chunks];
    const rest = chunks.filter((c) => !cache.has(c));
    let members: (Uint8Array | undefined)[];
    try {
      members = await cache.getMany(stored);
    } catch {
      return [...chunks];
    }
    await Promise.all(
      stored.map(async (c, i) => {
        const member = members[i];
        if (member) {
          try {
            done(c, await this.unpack(c, member, "the browser's cache"));
            this.stats.cachedChunks++;
            return;
          } catch {
            void cache.delete(c).catch(() => {}); // damaged in storage: fetch it again
          }
        }
        rest.push(c);
      }),
    );
    return rest.sort((a, b) => a - b);
  }

  /** `chunks` (sorted) grouped into runs whose members are adjacent in the data file: one request each. */
  private runs(chunks: readonly number[]): number[][] {
    const runs: number[][] = [];
    let run: number[] = [];
    let end = -1;
    for (const c of chunks) {
      const entry = this.index.chunks[c];
      if (!entry) continue;
      if (run.length > 0 && entry.offset !== end) {
        runs.push(run);
        run = [];
      }
      run.push(c);
      end = entry.offset + entry.length;
    }
    if (run.length > 0) runs.push(run);
    return runs;
  }

  /** Fetch one run of chunks in one range request, then check and settle each chunk on its own. */
  private async fromNetwork(
    run: readonly number[],
    done: (c: number, bytes: Uint8Array | undefined, error?: unknown) => void,
  ): Promise<void> {
    const start = this.index.chunks[run[0]]!.offset;
    const lastEntry = this.index.chunks[run[run.length - 1]]!;
    let bytes: Uint8Array;
    try {
      bytes = await this.fetchBytes(start, lastEntry.offset + lastEntry.length);
    } catch (error) {
      for (const c of run) done(c, undefined, error);
      return;
    }
    await Promise.all(
      run.map(async (c) => {
        const entry = this.index.chunks[c]!;
        const member = bytes.slice(entry.offset - start, entry.offset - start + entry.length);
        try {
          done(c, await this.unpack(c, member, this.dataUrl));
        } catch (error) {
          done(c, undefined, error);
          return;
        }
        this.stats.fetchedChunks++;
        void this.cache?.put(c, member).catch(() => {}); // a full quota only costs a later fetch
      }),
    );
  }

  /** Bytes `[start, end)` of the data file. */
  private async fetchBytes(start: number, end: number): Promise<Uint8Array> {
    if (this.whole) return this.whole.subarray(start, end);
    const where = `the base image ${this.dataUrl}`;
    for (let attempt = 1; ; attempt++) {
      let response: Response;
      try {
        response = await this.fetchRange(this.dataUrl, { headers: { Range: `bytes=${start}-${end - 1}` } });
      } catch (error) {
        if (attempt < FETCH_ATTEMPTS) continue;
        throw new BlockIoError(
          `cannot fetch ${where}: ${error instanceof Error ? error.message : String(error)}; ` +
            'check the network and that the server is running',
        );
      }
      if (response.status >= 500 && attempt < FETCH_ATTEMPTS) continue;
      if (response.status !== 200 && response.status !== 206) {
        throw new BlockIoError(
          `${where} answered ${response.status} ${response.statusText} for bytes ${start}-${end - 1}; ` +
            'serve public/images next to the app (npm start, npm run preview, or any static host)',
        );
      }
      const body = new Uint8Array(await response.arrayBuffer());
      this.stats.requests++;
      this.stats.fetchedBytes += body.length;
      if (response.status === 200) {
        // No Range support: the whole file came; keep it for every later read.
        if (body.length !== this.index.dataSize) {
          throw new BlockIoError(
            `${where} is ${body.length} bytes, the index says ${this.index.dataSize}: the server has another ` +
              'copy of the image than its index; redeploy public/images',
          );
        }
        this.whole = body;
        return body.subarray(start, end);
      }
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get('Content-Range') ?? '');
      if (body.length !== end - start || (range && Number(range[1]) !== start)) {
        throw new BlockIoError(
          `${where} answered ${body.length} bytes (${response.headers.get('Content-Range') ?? 'no Content-Range'}) ` +
            `for bytes ${start}-${end - 1}; a proxy or the server mangles range requests`,
        );
      }
      return body;
    }
  }

  /** Chunk `c`'s bytes from its gzip member, checked against the index; `from` names the source in errors. */
  private async unpack(c: number, member: Uint8Array, from: string): Promise<Uint8Array> {
    const entry = this.index.chunks[c]!;
    const expected = this.chunkBytes(c);
    const corrupt = (why: string) =>
      new BlockIoError(
        `the base image is corrupt: chunk ${c} (disk bytes [${c * this.index.chunkSize}, ` +
          `${c * this.index.chunkSize + expected})) from ${from} ${why}; the guest's read failed and got none ` +
          `of it. Redeploy public/images (scripts/build-guest-image.sh) so ${this.index.data} matches its index, and reload`,
      );
    let bytes: Uint8Array;
    try {
      bytes = await gunzipMember(member, expected);
    } catch (error) {
      throw corrupt(`does not decompress (${error instanceof Error ? error.message : String(error)})`);
    }
    if ((await sha256Hex(bytes)) !== entry.sha256) throw corrupt('does not match its sha256 in the index');
    return bytes;
  }
}

/** Decompress one gzip member that must give exactly `expected` bytes (never more is allocated). */
async function gunzipMember(member: Uint8Array, expected: number): Promise<Uint8Array> {
  if (member.length < 18 || member[0] !== 0x1f || member[1] !== 0x8b) throw new Error('not a gzip member');
  const stream = new Blob([member as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new DecompressionStream('gzip'));
  const reader = stream.getReader();
  const out = new Uint8Array(expected);
  let at = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (at + value.length > expected) {
      await reader.cancel().catch(() => {});
      throw new Error(`more than ${expected} bytes`);
    }
    out.set(value, at);
    at += value.length;
  }
  if (at !== expected) throw new Error(`${at} bytes instead of ${expected}`);
  return out;
}

/** Hex sha256 of `bytes` (Web Crypto: secure contexts, Node). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new BlockIoError(
      'checking the base image needs Web Crypto, which browsers give only to secure contexts: ' +
        'serve the page over https or from localhost',
    );
  }
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  let hex = '';
  for (const byte of digest) hex += byte.toString(16).padStart(2, '0');
  return hex;
}

/** Options of {@link openChunkedImage}. */
export interface OpenChunkedImageOptions {
  /** The index's absolute URL; the data file is next to it. */
  readonly indexUrl: string;
  /** The index's sha256, from the manifest: the root of trust for every chunk. */
  readonly indexSha256: string;
  readonly fetch?: RangeFetch;
  readonly cache?: (imageSha256: string) => Promise<ChunkCache | undefined>;
  readonly memoryBytes?: number;
}

/** Fetch and check an image's index (against the manifest's sha256) and open the image over it. */
export async function openChunkedImage(options: OpenChunkedImageOptions): Promise<HttpChunkedImage> {
  const { indexUrl } = options;
  const get = options.fetch ?? ((url, init) => fetch(url, init));
  let response: Response;
  try {
    response = await get(indexUrl, { headers: {} });
  } catch (error) {
    throw new Error(
      `cannot fetch the base image index ${indexUrl}: ${String(error)}; is the server running?`,
    );
  }
  if (!response.ok) {
    throw new Error(
      `the base image index ${indexUrl} answered ${response.status} ${response.statusText}; ` +
        'serve public/images next to the app',
    );
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  if ((await sha256Hex(bytes)) !== options.indexSha256) {
    throw new Error(
      `the base image index ${indexUrl} does not match the sha256 in manifest.json: the server holds a ` +
        'damaged or mixed copy of public/images; redeploy it (scripts/build-guest-image.sh) and reload',
    );
  }
  const index = parseChunkIndex(new TextDecoder().decode(bytes), indexUrl);
  let cache: ChunkCache | undefined;
  try {
    cache = await options.cache?.(index.sha256);
  } catch {
    cache = undefined; // no IndexedDB (or it failed): fetch every time
  }
  return new HttpChunkedImage({
    index,
    dataUrl: new URL(index.data, indexUrl).href,
    fetch: options.fetch,
    cache,
    memoryBytes: options.memoryBytes,
  });
}
