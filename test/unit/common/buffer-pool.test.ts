import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../../src/common/buffer-pool.ts';

describe('BufferPool', () => {
  it('hands back a kept buffer large enough, else a new one of at least its minimum size', () => {
    const pool = new BufferPool(2, 4096);
    const first = pool.take(100);
    expect(first.byteLength).toBe(4096);
    pool.give(first);
    expect(pool.take(4000)).toBe(first);
    expect(pool.take(4000)).not.toBe(first); // taken: not handed out twice
    pool.give(first);
    const big = pool.take(8192);
    expect(big).not.toBe(first);
    expect(big.byteLength).toBe(8192);
  });

  it('keeps at most its count, the largest, and never a resizable buffer', () => {
    const pool = new BufferPool(2);
    const sizes = [1024, 4096, 2048];
    const buffers = sizes.map((n) => new ArrayBuffer(n));
    for (const buffer of buffers) pool.give(buffer);
    pool.give(new ArrayBuffer(1 << 20, { maxByteLength: 2 << 20 }));
    expect(pool.take(3000)).toBe(buffers[1]); // the two largest were kept
    expect(pool.take(1)).toBe(buffers[2]);
    expect(buffers).not.toContain(pool.take(1)); // 1024 was dropped, the resizable one never kept
  });

  it('hands out the smallest kept buffer that fits, leaving larger ones to larger requests', () => {
    const pool = new BufferPool(4);
    const [small, middle, large] = [1024, 16384, 524288].map((n) => new ArrayBuffer(n));
    for (const buffer of [large, small, middle]) pool.give(buffer);
    expect(pool.take(2048)).toBe(middle);
    expect(pool.take(100_000)).toBe(large);
    expect(pool.take(512)).toBe(small);
  });
});
