// npm lifecycle hooks that build dist/ (`npm run build` = tsc -p tsconfig.build.json), so that a tarball
// (`npm pack`, `npm publish`) and a git install (npm clones, installs devDependencies, runs `prepare`, packs)
// both carry the compiled JS and .d.ts files that package.json's `exports` point to.
//   node .ci/build.mjs prepack   clean dist/ and build
//   node .ci/build.mjs prepare   the same, except: during `npm pack` / `npm publish` (npm runs prepack, then
//                                prepare: build once), and when TypeScript is not installed (`npm ci
//                                --omit=dev` in a checkout: nothing to build with; the CLI runs from source)
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const hook = process.argv[2];
if (hook !== 'prepack' && hook !== 'prepare') {
  console.error('usage: node .ci/build.mjs prepack|prepare');
  process.exit(2);
}
const npmCommand = process.env.npm_command ?? '';
if (hook === 'prepare' && (npmCommand === 'pack' || npmCommand === 'publish')) {
  console.error(`seqrec-webgpu prepare: dist/ was built by prepack (npm ${npmCommand})`);
  process.exit(0);
}
try {
  createRequire(join(root, 'package.json')).resolve('typescript/package.json');
} catch {
  if (hook === 'prepare') {
    console.error('seqrec-webgpu prepare: TypeScript is not installed (devDependencies omitted), dist/ not built');
    process.exit(0);
  }
  console.error('seqrec-webgpu prepack: TypeScript is not installed; run `npm ci` first');
  process.exit(1);
}
rmSync(join(root, 'dist'), { recursive: true, force: true }); // no stale files from removed sources in the tarball
const npm = process.env.npm_execpath;
const r = npm
  ? spawnSync(process.execPath, [npm, 'run', 'build'], { cwd: root, stdio: 'inherit' })
  : spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
if (r.error) console.error(`seqrec-webgpu ${hook}: ${r.error.message}`);
process.exit(r.status ?? 1);
