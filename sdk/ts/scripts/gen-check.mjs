// Fails when src/gen is not what `npm run gen` makes from ../../proto now: the generated code is
// committed (consumers and the web demo build without buf), so CI checks it is current.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const files = (dir) => readdirSync(dir).flatMap((f) => {
  const p = join(dir, f);
  return statSync(p).isDirectory() ? files(p) : [p];
});

const out = mkdtempSync(join(tmpdir(), 'gim-sdk-gen-'));
try {
  const template = join(out, 'buf.gen.yaml');
  writeFileSync(template, readFileSync('buf.gen.yaml', 'utf8').replace('out: src/gen', `out: ${join(out, 'gen')}`));
  execFileSync('buf', ['generate', '../../proto', '--template', template, '--path', '../../proto/gim/connect/v1/connect.proto'], { stdio: 'inherit' });
  const want = files(join(out, 'gen')).map((f) => relative(join(out, 'gen'), f)).sort();
  const have = files('src/gen').map((f) => relative('src/gen', f)).sort();
  const stale = [...new Set([...want, ...have])].filter((f) => !want.includes(f) || !have.includes(f)
    || readFileSync(join(out, 'gen', f), 'utf8') !== readFileSync(join('src/gen', f), 'utf8'));
  if (stale.length) {
    console.error(`src/gen is stale (${stale.join(', ')}): run \`npm run gen\` in sdk/ts and commit`);
    process.exit(1);
  }
  console.log('src/gen is current');
} finally {
  rmSync(out, { recursive: true, force: true });
}
