// Bundles src/main.js with @gim/sdk (../sdk/ts, built first: its dist/) into dist/app.js and copies
// the static files. The SDK's protobuf code is generated from ../proto, the one source of truth.
import { build } from 'esbuild';
import { cpSync, mkdirSync } from 'node:fs';

mkdirSync('dist', { recursive: true });
cpSync('public', 'dist', { recursive: true });
await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  format: 'esm',
  target: ['es2020'],
  outfile: 'dist/app.js',
  sourcemap: true,
  logLevel: 'info',
});
