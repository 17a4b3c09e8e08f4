// Bundles src/main.js (and the socket protocol's .proto, read as text) into dist/app.js and copies
// the static files. The .proto under ../proto is the one source of truth for the wire format.
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
  loader: { '.proto': 'text' },
  sourcemap: true,
  logLevel: 'info',
});
