/**
 * The parts of the WebAssembly JavaScript API that the core uses, typed here because the core builds without
 * DOM or Node types (tsconfig.core.json). Every host tabvisor runs on (browsers, Node) has the global.
 */

/** A `WebAssembly.Memory`. */
export interface WasmMemory {
  readonly buffer: ArrayBufferLike;
  /** Grow by `pages` 64 KiB pages; returns the old size in pages. */
  grow(pages: number): number;
}

/** A compiled `WebAssembly.Module`. */
export type WasmModule = object;

interface WasmApi {
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
  Module: new (bytes: Uint8Array<ArrayBuffer>) => WasmModule;
  /** Compile off the calling thread. */
  compile?: (bytes: Uint8Array<ArrayBuffer>) => Promise<WasmModule>;
  Instance: new (
    module: WasmModule,
    imports: Record<string, Record<string, unknown>>,
  ) => { readonly exports: Record<string, unknown> };
}

/** The host's `WebAssembly` global. */
export function wasmApi(): WasmApi {
  return (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
}
