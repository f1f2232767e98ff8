import { defineConfig } from 'vite';

/**
 * The library build (`npm run build:lib`): `dist-lib/tabvisor.js`, an ES module with the page API and the
 * `<tabvisor-vm>` element, its worker chunks and the default guest (`dist-lib/images/`, copied from public/).
 * Worker and image URLs resolve relative to the module, so dist-lib/ can be served from any path.
 * Declarations come from `tsc -p tsconfig.lib.json` (dist-lib/types/).
 */
export default defineConfig({
  base: './',
  publicDir: 'public',
  define: { 'import.meta.env.TABVISOR_LIB': 'true' },
  worker: { format: 'es' },
  build: {
    target: 'es2022',
    outDir: 'dist-lib',
    emptyOutDir: true,
    copyPublicDir: true,
    minify: true,
    lib: {
      entry: 'src/embed/index.ts',
      formats: ['es'],
      fileName: () => 'tabvisor.js',
    },
    // Lazily loaded chunks (the terminal, see tabvisor-vm-element.ts) sit beside the worker chunks.
    rollupOptions: { output: { chunkFileNames: 'assets/[name]-[hash].js' } },
  },
});
