// The engine, the op library and the models layer load in a browser: bundled with esbuild for `platform: 'browser'`,
// no Node-only module (node:*, a Node builtin, the `webgpu` binding) is imported except through a dynamic import()
// (reached only on Node code paths: device acquisition in Node, file I/O), and the bundle evaluates in a context
// with no `process`, `require`, `Buffer` or `global` (module-level code touches nothing Node-only).
// Also: the pure path helpers the models layer uses instead of node:path agree with node:path.posix.
// No GPU needed. The bundle itself is exercised in Chromium by `npm run test:browser` (test/browser/run.ts).
import { posix } from 'node:path';
import vm from 'node:vm';
import * as esbuild from 'esbuild';
import { describe, expect, it } from 'vitest';
import { nodeOnlyExternal, ROOT, staticNodeImports } from '../browser/build.js';
import { posixPath } from '../models/data/paths.js';

const ENTRIES = ['engine/index.ts', 'kernels/index.ts', 'models/index.ts', 'index.ts'];

async function bundle(entry: string, format: 'esm' | 'iife'): Promise<{ code: string; meta: esbuild.Metafile }> {
  const r = await esbuild.build({
    entryPoints: [entry], absWorkingDir: ROOT, bundle: true, platform: 'browser', format, globalName: 'seqrec', target: 'es2022',
    write: false, metafile: true, outfile: 'out.js', logLevel: 'silent', plugins: [nodeOnlyExternal],
  });
  return { code: r.outputFiles[0]!.text, meta: r.metafile };
}

/** A fresh context with the globals a browser page has (that module-level code may use), and none of Node's. */
function browserContext(): vm.Context {
  return vm.createContext({
    console, TextEncoder, TextDecoder, performance, setTimeout, clearTimeout, queueMicrotask, URL, atob, btoa,
    navigator: {}, location: { href: 'http://localhost/', search: '' },
  });
}

describe('browser bundles: no Node-only module at load time', () => {
  for (const entry of ENTRIES) {
    it(`${entry}: Node-only modules only behind dynamic import()`, async () => {
      const { meta } = await bundle(entry, 'esm');
      expect(staticNodeImports(meta), 'static imports of Node-only modules').toEqual([]);
      // Every Node-only import that is there is a dynamic import() (the detector sees them: it is not blind).
      const dynamic = Object.values(meta.inputs).flatMap((i) => i.imports.filter((x) => x.external && x.kind === 'dynamic-import'));
      expect(dynamic.length).toBeGreaterThan(0);
    });
  }

  it('the context used below has no Node globals', () => {
    const ctx = browserContext();
    for (const name of ['process', 'require', 'Buffer', 'global', 'setImmediate']) {
      expect(vm.runInContext(`typeof ${name}`, ctx), name).toBe('undefined');
    }
    expect(() => vm.runInContext('process.env.X', ctx)).toThrow(/process is not defined/);
  });

  it('index.ts evaluates without process/require/Buffer and exports the engine, F and models', async () => {
    const { code } = await bundle('index.ts', 'iife');
    const ctx = browserContext();
    vm.runInContext(code, ctx, { filename: 'seqrec.iife.js' });
    const lib = (ctx as { seqrec?: Record<string, unknown> }).seqrec;
    expect(lib).toBeDefined();
    expect(typeof lib!.initGpu).toBe('function');
    expect(typeof (lib!.F as Record<string, unknown>).matmul).toBe('function');
    const models = lib!.models as Record<string, unknown>;
    for (const k of ['S3RecModel', 'AttRec', 'trainStep', 'pretrainStep', 'finetuneS3Rec', 'trainAttRec']) expect(typeof models[k], k).toBe('function');
    expect(typeof (models.data as Record<string, unknown>).readTextFile).toBe('function'); // file I/O: loads, runs only in Node
  });
});

describe('path helpers (models/data/paths.ts) == node:path.posix', () => {
  const joins: string[][] = [
    ['data/sample', 'Beauty.txt'], ['data/sample/', 'Beauty.txt'], ['./data', 'x'], ['', 'a'], ['', ''], [], ['/'], ['/', '..', 'a'],
    ['a', '..', '..', 'b'], ['a/./b', './c/'], ['../x', '../y'], ['a//b', '/c'], ['/abs', 'b/'], ['.', '.'], ['a', 'b/..'], ['..', '..'],
    ['runs/s3rec', '.last.safetensors.123.abc.tmp'],
  ];
  const names = ['', '/', '//', 'a', 'a/', 'a/b', 'a/b/', '/a', '/a/b//', 'a//b', '//a', './x', '../x/y', 'dir/.hidden', '.', '..', 'a/..', '/a/b/c.txt'];
  it('join', () => {
    for (const parts of joins) expect(posixPath.join(...parts), JSON.stringify(parts)).toBe(posix.join(...parts));
  });
  it('basename and dirname', () => {
    for (const p of names) {
      expect(posixPath.basename(p), `basename ${JSON.stringify(p)}`).toBe(posix.basename(p));
      expect(posixPath.dirname(p), `dirname ${JSON.stringify(p)}`).toBe(posix.dirname(p));
    }
  });
});
