/**
 * Test fixtures for the chunked base image: the same format as scripts/pack-disk-image.sh (gzip members, one
 * per non-zero chunk and one per run of zero chunks, and a JSON index), made in memory, and a fake HTTP server
 * over it that honours (or ignores) Range requests and records what it was asked for.
 */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { RangeFetch } from '../../src/storage/chunked-image.ts';

export const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** A packed image: the data file's bytes and the index text. */
export interface PackedImage {
  readonly data: Uint8Array;
  readonly indexText: string;
}

/** Pack `raw` in `chunkSize` chunks as pack-disk-image.sh does. */
export function packImage(raw: Uint8Array, chunkSize: number, dataName = 'disk.chunked'): PackedImage {
  const members: Uint8Array[] = [];
  const chunks: ([number, number, string] | null)[] = [];
  let at = 0;
  let zeroRun = 0;
  const push = (member: Uint8Array) => {
    members.push(member);
    at += member.length;
  };
  const endZeroRun = () => {
    if (zeroRun > 0) push(gzipSync(new Uint8Array(zeroRun * chunkSize), { level: 9 }));
    zeroRun = 0;
  };
  for (let offset = 0; offset < raw.length; offset += chunkSize) {
    const chunk = raw.subarray(offset, Math.min(raw.length, offset + chunkSize));
    if (chunk.every((b) => b === 0) && chunk.length === chunkSize) {
      zeroRun++;
      chunks.push(null);
      continue;
    }
    endZeroRun();
    if (chunk.every((b) => b === 0)) {
      push(gzipSync(chunk, { level: 9 }));
      chunks.push(null);
      continue;
    }
    const start = at;
    push(gzipSync(chunk, { level: 9 }));
    chunks.push([start, at - start, sha256(chunk)]);
  }
  endZeroRun();
  const data = new Uint8Array(at);
  let offset = 0;
  for (const member of members) {
    data.set(member, offset);
    offset += member.length;
  }
  const indexText = JSON.stringify({
    format: 'tabvisor-gzip-chunks',
    version: 1,
    data: dataName,
    dataSize: data.length,
    dataSha256: sha256(data),
    size: raw.length,
    sha256: sha256(raw),
    chunkSize,
    chunks,
  });
  return { data, indexText };
}

/** A fake static server for one packed image at `http://images.test/` (index `disk.json`, data `disk.chunked`). */
export class FakeImageServer {
  /** Every data-file request: the Range header asked for ('' without one). */
  readonly ranges: string[] = [];
  /** Answer range requests with 200 and the whole file, as a host without Range support does. */
  ignoreRange = false;
  /** Fail the next `failures` requests with a network error. */
  failures = 0;
  readonly indexUrl = 'http://images.test/disk.json';
  readonly dataUrl = 'http://images.test/disk.chunked';

  constructor(
    public data: Uint8Array,
    public indexText: string,
  ) {}

  readonly fetch: RangeFetch = async (url, init) => {
    if (url === this.indexUrl) return new Response(new TextEncoder().encode(this.indexText));
    if (url !== this.dataUrl) return new Response('not found', { status: 404, statusText: 'Not Found' });
    const range = init.headers.Range ?? '';
    this.ranges.push(range);
    if (this.failures > 0) {
      this.failures--;
      throw new TypeError('Failed to fetch');
    }
    const match = /^bytes=(\d+)-(\d+)$/.exec(range);
    if (this.ignoreRange || !match) return new Response(this.data.slice());
    const start = Number(match[1]);
    const end = Math.min(Number(match[2]), this.data.length - 1);
    return new Response(this.data.slice(start, end + 1), {
      status: 206,
      headers: { 'Content-Range': `bytes ${start}-${end}/${this.data.length}` },
    });
  };
}
