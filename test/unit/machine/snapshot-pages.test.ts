import { describe, expect, it } from 'vitest';
import { readStoredPages } from '../../../src/machine/snapshot.ts';

const PAGE = 4096;

/** `count` pages, page i filled with (i * 7 + 1) & 0xff and its index in its first two bytes. */
function pages(count: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(count * PAGE);
  for (let i = 0; i < count; i++) {
    bytes.fill((i * 7 + 1) & 0xff, i * PAGE, (i + 1) * PAGE);
    bytes[i * PAGE] = i & 0xff;
    bytes[i * PAGE + 1] = i >> 8;
  }
  return bytes;
}

/** What `readStoredPages` handed over, copied (its views are only valid during the call). */
async function collect(data: Blob, count: number): Promise<Uint8Array[]> {
  const got: Uint8Array[] = [];
  await readStoredPages(data, count, (index, bytes) => {
    expect(index).toBe(got.length);
    expect(bytes.length).toBe(PAGE);
    got.push(bytes.slice());
  });
  return got;
}

/** A Blob whose stream is not a byte stream and comes in chunks of the given sizes (no BYOB reader). */
function chunkedBlob(bytes: Uint8Array<ArrayBuffer>, sizes: number[]): Blob {
  const blob = new Blob([bytes]);
  return Object.assign(blob, {
    stream: () => {
      let at = 0;
      let next = 0;
      return new ReadableStream<Uint8Array>({
        pull(controller) {
          if (at >= bytes.length) return controller.close();
          const n = sizes[next++ % sizes.length];
          controller.enqueue(bytes.slice(at, at + n));
          at += n;
        },
      });
    },
  });
}

describe("reading a snapshot's stored pages from a Blob", () => {
  it('hands over every page in order, read a piece at a time', async () => {
    const bytes = pages(300); // more than one read's worth
    const got = await collect(new Blob([bytes]), 300);
    expect(got).toHaveLength(300);
    for (let i = 0; i < 300; i++)
      expect(Buffer.compare(got[i], bytes.subarray(i * PAGE, (i + 1) * PAGE))).toBe(0);
  });

  it('copes with a stream that is not a byte stream and chunks that split pages anywhere', async () => {
    const bytes = pages(150);
    const got = await collect(chunkedBlob(bytes, [1, 4095, 4097, 10_000, 300_000, 7]), 150);
    expect(got).toHaveLength(150);
    for (let i = 0; i < 150; i++)
      expect(Buffer.compare(got[i], bytes.subarray(i * PAGE, (i + 1) * PAGE))).toBe(0);
    expect(await collect(new Blob([]), 0)).toEqual([]);
  });

  it('refuses a Blob of another size, and stops at a page that cannot be written', async () => {
    await expect(collect(new Blob([pages(3)]), 4)).rejects.toThrow(
      /not a usable tabvisor snapshot \(its pages are 12288 bytes, 16384 expected\)/,
    );
    await expect(collect(new Blob([pages(3).subarray(0, 3 * PAGE - 1)]), 3)).rejects.toThrow(/12287 bytes/);
    let written = 0;
    await expect(
      readStoredPages(new Blob([pages(200)]), 200, (index) => {
        if (index === 100) throw new Error('guest page 100 is outside the VM');
        written++;
      }),
    ).rejects.toThrow(/outside the VM/);
    expect(written).toBe(100);
  });
});
