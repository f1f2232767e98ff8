import { defineConfig } from 'vitest/config';

/** Tests that need the host's cores to themselves: run after the main suite, one file at a time. */
export default defineConfig({
  test: {
    include: ['test/serial/**/*.test.ts'],
    testTimeout: 120_000,
    fileParallelism: false,
  },
});
