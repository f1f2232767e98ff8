import { defineConfig } from 'vite';

/** Headers that make the page cross-origin isolated, so SharedArrayBuffer is available. */
const isolationHeaders = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export default defineConfig({
  server: {
    headers: isolationHeaders,
    // Transform the page's and the vCPU worker's modules at startup, not one request at a time on first load.
    warmup: { clientFiles: ['./src/ui/main.ts', './src/machine/hart.worker.ts'] },
  },
  preview: { headers: isolationHeaders },
  worker: { format: 'es' },
  // Pre-bundled at startup, so the first page load does not discover them and reload.
  optimizeDeps: { include: ['@xterm/xterm', '@xterm/addon-fit'] },
  build: {
    target: 'es2022',
    // The app and the embedding example (/examples/, README "Embedding").
    rolldownOptions: { input: { main: 'index.html', examples: 'examples/index.html' } },
  },
});
