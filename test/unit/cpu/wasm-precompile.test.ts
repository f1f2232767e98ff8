import { afterEach, describe, expect, it } from 'vitest';
import { precompileWasmCore, wasmCore } from '../../../src/cpu/wasm-core.ts';

const api = globalThis.WebAssembly as unknown as { Module: unknown };
const realModule = api.Module;

/** Make synchronous compiles fail from now on (as a page's main thread may refuse them). */
function refuseSyncCompiles(): void {
  api.Module = function refused(): never {
    throw new Error('compiled synchronously');
  };
}

afterEach(() => {
  api.Module = realModule;
});

describe('the WebAssembly tier compiled ahead of the first hart', () => {
  it('a hart built after the compile finished uses its module and compiles nothing itself', async () => {
    await precompileWasmCore(false);
    refuseSyncCompiles();
    const core = wasmCore(new WebAssembly.Memory({ initial: 1 }));
    expect(typeof core?.run).toBe('function');
  });

  it('without it the hart compiles (here refused, so it goes without the tier)', () => {
    refuseSyncCompiles();
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 65536, shared: true });
    expect(wasmCore(memory)).toBeUndefined();
  });
});
