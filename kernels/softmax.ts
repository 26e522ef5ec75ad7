// kernels/softmax.ts — softmax and log-softmax over the last axis, forward and backward (row programs, see
// common_rows.ts, shared with layernorm.ts and loss.ts's cross-entropy).
//
//   softmax(x)    y[r, c] = exp(x[r, c] - m_r) / s_r,          m_r = max_c x[r, c], s_r = sum_c exp(x[r, c] - m_r)
//   logSoftmax(x) y[r, c] = (x[r, c] - m_r) - log(s_r)
//   x, y: [..., C], viewed as [rows, C]. Max-subtracted: inputs of +-1000 and -1e8 / -1e4 mask fills never
//   overflow; a fully filled row (all -1e8) gives the uniform distribution, as PyTorch does. A row of all -inf
//   gives NaN (PyTorch too).
//   backward (saves y only):  softmax     dx = y * (gy - sum_c gy*y)
//                              logSoftmax  dx = gy - exp(y) * sum_c gy
//
// Parallel strategy: row programs (common_rows.ts: a list of row reductions, then one statement per element and
// one per row), in the variants `row` (a thread per row, serial loops, no barriers), `wg` (a workgroup per row,
// strided loops, all-reduces through workgroup memory) and `wgc` (`wg` cut into dispatches for very long rows).
// rowConfig() picks per adapter. On CPU adapters (llvmpipe: a workgroup runs as SIMD fibers on one core and
// every barrier switches all fibers) `row` beats `wg` (64, tree all-reduce) and tfjs at every row length once
// there are >= 128 rows, long rows ([4096, 1000]) and many short ones ([25600, 50]) alike (bench rows
// softmax.fwd_row / softmax.fwd_wg; timings: `npm run bench -- softmax` / docs/BENCHMARKS.md). A flat all-reduce
// in which every thread summed all WG partials was O(WG^2) and much slower: removed. Fewer rows take `wg` with
// WG = 16. On a real GPU rows of <= 128 stay one per thread (they live in L1) and longer rows get a workgroup of
// 64 (256 past C = 2048) with coalesced reads.
// llvmpipe's loop budget (65,535 iterations per invocation, shared by ALL its loops): `row` runs
// (reductions + 1) serial loops over C in one invocation, so a row longer than ~21,800 columns (softmax, layer
// norm; ~32,700 for cross-entropy) takes `wg` (loops of C / WG), and a row too long even for WG = 256 takes the
// third variant `wgc`: one dispatch per (reduction or element pass, column chunk), the finished reductions kept
// in a [rows, passes] state buffer between dispatches. runRow() checks each variant's declared loop cost.
// Memory traffic: forward reads x 3x (max, sum, write pass; a row stays in cache) and writes y once;
// backward reads y and gy 2x and writes dx once. Compute: 2 exp per element forward (sum and write passes).
import { defineOp, ref, Tensor } from '../engine/index.js';
import { rowProgram, runRow, type RowOptions, type RowPass } from './common_rows.js';

// The row-program builder moved to common_rows.ts; re-exported here for imports written before the move.
export { rowConfig, rowProgram, runRow, type RowKernels, type RowOptions, type RowPass, type RowProgramSpec, type RowVariant } from './common_rows.js';
export { isCpuAdapter } from './common.js';

type F64 = ref.F64;

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
    name: 'softmax_log_fwd',
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
    name: 'softmax_log_bwd',
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
