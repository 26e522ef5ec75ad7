// op_coverage: every op of the library has a harness test and a bench entry, so a new op cannot land without
// them. Each test file runs in its own process, so the check is static (sources), on these rules:
//   ops    every function or defineOp object that kernels/index.ts exports and an op file kernels/<family>.ts
//          declares, except the float64 references (ref*). The toolkit files kernels/common*.ts declare no ops
//          (WGSL snippets and templates, host helpers); host-only helpers exported beside their ops count as ops
//          too unless listed in NOT_OPS, with the reason.
//   test   test/<family>.test.ts exists (TEST_FILE names the exceptions), has a top-level describe titled
//          '<family>', runs the harness (checkOp; expectClose for the in-place updates of IN_PLACE), and uses
//          every op of the family outside its import lines.
//   bench  the family has a bench entry: bench/registry.ts benchOps() lists it.
// The rules are a pure function (coverageProblems), checked here on the repository and on a made-up library
// with an op that has neither, which must fail.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { benchOps } from '../bench/registry.js';
import * as F from '../kernels/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Families whose test file has another name, with the reason. */
export const TEST_FILE: Readonly<Record<string, string>> = {
  optim: 'optim_kernels', // test/optim.test.ts is the models layer's optimizers (models/optim.ts)
};

/** Exports of op files that are not ops (no GPU work), with the reason. Keep it short. */
export const NOT_OPS: Readonly<Record<string, string>> = {};

/** Families whose ops update tensors in place (no output for checkOp): their tests compare with expectClose. */
export const IN_PLACE: Readonly<Record<string, string>> = {
  optim: 'optimizer steps update the parameters and their state in place',
  attrec_step: 'the fused AttRec training step updates the parameters and the Adagrad state in place',
};

export interface Library {
  /** Runtime exports of kernels/index.ts. */
  exports: Record<string, unknown>;
  /** family -> source of kernels/<family>.ts (index.ts excluded). */
  kernelSources: ReadonlyMap<string, string>;
  /** file name without `.test.ts` -> source, for the test files that exist. */
  testSources: ReadonlyMap<string, string>;
  /** Families with a bench entry. */
  benchFamilies: readonly string[];
}

const isOpObject = (v: unknown): boolean => typeof v === 'object' && v !== null && typeof (v as { apply?: unknown }).apply === 'function' && 'def' in v;

/** The names a source file declares as exports (`export function|const|let|class NAME`, `export { A, B as C }`). */
export function declaredExports(src: string): Set<string> {
  const out = new Set<string>();
  for (const m of src.matchAll(/^export\s+(?:declare\s+)?(?:async\s+)?(?:function\*?|const|let|var|class)\s+([A-Za-z_$][\w$]*)/gm)) out.add(m[1]!);
  for (const m of src.matchAll(/^export\s*\{([^}]*)\}\s*;/gm)) {
    for (const part of m[1]!.split(',')) {
      const p = part.trim().replace(/^type\s+/, '');
      const name = p.split(/\s+as\s+/).pop()!.trim();
      if (name && !part.trim().startsWith('type ')) out.add(name);
    }
  }
  return out;
}

/** Source without comments and import declarations: what "uses an op" is checked on. */
export function codeOf(src: string): string {
  return src
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1')
    .replace(/^\s*import\s[\s\S]*?from\s*['"][^'"]+['"]\s*;?/gm, '');
}

const uses = (code: string, name: string): boolean => new RegExp(`(?<![\\w$])${name.replace(/\$/g, '\\$')}(?![\\w$])`).test(code);

/** The ops of the library by family (see the rules above); problems for exports whose declaration is not found. */
export function opsByFamily(lib: Library): { ops: Map<string, string[]>; problems: string[] } {
  const ops = new Map<string, string[]>();
  const problems: string[] = [];
  const declared = [...lib.kernelSources].map(([family, src]) => ({ family, names: declaredExports(src) }));
  for (const [name, value] of Object.entries(lib.exports).sort(([a], [b]) => a.localeCompare(b))) {
    if (typeof value !== 'function' && !isOpObject(value)) continue;
    if (/^ref[A-Z0-9_]/.test(name) || name in NOT_OPS) continue;
    const homes = declared.filter((d) => d.names.has(name)).map((d) => d.family);
    if (homes.length !== 1) {
      problems.push(`kernels/index.ts exports '${name}', declared in ${homes.length ? homes.map((h) => `kernels/${h}.ts`).join(' and ') : 'no kernels/*.ts file'}`);
      continue;
    }
    const family = homes[0]!;
    if (family.startsWith('common')) continue; // the toolkit
    ops.set(family, [...(ops.get(family) ?? []), name]);
  }
  return { ops, problems };
}

/** Every missing test or bench entry, one line each (empty: covered). */
export function coverageProblems(lib: Library): string[] {
  const { ops, problems } = opsByFamily(lib);
  const bench = new Set(lib.benchFamilies);
  for (const [family, names] of [...ops].sort(([a], [b]) => a.localeCompare(b))) {
    const file = TEST_FILE[family] ?? family;
    const src = lib.testSources.get(file);
    if (src === undefined) problems.push(`${family}: no test file test/${file}.test.ts (ops: ${names.join(', ')})`);
    else {
      const code = codeOf(src);
      const title = new RegExp(`^describe(?:Gpu)?\\(\\s*(['"\`])${family}\\1`, 'm');
      if (!title.test(code)) problems.push(`${family}: test/${file}.test.ts has no top-level describe titled '${family}'`);
      const harness = family in IN_PLACE ? 'expectClose' : 'checkOp';
      if (!new RegExp(`\\b${harness}\\(`).test(code)) problems.push(`${family}: test/${file}.test.ts does not run the harness (${harness})`);
      const unused = names.filter((n) => !uses(code, n));
      if (unused.length) problems.push(`${family}: test/${file}.test.ts does not use ${unused.join(', ')} (beyond importing)`);
    }
    if (!bench.has(family)) problems.push(`${family}: no bench entry (bench/${family}.bench.ts, op '${family}')`);
  }
  return problems;
}

/** The repository's library. */
async function repository(): Promise<Library> {
  const read = (dir: string, suffix: string): Map<string, string> =>
    new Map(
      readdirSync(join(ROOT, dir))
        .filter((f) => f.endsWith(suffix))
        .map((f) => [f.slice(0, -suffix.length), readFileSync(join(ROOT, dir, f), 'utf8')] as [string, string]),
    );
  const kernelSources = read('kernels', '.ts');
  kernelSources.delete('index');
  return { exports: { ...F }, kernelSources, testSources: read('test', '.test.ts'), benchFamilies: await benchOps() };
}

describe('op_coverage', () => {
  it('every op exported by kernels/index.ts has a harness test and a bench entry', async () => {
    const lib = await repository();
    const { ops } = opsByFamily(lib);
    expect(ops.size).toBeGreaterThan(10); // the rule found the library
    expect(ops.get('bias_gelu')).toEqual(['biasGelu']);
    const problems = coverageProblems(lib);
    expect(problems, `\n${problems.join('\n')}\n`).toEqual([]);
  }, 60_000);

  it('the exceptions are still needed', () => {
    for (const name of Object.keys(NOT_OPS)) expect(name in F, `NOT_OPS lists '${name}', which kernels/index.ts no longer exports`).toBe(true);
    for (const family of Object.keys(IN_PLACE)) expect(existsSync(join(ROOT, 'kernels', `${family}.ts`)), `IN_PLACE: kernels/${family}.ts`).toBe(true);
    for (const [family, file] of Object.entries(TEST_FILE)) {
      if (existsSync(join(ROOT, 'kernels', `${family}.ts`))) expect(existsSync(join(ROOT, 'test', `${file}.test.ts`)), `test/${file}.test.ts`).toBe(true);
    }
  });

  it('fails for a new op without a test or a bench entry, or tested by a mere import', () => {
    const op = (): void => undefined;
    const lib = (tests: Record<string, string>, bench: string[]): Library => ({
      exports: { fooOp: op, fooOp2: op, refFoo: op, FOO_CONST: 3, helper: op },
      kernelSources: new Map([
        ['foo', 'export function fooOp(x) {}\nexport const fooOp2 = defineOp({});\nexport const refFoo = () => 0;\nexport const FOO_CONST = 3;'],
        ['common', 'export function helper() {}'],
      ]),
      testSources: new Map(Object.entries(tests)),
      benchFamilies: bench,
    });
    const good = "import { fooOp, fooOp2 } from '../kernels/foo.js';\ndescribeGpu('foo', () => { it('x', () => checkOp({ run: ([x]) => fooOp2(fooOp(x)) })); });";
    expect(coverageProblems(lib({ foo: good }, ['foo']))).toEqual([]);
    expect(coverageProblems(lib({}, []))).toEqual(["foo: no test file test/foo.test.ts (ops: fooOp, fooOp2)", "foo: no bench entry (bench/foo.bench.ts, op 'foo')"]);
    const importOnly = "import { fooOp, fooOp2 } from '../kernels/foo.js';\ndescribeGpu('foo', () => { it('x', () => checkOp({ run: ([x]) => fooOp(x) })); });";
    expect(coverageProblems(lib({ foo: importOnly }, ['foo']))).toEqual(['foo: test/foo.test.ts does not use fooOp2 (beyond importing)']);
    const commentOnly = good.replace('fooOp2(fooOp(x))', 'fooOp(x) /* fooOp2 */');
    expect(coverageProblems(lib({ foo: commentOnly }, ['foo']))).toEqual(['foo: test/foo.test.ts does not use fooOp2 (beyond importing)']);
    const noHarness = good.replace("checkOp({ run: ([x]) => fooOp2(fooOp(x)) })", 'fooOp2(fooOp(1))');
    expect(coverageProblems(lib({ foo: noHarness }, ['foo']))).toEqual(['foo: test/foo.test.ts does not run the harness (checkOp)']);
    const otherTitle = good.replace("describeGpu('foo'", "describeGpu('foo ops'");
    expect(coverageProblems(lib({ foo: otherTitle }, ['foo']))).toEqual(["foo: test/foo.test.ts has no top-level describe titled 'foo'"]);
    const undeclared = lib({ foo: good }, ['foo']);
    undeclared.exports = { ...undeclared.exports, barOp: op };
    expect(coverageProblems(undeclared)).toEqual(["kernels/index.ts exports 'barOp', declared in no kernels/*.ts file"]);
  });
});

describe('README "Writing a new kernel"', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('## Writing a new kernel\n');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const blocks = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const named = [...new Set([...section.matchAll(/`((?:kernels|test|bench)\/[\w./]+\.(?:ts|md))`/g)].map((m) => m[1]!))];

  it('shows its example files verbatim, and its excerpts as they are in the files', () => {
    expect(start).toBeGreaterThan(0);
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    for (const b of blocks) {
      const path = /^\/\/ ((?:kernels|test|bench)\/[\w./]+\.ts)\b/.exec(b)?.[1];
      if (path) {
        expect(readFileSync(join(ROOT, path), 'utf8').trimEnd(), `README block of ${path}`).toBe(b.trimEnd());
      } else {
        const homes = named.filter((f) => f.startsWith('kernels/') && f.endsWith('.ts') && readFileSync(join(ROOT, f), 'utf8').includes(b));
        expect(homes, `README excerpt not found in the kernels it names:\n${b.slice(0, 200)}`).not.toEqual([]);
      }
    }
  });

  it('names files that exist, export lines that kernels/index.ts has, and families kernels/README.md lists', () => {
    for (const f of named) expect(existsSync(join(ROOT, f)), f).toBe(true);
    const index = readFileSync(join(ROOT, 'kernels', 'index.ts'), 'utf8');
    const exportsShown = [...section.matchAll(/`(export [^`]+;)`/g)].map((m) => m[1]!);
    expect(exportsShown.length).toBeGreaterThan(0);
    for (const e of exportsShown) expect(index, e).toContain(e);
    const table = readFileSync(join(ROOT, 'kernels', 'README.md'), 'utf8');
    for (const family of ['scale_shift', 'bias_gelu']) {
      expect(table).toMatch(new RegExp(`^\\| \`${family}\\.ts\` \\|.*\\| \`${family}\\.test\\.ts\` \\|$`, 'm'));
      expect(named).toContain(`kernels/${family}.ts`);
    }
  });
});
