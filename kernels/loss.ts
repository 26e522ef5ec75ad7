// kernels/loss.ts — selection, masking and loss ops, each with forward, backward and a float64 reference.
//
//   where(cond, a, b)        out = cond != 0 ? a : b; cond u32 | i32; a, b tensors or numbers; numpy broadcasting
//                            of all three (up to 8 dims). Grads: ga = sumTo(cond ? gy : 0), gb = sumTo(cond ? 0 : gy).
//   maskedFill(x, mask, v)   out = mask != 0 ? v : x; mask broadcastable to x (= where(mask, v, x), shape of x).
//   clamp(x, lo, hi)         min(max(x, lo), hi); lo/hi may be null (unbounded). Grad passes where lo <= x <= hi
//                            (inclusive, as PyTorch's clamp_backward).
//   sumSquares(x, {scale})   scale * sum x^2 -> [] (AttRec's L2 term uses scale 0.5). Grad 2 * scale * gy * x.
//   bce(p, t)                nn.BCELoss: -(t * max(log p, -100) + (1 - t) * max(log(1 - p), -100)). Grad (PyTorch's
//                            binary_cross_entropy_backward) gy * (p - t) / max(p * (1 - p), 1e-12): p = 0 or 1
//                            exactly gives finite values (0 where t agrees, +-1e12 where it does not), never NaN.
//                            Target grad: gy * (max(log(1 - p), -100) - max(log p, -100)).
//   bceWithLogits(x, t)      max(x, 0) - x * t + log(1 + exp(-|x|)) (stable; +-1000 gives 0 or 1000, finite).
//                            Grads: gy * (sigmoid(x) - t), target -gy * x.
//   crossEntropy(z, y)       z [N, C] logits, y [N] i32 targets: loss_n = lse(z_n) - z_n[y_n], fused log-softmax +
//                            NLL; rows with y_n == ignoreIndex (default -100, PyTorch) give 0 and do not count in
//                            the mean; a target outside [0, C) gives NaN for its row (loud, not clamped); a mean
//                            over zero counted rows is NaN (PyTorch). Grad: (softmax(z_n) - onehot(y_n)) * g_n.
// Reductions (LossReduction): 'mean' (default, PyTorch) | 'sum' -> shape [] (numel 1), 'none' -> the elementwise / per-row shape.
//
// Parallel strategy and traffic:
//   where / clamp / loss maps: one thread per output element (1-D foldable grid), broadcast indices from strides
//   in a uniform; reads each input element once, writes n.
//   Reduced losses: the map kernel writes the scaled per-element loss [n], then kernels/reduce.ts `sum` (a fixed
//   order, deterministic) makes the scalar; backward is one elementwise kernel reading gy[0] (no [n] gy).
//   crossEntropy: forward is a row program (kernels/softmax.ts: thread per row or workgroup per row) computing
//   max and log-sum-exp, saving both per row, writing loss_n; the scalar comes from one workgroup reducing the N
//   row losses and the count of counted rows (tree, deterministic). Backward is one thread per logit:
//   reads z once, writes dz once (no softmax tensor is kept).
import { ceilDiv, defineKernel, defineOp, loopBudget, loopCost, maxLoopIterations, ref, sameShape, shapeStr, Tensor, type Kernel, type KernelSpec, type Shape } from '../engine/index.js';
import { bcastIndexWgsl, broadcastStrides, DIMS_T, foldedIndex, kernelFamily, main1d, MAX_BCAST_DIMS, NAN_WGSL, padDims, refSigmoid, SIGMOID_WGSL } from './common.js';
import { rowProgram, runRow, type RowOptions } from './common_rows.js';
import { sum, sumTo } from './reduce.js';

type F64 = ref.F64;
const WG = 256;
const MAX_DIMS = MAX_BCAST_DIMS;

export type LossReduction = 'mean' | 'sum' | 'none';
type CondDType = 'u32' | 'i32';

// ------------------------------------------------------------------ broadcasting helpers

function broadcast(op: string, ...shapes: Shape[]): number[] {
  let out: number[] = [];
  try {
    for (const s of shapes) out = ref.broadcastShapes(out, s);
  } catch {
    throw new Error(`${op}: shapes ${shapes.map(shapeStr).join(', ')} do not broadcast`);
  }
  if (out.length > MAX_DIMS) throw new Error(`${op}: ${out.length} dims; at most ${MAX_DIMS}`);
  return out;
}

// ------------------------------------------------------------------ where / maskedFill
/** where's forward (out = cond ? A : B) and the full-shape gradient of its a (take 1) or b (take 0) side. */
const whereKernel = kernelFamily('where', ({ dtype, bwd }: { dtype: CondDType; bwd: boolean }) => ({
  foldable: true,
  wgsl: bwd
    ? /* wgsl */ `
// out[i] = gy[i] where (cond != 0) == (take == 1), else 0: the full-shape gradient of where's a (take 1) or b (take 0).
struct Params { n: u32, ndim: u32, take: u32, shape: ${DIMS_T}, sc: ${DIMS_T} }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cond: array<${dtype}>;  // broadcastable to out
@group(0) @binding(2) var<storage, read> gy: array<f32>;         // [n] output shape
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [n]
${bcastIndexWgsl('sc')}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.n) { return; }
  let c = select(0u, 1u, cond[bidx_sc(i)] != 0);
  out[i] = select(0.0, gy[i], c == p.take);
}`
    : /* wgsl */ `
// out[i] = cond != 0 ? A : B, all three broadcast to out (numpy rules).
struct Params { n: u32, ndim: u32, shape: ${DIMS_T}, sc: ${DIMS_T}, sa: ${DIMS_T}, sb: ${DIMS_T} }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cond: array<${dtype}>;  // broadcastable to out
@group(0) @binding(2) var<storage, read> A: array<f32>;          // broadcastable to out
@group(0) @binding(3) var<storage, read> B: array<f32>;          // broadcastable to out
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n]
${bcastIndexWgsl('sc')}${bcastIndexWgsl('sa')}${bcastIndexWgsl('sb')}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.n) { return; }
  out[i] = select(B[bidx_sb(i)], A[bidx_sa(i)], cond[bidx_sc(i)] != 0);
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ out: n! }),
  loopTrips: (bwd ? 1 : 3) * loopCost(MAX_DIMS), // bidx: one loop over at most MAX_DIMS dims per operand
}));

function condDType(op: string, c: Tensor): CondDType {
  if (c.dtype === 'f32') throw new Error(`${op}: condition ${c.describe()} must be u32 or i32 (nonzero = true), not f32`);
  return c.dtype;
}

const whereOp = defineOp<{ shape: number[] }>({
  name: 'where',
  forward(ctx, [cond, a, b], { shape }) {
    const out = Tensor.empty(shape); // broadcast(cond, a, b)
    const n = out.size;
    if (n) {
      whereKernel({ dtype: condDType('where', cond!), bwd: false }).run(
        { cond: cond!, A: a!, B: b!, out },
        { n, ndim: shape.length, shape: padDims(shape), sc: broadcastStrides(cond!.shape, shape), sa: broadcastStrides(a!.shape, shape), sb: broadcastStrides(b!.shape, shape) },
      );
    }
    ctx.save(cond!);
    ctx.extra.aShape = a!.shape;
    ctx.extra.bShape = b!.shape;
    return out;
  },
  backward(ctx, gy) {
    const cond = ctx.saved[0]!;
    const shape = gy.shape;
    const grad = (take: number, to: Shape): Tensor => {
      const full = Tensor.empty(shape); // output shape
      if (full.size) {
        whereKernel({ dtype: condDType('where', cond), bwd: true }).run(
          { cond, gy, out: full },
          { n: full.size, ndim: shape.length, take, shape: padDims(shape), sc: broadcastStrides(cond.shape, shape) },
        );
      }
      const g = sumTo(full, to); // [...to]
      full.dispose();
      return g;
    };
    return [
      null,
      ctx.needsGrad[1] ? grad(1, ctx.extra.aShape as Shape) : null,
      ctx.needsGrad[2] ? grad(0, ctx.extra.bShape as Shape) : null,
    ];
  },
});

/** A number as a 0-d tensor (broadcasts everywhere; no gradient). */
function scalarTensor(v: number): Tensor {
  return Tensor.from(new Float32Array([v]), []); // []
}

/** cond != 0 ? a : b with numpy broadcasting; cond u32 or i32; a, b tensors or numbers. */
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  const ta = typeof a === 'number' ? scalarTensor(a) : a;
  const tb = typeof b === 'number' ? scalarTensor(b) : b;
  try {
    for (const t of [ta, tb]) if (t.dtype !== 'f32') throw new Error(`where: value ${t.describe()} is not f32`);
    condDType('where', cond);
    return whereOp.apply([cond, ta, tb], { shape: broadcast('where', cond.shape, ta.shape, tb.shape) });
  } finally {
    if (ta !== a) ta.dispose();
    if (tb !== b) tb.dispose();
  }
}

/** x with `value` where mask != 0 (mask u32/i32, broadcastable to x; PyTorch masked_fill). */
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  const shape = broadcast('masked_fill', mask.shape, x.shape);
  if (!sameShape(shape, x.shape)) throw new Error(`masked_fill: mask ${mask.describe()} does not broadcast to x ${x.describe()}`);
  return where(mask, value, x);
}

// ------------------------------------------------------------------ elementwise rows: clamp and the loss maps
interface MapRow {
  /** Loss (or map) of `a` (and `t`), scaled by p.scale. */
  fwd: string;
  /** d/da, d/dt (absent: single input). Multiplied by the incoming gradient and p.scale. */
  da: string;
  dt?: string;
}

// log clamped at -100 as nn.BCELoss (p = 0 exactly is -100 without evaluating log(0)).
const CLOG_WGSL = /* wgsl */ `
fn clog(v: f32) -> f32 { return select(-100.0, max(log(v), -100.0), v > 0.0); }`;

const MAPS = {
  clamp: { fwd: 'min(max(a, p.lo), p.hi)', da: 'select(0.0, 1.0, a >= p.lo && a <= p.hi)' },
  sum_squares: { fwd: 'a * a', da: '2.0 * a' },
  bce: {
    fwd: '-(t * clog(a) + (1.0 - t) * clog(1.0 - a))',
    da: '(a - t) / max((1.0 - a) * a, 1e-12)',
    dt: 'clog(1.0 - a) - clog(a)',
  },
  bce_with_logits: { fwd: 'max(a, 0.0) - a * t + log(1.0 + exp(-abs(a)))', da: 'sigmoid_(a) - t', dt: '-a' },
} satisfies Record<string, MapRow>;
type MapName = keyof typeof MAPS;

/** A map row's kernels: the forward (`grad` absent) or its gradient w.r.t. a ('a') or t ('t'); named after the row. */
const mapKernels = Object.fromEntries(
  (Object.keys(MAPS) as MapName[]).map((name) => [name, kernelFamily(name, ({ grad }: { grad?: 'a' | 't' }) => mapSpec(name, grad))]),
) as Record<MapName, (p: { grad?: 'a' | 't' }) => Kernel>;

function mapSpec(name: MapName, grad: 'a' | 't' | undefined): Omit<KernelSpec, 'name'> {
  const row: MapRow = MAPS[name];
  const binary = row.dt !== undefined;
  const expr = grad === undefined ? row.fwd : grad === 'a' ? row.da : row.dt!;
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// ${grad === undefined ? `out = scale * (${row.fwd})` : `out = scale * gy * (${expr})`}. One thread per element.
struct Params { n: u32, gstride: u32, scale: f32, lo: f32, hi: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;          // [n]
${binary ? '@group(0) @binding(2) var<storage, read> T: array<f32>;          // [n] target' : ''}
${grad !== undefined ? '@group(0) @binding(3) var<storage, read> gy: array<f32>;         // [n] (gstride 1) or [1] (gstride 0)' : ''}
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [n]
${CLOG_WGSL}
${SIGMOID_WGSL}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.n) { return; }
  let a = A[i];
  ${binary ? 'let t = T[i];' : ''}
  out[i] = p.scale * ${grad !== undefined ? 'gy[i * p.gstride] * ' : ''}(${expr});
}`,
    grid: ({ n }) => [ceilDiv(n!, WG)],
    minSizes: ({ n }) => ({ A: n!, out: n!, ...(binary ? { T: n! } : {}) }),
  };
}

interface MapAttrs {
  reduction: LossReduction;
  /** Extra constant factor (sumSquares' scale). */
  scale: number;
  lo: number;
  hi: number;
}

function runMap(name: MapName, which: -1 | 0 | 1, a: Tensor, t: Tensor | null, gy: Tensor | null, gstride: number, scale: number, lo: number, hi: number): Tensor {
  const out = Tensor.empty(a.shape); // [...a]
  if (a.size) {
    const b: Record<string, Tensor> = { A: a, out };
    if (t) b.T = t;
    if (gy) b.gy = gy;
    mapKernels[name](which < 0 ? {} : { grad: which === 0 ? 'a' : 't' }).run(b, { n: a.size, gstride, scale, lo, hi });
  }
  return out;
}

function makeMapOp(name: MapName) {
  return defineOp<MapAttrs>({
    name,
    forward(ctx, [a, t], at) {
      const scale = at.scale * (at.reduction === 'mean' ? 1 / a!.size : 1);
      const per = runMap(name, -1, a!, t ?? null, null, 0, scale, at.lo, at.hi); // [...a] scaled per-element loss
      ctx.save(a!, ...(t ? [t] : []));
      if (at.reduction === 'none') return per;
      const s = sum(per); // [] fixed-order reduction
      per.dispose();
      return s;
    },
    backward(ctx, gy) {
      const [a, t] = ctx.saved;
      const at = ctx.attrs;
      const scale = at.scale * (at.reduction === 'mean' ? 1 / a!.size : 1);
      const gstride = at.reduction === 'none' ? 1 : 0;
      const ga = ctx.needsGrad[0] ? runMap(name, 0, a!, t ?? null, gy, gstride, scale, at.lo, at.hi) : null; // [...a]
      const gt = ctx.needsGrad[1] ? runMap(name, 1, a!, t!, gy, gstride, scale, at.lo, at.hi) : null; // [...t]
      return t ? [ga, gt] : [ga];
    },
  });
}

const mapOps = Object.fromEntries((Object.keys(MAPS) as MapName[]).map((n) => [n, makeMapOp(n)])) as Record<MapName, ReturnType<typeof makeMapOp>>;

function f32Check(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== 'f32') throw new Error(`${op}: ${t.describe()} is not f32`);
}

function checkReduction(op: string, r: string): asserts r is LossReduction {
  if (r !== 'mean' && r !== 'sum' && r !== 'none') throw new Error(`${op}: reduction '${r}' is not 'mean' | 'sum' | 'none'`);
}

/** min(max(x, lo), hi); a null bound is open. Gradient passes where lo <= x <= hi. */
export function clamp(x: Tensor, lo: number | null, hi: number | null): Tensor {
  f32Check('clamp', x);
  const l = lo ?? -Infinity;
  const h = hi ?? Infinity;
  if (l > h) throw new Error(`clamp: lo ${l} > hi ${h}`);
  return mapOps.clamp.apply([x], { reduction: 'none', scale: 1, lo: l, hi: h });
}

/** scale * sum(x^2) as a [] tensor (AttRec's L2 term: scale 0.5). */
export function sumSquares(x: Tensor, o: { scale?: number } = {}): Tensor {
  f32Check('sum_squares', x);
  return mapOps.sum_squares.apply([x], { reduction: 'sum', scale: o.scale ?? 1, lo: 0, hi: 0 });
}

function pairLoss(name: 'bce' | 'bce_with_logits', a: Tensor, t: Tensor, reduction: LossReduction): Tensor {
  f32Check(name, a, t);
  checkReduction(name, reduction);
  if (!sameShape(a.shape, t.shape)) throw new Error(`${name}: input ${a.describe()} and target ${t.describe()} must have the same shape`);
  return mapOps[name].apply([a, t], { reduction, scale: 1, lo: 0, hi: 0 });
}

/** nn.BCELoss on probabilities (logs clamped at -100). */
export function bce(p: Tensor, target: Tensor, o: { reduction?: LossReduction } = {}): Tensor {
  return pairLoss('bce', p, target, o.reduction ?? 'mean');
}

/** nn.BCEWithLogitsLoss (stable form). */
export function bceWithLogits(logits: Tensor, target: Tensor, o: { reduction?: LossReduction } = {}): Tensor {
  return pairLoss('bce_with_logits', logits, target, o.reduction ?? 'mean');
}

// ------------------------------------------------------------------ crossEntropy
const ceFwd = rowProgram(
  {
    name: 'cross_entropy_fwd',
    doc: '// loss[r] = lse(x[r]) - x[r, tgt[r]] (0 when tgt == ignore, NaN when out of range); saves max and log-sum.',
    decls: /* wgsl */ `struct Params { rows: u32, C: u32, ignore: i32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // [rows, C] logits
@group(0) @binding(2) var<storage, read> tgt: array<i32>;         // [rows]
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;  // [rows]
@group(0) @binding(4) var<storage, read_write> st: array<f32>;    // [rows, 2] (max, log sum exp(x - max))
${NAN_WGSL}`,
    passes: [
      { op: 'max', out: 'm', expr: 'x[base + c]' },
      { op: 'sum', out: 's', expr: 'exp(x[base + c] - m)' },
    ],
    once: /* wgsl */ `let t = tgt[row];
    let ls = log(s);
    st[2u * row] = m;
    st[2u * row + 1u] = ls;
    if (t == p.ignore) { loss[row] = 0.0; }
    else if (t < 0 || u32(t) >= p.C) { loss[row] = bitcast<f32>(NAN_BITS); }
    else { loss[row] = (m - x[base + u32(t)]) + ls; }`,
  },
  ({ rows, C }) => ({ x: rows! * C!, tgt: rows!, loss: rows!, st: 2 * rows! }),
);

const ceReduce = defineKernel({
  name: 'cross_entropy_reduce',
  wgsl: /* wgsl */ `
// out[0] = sum of loss (mean: / number of rows with tgt != ignore; NaN when none); cnt[0] = that number.
// One workgroup: strided partial sums, then a tree in workgroup memory (fixed order: deterministic).
// Rows [r0, r1) per dispatch: more rows than one invocation's loop budget allows take several dispatches, the
// running sum and count (as u32 bits) carried in out[0] / cnt[0] until the last one (r1 == rows).
struct Params { rows: u32, ignore: i32, mean: u32, r0: u32, r1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> loss: array<f32>;        // [rows]
@group(0) @binding(2) var<storage, read> tgt: array<i32>;         // [rows]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [1]
@group(0) @binding(4) var<storage, read_write> cnt: array<f32>;   // [1]
${NAN_WGSL}
var<workgroup> ss: array<f32, 256>;
var<workgroup> sc: array<u32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3u) {
  var s = 0.0;
  var k = 0u;
  for (var r = p.r0 + lid.x; r < p.r1; r = r + 256u) {
    s = s + loss[r];
    k = k + select(1u, 0u, tgt[r] == p.ignore);
  }
  ss[lid.x] = s;
  sc[lid.x] = k;
  workgroupBarrier();
  for (var st = 128u; st > 0u; st = st >> 1u) {
    if (lid.x < st) {
      ss[lid.x] = ss[lid.x] + ss[lid.x + st];
      sc[lid.x] = sc[lid.x] + sc[lid.x + st];
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    var tot = ss[0];
    var m = sc[0];
    if (p.r0 != 0u) { tot = out[0] + tot; m = bitcast<u32>(cnt[0]) + m; }
    if (p.r1 < p.rows) { out[0] = tot; cnt[0] = bitcast<f32>(m); return; }
    let n = f32(m);
    cnt[0] = n;
    if (p.mean == 0u) { out[0] = tot; }
    else if (m == 0u) { out[0] = bitcast<f32>(NAN_BITS); }
    else { out[0] = tot / n; }
  }
}`,
  grid: () => [1],
  minSizes: ({ rows }) => ({ loss: rows!, tgt: rows!, out: 1, cnt: 1 }),
  loopTrips: ({ r0, r1 }) => loopCost(ceilDiv(r1! - r0!, 256)) + loopCost(8),
});

const ceBwd = defineKernel({
  name: 'cross_entropy_bwd',
  foldable: true,
  wgsl: /* wgsl */ `
// dx[r, c] = g_r * (exp(x[r, c] - max_r - ls_r) - [c == tgt[r]]), 0 for ignored rows;
// g_r = gy[r] (none), gy[0] (sum), gy[0] / cnt[0] (mean). One thread per logit.
struct Params { n: u32, C: u32, ignore: i32, gstride: u32, mean: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // [rows, C]
@group(0) @binding(2) var<storage, read> tgt: array<i32>;         // [rows]
@group(0) @binding(3) var<storage, read> st: array<f32>;          // [rows, 2]
@group(0) @binding(4) var<storage, read> gy: array<f32>;          // [rows] (none) or [1]
@group(0) @binding(5) var<storage, read> cnt: array<f32>;         // [1] (mean)
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;    // [rows, C]
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.n) { return; }
  let r = i / p.C;
  let c = i % p.C;
  let t = tgt[r];
  if (t == p.ignore) { dx[i] = 0.0; return; }
  var g = gy[r * p.gstride];
  if (p.mean == 1u) { g = g / cnt[0]; }
  let pr = exp((x[i] - st[2u * r]) - st[2u * r + 1u]);
  dx[i] = g * (pr - select(0.0, 1.0, t >= 0 && u32(t) == c));
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ x: n!, dx: n! }),
});

interface CeAttrs extends RowOptions {
  reduction: LossReduction;
  ignoreIndex: number;
}

const crossEntropyOp = defineOp<CeAttrs>({
  name: 'cross_entropy',
  forward(ctx, [x, tgt], a) {
    const [N, C] = x!.shape as [number, number];
    const loss = Tensor.empty([N]); // [N]
    const st = Tensor.empty([N, 2]); // [N, 2] (max, log-sum)
    runRow(ceFwd, N, C, { x: x!, tgt: tgt!, loss, st }, { ignore: a.ignoreIndex }, a);
    ctx.save(x!, tgt!, st);
    st.dispose();
    if (a.reduction === 'none') return loss;
    const out = Tensor.empty([]); // []
    const cnt = Tensor.empty([1]); // [1] counted rows
    // Rows per dispatch: 256 threads, each within the loop budget (one dispatch at any realistic N).
    const per = maxLoopIterations(loopBudget(), 0, loopCost(8)) * 256;
    const step = Number.isFinite(per) ? Math.max(256, per) : N;
    for (let r0 = 0; r0 < N; r0 += step) {
      ceReduce.run({ loss, tgt: tgt!, out, cnt }, { rows: N, ignore: a.ignoreIndex, mean: a.reduction === 'mean' ? 1 : 0, r0, r1: Math.min(N, r0 + step) });
    }
    ctx.save(cnt);
    cnt.dispose();
    loss.dispose();
    return out;
  },
  backward(ctx, gy) {
    const [x, tgt, st, cnt] = ctx.saved as [Tensor, Tensor, Tensor, Tensor | undefined];
    const a = ctx.attrs;
    const [, C] = x.shape as [number, number];
    const dx = Tensor.empty(x.shape); // [N, C]
    if (x.size) {
      ceBwd.run(
        { x, tgt, st, gy, cnt: cnt ?? st, dx },
        { n: x.size, C, ignore: a.ignoreIndex, gstride: a.reduction === 'none' ? 1 : 0, mean: a.reduction === 'mean' ? 1 : 0 },
      );
    }
    return [dx, null];
  },
});

export interface CrossEntropyOptions extends RowOptions {
  reduction?: LossReduction;
  /** Rows whose target equals this are skipped (PyTorch default -100). */
  ignoreIndex?: number;
}

/** Fused log-softmax + NLL over logits [N, C] with i32 targets [N] (nn.CrossEntropyLoss). */
export function crossEntropy(logits: Tensor, targets: Tensor, o: CrossEntropyOptions = {}): Tensor {
  f32Check('cross_entropy', logits);
  const reduction = o.reduction ?? 'mean';
  checkReduction('cross_entropy', reduction);
  if (logits.ndim !== 2) throw new Error(`cross_entropy: logits ${logits.describe()} must be [N, C]`);
  if (targets.dtype !== 'i32') throw new Error(`cross_entropy: targets ${targets.describe()} must be i32`);
  if (targets.ndim !== 1 || targets.shape[0] !== logits.shape[0]) throw new Error(`cross_entropy: targets ${targets.describe()} must be [${logits.shape[0]}]`);
  if (logits.size === 0) throw new Error(`cross_entropy: logits ${logits.describe()} are empty`);
  const ignoreIndex = o.ignoreIndex ?? -100;
  return crossEntropyOp.apply([logits, targets], { ...o, reduction, ignoreIndex });
}

// ------------------------------------------------------------------ float64 references
function bcastRead(x: F64, out: Shape, i: number): number {
  return x.data[ref.broadcastIndex(i, out, x.shape)]!;
}

export function refWhere(cond: F64, a: F64, b: F64): F64 {
  const shape = ref.broadcastShapes(ref.broadcastShapes(cond.shape, a.shape), b.shape);
  const out = ref.zerosF64(shape);
  for (let i = 0; i < out.data.length; i++) out.data[i] = bcastRead(cond, shape, i) !== 0 ? bcastRead(a, shape, i) : bcastRead(b, shape, i);
  return out;
}

/** [null, ga, gb] for where(cond, a, b). */
export function refWhereGrad(cond: F64, a: F64, b: F64, gy: F64): [null, F64, F64] {
  const ga = ref.zerosF64(gy.shape);
  const gb = ref.zerosF64(gy.shape);
  for (let i = 0; i < gy.data.length; i++) {
    if (bcastRead(cond, gy.shape, i) !== 0) ga.data[i] = gy.data[i]!;
    else gb.data[i] = gy.data[i]!;
  }
  return [null, ref.sumTo(ga, a.shape), ref.sumTo(gb, b.shape)];
}

export function refMaskedFill(x: F64, mask: F64, value: number): F64 {
  return refWhere(mask, { data: Float64Array.of(value), shape: [] }, x);
}

export function refMaskedFillGrad(x: F64, mask: F64, gy: F64): F64 {
  return refWhereGrad(mask, { data: Float64Array.of(0), shape: [] }, x, gy)[2];
}

export function refClamp(x: F64, lo: number | null, hi: number | null): F64 {
  return { data: x.data.map((v) => Math.min(Math.max(v, lo ?? -Infinity), hi ?? Infinity)), shape: [...x.shape] };
}

export function refClampGrad(x: F64, lo: number | null, hi: number | null, gy: F64): F64 {
  return { data: x.data.map((v, i) => (v >= (lo ?? -Infinity) && v <= (hi ?? Infinity) ? gy.data[i]! : 0)), shape: [...x.shape] };
}

export function refSumSquares(x: F64, scale = 1): F64 {
  let s = 0;
  for (const v of x.data) s += v * v;
  return { data: Float64Array.of(scale * s), shape: [] };
}

export function refSumSquaresGrad(x: F64, gy: F64, scale = 1): F64 {
  return { data: x.data.map((v) => 2 * scale * gy.data[0]! * v), shape: [...x.shape] };
}

const clog = (v: number): number => (v > 0 ? Math.max(Math.log(v), -100) : -100);

const PAIR = {
  bce: {
    f: (p: number, t: number) => -(t * clog(p) + (1 - t) * clog(1 - p)),
    da: (p: number, t: number) => (p - t) / Math.max((1 - p) * p, 1e-12),
    dt: (p: number) => clog(1 - p) - clog(p),
  },
  bce_with_logits: {
    f: (x: number, t: number) => Math.max(x, 0) - x * t + Math.log1p(Math.exp(-Math.abs(x))),
    da: (x: number, t: number) => refSigmoid(x) - t,
    dt: (x: number) => -x,
  },
};

function reduce(vals: Float64Array, shape: number[], reduction: LossReduction): F64 {
  if (reduction === 'none') return { data: vals, shape };
  let s = 0;
  for (const v of vals) s += v;
  return { data: Float64Array.of(reduction === 'mean' ? s / vals.length : s), shape: [] };
}

export function refBinaryLoss(name: 'bce' | 'bce_with_logits', a: F64, t: F64, reduction: LossReduction = 'mean'): F64 {
  const f = PAIR[name].f;
  return reduce(a.data.map((v, i) => f(v, t.data[i]!)), [...a.shape], reduction);
}

/** [d/da, d/dt]. */
export function refBinaryLossGrad(name: 'bce' | 'bce_with_logits', a: F64, t: F64, gy: F64, reduction: LossReduction = 'mean'): [F64, F64] {
  const { da, dt } = PAIR[name];
  const g = (i: number): number => (reduction === 'none' ? gy.data[i]! : reduction === 'mean' ? gy.data[0]! / a.data.length : gy.data[0]!);
  return [
    { data: a.data.map((v, i) => g(i) * da(v, t.data[i]!)), shape: [...a.shape] },
    { data: a.data.map((v, i) => g(i) * dt(v)), shape: [...t.shape] },
  ];
}

export const refBce = (p: F64, t: F64, reduction: LossReduction = 'mean'): F64 => refBinaryLoss('bce', p, t, reduction);
export const refBceWithLogits = (x: F64, t: F64, reduction: LossReduction = 'mean'): F64 => refBinaryLoss('bce_with_logits', x, t, reduction);

function ceRows(x: F64, tgt: F64, ignoreIndex: number): { loss: Float64Array; lse: Float64Array; counted: number } {
  const [N, C] = x.shape as [number, number];
  const loss = new Float64Array(N);
  const lse = new Float64Array(N);
  let counted = 0;
  for (let r = 0; r < N; r++) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, x.data[r * C + c]!);
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(x.data[r * C + c]! - m);
    lse[r] = m + Math.log(s);
    const t = tgt.data[r]!;
    if (t === ignoreIndex) continue;
    counted++;
    loss[r] = t >= 0 && t < C ? m - x.data[r * C + t]! + Math.log(s) : NaN;
  }
  return { loss, lse, counted };
}

export function refCrossEntropy(x: F64, tgt: F64, reduction: LossReduction = 'mean', ignoreIndex = -100): F64 {
  const { loss, counted } = ceRows(x, tgt, ignoreIndex);
  if (reduction === 'none') return { data: loss, shape: [x.shape[0]!] };
  let s = 0;
  for (const v of loss) s += v;
  return { data: Float64Array.of(reduction === 'mean' ? (counted ? s / counted : NaN) : s), shape: [] };
}

export function refCrossEntropyGrad(x: F64, tgt: F64, gy: F64, reduction: LossReduction = 'mean', ignoreIndex = -100): F64 {
  const [N, C] = x.shape as [number, number];
  const { lse, counted } = ceRows(x, tgt, ignoreIndex);
  const dx = new Float64Array(x.data.length);
  for (let r = 0; r < N; r++) {
    const t = tgt.data[r]!;
    if (t === ignoreIndex) continue;
    const g = reduction === 'none' ? gy.data[r]! : reduction === 'mean' ? gy.data[0]! / counted : gy.data[0]!;
    for (let c = 0; c < C; c++) dx[r * C + c] = g * (Math.exp(x.data[r * C + c]! - lse[r]!) - (c === t ? 1 : 0));
  }
  return { data: dx, shape: [...x.shape] };
}
