// The benchmark runner: `seqrec bench [filter ...] [options]` (= `npm run bench -- ...`; `--help` lists options).
// 1. Loads the bench files the filters need (bench/registry.ts: a filter's first word picks the families) and keeps
//    the rows whose name (or "name shape") contains a filter (every row without a filter).
// 2. Validates EVERY variant against its entry's float64 reference before timing anything (llm.c's order):
//    inputs made once per entry, the reference memoised per key, each variant set up, run in its validation
//    setting, read back, compared, disposed. Stops at the first failure; then prints "All results match.
//    Starting benchmarks."
// 3. Times group by group (a group = one row name prefix at one shape: the fused kernel, its alternatives, its
//    composition and the tfjs peer side by side). Inside a group the runs are interleaved round-robin, so load
//    from other processes on this shared machine hits every variant alike. Each variant gets `warmup` untimed
//    runs, then up to `reps` timed runs; it stops early once its timed runs exceed `budget` seconds (at least 3).
//    Clock: GPU timestamps where the device has 'timestamp-query' (timestampWrites on the engine queue's compute
//    passes, summed per run; tfjs rows through tf.time's own queries; rows whose run does host work stay on the
//    host clock), else the host clock around the run, the flush and onSubmittedWorkDone. `--clock host` forces it.
// 4. Prints a table (row, shape, median ms, min ms, GFLOP/s and GB/s from the median, x tfjs) under a header naming
//    the adapter and the clock; with --json the rows as a JSON array on stdout (progress on stderr) and
//    bench/results/<adapter-slug>.json written (a filtered run replaces its rows and keeps the others).
//    --plot FILE.svg draws fused vs composed vs tfjs per group (log ms); --from RESULTS.json redraws / reprints
//    without running; --report rewrites docs/BENCHMARKS.md's measured section from bench/results/*.json.
//
// Why not benny (benchmark.js) for the timing: its samples are means over cycles of a calibrated number of calls
// with its own stop rule, so a sample is not one GPU-synchronised run and the rep count is not ours to fix; its
// progress lines go to stdout, which --json must keep clean.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { destroyGpu, flags, initGpu, rt, sync, type GpuInfo } from '../engine/index.js';
import { compareOutputs, gbps, gflops } from './common.js';
import { BENCH_DIR, entryName, loadEntries, rowName } from './registry.js';
import type { BenchEntry, BenchResults, BenchRow, Instance, Outputs, Reference, Variant } from './types.js';

export interface BenchOptions {
  filters: string[];
  json: boolean;
  reps: number;
  warmup: number;
  budget: number;
  clock: 'auto' | 'host';
  plot: string | null;
  from: string | null;
  report: boolean;
}

export const BENCH_USAGE = `usage: seqrec bench [filter ...] [options]      (npm run bench -- [filter ...] [options])

Validates every benchmark variant against its float64 reference, then times the variants of each group side
by side (interleaved). A filter keeps the rows whose "name shape" contains it; its first word picks the bench
files (bench/<family>.bench.ts): e.g. matmul, attention, "matmul.reg8x16 512^3", e2e, scale_shift.

options:
  --json           print the rows as JSON on stdout and write bench/results/<adapter-slug>.json
  --reps N         timed runs per variant (default 10)
  --warmup N       untimed runs per variant first (default 2)
  --budget S       seconds of timed runs per variant before it stops early, after 3 runs (default 4)
  --clock host     time with the host clock even where the GPU has timestamp-query
  --plot FILE.svg  a grouped bar chart per kernel/shape group: fused vs composed vs tfjs (ms, log scale)
  --from FILE      use a results JSON instead of running (with --plot: redraw; alone: print its table)
  --report         rewrite docs/BENCHMARKS.md's measured section from bench/results/*.json (runs nothing)`;

export function parseBenchArgs(argv: readonly string[]): BenchOptions | 'help' {
  const a: BenchOptions = { filters: [], json: false, reps: 10, warmup: 2, budget: 4, clock: 'auto', plot: null, from: null, report: false };
  for (let i = 0; i < argv.length; i++) {
    const s = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`seqrec bench: ${s} needs a value`);
      return v;
    };
    const num = (): number => {
      const raw = value();
      const v = Number(raw);
      if (!Number.isFinite(v) || v < 0) throw new Error(`seqrec bench: ${s} needs a non-negative number, got '${raw}'`);
      return v;
    };
    if (s === '--json') a.json = true;
    else if (s === '--reps') a.reps = Math.max(1, Math.floor(num()));
    else if (s === '--warmup') a.warmup = Math.floor(num());
    else if (s === '--budget') a.budget = num();
    else if (s === '--plot') a.plot = value();
    else if (s === '--from') a.from = value();
    else if (s === '--report') a.report = true;
    else if (s === '--clock') {
      const c = value();
      if (c !== 'host' && c !== 'auto') throw new Error(`seqrec bench: --clock must be host or auto, got '${c}'`);
      a.clock = c;
    } else if (s === '--help' || s === '-h') return 'help';
    else if (s.startsWith('--')) throw new Error(`seqrec bench: unknown option '${s}' (seqrec bench --help)`);
    else a.filters.push(s);
  }
  return a;
}

// ------------------------------------------------------------------ adapter names
/** Full adapter identity (as `seqrec info` prints it) with the backend and feature level. */
export function adapterName(i: GpuInfo): string {
  const id = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / ');
  return `${id || 'unknown adapter'} (${i.backend}, ${i.featureLevel})`;
}

const slugify = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');

/** A file-name slug: the device's first word (or vendor-architecture), backend, feature level: llvmpipe-opengles-compat. */
export function adapterSlug(i: Pick<GpuInfo, 'vendor' | 'architecture' | 'device' | 'description' | 'backend' | 'featureLevel'>): string {
  const dev = slugify(i.device).split('-')[0] ?? '';
  const base = dev || slugify([i.vendor, i.architecture].filter(Boolean).join(' ')) || slugify(i.description) || 'unknown';
  return [base, slugify(i.backend), i.featureLevel === 'compatibility' ? 'compat' : slugify(i.featureLevel)].filter(Boolean).join('-');
}

// ------------------------------------------------------------------ validation
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * Validate every variant of `e` against its reference (inputs made once, reference memoised per key). Throws the
 * first mismatch, naming the row. `log` gets one line per variant.
 */
export async function validateEntry(e: BenchEntry, log: (s: string) => void = () => undefined): Promise<void> {
  const inputs: unknown = await e.inputs();
  const refs = new Map<string, Reference>();
  for (const v of e.variants) {
    const key = v.refKey ?? 'default';
    let want = refs.get(key);
    if (!want) {
      want = await e.reference(inputs, key);
      refs.set(key, want);
    }
    const what = `${rowName(e, v.name)} ${e.shape}`;
    let inst: Instance | null = null;
    try {
      inst = await v.setup(inputs);
      const got: Outputs = await inst.outputs();
      if (e.check) e.check(what, got, want, inputs, v);
      else compareOutputs(what, got, want, v.tol ?? e.tol, e.sample);
    } catch (err) {
      throw new Error(`${what}: ${errText(err)}`);
    } finally {
      await inst?.dispose();
      await sync();
    }
    log(`ok   ${what}${key !== 'default' ? ` (reference '${key}')` : ''}`);
  }
}

// ------------------------------------------------------------------ timing
interface Timed {
  e: BenchEntry;
  v: Variant;
  times: number[];
  host: number[];
  clock: 'gpu' | 'host';
}

async function timeOnce(inst: Instance, gpuClock: boolean): Promise<{ ms: number; host: number }> {
  const q = rt().queue;
  if (gpuClock && inst.gpuMs) {
    const t0 = performance.now();
    const ms = await inst.gpuMs();
    await sync();
    return { ms, host: performance.now() - t0 };
  }
  if (gpuClock) await q.takeGpuTime(); // drop anything before this run
  const t0 = performance.now();
  await inst.run();
  await sync();
  const host = performance.now() - t0;
  return gpuClock ? { ms: (await q.takeGpuTime()).ms, host } : { ms: host, host };
}

/** Time the groups (interleaved inside each); returns one Timed per variant, in group order. */
async function timeAll(entries: BenchEntry[], o: BenchOptions, gpuClock: boolean, progress: (s: string) => void): Promise<Timed[]> {
  const groups = new Map<string, Array<{ e: BenchEntry; v: Variant }>>();
  for (const e of entries) {
    const key = `${entryName(e)}|${e.shape}`;
    const g = groups.get(key) ?? [];
    for (const v of e.variants) g.push({ e, v });
    groups.set(key, g);
  }
  const results: Timed[] = [];
  for (const group of groups.values()) {
    const inputs = new Map<BenchEntry, unknown>();
    const insts: Instance[] = [];
    const timed: Timed[] = [];
    try {
      for (const { e, v } of group) {
        if (!inputs.has(e)) inputs.set(e, await e.inputs());
        insts.push(await v.setup(inputs.get(e)));
        timed.push({ e, v, times: [], host: [], clock: gpuClock && !v.hostWork ? 'gpu' : 'host' });
      }
      for (let w = 0; w < o.warmup; w++) for (const [i, inst] of insts.entries()) await timeOnce(inst, timed[i]!.clock === 'gpu');
      const spent = group.map(() => 0);
      for (let r = 0; r < o.reps; r++) {
        let any = false;
        for (const [i, inst] of insts.entries()) {
          if (r >= 3 && spent[i]! > o.budget * 1000) continue;
          const t = await timeOnce(inst, timed[i]!.clock === 'gpu');
          timed[i]!.times.push(t.ms);
          timed[i]!.host.push(t.host);
          spent[i]! += t.host;
          any = true;
        }
        if (!any) break;
      }
    } finally {
      for (const inst of insts) await inst.dispose();
      await sync();
    }
    for (const t of timed) progress(`${rowName(t.e, t.v.name)} ${t.e.shape}: median ${median(t.times).toFixed(3)} ms (${t.clock}) over ${t.times.length} runs`);
    results.push(...timed);
  }
  return results;
}

function toRows(results: Timed[], adapter: string): BenchRow[] {
  const date = new Date().toISOString();
  const rows: BenchRow[] = results.map(({ e, v, times, host, clock }) => {
    const ms = median(times);
    return {
      op: e.op, name: rowName(e, v.name), variant: v.name, kind: v.kind, shape: e.shape, dims: { ...e.dims },
      ms, minMs: Math.min(...times), runs: times.length, clock, hostMs: median(host),
      gflops: gflops(e.flops, ms), gbps: gbps(e.bytes, ms), vsTfjs: null, adapter, date,
    };
  });
  return withVsTfjs(rows);
}

/** The row-name prefix of a row (its group with the shape). */
const groupOf = (r: Pick<BenchRow, 'name' | 'variant' | 'shape'>): string => `${r.name.slice(0, r.name.length - r.variant.length - 1)}|${r.shape}`;

/** Fill vsTfjs: the tfjs median of the same group / this median. */
export function withVsTfjs(rows: BenchRow[]): BenchRow[] {
  const tf = new Map(rows.filter((r) => r.kind === 'tfjs').map((r) => [groupOf(r), r]));
  return rows.map((r) => {
    const peer = tf.get(groupOf(r));
    return { ...r, vsTfjs: peer && r.kind !== 'tfjs' && peer.clock === r.clock ? peer.ms / r.ms : null };
  });
}

// ------------------------------------------------------------------ output
export function formatTable(rows: BenchRow[]): string[] {
  const mixed = new Set(rows.map((r) => r.clock)).size > 1;
  const table = rows.map((r) => [
    r.name,
    r.shape,
    r.ms.toFixed(3) + (mixed ? ` ${r.clock}` : ''),
    r.minMs.toFixed(3),
    r.gflops === null ? '' : r.gflops.toFixed(2),
    r.gbps === null ? '' : r.gbps.toFixed(2),
    r.vsTfjs === null ? '' : `${r.vsTfjs.toFixed(2)}x`,
  ]);
  const head = ['row', 'shape', 'median ms', 'min ms', 'GFLOP/s', 'GB/s', 'vs tfjs'];
  const w = head.map((h, k) => Math.max(h.length, ...table.map((t) => t[k]!.length)));
  const line = (cells: string[]): string => cells.map((c, k) => (k < 2 ? c.padEnd(w[k]!) : c.padStart(w[k]!))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...table.map(line), 'GFLOP/s and GB/s are from the median; "vs tfjs" = tfjs median / this median (same group, same run).'];
}

const clockText = (c: 'gpu' | 'host'): string => (c === 'gpu' ? 'GPU timestamps (timestamp-query, summed compute passes per run)' : 'host (run + flush + onSubmittedWorkDone)');

export const RESULTS_DIR = join(BENCH_DIR, 'results');

/** Write bench/results/<slug>.json atomically, merging a filtered run's rows into the file's others. */
export async function writeResults(res: BenchResults, merge: boolean): Promise<string> {
  const file = join(RESULTS_DIR, `${res.adapter.slug}.json`);
  let rows = res.rows;
  if (merge && existsSync(file)) {
    const old = JSON.parse(readFileSync(file, 'utf8')) as BenchResults;
    const key = (r: BenchRow): string => `${r.name} ${r.shape}`;
    const fresh = new Map(rows.map((r) => [key(r), r]));
    const kept = old.rows.map((r) => fresh.get(key(r)) ?? r);
    const seen = new Set(old.rows.map(key));
    rows = withVsTfjs([...kept, ...rows.filter((r) => !seen.has(key(r)))]);
  }
  await mkdir(RESULTS_DIR, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify({ ...res, rows }, null, 1)}\n`);
  await rename(tmp, file);
  return file;
}

export function readResults(file: string): BenchResults {
  const r = JSON.parse(readFileSync(file, 'utf8')) as BenchResults;
  if (!r || !Array.isArray(r.rows) || !r.adapter) throw new Error(`seqrec bench: ${file} is not a bench results file (no adapter / rows)`);
  return r;
}

// ------------------------------------------------------------------ main
/** `seqrec bench ...`: returns the exit code. */
export async function runBench(argv: readonly string[]): Promise<number> {
  const o = parseBenchArgs(argv);
  if (o === 'help') {
    console.log(BENCH_USAGE);
    return 0;
  }
  if (o.report) {
    const { updateDocs } = await import('./report.js');
    const r = await updateDocs();
    console.error(`[bench] ${r.file}: measured section rewritten from ${r.sources.join(', ')}`);
    return 0;
  }
  if (o.from) {
    const res = readResults(o.from);
    if (o.plot) await plot(res, o.plot);
    else if (o.json) console.log(JSON.stringify(res.rows, null, 1));
    else {
      console.log(`adapter: ${res.adapter.name}; clock: ${clockText(res.clock)}`);
      for (const l of formatTable(res.rows)) console.log(l);
    }
    return 0;
  }

  const out = o.json ? (s: string) => console.error(s) : (s: string) => console.log(s);
  const progress = (s: string): void => console.error(`[bench] ${s}`);
  const entries = await loadEntries(o.filters);
  if (!entries.length) throw new Error(`seqrec bench: no row matches ${o.filters.join(', ') || '(no filter)'}`);
  // Dawn quantizes timestamps to 100 us by default; the runner needs the raw values (harmless without the feature).
  if (o.clock === 'auto' && !flags.dawnFlags.some((f) => f.includes('timestamp_quantization'))) flags.dawnFlags.push('disable-dawn-features=timestamp_quantization');
  const gpu = await initGpu();
  const adapter = adapterName(gpu.info);
  const gpuClock = o.clock === 'auto' && rt().queue.enableTimestamps();
  const load0 = loadavg()[0]!;
  const clock = gpuClock ? 'gpu' : 'host';
  try {
    out(`adapter: ${adapter}; clock: ${clockText(clock)}; warmup ${o.warmup}, up to ${o.reps} reps, budget ${o.budget} s per variant`);
    // 2. Validate everything first.
    for (const e of entries) {
      try {
        await validateEntry(e, progress);
      } catch (err) {
        console.error(`[bench] FAIL ${errText(err)}`);
        return 1;
      }
    }
    out('All results match. Starting benchmarks.');
    // 3. Time.
    const rows = toRows(await timeAll(entries, o, gpuClock, progress), adapter);
    // 4. Report.
    const res: BenchResults = {
      adapter: { slug: adapterSlug(gpu.info), name: adapter, backend: gpu.info.backend, featureLevel: gpu.info.featureLevel, features: gpu.info.features },
      clock,
      settings: { reps: o.reps, warmup: o.warmup, budget: o.budget, load: { start: load0, end: loadavg()[0]! } },
      rows,
    };
    if (o.json) {
      console.log(JSON.stringify(rows, null, 1));
      progress(`wrote ${await writeResults(res, o.filters.length > 0)}`);
    } else for (const l of formatTable(rows)) console.log(l);
    if (o.plot) await plot(res, o.plot);
    return 0;
  } finally {
    await destroyGpu();
  }
}

async function plot(res: BenchResults, file: string): Promise<void> {
  const { benchPlotSvg } = await import('./plot.js');
  const { writeSvg } = await import('../cli/plot.js');
  await writeSvg(file, benchPlotSvg(res));
  console.error(`[bench] wrote ${file}`);
}

const invoked = process.argv[1];
if (invoked && import.meta.url === pathToFileURL(invoked).href) {
  runBench(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    async (e: unknown) => {
      console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
      process.exitCode = 1;
      await destroyGpu().catch(() => undefined);
    },
  );
}
