// The benchmark runner: `npm run bench -- [filter ...] [--json] [--reps N] [--warmup N] [--budget S]`.
// 1. Imports every bench/*.bench.ts (each exports `cases: BenchCase[]`) and keeps the cases whose row name
//    (or "name shape") contains one of the filters (all cases without a filter).
// 2. Validates every case against its reference before timing anything (llm.c's order) and stops at the first
//    failure; then prints "All results match. Starting benchmarks."
// 3. Times the cases group by group (a group = one kernel family at one shape: the variants and the tfjs peer
//    side by side). Inside a group the runs are interleaved round-robin, so load from other processes on this
//    shared machine hits every variant alike. Each case gets `warmup` untimed runs, then up to `reps` timed runs,
//    each `run(); await sync()`: host clock around the flush and onSubmittedWorkDone (this adapter has no
//    timestamp-query; timing with it needs timestampWrites on the engine queue's compute pass). A case stops
//    early once its timed runs exceed `budget` seconds (at least 3 runs).
// 4. Prints a table (kernel, shape, median ms, min ms, GFLOP/s and GB/s from the median, x tfjs, adapter), or with
//    --json only a JSON array of {name, shape, ms, gflops, gbps, adapter} on stdout (progress goes to stderr).
//
// Why not benny (benchmark.js) for the timing: its samples are means over cycles of a calibrated number of calls
// with its own stop rule (minTime/maxTime, defaults of seconds per case), so a sample is not one GPU-synchronised
// run and the rep count is not ours to fix; its progress lines go to stdout, which --json must keep clean. It is
// good at host-side ops/s of synchronous code, which none of these cases is (every case ends in a GPU wait).
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { destroyGpu, initGpu, sync, type GpuInfo } from '../engine/index.js';
import { gbps, gflops } from './common.js';
import type { BenchCase, BenchRow } from './types.js';

interface Args {
  filters: string[];
  json: boolean;
  reps: number;
  warmup: number;
  budget: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { filters: [], json: false, reps: 10, warmup: 2, budget: 4 };
  for (let i = 0; i < argv.length; i++) {
    const s = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v < 0) throw new Error(`bench: ${s} needs a non-negative number`);
      return v;
    };
    if (s === '--json') a.json = true;
    else if (s === '--reps') a.reps = Math.max(1, Math.floor(num()));
    else if (s === '--warmup') a.warmup = Math.floor(num());
    else if (s === '--budget') a.budget = num();
    else if (s === '--help' || s === '-h') {
      console.log('usage: npm run bench -- [filter ...] [--json] [--reps N (10)] [--warmup N (2)] [--budget seconds per case (4)]');
      process.exit(0);
    } else if (s.startsWith('--')) throw new Error(`bench: unknown option ${s}`);
    else a.filters.push(s);
  }
  return a;
}

async function loadCases(filters: string[]): Promise<BenchCase[]> {
  const dir = dirname(fileURLToPath(import.meta.url));
  const files = readdirSync(dir).filter((f) => /\.bench\.(ts|js)$/.test(f)).sort();
  const all: BenchCase[] = [];
  for (const f of files) {
    let mod: { cases?: BenchCase[] };
    try {
      mod = (await import(pathToFileURL(join(dir, f)).href)) as { cases?: BenchCase[] };
    } catch (e) {
      // A broken bench file must not block the others' runs; a full run (no filter) still fails at the end.
      console.error(`[bench] SKIPPED bench/${f}: import failed: ${e instanceof Error ? e.message : String(e)}`);
      if (!filters.length) process.exitCode = 1;
      continue;
    }
    if (!Array.isArray(mod.cases)) throw new Error(`bench: ${f} exports no 'cases' array`);
    all.push(...mod.cases);
  }
  const names = new Set<string>();
  for (const c of all) {
    const key = `${c.name} ${c.shape}`;
    if (names.has(key)) throw new Error(`bench: duplicate case ${key}`);
    names.add(key);
  }
  // A filter matches the row name (or, to pick one shape, "name shape").
  return filters.length ? all.filter((c) => filters.some((f) => `${c.name} ${c.shape}`.includes(f))) : all;
}

/** Full adapter identity (as `seqrec info` prints it) with the backend and feature level. */
function adapterName(i: GpuInfo): string {
  const id = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / ');
  return `${id || 'unknown adapter'} (${i.backend}, ${i.featureLevel})`;
}

/** A short adapter name for the table column. */
function adapterShort(i: GpuInfo): string {
  return (i.device || [i.vendor, i.architecture].filter(Boolean).join(' ') || i.description || 'unknown').replace(/-+$/, '');
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface Timed {
  c: BenchCase;
  times: number[];
}

async function timeOnce(run: () => void | Promise<void>): Promise<number> {
  const t0 = performance.now();
  await run();
  await sync();
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const out = args.json ? (s: string) => console.error(s) : (s: string) => console.log(s);
  const progress = (s: string): void => console.error(`[bench] ${s}`);
  const gpu = await initGpu();
  const adapter = adapterName(gpu.info);
  const cases = await loadCases(args.filters);
  if (!cases.length) throw new Error(`bench: no case matches ${args.filters.join(', ') || '(no filter)'}`);

  // 2. Validate everything first.
  for (const c of cases) {
    const inst = await c.setup();
    try {
      if (inst.validate) {
        await inst.validate();
        progress(`ok   ${c.name} ${c.shape}`);
      } else progress(`--   ${c.name} ${c.shape} (no validate)`);
    } catch (e) {
      console.error(`[bench] FAIL ${c.name} ${c.shape}: ${e instanceof Error ? e.message : String(e)}`);
      process.exitCode = 1;
      await inst.dispose();
      await destroyGpu();
      return;
    } finally {
      await sync();
    }
    await inst.dispose();
  }
  out('All results match. Starting benchmarks.');

  // 3. Time group by group, interleaved inside a group.
  const groups = new Map<string, BenchCase[]>();
  for (const c of cases) {
    const key = `${c.name.split('.')[0]}|${c.shape}`;
    groups.set(key, [...(groups.get(key) ?? []), c]);
  }
  const results: Timed[] = [];
  for (const group of groups.values()) {
    const insts = [];
    for (const c of group) insts.push(await c.setup());
    const timed: Timed[] = group.map((c) => ({ c, times: [] }));
    const spent = group.map(() => 0);
    for (let w = 0; w < args.warmup; w++) for (const inst of insts) await timeOnce(() => inst.run());
    for (let r = 0; r < args.reps; r++) {
      let any = false;
      for (const [i, inst] of insts.entries()) {
        if (r >= 3 && spent[i]! > args.budget * 1000) continue;
        const ms = await timeOnce(() => inst.run());
        timed[i]!.times.push(ms);
        spent[i]! += ms;
        any = true;
      }
      if (!any) break;
    }
    for (const inst of insts) await inst.dispose();
    await sync();
    for (const t of timed) progress(`${t.c.name} ${t.c.shape}: median ${median(t.times).toFixed(3)} ms over ${t.times.length} runs`);
    results.push(...timed);
  }

  // 4. Report.
  const rows: BenchRow[] = results.map(({ c, times }) => {
    const ms = median(times);
    return { name: c.name, shape: c.shape, ms, gflops: gflops(c.flops, ms), gbps: gbps(c.bytes, ms), adapter };
  });
  if (args.json) {
    console.log(JSON.stringify(rows, null, 1));
  } else {
    const tfjsMs = new Map(rows.filter((r) => r.name.endsWith('.tfjs')).map((r) => [`${r.name.split('.')[0]}|${r.shape}`, r.ms]));
    const table = results.map(({ c, times }, i) => {
      const r = rows[i]!;
      const peer = tfjsMs.get(`${c.name.split('.')[0]}|${c.shape}`);
      return [
        c.name,
        c.shape,
        r.ms.toFixed(3),
        Math.min(...times).toFixed(3),
        r.gflops === null ? '' : r.gflops.toFixed(2),
        r.gbps === null ? '' : r.gbps.toFixed(2),
        peer === undefined || r.name.endsWith('.tfjs') ? '' : `${(peer / r.ms).toFixed(2)}x`,
        adapterShort(gpu.info),
      ];
    });
    const head = ['kernel', 'shape', 'median ms', 'min ms', 'GFLOP/s', 'GB/s', 'vs tfjs', 'adapter'];
    const w = head.map((h, k) => Math.max(h.length, ...table.map((t) => t[k]!.length)));
    const line = (cells: string[]): string => cells.map((c, k) => (k < 2 || k === 7 ? c.padEnd(w[k]!) : c.padStart(w[k]!))).join('  ').trimEnd();
    console.log(`adapter: ${adapter}; clock: host (submit + onSubmittedWorkDone); warmup ${args.warmup}, up to ${args.reps} reps, budget ${args.budget} s per case`);
    console.log(line(head));
    console.log(w.map((n) => '-'.repeat(n)).join('  '));
    for (const t of table) console.log(line(t));
    console.log('GFLOP/s and GB/s are from the median; "vs tfjs" = tfjs median / this median (same shape, same run).');
  }
  await destroyGpu();
}

main().catch(async (e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
  await destroyGpu().catch(() => undefined);
});
