import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

describe('the library declarations (tsconfig.lib.json)', () => {
  it('give a consumer importing from "tabvisor" the typed page API, run() and the element, and reject misuse', () => {
    const out = mkdtempSync(join(tmpdir(), 'tabvisor-types-'));
    try {
      execFileSync(process.execPath, [TSC, '-p', join(ROOT, 'tsconfig.lib.json'), '--outDir', out], {
        cwd: ROOT,
      });
      // A consumer with plain settings: no .ts-extension imports of its own, no vite types.
      const tsconfig = {
        compilerOptions: {
          target: 'ES2022',
          module: 'ESNext',
          moduleResolution: 'Bundler',
          lib: ['ES2024', 'DOM', 'DOM.Iterable'],
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: [],
          paths: { tabvisor: [join(out, 'embed/index.d.ts')] },
        },
        files: [join(ROOT, 'test/fixtures/lib-consumer/consumer.ts')],
      };
      const config = join(out, 'tsconfig.consumer.json');
      writeFileSync(config, JSON.stringify(tsconfig));
      let output = '';
      try {
        execFileSync(process.execPath, [TSC, '-p', config], { cwd: ROOT, encoding: 'utf8' });
      } catch (error) {
        output = String((error as { stdout?: string }).stdout ?? error);
      }
      expect(output).toBe('');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
