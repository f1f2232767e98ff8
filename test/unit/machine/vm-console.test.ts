import { describe, expect, it } from 'vitest';
import { UserError } from '../../../src/common/errors.ts';
import { VmConsole } from '../../../src/machine/vm-console.ts';

describe('VmConsole terminal size', () => {
  it('starts at 80 x 24, passes each new size on once, and refuses sizes outside 1..65535', () => {
    const applied: string[] = [];
    const console = new VmConsole(
      () => undefined,
      ({ cols, rows }) => applied.push(`${cols}x${rows}`),
    );
    expect(console.size()).toEqual({ cols: 80, rows: 24 });
    console.resize(120, 40);
    console.resize(120, 40); // unchanged: the guest is not told again
    console.resize(100, 30);
    expect(applied).toEqual(['120x40', '100x30']);
    expect(() => console.resize(0, 30)).toThrow(UserError);
    expect(() => console.resize(100, 65536)).toThrow(/from 1 to 65535, not 100 x 65536/);
    expect(console.size()).toEqual({ cols: 100, rows: 30 });
  });

  it('a restored machine keeps its snapshot size until someone gives one; after that it gets ours', () => {
    const fresh = new VmConsole(() => undefined);
    expect(fresh.sizeForRestored({ cols: 132, rows: 43 })).toBeUndefined();
    expect(fresh.size()).toEqual({ cols: 132, rows: 43 });
    const sized = new VmConsole(() => undefined);
    sized.resize(90, 20);
    expect(sized.sizeForRestored({ cols: 132, rows: 43 })).toEqual({ cols: 90, rows: 20 });
    expect(sized.size()).toEqual({ cols: 90, rows: 20 });
  });
});
