// `npm run build:browser`: the ES-module browser bundle of the package and the demo page, with esbuild.
//   dist/browser/seqrec.js (+ .map)  the root index.ts (engine, F = kernels, models) for `<script type="module">`
//   dist/browser/page.js (+ .map)    browser/page.ts; its imports of the package resolve to ./seqrec.js at run time
//   dist/browser/index.html          a copy of browser/index.html
// Node-only modules (node:*, Node builtins, the `webgpu` package) are reached only through dynamic import() inside
// Node code paths (device acquisition in Node, file I/O); they stay as dynamic imports that a browser never runs.
// A static import of one fails the build (test/browser_imports.test.ts checks the same for every layer).
import * as esbuild from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const OUT_DIR = join(ROOT, 'dist', 'browser');

const NODE_ONLY = new Set(['webgpu', ...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);

/** Whether an import specifier names a Node builtin or the Node-only `webgpu` binding. */
export const isNodeOnly = (spec: string): boolean => NODE_ONLY.has(spec) || spec.startsWith('node:');

/** esbuild plugin: Node-only modules stay external (kept as written). */
export const nodeOnlyExternal: esbuild.Plugin = {
  name: 'node-only-external',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (a) => (isNodeOnly(a.path) ? { path: a.path, external: true } : undefined));
  },
};

/** Imports of Node-only modules that are NOT dynamic import() (from a metafile): must be empty. */
export function staticNodeImports(meta: esbuild.Metafile): string[] {
  const bad: string[] = [];
  for (const [file, input] of Object.entries(meta.inputs)) {
    for (const i of input.imports) if (isNodeOnly(i.path) && i.kind !== 'dynamic-import') bad.push(`${file}: ${i.kind} '${i.path}'`);
  }
  return bad;
}

const common: esbuild.BuildOptions = {
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: 'es2022',
  sourcemap: true,
  metafile: true,
  logLevel: 'warning',
  absWorkingDir: ROOT,
};

export interface BuildResult {
  files: string[];
  bytes: number;
  ms: number;
}

export async function buildBrowser(): Promise<BuildResult> {
  const t0 = performance.now();
  await mkdir(OUT_DIR, { recursive: true });
  const lib = await esbuild.build({ ...common, entryPoints: [join(ROOT, 'index.ts')], outfile: join(OUT_DIR, 'seqrec.js'), plugins: [nodeOnlyExternal] });
  // The page imports the package as '../index.js' (browser/scenario.ts, browser/page.ts): mapped to the library
  // bundle beside it, so the page runs dist/browser/seqrec.js itself.
  const toLib: esbuild.Plugin = {
    name: 'package-to-bundle',
    setup(b) {
      b.onResolve({ filter: /^\.\.\/index\.js$/ }, (a) =>
        a.resolveDir === join(ROOT, 'browser') ? { path: './seqrec.js', external: true } : undefined,
      );
    },
  };
  const page = await esbuild.build({ ...common, entryPoints: [join(ROOT, 'browser', 'page.ts')], outfile: join(OUT_DIR, 'page.js'), plugins: [toLib, nodeOnlyExternal] });
  const bad = [...staticNodeImports(lib.metafile!), ...staticNodeImports(page.metafile!)];
  if (bad.length) throw new Error(`browser bundle: Node-only modules imported statically:\n  ${bad.join('\n  ')}`);
  const libInPage = Object.keys(page.metafile!.inputs).filter((f) => !f.startsWith('browser/'));
  if (libInPage.length) throw new Error(`browser bundle: page.js should import the package from ./seqrec.js but bundles ${libInPage.join(', ')}`);
  await copyFile(join(ROOT, 'browser', 'index.html'), join(OUT_DIR, 'index.html'));
  const outputs = { ...lib.metafile!.outputs, ...page.metafile!.outputs };
  return {
    files: [...Object.keys(outputs), relative(ROOT, join(OUT_DIR, 'index.html'))], // relative to ROOT (absWorkingDir)
    bytes: Object.values(outputs).reduce((a, o) => a + o.bytes, 0),
    ms: performance.now() - t0,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  buildBrowser().then(
    (r) => console.log(`build:browser: ${r.files.join(', ')} (${(r.bytes / 1024).toFixed(0)} KiB with source maps) in ${r.ms.toFixed(0)} ms`),
    (e: unknown) => {
      console.error(e instanceof Error ? e.message : String(e));
      process.exitCode = 1;
    },
  );
}
