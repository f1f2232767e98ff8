// @ts-check
import tseslint from 'typescript-eslint';

/**
 * Layer rules (DESIGN.md section 4): each folder under src/ may import only the layers listed here.
 * A pattern names the folders a layer must NOT reach.
 */
const layers = {
  common: ['mem', 'cpu', 'devices', 'machine', 'net', 'storage', 'ui', 'embed', 'cli'],
  mem: ['cpu', 'devices', 'machine', 'net', 'storage', 'ui', 'embed', 'cli'],
  cpu: ['devices', 'machine', 'net', 'storage', 'ui', 'embed', 'cli'],
  devices: ['cpu', 'machine', 'net', 'storage', 'ui', 'embed', 'cli'],
  net: ['cpu', 'mem', 'machine', 'storage', 'ui', 'embed', 'cli'],
  storage: ['cpu', 'mem', 'machine', 'net', 'ui', 'embed', 'cli'],
  machine: ['ui', 'embed', 'cli'],
  ui: ['embed', 'cli', 'cpu', 'devices', 'mem'],
  embed: ['cli', 'cpu', 'devices', 'mem'],
  cli: ['ui', 'embed'],
};

const layerConfigs = Object.entries(layers).map(([layer, forbidden]) => ({
  files: [`src/${layer}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: forbidden.map((f) => ({
          group: [`**/${f}/*`, `../${f}`, `../../${f}/*`],
          message: `src/${layer} may not import src/${f} (layer rules in DESIGN.md section 4 / ARCHITECTURE.md).`,
        })),
      },
    ],
  },
}));

export default tseslint.config(
  {
    ignores: [
      'node_modules/**',
      'dist/**',
      'dist-lib/**',
      'build/**',
      'coverage/**',
      'public/**',
      'bench/results/**',
    ],
  },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always'],
    },
  },
  ...layerConfigs,
);
