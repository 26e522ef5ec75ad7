// kernels/softmax.ts — softmax and log-softmax over the last axis, forward and backward, plus the row-program
// template that layernorm.ts and loss.ts (cross-entropy) share.
//
//   softmax(x)    y[r, c] = exp(x[r, c] - m_r) / s_r,          m_r = max_c x[r, c], s_r = sum_c exp(x[r, c] - m_r)
//   logSoftmax(x) y[r, c] = (x[r, c] - m_r) - log(s_r)
//   x, y: [..., C], viewed as [rows, C]. Max-subtracted: inputs of +-1000 and -1e8 / -1e4 mask fills never
//   overflow; a fully filled row (all -1e8) gives the uniform distribution, as PyTorch does. A row of all -inf
//   gives NaN (PyTorch too).
//   backward (saves y only):  softmax     dx = y * (gy - sum_c gy*y)
//                              logSoftmax  dx = gy - exp(y) * sum_c gy
//
// Parallel strategy: a "row program" (rowProgram below) is a list of row reductions (max or sum, in order),
// then one statement per element and one per row. Two variants of every row program:
//   row  one thread per row, serial loops over C, no barriers.
//   wg   one workgroup (WG threads) per row, strided (coalesced) loops, one all-reduce per reduction through
//        workgroup memory: a tree (log2(WG) barriers) when WG > 32, else thread 0 sums the WG partials
//        serially (3 barriers). Same order in every thread and every run: deterministic.
// rowConfig() picks per adapter. On CPU adapters (llvmpipe: a workgroup runs as SIMD fibers on one core and
// every barrier switches all fibers) `row` wins at every row length once there are >= 128 rows; measured with
// bench/norm.bench.ts on a loaded 2-core machine (medians, interleaved): [4096, 1000] row 65 ms, wg(64, tree)
// 101 ms, tfjs 215 ms; [25600, 50] row 34 ms, wg 89 ms, tfjs 334 ms (a first quiet-ish run: [4096, 1000] row
// 32 ms vs wg 92 ms; a flat all-reduce in which every thread summed all WG partials was O(WG^2) and 3-30x
// slower, removed). Fewer rows take `wg` with WG = 16. On a real GPU rows of <= 128 stay one per thread (they
// live in L1) and longer rows get a workgroup of 64 (256 past C = 2048) with coalesced reads.
// llvmpipe's loop budget (65,535 iterations per invocation, shared by ALL its loops): `row` runs
// (reductions + 1) serial loops over C in one invocation, so a row longer than ~21,800 columns (softmax, layer
// norm; ~32,700 for cross-entropy) takes `wg` (loops of C / WG), and a row too long even for WG = 256 takes the
// third variant `wgc`: one dispatch per (reduction or element pass, column chunk), the finished reductions kept
// in a [rows, passes] state buffer between dispatches. runRow() checks each variant's declared loop cost.
// Memory traffic: forward reads x 3x (max, sum, write pass; a row stays in cache) and writes y once;
// backward reads y and gy 2x and writes dx once. Compute: 2 exp per element forward (sum and write passes).
import { ceilDiv, defineKernel, defineOp, loopBudget, loopCost, maxLoopIterations, ref, rt, Tensor, type Kernel } from '../engine/index.js';

type F64 = ref.F64;

// ------------------------------------------------------------------ the row-program template
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
  /** Base name; the kernel is named `${name}_${variant}`. */
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

const initOf = (op: RowPass['op']): string => (op === 'max' ? '-3.4028234663852886e38' : '0.0');
const combOf = (op: RowPass['op'], a: string, b: string): string => (op === 'max' ? `max(${a}, ${b})` : `${a} + ${b}`);

function allreduceWgsl(s: RowProgramSpec): string {
  const ops = [...new Set(s.passes.map((ps) => ps.op))];
  return ops
    .map(
      (op) => `
// Every thread gets the same ${op} of the WG partials (same order everywhere: deterministic).
fn allreduce_${op}(v: f32, l: u32) -> f32 {
  red[l] = v;
  workgroupBarrier();
  var r = ${initOf(op)};
  if (TREE == 1u) {
    for (var st = WG / 2u; st > 0u; st = st >> 1u) {
      if (l < st) { red[l] = ${combOf(op, 'red[l]', 'red[l + st]')}; }
      workgroupBarrier();
    }
    r = red[0];
  } else {
    if (l == 0u) {
      for (var k = 0u; k < WG; k = k + 1u) { r = ${combOf(op, 'r', 'red[k]')}; }
      red[WG] = r;
    }
    workgroupBarrier();
    r = red[WG];
  }
  workgroupBarrier();
  return r;
}`,
    )
    .join('\n');
}

function rowProgramWgsl(s: RowProgramSpec, variant: RowVariant): string {
  const init = initOf;
  const comb = combOf;
  const PARAMS_HEAD = 'struct Params { rows: u32, C: u32';
  if (!s.decls.includes(PARAMS_HEAD)) throw new Error(`rowProgram ${s.name}: decls must declare '${PARAMS_HEAD}, ... }'`);
  const decls = variant === 'wgc' ? s.decls.replace(PARAMS_HEAD, `${PARAMS_HEAD}, c0: u32, c1: u32`) : s.decls;
  const head = `${s.doc}
override WG: u32 = 64;
override TREE: u32 = 0;
${decls}
${s.helpers ?? ''}`;
  const entry =
    '@compute @workgroup_size(WG)\nfn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u)';
  if (variant === 'row') {
    const passes = s.passes
      .map(
        (ps, k) => `  var acc${k} = ${init(ps.op)};
  for (var c = 0u; c < p.C; c = c + 1u) { acc${k} = ${comb(ps.op, `acc${k}`, ps.expr)}; }
  let ${ps.out} = acc${k};
  ${ps.then ?? ''}`,
      )
      .join('\n');
    return `${head}
${entry} {
  let row = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  ${s.pre ?? ''}
${passes}
  ${s.each ? `for (var c = 0u; c < p.C; c = c + 1u) { ${s.each} }` : ''}
  ${s.once ?? ''}
}`;
  }
  if (variant === 'wgc') {
    // One reduction (STAGE < passes) or the element pass (STAGE == passes) over columns [c0, c1) per dispatch;
    // finished reductions live in rstate[row, k] between dispatches (combined in column-chunk order).
    const np = s.passes.length;
    const passes = s.passes
      .map(
        (ps, k) => `  var st${k} = ${init(ps.op)};
  if (STAGE == ${k}u) {
    var prev = ${init(ps.op)};
    if (p.c0 != 0u) { prev = rstate[row * ${np}u + ${k}u]; }
    var acc = ${init(ps.op)};
    for (var c = p.c0 + lid.x; c < p.c1; c = c + WG) { acc = ${comb(ps.op, 'acc', ps.expr)}; }
    st${k} = ${comb(ps.op, 'prev', `allreduce_${ps.op}(acc, lid.x)`)};
    if (lid.x == 0u) { rstate[row * ${np}u + ${k}u] = st${k}; }
  } else if (STAGE > ${k}u) {
    st${k} = rstate[row * ${np}u + ${k}u];
  }
  let ${ps.out} = st${k};
  ${ps.then ?? ''}`,
      )
      .join('\n');
    return `${head}
override STAGE: u32 = 0;
var<workgroup> red: array<f32, ${MAX_WG + 1}>;
@group(0) @binding(${STATE_BINDING}) var<storage, read_write> rstate: array<f32>; // [rows, ${np}] finished reductions
${allreduceWgsl(s)}
${entry} {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  ${s.pre ?? ''}
${passes}
  if (STAGE == ${np}u) {
    ${s.each ? `for (var c = p.c0 + lid.x; c < p.c1; c = c + WG) { ${s.each} }` : ''}
    ${s.once ? `if (p.c1 == p.C && lid.x == 0u) { ${s.once} }` : ''}
  }
}`;
  }
  const passes = s.passes
    .map(
      (ps, k) => `  var acc${k} = ${init(ps.op)};
  for (var c = lid.x; c < p.C; c = c + WG) { acc${k} = ${comb(ps.op, `acc${k}`, ps.expr)}; }
  let ${ps.out} = allreduce_${ps.op}(acc${k}, lid.x);
  ${ps.then ?? ''}`,
    )
    .join('\n');
  return `${head}
var<workgroup> red: array<f32, ${MAX_WG + 1}>;
${allreduceWgsl(s)}
${entry} {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.C;
  ${s.pre ?? ''}
${passes}
  ${s.each ? `for (var c = lid.x; c < p.C; c = c + WG) { ${s.each} }` : ''}
  ${s.once ? `if (lid.x == 0u) { ${s.once} }` : ''}
}`;
}

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

/**
 * CPU adapters (Mesa llvmpipe, SwiftShader, lavapipe) run a workgroup as SIMD fibers on one core; a barrier
 * switches every fiber, so barrier-free thread-per-row kernels win there at every row length once there are
 * enough rows to spread over the cores (bench/norm.bench.ts: [4096, 1000] row 32 ms vs wg 92 ms).
 */
let cpuCache: { device: unknown; cpu: boolean } | null = null;
export function isCpuAdapter(): boolean {
  const g = rt().gpu;
  if (cpuCache?.device !== g.device) {
    const s = `${g.info.vendor} ${g.info.architecture} ${g.info.device} ${g.info.description}`.toLowerCase();
    cpuCache = { device: g.device, cpu: /llvmpipe|lavapipe|softpipe|swiftshader/.test(s) };
  }
  return cpuCache.cpu;
}

export interface RowOptions {
  /** Force a variant (benchmarks, tests); default: rowConfig(rows, C). A forced variant whose loops would not
   *  fit the adapter's loop budget (see runRow) is replaced as an unforced one would be. */
  variant?: RowVariant;
  /** Workgroup size (override WG, 1..256). The `wg` variant all-reduces with a tree when WG > 32 (a power of
   *  two), else thread 0 sums the WG partials serially (3 barriers, cheaper for small WG on a CPU adapter). */
  wg?: number;
}

/** The launch configuration used when none is forced (chosen by bench/norm.bench.ts on llvmpipe). */
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

// ------------------------------------------------------------------ softmax / log-softmax kernels
const DECL_FWD = /* wgsl */ `struct Params { rows: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // [rows, C]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [rows, C]`;

const DECL_BWD = /* wgsl */ `struct Params { rows: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;         // [rows, C] saved forward output
@group(0) @binding(2) var<storage, read> gy: array<f32>;        // [rows, C]
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;  // [rows, C]`;

const STATS: RowPass[] = [
  { op: 'max', out: 'm', expr: 'x[base + c]' },
  { op: 'sum', out: 's', expr: 'exp(x[base + c] - m)' },
];

const sizesFwd = ({ rows, C }: Record<string, number>): Record<string, number> => ({ x: rows! * C!, y: rows! * C! });
const sizesBwd = ({ rows, C }: Record<string, number>): Record<string, number> => ({ y: rows! * C!, gy: rows! * C!, dx: rows! * C! });

const softmaxFwd = rowProgram(
  {
    name: 'softmax_fwd',
    doc: '// y = softmax(x) over the last axis (max-subtracted).',
    decls: DECL_FWD,
    passes: [...STATS.slice(0, 1), { ...STATS[1]!, then: 'let inv = 1.0 / s;' }],
    each: 'y[base + c] = exp(x[base + c] - m) * inv;',
  },
  sizesFwd,
);

const logSoftmaxFwd = rowProgram(
  {
    name: 'log_softmax_fwd',
    doc: '// y = log_softmax(x) = (x - max) - log(sum exp(x - max)) over the last axis.',
    decls: DECL_FWD,
    passes: [...STATS.slice(0, 1), { ...STATS[1]!, then: 'let ls = log(s);' }],
    each: 'y[base + c] = (x[base + c] - m) - ls;',
  },
  sizesFwd,
);

const softmaxBwd = rowProgram(
  {
    name: 'softmax_bwd',
    doc: '// dx = y * (gy - sum(gy * y)) per row.',
    decls: DECL_BWD,
    passes: [{ op: 'sum', out: 'd', expr: 'gy[base + c] * y[base + c]' }],
    each: 'dx[base + c] = y[base + c] * (gy[base + c] - d);',
  },
  sizesBwd,
);

const logSoftmaxBwd = rowProgram(
  {
    name: 'log_softmax_bwd',
    doc: '// dx = gy - exp(y) * sum(gy) per row (y = log-probabilities).',
    decls: DECL_BWD,
    passes: [{ op: 'sum', out: 'g', expr: 'gy[base + c]' }],
    each: 'dx[base + c] = gy[base + c] - exp(y[base + c]) * g;',
  },
  sizesBwd,
);

function lastDim(op: string, x: Tensor): [number, number] {
  if (x.dtype !== 'f32') throw new Error(`${op}: ${x.describe()} is not f32`);
  if (x.ndim === 0) throw new Error(`${op}: needs at least one dimension, got a scalar`);
  const C = x.shape[x.ndim - 1]!;
  return [C === 0 ? 0 : x.size / C, C];
}

/** Raw launchers (no autograd): benchmarks and other kernels' backward use them. */
export function softmaxForward(x: Tensor, log = false, o: RowOptions = {}): Tensor {
  const [rows, C] = lastDim(log ? 'log_softmax' : 'softmax', x);
  const y = Tensor.empty(x.shape); // [..., C]
  runRow(log ? logSoftmaxFwd : softmaxFwd, rows, C, { x, y }, {}, o);
  return y;
}

export function softmaxBackward(y: Tensor, gy: Tensor, log = false, o: RowOptions = {}): Tensor {
  const [rows, C] = lastDim(log ? 'log_softmax' : 'softmax', y);
  const dx = Tensor.empty(y.shape); // [..., C]
  runRow(log ? logSoftmaxBwd : softmaxBwd, rows, C, { y, gy, dx }, {}, o);
  return dx;
}

function makeOp(log: boolean) {
  return defineOp<RowOptions>({
    name: log ? 'log_softmax' : 'softmax',
    forward(ctx, [x], o) {
      const y = softmaxForward(x!, log, o); // [..., C]
      ctx.save(y);
      return y;
    },
    backward(ctx, gy) {
      return [softmaxBackward(ctx.saved[0]!, gy, log, ctx.attrs)]; // [..., C]
    },
  });
}

const softmaxOp = makeOp(false);
const logSoftmaxOp = makeOp(true);

/** Softmax over the last axis. */
export function softmax(x: Tensor, o: RowOptions = {}): Tensor {
  return softmaxOp.apply([x], o);
}

/** Log-softmax over the last axis. */
export function logSoftmax(x: Tensor, o: RowOptions = {}): Tensor {
  return logSoftmaxOp.apply([x], o);
}

// ------------------------------------------------------------------ float64 references
function rowsOf(x: F64): [number, number] {
  const C = x.shape[x.shape.length - 1] ?? 1;
  return [C === 0 ? 0 : x.data.length / C, C];
}

export function refSoftmax(x: F64, log = false): F64 {
  const [rows, C] = rowsOf(x);
  const y = new Float64Array(x.data.length);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, x.data[r * C + c]!);
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(x.data[r * C + c]! - m);
    for (let c = 0; c < C; c++) {
      const v = x.data[r * C + c]! - m;
      y[r * C + c] = log ? v - Math.log(s) : Math.exp(v) / s;
    }
  }
  return { data: y, shape: [...x.shape] };
}

export function refSoftmaxGrad(x: F64, gy: F64, log = false): F64 {
  const y = refSoftmax(x, log);
  const [rows, C] = rowsOf(x);
  const dx = new Float64Array(x.data.length);
  for (let r = 0; r < rows; r++) {
    let d = 0;
    for (let c = 0; c < C; c++) d += log ? gy.data[r * C + c]! : gy.data[r * C + c]! * y.data[r * C + c]!;
    for (let c = 0; c < C; c++) {
      const i = r * C + c;
      dx[i] = log ? gy.data[i]! - Math.exp(y.data[i]!) * d : y.data[i]! * (gy.data[i]! - d);
    }
  }
  return { data: dx, shape: [...x.shape] };
}
