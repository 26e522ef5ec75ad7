// The bench registry: bench/<family>.bench.ts files (family = the kernel file name in kernels/, or 'engine' /
// 'e2e'), each exporting `entries(size)`. A filtered run imports only the files it needs: a filter's first word
// (up to the first '.' or space) selects the families whose name contains it (`attention` -> attention_masked,
// `matmul.reg8x16 512^3` -> matmul); a filter that names no family (`fused`) loads every file. Rows are then kept
// when `<row name> <shape>` contains a filter.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VARIANT_KINDS, type BenchEntry, type BenchModule, type BenchSize } from './types.js';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
/** Bench files that are not a kernel family. */
export const NON_KERNEL_FAMILIES: readonly string[] = ['engine', 'e2e'];

export interface BenchFile {
  family: string;
  path: string;
}

/** Every bench/<family>.bench.ts (or .js when built), sorted by family. */
export function benchFiles(): BenchFile[] {
  return readdirSync(BENCH_DIR)
    .map((f) => /^(.+)\.bench\.(ts|js)$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null && !m[0].endsWith('.d.ts'))
    .map((m) => ({ family: m[1]!, path: join(BENCH_DIR, m[0]) }))
    .sort((a, b) => a.family.localeCompare(b.family));
}

/** The first word of a filter: the part before the first '.' or space. */
export const filterHead = (f: string): string => f.split(/[. ]/)[0]!;

/** The files a filtered run needs (all without filters; all when a filter names no family). */
export function selectFiles(filters: readonly string[], files = benchFiles()): BenchFile[] {
  if (!filters.length) return files;
  const picked = new Set<BenchFile>();
  for (const f of filters) {
    const head = filterHead(f);
    const hits = head ? files.filter((x) => x.family.includes(head)) : [];
    for (const x of hits.length ? hits : files) picked.add(x);
  }
  return files.filter((x) => picked.has(x));
}

/** The row name prefix of an entry. */
export const entryName = (e: BenchEntry): string => e.name ?? e.op;
/** `<entry name>.<variant>`. */
export const rowName = (e: BenchEntry, variant: string): string => `${entryName(e)}.${variant}`;

/** Does `filter` keep this row? */
export const rowMatches = (e: BenchEntry, variant: string, filters: readonly string[]): boolean =>
  !filters.length || filters.some((f) => `${rowName(e, variant)} ${e.shape}`.includes(f));

async function importFile(f: BenchFile): Promise<BenchModule> {
  const mod = (await import(pathToFileURL(f.path).href)) as Partial<BenchModule>;
  if (typeof mod.entries !== 'function') throw new Error(`bench/${f.family}.bench: exports no entries(size) function`);
  return mod as BenchModule;
}

/** The entries of one bench file at `size`, each checked (checkEntry) against its file's family. */
export async function entriesOf(f: BenchFile, size: BenchSize = 'full'): Promise<BenchEntry[]> {
  const es = (await importFile(f)).entries(size);
  for (const e of es) {
    const problems = checkEntry(e, f.family);
    if (problems.length) throw new Error(`bench/${f.family}.bench: entry ${entryName(e)} ${e.shape}: ${problems.join('; ')}`);
  }
  return es;
}

/**
 * The entries of the selected files, with only the variants the filters keep (entries left without a variant are
 * dropped). Throws when a file fails to import or an entry is malformed (checkEntry).
 */
export async function loadEntries(filters: readonly string[] = [], size: BenchSize = 'full'): Promise<BenchEntry[]> {
  if (!benchFiles().length) throw new Error(`seqrec bench: no *.bench.ts files in ${BENCH_DIR} (the benchmarks run from a source checkout: npm run bench)`);
  const out: BenchEntry[] = [];
  const keys = new Set<string>();
  for (const f of selectFiles(filters)) {
    for (const e of await entriesOf(f, size)) {
      for (const v of e.variants) {
        const key = `${rowName(e, v.name)} ${e.shape}`;
        if (keys.has(key)) throw new Error(`bench: duplicate row ${key}`);
        keys.add(key);
      }
      const variants = e.variants.filter((v) => rowMatches(e, v.name, filters));
      if (variants.length) out.push({ ...e, variants });
    }
  }
  return out;
}

/** Every entry of every file at `size` (no filter). */
export const allEntries = (size: BenchSize = 'full'): Promise<BenchEntry[]> => loadEntries([], size);

/** The kernel families (kernels/<op>.ts file names) that have bench entries, sorted. */
export async function benchOps(): Promise<string[]> {
  const ops = new Set((await allEntries('full')).map((e) => e.op));
  return [...ops].filter((o) => !NON_KERNEL_FAMILIES.includes(o)).sort();
}

const NAME = /^[a-z0-9_]+$/;
const isPosInt = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v > 0;
const isCount = (v: unknown): boolean => v === undefined || (typeof v === 'number' && Number.isFinite(v) && v >= 0);

/** Problems with an entry's declared metadata (empty when well-formed). `family`: the file it came from. */
export function checkEntry(e: BenchEntry, family?: string): string[] {
  const p: string[] = [];
  if (typeof e.op !== 'string' || !NAME.test(e.op)) p.push(`op '${String(e.op)}' is not a lower_snake name`);
  if (family !== undefined && e.op !== family) p.push(`op '${e.op}' is not its file's family '${family}'`);
  if (e.name !== undefined && !(e.name === e.op || (e.name.startsWith(`${e.op}.`) && NAME.test(e.name.slice(e.op.length + 1))))) {
    p.push(`name '${e.name}' must be '${e.op}' or '${e.op}.<sub>'`);
  }
  if (typeof e.shape !== 'string' || !e.shape.trim()) p.push('empty shape label');
  const dims = Object.entries(e.dims ?? {});
  if (!dims.length) p.push('no dims');
  for (const [k, v] of dims) if (!isPosInt(v)) p.push(`dim ${k} = ${String(v)} is not a positive integer`);
  if (!isCount(e.flops)) p.push(`flops ${String(e.flops)} is not a count`);
  if (!isCount(e.bytes)) p.push(`bytes ${String(e.bytes)} is not a count`);
  if (typeof e.inputs !== 'function' || typeof e.reference !== 'function') p.push('inputs() and reference() are required');
  if (!Array.isArray(e.variants) || !e.variants.length) p.push('no variants');
  const seen = new Set<string>();
  for (const v of e.variants ?? []) {
    if (!NAME.test(v.name)) p.push(`variant '${v.name}' is not a lower_snake name`);
    if (seen.has(v.name)) p.push(`variant '${v.name}' twice`);
    seen.add(v.name);
    if (!VARIANT_KINDS.includes(v.kind)) p.push(`variant ${v.name}: unknown kind '${String(v.kind)}'`);
    if (typeof v.setup !== 'function') p.push(`variant ${v.name}: no setup()`);
  }
  if ((e.variants ?? []).every((v) => v.kind === 'tfjs')) p.push('only tfjs variants');
  return p;
}
