// Lint: recommended rules plus the layering rule of shared/DESIGN.md (lower layers never import upper ones).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const layers = ['util', 'vmm', 'arch', 'os', 'policy', 'lab', 'cli', 'monitor', 'console'];
const above = (layer) => layers.slice(layers.indexOf(layer) + 1);
const layerRule = (layer) => ({
  files: [`src/${layer}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: above(layer).map((up) => ({
          group: [`**/${up}/**`, `../${up}/*`, `../../${up}/*`, `../../../${up}/*`],
          message: `src/${layer} must not import from src/${up}: imports point down the layers.`,
        })),
      },
    ],
  },
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bin/**', 'scripts/**', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-control-regex': 'off',
    },
  },
  ...['util', 'vmm', 'arch', 'os', 'policy'].map(layerRule),
);
