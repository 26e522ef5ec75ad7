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
// Memory traffic: forward reads x 3x (max, sum, write pass; a row stays in cache) and writes y once;
// backward reads y and gy 2x and writes dx once. Compute: 2 exp per element forward (sum and write passes).
import { ceilDiv, defineKernel, defineOp, ref, rt, Tensor, type Kernel } from '../engine/index.js';

type F64 = ref.F64;

// ------------------------------------------------------------------ the row-program template
export type RowVariant = 'row' | 'wg';

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

/** Largest workgroup of the `wg` variant (size of the all-reduce scratch array). */
const MAX_WG = 256;

function rowProgramWgsl(s: RowProgramSpec, variant: RowVariant): string {
  const init = (op: RowPass['op']): string => (op === 'max' ? '-3.4028234663852886e38' : '0.0');
  const comb = (op: RowPass['op'], a: string, b: string): string => (op === 'max' ? `max(${a}, ${b})` : `${a} + ${b}`);
  const head = `${s.doc}
override WG: u32 = 64;
override TREE: u32 = 0;
${s.decls}
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
  const passes = s.passes
    .map(
      (ps, k) => `  var acc${k} = ${init(ps.op)};
  for (var c = lid.x; c < p.C; c = c + WG) { acc${k} = ${comb(ps.op, `acc${k}`, ps.expr)}; }
  let ${ps.out} = allreduce_${ps.op}(acc${k}, lid.x);
  ${ps.then ?? ''}`,
    )
    .join('\n');
  const ops = [...new Set(s.passes.map((ps) => ps.op))];
  const allreduce = ops
    .map(
      (op) => `
// Every thread gets the same ${op} of the WG partials (same order everywhere: deterministic).
fn allreduce_${op}(v: f32, l: u32) -> f32 {
  red[l] = v;
  workgroupBarrier();
  var r = ${init(op)};
  if (TREE == 1u) {
    for (var st = WG / 2u; st > 0u; st = st >> 1u) {
      if (l < st) { red[l] = ${comb(op, 'red[l]', 'red[l + st]')}; }
      workgroupBarrier();
    }
    r = red[0];
  } else {
    if (l == 0u) {
      for (var k = 0u; k < WG; k = k + 1u) { r = ${comb(op, 'r', 'red[k]')}; }
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
  return `${head}
var<workgroup> red: array<f32, ${MAX_WG + 1}>;
${allreduce}
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

/** The two kernels (`row`, `wg`) of a row program; `pick` chooses one per launch. */
export interface RowKernels {
  row: Kernel;
  wg: Kernel;
}

export function rowProgram(s: RowProgramSpec, minSizes?: (p: Record<string, number>) => Record<string, number>): RowKernels {
  const mk = (variant: RowVariant): Kernel =>
    defineKernel({
      name: `${s.name}_${variant}`,
      foldable: true,
      wgsl: rowProgramWgsl(s, variant),
      grid: variant === 'row' ? ({ rows }, [wg]) => [ceilDiv(rows!, wg)] : ({ rows }) => [rows!],
      ...(minSizes ? { minSizes } : {}),
    });
  return { row: mk('row'), wg: mk('wg') };
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
  /** Force a variant (benchmarks, tests); default: rowConfig(rows, C). */
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

export function runRow(k: RowKernels, rows: number, C: number, bindings: Parameters<Kernel['run']>[0], params: Record<string, number>, o: RowOptions = {}): void {
  if (rows === 0 || C === 0) return;
  const cfg = rowConfig(rows, C);
  const variant = o.variant ?? cfg.variant;
  const wg = o.wg ?? (variant === cfg.variant ? cfg.wg : variant === 'row' || !isCpuAdapter() ? 64 : 16);
  if (!Number.isInteger(wg) || wg < 1 || wg > MAX_WG) throw new Error(`${k[variant].name}: workgroup size ${wg} must be in [1, ${MAX_WG}]`);
  const tree = wg > 32 && (wg & (wg - 1)) === 0 ? 1 : 0;
  k[variant].run(bindings, { rows, C, ...params }, { overrides: { WG: wg, TREE: tree } });
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
