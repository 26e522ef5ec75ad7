// kernels/common_rows.ts — row programs: the builder behind softmax / log-softmax (softmax.ts), layer norm
// (layernorm.ts) and cross-entropy (loss.ts).
//
// A row program is, per row of a [rows, C] problem: a list of row reductions (max or sum, in order; each one's
// result visible to the later ones), then one statement per element (`each`) and one per row (`once`).
// rowProgram() turns it into three kernels, named `<name>_row`, `<name>_wg`, `<name>_wgc`:
//   row  one thread per row, serial loops over C, no barriers.
//   wg   one workgroup (WG threads) per row, strided (coalesced) loops, one all-reduce per reduction through
//        workgroup memory: a tree (log2(WG) barriers) when TREE = 1 (WG > 32, a power of two), else thread 0
//        sums the WG partials serially (3 barriers). Same order in every thread and every run: deterministic.
//   wgc  the `wg` program cut into dispatches: one per (stage, column chunk), a stage being one reduction or the
//        element pass; finished reductions wait in a [rows, passes] state buffer (rstate) between dispatches.
// runRow() launches one: rowConfig() per adapter (CPU adapters: `row` once there are >= 128 rows, else `wg`
// with WG = 16; a real GPU: `row` for C <= 128, else `wg`), replaced when its loops would not fit llvmpipe's
// loop budget (65,535 iterations per invocation, all loops together): `row` -> `wg` -> `wgc`.
// Measurements behind the choice: softmax.ts's header.
import { ceilDiv, defineKernel, loopBudget, loopCost, maxLoopIterations, Tensor, type Kernel } from '../engine/index.js';
import { fill, FOLDED_GROUP, foldedIndex, isCpuAdapter, main1d } from './common.js';

export type RowVariant = 'row' | 'wg' | 'wgc';

export interface RowPass {
  op: 'sum' | 'max';
  /** WGSL name of the reduced value (visible to later passes, `each` and `once`). */
  out: string;
  /** WGSL f32 expression of the column index `c` (and `row`, `base`, earlier outs). */
  expr: string;
  /** WGSL statements run by every thread after the reduction (e.g. `let u = s1 / f32(p.C);`). */
  then?: string;
}

export interface RowProgramSpec {
  /** Base name; the kernels are named `${name}_row`, `_wg`, `_wgc`. */
  name: string;
  /** Header comment (WGSL `//` lines). */
  doc: string;
  /** `struct Params { rows: u32, C: u32, ... }`, `var<uniform> p: Params` at binding 0, and the storage bindings. */
  decls: string;
  helpers?: string;
  /** WGSL statements before the first pass (every thread; `row`, `base` known). */
  pre?: string;
  passes: RowPass[];
  /** Statement per element (column `c`). */
  each?: string;
  /** Statements once per row, after `each` (one thread). */
  once?: string;
}

/** Largest workgroup of the `wg` / `wgc` variants (size of the all-reduce scratch array). */
const MAX_WG = 256;
/** Binding of the `wgc` variant's per-row state (the reductions finished so far): [rows, passes]. */
const STATE_BINDING = 15;
const PARAMS_HEAD = 'struct Params { rows: u32, C: u32';

const INIT = { max: '-3.4028234663852886e38', sum: '0.0' } as const;
const combine = (op: RowPass['op'], a: string, b: string): string => (op === 'max' ? `max(${a}, ${b})` : `${a} + ${b}`);

// ------------------------------------------------------------------ WGSL
/** Every thread gets the same reduction of the WG partials (same order everywhere: deterministic). */
const ALLREDUCE = /* wgsl */ `
// Every thread gets the same {OP} of the WG partials (same order everywhere: deterministic).
fn allreduce_{OP}(v: f32, l: u32) -> f32 {
  red[l] = v;
  workgroupBarrier();
  var r = {INIT};
  if (TREE == 1u) {
    for (var st = WG / 2u; st > 0u; st = st >> 1u) {
      if (l < st) { red[l] = {TREE_STEP}; }
      workgroupBarrier();
    }
    r = red[0];
  } else {
    if (l == 0u) {
      for (var k = 0u; k < WG; k = k + 1u) { r = {SERIAL_STEP}; }
      red[WG] = r;
    }
    workgroupBarrier();
    r = red[WG];
  }
  workgroupBarrier();
  return r;
}`;

/** One reduction pass, `row` variant: a serial loop over the row. */
const PASS_ROW = /* wgsl */ `
  var acc{k} = {INIT};
  for (var c = 0u; c < p.C; c = c + 1u) { acc{k} = {STEP}; }
  let {OUT} = acc{k};
  {THEN}`;

/** One reduction pass, `wg` variant: strided loop, then the all-reduce. */
const PASS_WG = /* wgsl */ `
  var acc{k} = {INIT};
  for (var c = lid.x; c < p.C; c = c + WG) { acc{k} = {STEP}; }
  let {OUT} = allreduce_{OP}(acc{k}, lid.x);
  {THEN}`;

/** One reduction pass, `wgc` variant: computed in stage k over columns [c0, c1), else read back from rstate. */
const PASS_WGC = /* wgsl */ `
  var st{k} = {INIT};
  if (STAGE == {k}u) {
    var prev = {INIT};
    if (p.c0 != 0u) { prev = rstate[row * {NP}u + {k}u]; }
    var acc = {INIT};
    for (var c = p.c0 + lid.x; c < p.c1; c = c + WG) { acc = {STEP_CHUNK}; }
    st{k} = {FINISH};
    if (lid.x == 0u) { rstate[row * {NP}u + {k}u] = st{k}; }
  } else if (STAGE > {k}u) {
    st{k} = rstate[row * {NP}u + {k}u];
  }
  let {OUT} = st{k};
  {THEN}`;

function passes(s: RowProgramSpec, template: string): string {
  return s.passes
    .map((ps, k) =>
      fill(template, {
        k,
        NP: s.passes.length,
        OP: ps.op,
        OUT: ps.out,
        INIT: INIT[ps.op],
        STEP: combine(ps.op, `acc${k}`, ps.expr),
        STEP_CHUNK: combine(ps.op, 'acc', ps.expr),
        FINISH: combine(ps.op, 'prev', `allreduce_${ps.op}(acc, lid.x)`),
        THEN: ps.then ?? '',
      }),
    )
    .join('');
}

function allreduceFns(s: RowProgramSpec): string {
  return [...new Set(s.passes.map((ps) => ps.op))]
    .map((op) =>
      fill(ALLREDUCE, { OP: op, INIT: INIT[op], TREE_STEP: combine(op, 'red[l]', 'red[l + st]'), SERIAL_STEP: combine(op, 'r', 'red[k]') }),
    )
    .join('\n');
}

function rowProgramWgsl(s: RowProgramSpec, variant: RowVariant): string {
  if (!s.decls.includes(PARAMS_HEAD)) throw new Error(`rowProgram ${s.name}: decls must declare '${PARAMS_HEAD}, ... }'`);
  const head = /* wgsl */ `${s.doc}
override WG: u32 = 64;
override TREE: u32 = 0;
${variant === 'wgc' ? s.decls.replace(PARAMS_HEAD, `${PARAMS_HEAD}, c0: u32, c1: u32`) : s.decls}
${s.helpers ?? ''}`;
  if (variant === 'row') {
    return /* wgsl */ `${head}
${main1d('WG')} {
  let row = ${foldedIndex('WG')};
  if (row >= p.rows) { return; }
  let base = row * p.C;
  ${s.pre ?? ''}${passes(s, PASS_ROW)}
  ${s.each ? `for (var c = 0u; c < p.C; c = c + 1u) { ${s.each} }` : ''}
  ${s.once ?? ''}
}`;
  }
  if (variant === 'wg') {
    return /* wgsl */ `${head}
var<workgroup> red: array<f32, ${MAX_WG + 1}>;
${allreduceFns(s)}
${main1d('WG')} {
  let row = ${FOLDED_GROUP};
  if (row >= p.rows) { return; }
  let base = row * p.C;
  ${s.pre ?? ''}${passes(s, PASS_WG)}
  ${s.each ? `for (var c = lid.x; c < p.C; c = c + WG) { ${s.each} }` : ''}
  ${s.once ? `if (lid.x == 0u) { ${s.once} }` : ''}
}`;
  }
  // One reduction (STAGE < passes) or the element pass (STAGE == passes) over columns [c0, c1) per dispatch;
  // finished reductions live in rstate[row, k] between dispatches (combined in column-chunk order).
  const np = s.passes.length;
  return /* wgsl */ `${head}
override STAGE: u32 = 0;
var<workgroup> red: array<f32, ${MAX_WG + 1}>;
@group(0) @binding(${STATE_BINDING}) var<storage, read_write> rstate: array<f32>; // [rows, ${np}] finished reductions
${allreduceFns(s)}
${main1d('WG')} {
  let row = ${FOLDED_GROUP};
  if (row >= p.rows) { return; }
  let base = row * p.C;
  ${s.pre ?? ''}${passes(s, PASS_WGC)}
  if (STAGE == ${np}u) {
    ${s.each ? `for (var c = p.c0 + lid.x; c < p.c1; c = c + WG) { ${s.each} }` : ''}
    ${s.once ? `if (p.c1 == p.C && lid.x == 0u) { ${s.once} }` : ''}
  }
}`;
}

// ------------------------------------------------------------------ kernels and launcher
/** The kernels of a row program (`row`, `wg`, `wgc`); runRow chooses one per launch. */
export interface RowKernels {
  row: Kernel;
  wg: Kernel;
  wgc: Kernel;
  /** Number of reductions (passes) and whether there is an element pass. */
  passes: number;
  each: boolean;
}

/** Loop cost of one all-reduce (tree: log2(WG) steps; serial: thread 0 loops over WG partials). */
const allreduceTrips = (wg: number, tree: number): number => (tree ? loopCost(Math.log2(wg)) : loopCost(wg));

export function rowProgram(s: RowProgramSpec, minSizes?: (p: Record<string, number>) => Record<string, number>): RowKernels {
  const np = s.passes.length;
  const loops = np + (s.each ? 1 : 0);
  const trips = {
    // one serial loop over C per reduction and for the element pass
    row: ({ C }: Record<string, number>): number => loops * loopCost(C!),
    // strided loops of ceil(C / WG), one all-reduce per reduction
    wg: ({ C }: Record<string, number>, o: Record<string, number>): number =>
      loops * loopCost(ceilDiv(C!, o.WG!)) + np * allreduceTrips(o.WG!, o.TREE!),
    // one stage over columns [c0, c1)
    wgc: ({ c0, c1 }: Record<string, number>, o: Record<string, number>): number =>
      o.STAGE! < np ? loopCost(ceilDiv(c1! - c0!, o.WG!)) + allreduceTrips(o.WG!, o.TREE!) : s.each ? loopCost(ceilDiv(c1! - c0!, o.WG!)) : 0,
  };
  const mk = (variant: RowVariant): Kernel =>
    defineKernel({
      name: `${s.name}_${variant}`,
      foldable: true,
      wgsl: rowProgramWgsl(s, variant),
      grid: variant === 'row' ? ({ rows }, [wg]) => [ceilDiv(rows!, wg)] : ({ rows }) => [rows!],
      ...(minSizes
        ? { minSizes: variant === 'wgc' ? (p: Record<string, number>) => ({ ...minSizes(p), rstate: p.rows! * np }) : minSizes }
        : {}),
      loopTrips: trips[variant],
    });
  return { row: mk('row'), wg: mk('wg'), wgc: mk('wgc'), passes: np, each: !!s.each };
}

export interface RowOptions {
  /** Force a variant (benchmarks, tests); default: rowConfig(rows, C). A forced variant whose loops would not
   *  fit the adapter's loop budget (see runRow) is replaced as an unforced one would be. */
  variant?: RowVariant;
  /** Workgroup size (override WG, 1..256). The `wg` variant all-reduces with a tree when WG > 32 (a power of
   *  two), else thread 0 sums the WG partials serially (3 barriers, cheaper for small WG on a CPU adapter). */
  wg?: number;
}

/** The launch configuration used when none is forced (chosen on llvmpipe with bench/softmax.bench.ts and
 *  bench/layernorm.bench.ts: rows softmax.fwd_row / .fwd_wg, layernorm.fwd_row / .fwd_wg; see softmax.ts). */
export function rowConfig(rows: number, C: number): { variant: RowVariant; wg: number } {
  if (isCpuAdapter()) return rows >= 128 ? { variant: 'row', wg: 64 } : { variant: 'wg', wg: 16 };
  // A real GPU: short rows one per thread (they stay in L1); long rows get a workgroup with coalesced reads.
  if (C <= 128) return { variant: 'row', wg: 64 };
  return { variant: 'wg', wg: C <= 2048 ? 64 : 256 };
}

const treeFor = (wg: number): number => (wg > 32 && (wg & (wg - 1)) === 0 ? 1 : 0);

/**
 * Launch a row program. The configuration (rowConfig, or the forced one) is kept when its loops fit the
 * adapter's loop budget (llvmpipe: 65,535 iterations per invocation over all its loops): `row` loops
 * (passes + 1) * C times, so rows longer than ~21k columns (softmax) take `wg` (a workgroup per row, loops of
 * C / WG), and rows too long even for WG = 256 take `wgc`: one dispatch per (stage, column chunk), the
 * finished reductions carried between dispatches in a [rows, passes] state buffer.
 */
export function runRow(k: RowKernels, rows: number, C: number, bindings: Parameters<Kernel['run']>[0], params: Record<string, number>, o: RowOptions = {}): void {
  if (rows === 0 || C === 0) return;
  const cfg = rowConfig(rows, C);
  let variant = o.variant ?? cfg.variant;
  let wg = o.wg ?? (variant === cfg.variant ? cfg.wg : variant === 'row' || !isCpuAdapter() ? 64 : 16);
  if (!Number.isInteger(wg) || wg < 1 || wg > MAX_WG) throw new Error(`${k[variant].name}: workgroup size ${wg} must be in [1, ${MAX_WG}]`);
  const prm = { rows, C, ...params };
  const fits = (v: 'row' | 'wg', w: number): boolean => k[v].fitsLoopBudget(prm, { overrides: { WG: w, TREE: treeFor(w) } });
  if (variant !== 'wgc' && !fits(variant, wg)) {
    const alt = [64, 256].find((w) => w >= wg && fits('wg', w));
    if (alt !== undefined) {
      variant = 'wg';
      wg = alt;
    } else {
      variant = 'wgc';
      wg = 256;
    }
  }
  if (variant !== 'wgc') {
    k[variant].run(bindings, prm, { overrides: { WG: wg, TREE: treeFor(wg) } });
    return;
  }
  const tree = treeFor(wg);
  // Column chunks: multiples of WG, each thread's strided loop plus one all-reduce within the budget.
  const perThread = maxLoopIterations(loopBudget(), 0, allreduceTrips(wg, tree));
  const len = Number.isFinite(perThread) ? Math.max(1, perThread) * wg : C;
  const state = Tensor.empty([rows * k.passes]); // [rows, passes] finished reductions
  try {
    for (let stage = 0; stage <= k.passes; stage++) {
      const overrides = { WG: wg, TREE: tree, STAGE: stage };
      if (stage === k.passes && !k.each) {
        k.wgc.run({ ...bindings, rstate: state }, { ...prm, c0: 0, c1: C }, { overrides }); // `once` only
        break;
      }
      for (let c0 = 0; c0 < C; c0 += len) k.wgc.run({ ...bindings, rstate: state }, { ...prm, c0, c1: Math.min(C, c0 + len) }, { overrides });
    }
  } finally {
    state.dispose();
  }
}
