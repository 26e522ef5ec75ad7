// pairwise: the losses the official S3-Rec code trains with, fused (scores, loss, reduction; hand-written backward).
//
// pairwise_sigmoid (MIP, SP; S3REC_SPEC §4.2): per row n with weight w_n (mask, default 1),
//   sp = <a_n, pos_n>, sn = <a_n, neg_n>,  l_n = BCE(sigmoid(sigmoid(sp) - sigmoid(sn)), 1)
//      = min(-log sigmoid(sigmoid(sp) - sigmoid(sn)), 100)      (nn.BCELoss's log clamp at -100; never active
//                                                                here: l_n is in [0.3133, 1.3133])
//   loss = sum_n w_n l_n (reduction 'sum', the official one) or / sum_n w_n ('mean').
//   Dense form: a, pos, neg [N, D]. Id form: pos_n = table[posIds[n]], neg_n = table[negIds[n]] (MIP scores
//   mip_norm(H_t) against item_emb), gradients scattered into the table deterministically.
// bce_neg_sampling (fine-tuning, SASRec loss; §5): rows with posIds[n] > 0 (times mask, if given),
//   l_n = -log(sigmoid(sp) + 1e-24) - log(1 - sigmoid(sn) + 1e-24),  loss = sum_n w_n l_n / sum_n w_n
//   (0 when no row is valid; PyTorch would give NaN). 1 - sigmoid(sn) is evaluated as sigmoid(-sn): same value
//   without the cancellation that makes f32 round it to 0 for sn > ~17.
// multilabel_bce (AAP, MAP; §4.2): z[n, a] = <x_n, attr_a> for ALL A attributes,
//   loss = sum_n w_n sum_a -(t log_c sigmoid(z) + (1 - t) log_c(1 - sigmoid(z))),  log_c = max(log, -100);
//   targets t: a CSR list of positive attribute ids per row (offsets [N+1], ids [nnz]) or dense [N, A] f32.
//   The logs are evaluated stably (log sigmoid(z) = -softplus(-z)) and then clamped at -100, as BCELoss clamps:
//   identical to PyTorch wherever PyTorch's f32 sigmoid is not saturated (|z| < ~16) and where both clamp
//   (|z| > 100: loss 100, zero gradient); for 16 < |z| < 100 PyTorch's f32 sigmoid rounds to 0/1 and it reports
//   100 with zero gradient, this kernel the exact softplus and its gradient.
//   'mean' divides by sum_n w_n * A (BCELoss's element mean).
// Shapes: a/h/x [N, D]; pos/neg [N, D] or table [V, D] with posIds/negIds [N] i32 (clamped to [0, V));
//   attr [A, D]; mask [N] f32 row weights; loss [].
// Parallel strategy (llvmpipe: storage loads dominate and barriers are expensive; all kernels are barrier-free
//   apart from the one-workgroup scans, and register-blocked as on a real GPU):
//   pairwise / bce: one thread per row for the two dot products (forward; saves the scores) and one thread per
//   (row, vec4 of D) for the gradients; the table gradient goes through infonce.ts's deterministic row index +
//   scatter. Masked rows cost one weight read.
//   multilabel: rows_compact lists the valid rows (one-workgroup scan, ascending), so masked rows cost nothing
//   (S3-Rec batches are ~85% padding). Forward: a register tile of TR valid rows x TA attributes per thread
//   (ML_TILES; 8 x 8 by bench, 4 x 4 / 4 x 8 / 8 x 16 / 16 x 16 measured within noise or slower): TR*TA dot
//   products, BCE against the targets, a tile partial sum, and the residual r = w dBCE/dz [count, A]. Backward:
//   dx = g r attr (DXR rows x one vec4 of D per thread), dattr = g r^T x split into S row chunks (about 8k
//   threads; chunks added in order by multilabel_bce_dattr_sum), rows ascending. Deterministic, no atomics.
// Memory traffic: pairwise / bce forward reads 3ND (+2N ids), writes 4N; backward reads 3ND, writes 3ND (dense)
//   or ND + 2N + VD (ids). multilabel forward reads x and attr once per tile (cached), writes count*A (residual,
//   only when a gradient is needed) and the tile partials; backward reads the residual twice, writes ND + S*A*D.
// Measured (npm run bench -- infonce bce_ft pairwise multilabel, llvmpipe on 2 shared cores, see
//   bench/infonce.bench.ts): each fused row >= 3x faster than its composition from engine ops and than tfjs.
// llvmpipe's loop budget (65,535 iterations per invocation, all loops together): the pairwise dot loop takes
// ranges of D, rows_compact ranges of rows, the multilabel forward's CSR loop is bounded by the longest id list
// (csrTargets records it; lists too long go through dense targets), dx ranges of attributes, dattr more row
// chunks; each dispatch declares its cost.
// Variants: `_dD` kernels are generated per row width D (vec4 loads when D % 4 == 0); pairwise/bce `_dense` /
//   `_ids`; multilabel `_csr` / `_dense` targets and the tile shape in the name (`_t8x8`, `_r8`, `_a8`).
import { ceilDiv, checkIds, chunkRanges as ranges, defineKernel, defineOp, fillInPlace, loopBudget, loopCost, maxLoopIterations, ref, Tensor, zeros, type Kernel } from '../engine/index.js';
import {
  buildRowIndex,
  cachedKernel,
  concatFlat,
  dConsts,
  dotFn,
  lanesFor,
  MATH_WGSL,
  reduceLoss,
  scatterRows,
  vt,
  type Lanes,
  type Reduction,
} from './infonce.js';

type F64 = ref.F64;
const WG = 64;
const LINEAR = `let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid.x;`;
const ENTRY = `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u)`;

// ------------------------------------------------------------------ pairwise_sigmoid / bce_neg_sampling
export type PairKind = 'pairwise_sigmoid' | 'bce_neg_sampling';
type PairMode = 'dense' | 'ids';

/** Row loss and its derivatives w.r.t. (sp, sn), in WGSL. */
const PAIR_LOSS: Record<PairKind, string> = {
  pairwise_sigmoid: /* wgsl */ `
fn row_loss(sp: f32, sn: f32) -> f32 {
  let d = sig(sp) - sig(sn);
  return min(softplus(-d), 100.0); // -max(log sigmoid(d), -100)
}
fn row_grad(sp: f32, sn: f32) -> vec2<f32> {
  let dd = -sig(-(sig(sp) - sig(sn))); // d/dd softplus(-d); the clamp is never active (d in (-1, 1))
  return vec2<f32>(dd * sig(sp) * sig(-sp), -dd * sig(sn) * sig(-sn));
}`,
  bce_neg_sampling: /* wgsl */ `
fn row_loss(sp: f32, sn: f32) -> f32 {
  return -log(sig(sp) + 1e-24) - log(sig(-sn) + 1e-24);
}
fn row_grad(sp: f32, sn: f32) -> vec2<f32> {
  let a = sig(sp);
  let b = sig(-sn);
  return vec2<f32>(-sig(-sp) * (a / (a + 1e-24)), sig(sn) * (b / (b + 1e-24)));
}`,
};

function pairFwdKernel(kind: PairKind, mode: PairMode, l: Lanes): Kernel {
  const name = `${kind}_fwd_${mode}_v${l}`;
  const src =
    mode === 'dense'
      ? `@group(0) @binding(2) var<storage, read> tp: array<${vt(l)}>;   // [N, D] positives
@group(0) @binding(3) var<storage, read> tn: array<${vt(l)}>;   // [N, D] negatives`
      : `@group(0) @binding(2) var<storage, read> table: array<${vt(l)}>; // [V, D]
@group(0) @binding(3) var<storage, read> pid: array<i32>;       // [N] positive ids
@group(0) @binding(4) var<storage, read> nid: array<i32>;       // [N] negative ids`;
  const rows =
    mode === 'dense'
      ? 'let pr = i * p.D4; let nr = i * p.D4;'
      : 'let pr = u32(clamp(pid[i], 0, i32(p.V) - 1)) * p.D4; let nr = u32(clamp(nid[i], 0, i32(p.V) - 1)) * p.D4;';
  const posGate = kind === 'bce_neg_sampling' ? 'if (pid[i] <= 0) { w = 0.0; }' : '';
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// One thread per row: sp = <a, pos>, sn = <a, neg>, weighted row loss. rows = [w, w * l, sp, sn] planes.
// D4 slots [k0, k1) per dispatch (rows longer than one invocation's loop budget: several dispatches, the
// partial dots carried in the sp / sn planes; the loss written by the last).
struct Params { N: u32, D4: u32, V: u32, hasMask: u32, k0: u32, k1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<${vt(l)}>;     // [N, D]
${src}
@group(0) @binding(5) var<storage, read> mask: array<f32>;       // [N] row weights (hasMask)
@group(0) @binding(6) var<storage, read_write> rows: array<f32>; // [4, N]: w, w * loss, sp, sn
${dotFn(l)}
${MATH_WGSL}
${PAIR_LOSS[kind]}
${ENTRY} {
  ${LINEAR}
  if (i >= p.N) { return; }
  var w = 1.0;
  if (p.hasMask == 1u) { w = mask[i]; }
  ${posGate}
  rows[i] = w;
  if (w == 0.0) { rows[p.N + i] = 0.0; rows[2u * p.N + i] = 0.0; rows[3u * p.N + i] = 0.0; return; }
  ${rows}
  var sp = 0.0;
  var sn = 0.0;
  if (p.k0 != 0u) { sp = rows[2u * p.N + i]; sn = rows[3u * p.N + i]; }
  for (var k = p.k0; k < p.k1; k = k + 1u) {
    let av = a[i * p.D4 + k];
    sp = sp + dotv(av, ${mode === 'dense' ? 'tp' : 'table'}[pr + k]);
    sn = sn + dotv(av, ${mode === 'dense' ? 'tn' : 'table'}[nr + k]);
  }
  rows[2u * p.N + i] = sp;
  rows[3u * p.N + i] = sn;
  if (p.k1 == p.D4) { rows[p.N + i] = w * row_loss(sp, sn); }
}`,
      grid: ({ N }) => [ceilDiv(N!, WG)],
      loopTrips: ({ k0, k1 }) => loopCost(k1! - k0!),
      minSizes: ({ N, D4 }) => ({ a: N! * D4!, mask: N!, rows: 4 * N!, ...(mode === 'ids' ? { pid: N!, nid: N! } : { tp: N! * D4!, tn: N! * D4! }) }),
    }),
  );
}

function pairBwdKernel(kind: PairKind, mode: PairMode, l: Lanes): Kernel {
  const name = `${kind}_bwd_${mode}_v${l}`;
  const src =
    mode === 'dense'
      ? `@group(0) @binding(2) var<storage, read> tp: array<${vt(l)}>;     // [N, D]
@group(0) @binding(3) var<storage, read> tn: array<${vt(l)}>;     // [N, D]
@group(0) @binding(4) var<storage, read> saved: array<f32>;       // [4N + 1]: w, w * loss, sp, sn, den
@group(0) @binding(5) var<storage, read> gy: array<f32>;          // [1]
@group(0) @binding(6) var<storage, read_write> da: array<${vt(l)}>; // [N, D]
@group(0) @binding(7) var<storage, read_write> dp: array<${vt(l)}>; // [N, D]
@group(0) @binding(8) var<storage, read_write> dn: array<${vt(l)}>; // [N, D]`
      : `@group(0) @binding(2) var<storage, read> table: array<${vt(l)}>;  // [V, D]
@group(0) @binding(3) var<storage, read> pid: array<i32>;          // [N]
@group(0) @binding(4) var<storage, read> nid: array<i32>;          // [N]
@group(0) @binding(5) var<storage, read> saved: array<f32>;        // [4N + 1]: w, w * loss, sp, sn, den
@group(0) @binding(6) var<storage, read> gy: array<f32>;           // [1]
@group(0) @binding(7) var<storage, read_write> da: array<${vt(l)}>; // [N, D]
@group(0) @binding(8) var<storage, read_write> coef: array<f32>;    // [N, 2] dloss/dsp, dloss/dsn`;
  const zero = vt(l) + '(0.0)';
  const body =
    mode === 'dense'
      ? `if (w == 0.0) { da[i] = ${zero}; dp[i] = ${zero}; dn[i] = ${zero}; return; }
  let c = gw * row_grad(saved[2u * p.N + n], saved[3u * p.N + n]);
  let av = a[i];
  da[i] = c.x * tp[i] + c.y * tn[i];
  dp[i] = c.x * av;
  dn[i] = c.y * av;`
      : `if (w == 0.0) {
    da[i] = ${zero};
    if (k == 0u) { coef[2u * n] = 0.0; coef[2u * n + 1u] = 0.0; }
    return;
  }
  let c = gw * row_grad(saved[2u * p.N + n], saved[3u * p.N + n]);
  let pr = u32(clamp(pid[n], 0, i32(p.V) - 1)) * p.D4;
  let nr = u32(clamp(nid[n], 0, i32(p.V) - 1)) * p.D4;
  da[i] = c.x * table[pr + k] + c.y * table[nr + k];
  if (k == 0u) { coef[2u * n] = c.x; coef[2u * n + 1u] = c.y; }`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// One thread per (row, chunk of D): c = g w_n (dl/dsp, dl/dsn) recomputed from the saved scores;
// da = c.x pos + c.y neg, ${mode === 'dense' ? 'dpos = c.x a, dneg = c.y a' : 'coef[n] = c (for the table scatter)'}.
struct Params { N: u32, D4: u32, V: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<${vt(l)}>;      // [N, D]
${src}
${MATH_WGSL}
${PAIR_LOSS[kind]}
${ENTRY} {
  ${LINEAR}
  if (i >= p.N * p.D4) { return; }
  let n = i / p.D4;
  let k = i % p.D4;
  let w = saved[n];
  let gw = gy[0] * w / saved[4u * p.N];
  ${body}
}`,
      grid: ({ N, D4 }) => [ceilDiv(N! * D4!, WG)],
      minSizes: ({ N, D4 }) => ({ a: N! * D4!, saved: 4 * N! + 1, gy: 1, da: N! * D4! }),
    }),
  );
}

interface PairAttrs {
  kind: PairKind;
  mode: PairMode;
  reduction: Reduction;
  hasMask: boolean;
}

const pairOp = defineOp<PairAttrs>({
  name: 'pairwise',
  forward(ctx, inputs, at) {
    const [a, p1, p2, p3] = inputs as [Tensor, Tensor, Tensor, Tensor | undefined];
    const what = at.kind === 'pairwise_sigmoid' ? (at.mode === 'ids' ? 'pairwiseSigmoidLossIds' : 'pairwiseSigmoidLoss') : 'bceNegSampling';
    if (a.ndim !== 2 || a.dtype !== 'f32') throw new Error(`${what}: a ${a.describe()} must be f32 [N, D]`);
    const [N, D] = a.shape as [number, number];
    if (N === 0 || D === 0) throw new Error(`${what}: empty input ${a.describe()}`);
    const mask = at.hasMask ? inputs[at.mode === 'ids' ? 4 : 3]! : null;
    if (mask && (mask.dtype !== 'f32' || mask.size !== N)) throw new Error(`${what}: mask ${mask.describe()} must be f32 [${N}]`);
    const l = lanesFor(D);
    const rows = Tensor.empty([4, N]); // [4, N]: w, w * loss, sp, sn
    let V = N;
    if (at.mode === 'dense') {
      for (const [nm, t] of [['pos', p1], ['neg', p2]] as const) {
        if (t.dtype !== 'f32' || t.ndim !== 2 || t.shape[0] !== N || t.shape[1] !== D) throw new Error(`${what}: ${nm} ${t.describe()} must be f32 [${N}, ${D}]`);
      }
      for (const [k0, k1] of ranges(D / l, maxLoopIterations(loopBudget()))) {
        pairFwdKernel(at.kind, 'dense', l).run({ a, tp: p1, tn: p2, mask: mask ?? a, rows }, { N, D4: D / l, V, hasMask: mask ? 1 : 0, k0, k1 });
      }
    } else {
      const table = p1;
      if (table.dtype !== 'f32' || table.ndim !== 2 || table.shape[1] !== D || table.shape[0] === 0) throw new Error(`${what}: table ${table.describe()} must be f32 [V, ${D}]`);
      V = table.shape[0]!;
      for (const [nm, t] of [['posIds', p2], ['negIds', p3!]] as const) {
        if (t.dtype !== 'i32' || t.size !== N) throw new Error(`${what}: ${nm} ${t.describe()} must be i32 [${N}]`);
      }
      for (const [k0, k1] of ranges(D / l, maxLoopIterations(loopBudget()))) {
        pairFwdKernel(at.kind, 'ids', l).run({ a, table, pid: p2, nid: p3!, mask: mask ?? a, rows }, { N, D4: D / l, V, hasMask: mask ? 1 : 0, k0, k1 });
      }
    }
    const { loss, den } = reduceLoss({ t: rows, off: N, n: N }, { t: rows, off: 0, n: N }, at.reduction === 'mean');
    if (ctx.recording) {
      const saved = concatFlat([rows, den]); // [4N + 1]
      ctx.save(a, p1, p2, ...(at.mode === 'ids' ? [p3!] : []), saved);
      saved.dispose();
      ctx.extra.dims = { N, D, V };
    }
    rows.dispose();
    den.dispose();
    return loss;
  },
  backward(ctx, gy) {
    const at = ctx.attrs;
    const { N, D, V } = ctx.extra.dims as { N: number; D: number; V: number };
    const l = lanesFor(D);
    const params = { N, D4: D / l, V };
    const da = Tensor.empty([N, D]); // [N, D]
    if (at.mode === 'dense') {
      const [a, tp, tn, saved] = ctx.saved as [Tensor, Tensor, Tensor, Tensor];
      const dp = Tensor.empty([N, D]); // [N, D]
      const dn = Tensor.empty([N, D]); // [N, D]
      pairBwdKernel(at.kind, 'dense', l).run({ a, tp, tn, saved, gy, da, dp, dn }, params);
      const g: Array<Tensor | null> = [da, dp, dn];
      if (at.hasMask) g.push(null);
      return g;
    }
    const [a, table, pid, nid, saved] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
    const coef = Tensor.empty([N, 2]); // [N, 2]
    pairBwdKernel(at.kind, 'ids', l).run({ a, table, pid, nid, saved, gy, da, coef }, params);
    let dt: Tensor | null = null;
    if (ctx.needsGrad[1]) {
      const index = buildRowIndex(pid, nid, 2, V, saved); // saved starts with the row weights
      dt = scatterRows(index, coef, a, D); // [V, D]
      index.dispose();
    }
    coef.dispose();
    const g: Array<Tensor | null> = [da, dt, null, null];
    if (at.hasMask) g.push(null);
    return g;
  },
});

export interface PairwiseOptions {
  /** Row weights f32 [N] (0/1: which rows count). */
  mask?: Tensor;
  /** 'sum' (default, the official reduction) or 'mean' over the sum of the weights. */
  reduction?: Reduction;
}

/** Official MIP/SP loss, dense form: a, pos, neg [N, D] -> sum_n w_n -log sigmoid(sigmoid(<a,pos>) - sigmoid(<a,neg>)). */
export function pairwiseSigmoidLoss(a: Tensor, pos: Tensor, neg: Tensor, opts: PairwiseOptions = {}): Tensor {
  const inputs = [a, pos, neg];
  if (opts.mask) inputs.push(opts.mask);
  return pairOp.apply(inputs, { kind: 'pairwise_sigmoid', mode: 'dense', reduction: opts.reduction ?? 'sum', hasMask: !!opts.mask });
}

/** Official MIP loss, id form: positives / negatives are table[posIds] / table[negIds]; gradients into the table. */
export function pairwiseSigmoidLossIds(a: Tensor, table: Tensor, posIds: Tensor, negIds: Tensor, opts: PairwiseOptions = {}): Tensor {
  const V = table.shape[0] ?? 0;
  checkIds(posIds, V, 'pairwise_sigmoid', 'positive id'); // ids outside [0, V): an error at the next sync (CHECK_IDS=0: clamped)
  checkIds(negIds, V, 'pairwise_sigmoid', 'negative id');
  const inputs = [a, table, posIds, negIds];
  if (opts.mask) inputs.push(opts.mask);
  return pairOp.apply(inputs, { kind: 'pairwise_sigmoid', mode: 'ids', reduction: opts.reduction ?? 'sum', hasMask: !!opts.mask });
}

export interface BceNegSamplingOptions {
  /** Extra row weights f32 [N], multiplied with (pos > 0). */
  mask?: Tensor;
  /** 'mean' (default, official: over the rows with pos > 0) or 'sum'. */
  reduction?: Reduction;
}

/**
 * Official fine-tuning loss (SASRec BCE, one sampled negative): h [N, D], table [V, D], pos/neg [N] i32;
 * rows with pos <= 0 are padding. Gradients to h and the table.
 */
export function bceNegSampling(h: Tensor, table: Tensor, pos: Tensor, neg: Tensor, opts: BceNegSamplingOptions = {}): Tensor {
  checkIds(neg, table.shape[0] ?? 0, 'bce_neg_sampling', 'negative id'); // (pos <= 0 marks padding rows: unchecked)
  const inputs = [h, table, pos, neg];
  if (opts.mask) inputs.push(opts.mask);
  return pairOp.apply(inputs, { kind: 'bce_neg_sampling', mode: 'ids', reduction: opts.reduction ?? 'mean', hasMask: !!opts.mask });
}

// ------------------------------------------------------------------ multilabel_bce
type TargetMode = 'csr' | 'dense';

/** Tile shape of the multilabel kernels (rows x attributes per forward thread, rows per dx thread, attributes per dattr thread). */
export interface MlTiles {
  TR: number;
  TA: number;
  DXR: number;
  DTA: number;
}
/** Chosen by bench (see the header). TA and DTA are multiples of 4. */
export const ML_TILES: MlTiles = { TR: 8, TA: 8, DXR: 8, DTA: 8 };

const BCE_ELEM = /* wgsl */ `
// (loss, dloss/dz) of BCE(sigmoid(z), t) with the logs clamped at -100; one exp, one log, one division:
// -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z), both = max(+-z, 0) + log1p(e^-|z|).
fn bce_elem(z: f32, t: f32) -> vec2<f32> {
  let e = exp(-abs(z));
  let l1p = select(log(1.0 + e), e * (1.0 - 0.5 * e), e < 1e-3);
  let spNeg = max(-z, 0.0) + l1p; // -log sigmoid(z)
  let spPos = max(z, 0.0) + l1p;  // -log(1 - sigmoid(z))
  let inv = 1.0 / (1.0 + e);
  let sg = select(e * inv, inv, z >= 0.0);  // sigmoid(z)
  let sgn = select(inv, e * inv, z >= 0.0); // sigmoid(-z)
  let loss = t * min(spNeg, 100.0) + (1.0 - t) * min(spPos, 100.0);
  let g = -t * select(0.0, sgn, spNeg < 100.0) + (1.0 - t) * select(0.0, sg, spPos < 100.0);
  return vec2<f32>(loss, g);
}`;

const compactKernel = defineKernel({
  name: 'rows_compact',
  wgsl: /* wgsl */ `
// rowW[n] = mask[n] (1 without a mask); list = [count, then the rows with rowW != 0 in ascending order].
// One workgroup: contiguous chunks per thread, thread 0 scans the 256 chunk counts. Rows [n0, n1) per dispatch
// (more rows than one invocation's loop budget allows: several dispatches, continuing after list[0]).
struct Params { N: u32, hasMask: u32, n0: u32, n1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mask: array<f32>;        // [N] (hasMask)
@group(0) @binding(2) var<storage, read_write> rowW: array<f32>;  // [N]
@group(0) @binding(3) var<storage, read_write> list: array<u32>;  // [N + 1]
var<workgroup> part: array<u32, 256>;
fn weight(n: u32) -> f32 { if (p.hasMask == 1u) { return mask[n]; } return 1.0; }
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3u) {
  let chunk = (p.n1 - p.n0 + 255u) / 256u;
  let lo = min(p.n0 + lid.x * chunk, p.n1);
  let hi = min(lo + chunk, p.n1);
  var before = 0u;
  if (p.n0 != 0u) { before = list[0]; }
  var c = 0u;
  for (var n = lo; n < hi; n = n + 1u) { let w = weight(n); rowW[n] = w; c = c + select(0u, 1u, w != 0.0); }
  part[lid.x] = c;
  workgroupBarrier();
  if (lid.x == 0u) {
    var acc = 0u;
    for (var t = 0u; t < 256u; t = t + 1u) { let v = part[t]; part[t] = acc; acc = acc + v; }
    list[0] = before + acc;
  }
  workgroupBarrier();
  var k = before + part[lid.x];
  for (var n = lo; n < hi; n = n + 1u) { if (rowW[n] != 0.0) { list[1u + k] = n; k = k + 1u; } }
}`,
  grid: () => [1],
  minSizes: ({ N }) => ({ mask: N!, rowW: N!, list: N! + 1 }),
  loopTrips: ({ n0, n1 }) => 2 * loopCost(ceilDiv(n1! - n0!, 256)) + loopCost(256),
});

const csrDenseKernel = defineKernel({
  name: 'csr_to_dense',
  foldable: true,
  wgsl: /* wgsl */ `
// tdense[n, id] = 1 for every CSR entry j of row n (toff[n] <= j < toff[n+1]) with id = tids[j] in [0, A)
// (tdense zero-filled before). One thread per entry; its row by binary search over the offsets. For rows whose
// id lists are too long for the csr forward's per-tile loop (llvmpipe's loop budget).
struct Params { nnz: u32, N: u32, A: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> toff: array<i32>;         // [N + 1]
@group(0) @binding(2) var<storage, read> tids: array<i32>;         // [nnz]
@group(0) @binding(3) var<storage, read_write> tdense: array<f32>; // [N, A]
${ENTRY} {
  ${LINEAR}
  if (i >= p.nnz) { return; }
  let j = i32(i);
  if (j < toff[0] || j >= toff[p.N]) { return; }
  var lo = 0u;
  var hi = p.N;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (toff[mid] <= j) { lo = mid; } else { hi = mid; }
  }
  let id = tids[i];
  if (id >= 0 && u32(id) < p.A) { tdense[lo * p.A + u32(id)] = 1.0; }
}`,
  grid: ({ nnz }) => [ceilDiv(nnz!, WG)],
  minSizes: ({ nnz, N, A }) => ({ toff: N! + 1, tids: nnz!, tdense: N! * A! }),
  loopTrips: ({ N }) => loopCost(Math.ceil(Math.log2(N! + 1)) + 1),
});

const seq = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** Loop cost of the multilabel forward with rows of at most maxLen target ids (CSR). */
function mlFwdTrips(mode: TargetMode, D: number, t: MlTiles, maxLen: number): number {
  const targets = mode === 'csr' ? loopCost(maxLen) : loopCost(4);
  return loopCost(D / lanesFor(D)) + t.TR * (targets + (t.TA / 4) * loopCost(4));
}

function mlFwdKernel(mode: TargetMode, D: number, t: MlTiles): Kernel {
  const l = lanesFor(D);
  const { TR, TA } = t;
  const G = TA / 4;
  const name = `multilabel_bce_fwd_${mode}_d${D}_t${TR}x${TA}`;
  const tBind =
    mode === 'csr'
      ? `@group(0) @binding(3) var<storage, read> toff: array<i32>; // [N + 1] CSR offsets of the positive attribute ids
@group(0) @binding(4) var<storage, read> tids: array<i32>;         // [nnz] positive attribute ids`
      : `@group(0) @binding(3) var<storage, read> tdense: array<f32>; // [N, A] targets`;
  const targets = (r: number): string =>
    mode === 'csr'
      ? `${seq(G).map((g) => `var t${g} = vec4<f32>(0.0); let av${g} = vec4<i32>(i32(a0 + ${4 * g}u)) + vec4<i32>(0, 1, 2, 3);`).join(' ')}
      for (var j = toff[n${r}]; j < toff[n${r} + 1u]; j = j + 1) {
        let id = vec4<i32>(tids[j]);
        ${seq(G).map((g) => `t${g} = select(t${g}, vec4<f32>(1.0), av${g} == id);`).join(' ')}
      }`
      : `${seq(G).map((g) => `var t${g} = vec4<f32>(0.0);`).join(' ')}
      for (var j = 0u; j < 4u; j = j + 1u) {
        ${seq(G).map((g) => `if (a0 + ${4 * g}u + j < p.A) { t${g}[j] = tdense[n${r} * p.A + a0 + ${4 * g}u + j]; }`).join('\n        ')}
      }`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// One thread per tile of ${TR} valid rows x ${TA} attributes: ${TR * TA} dot products over D, BCE against the targets,
// the weighted partial sum of the tile, and (writeR) the residual r[k, a] = w dBCE/dz for the k-th valid row
// (0 for a >= A).
struct Params { N: u32, A: u32, Ag4: u32, Ta: u32, writeR: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${vt(l)}>;      // [N, D]
@group(0) @binding(2) var<storage, read> attr: array<${vt(l)}>;   // [A, D]
${tBind}
@group(0) @binding(5) var<storage, read> rowW: array<f32>;          // [N]
@group(0) @binding(6) var<storage, read> list: array<u32>;          // [N + 1]: count, valid rows
@group(0) @binding(7) var<storage, read_write> part: array<f32>;    // [ceil(N / ${TR}) * Ta] tile partial sums
@group(0) @binding(8) var<storage, read_write> r: array<vec4<f32>>; // [count, Ag4] residual (4 attributes each)
${dConsts(D)}
${dotFn(l)}
${MATH_WGSL}
${BCE_ELEM}
${ENTRY} {
  ${LINEAR}
  let count = list[0];
  let rg = i / p.Ta;
  let ag = i % p.Ta;
  let k0 = rg * ${TR}u;
  if (k0 >= count) { if (i < ((p.N + ${TR - 1}u) / ${TR}u) * p.Ta) { part[i] = 0.0; } return; }
  let a0 = ag * ${TA}u;
  ${seq(TR).map((r) => `let n${r} = list[1u + min(k0 + ${r}u, count - 1u)];`).join('\n  ')}
  ${seq(TA).map((j) => `let ar${j} = min(a0 + ${j}u, p.A - 1u) * D4;`).join('\n  ')}
  ${seq(TR).map((r) => seq(G).map((g) => `var z${r}_${g} = vec4<f32>(0.0);`).join(' ')).join('\n  ')}
  for (var k = 0u; k < D4; k = k + 1u) {
    ${seq(TA).map((j) => `let t${j} = attr[ar${j} + k];`).join(' ')}
    ${seq(TR)
      .map(
        (r) =>
          `{ let xv = x[n${r} * D4 + k]; ${seq(G)
            .map((g) => `z${r}_${g} = z${r}_${g} + vec4<f32>(${seq(4).map((j) => `dotv(xv, t${4 * g + j})`).join(', ')});`)
            .join(' ')} }`,
      )
      .join('\n    ')}
  }
  var psum = 0.0;
  ${seq(TR)
    .map(
      (r) => `if (k0 + ${r}u < count) {
    let w = rowW[n${r}];
    ${targets(r)}
    ${seq(G)
      .map(
        (g) => `{
      var rr = vec4<f32>(0.0);
      for (var j = 0u; j < 4u; j = j + 1u) {
        if (a0 + ${4 * g}u + j < p.A) {
          let e = bce_elem(z${r}_${g}[j], t${g}[j]);
          psum = psum + w * e.x;
          rr[j] = w * e.y;
        }
      }
      if (p.writeR == 1u && ag * ${G}u + ${g}u < p.Ag4) { r[(k0 + ${r}u) * p.Ag4 + ag * ${G}u + ${g}u] = rr; }
    }`,
      )
      .join('\n    ')}
  }`,
    )
    .join('\n  ')}
  part[i] = psum;
}`,
      grid: ({ N, Ta }) => [ceilDiv(ceilDiv(N!, TR) * Ta!, WG)],
      // the D loop, then per row of the tile its target loop (CSR: its id list) and G loops of 4 attributes
      loopTrips: mlFwdTrips(mode, D, t, 0), // CSR: the launcher passes the bound of its id lists (RunOptions.loopTrips)
      minSizes: ({ N, A, Ta, Ag4, writeR }) => ({
        x: N! * (D / l),
        attr: A! * (D / l),
        rowW: N!,
        list: N! + 1,
        part: ceilDiv(N!, TR) * Ta!,
        r: writeR ? N! * Ag4! : 1,
        ...(mode === 'csr' ? { toff: N! + 1 } : { tdense: N! * A! }),
      }),
    }),
  );
}

function mlDxKernel(D: number, t: MlTiles): Kernel {
  const l = lanesFor(D);
  const R = t.DXR;
  const name = `multilabel_bce_dx_d${D}_r${R}`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// dx[n, :] = g sum_a r[k, a] attr[a, :] for the k-th valid row n (dx is zero-filled before), g = gy / den.
// One thread per (${R} valid rows, one ${l === 4 ? 'vec4' : 'float'} of D); 4 attributes per step. Attribute groups
// [ag0, ag1) per dispatch (past the loop budget: several dispatches, each adding its part to dx).
struct Params { N: u32, A: u32, Ag4: u32, ag0: u32, ag1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> attr: array<${vt(l)}>;   // [A, D]
@group(0) @binding(2) var<storage, read> r: array<vec4<f32>>;     // [count, Ag4]
@group(0) @binding(3) var<storage, read> list: array<u32>;        // [N + 1]: count, valid rows
@group(0) @binding(4) var<storage, read> den: array<f32>;         // [1]
@group(0) @binding(5) var<storage, read> gy: array<f32>;          // [1]
@group(0) @binding(6) var<storage, read_write> dx: array<${vt(l)}>; // [N, D]
${dConsts(D)}
${ENTRY} {
  ${LINEAR}
  let count = list[0];
  let rg = i / D4;
  let k = i % D4;
  let k0 = rg * ${R}u;
  if (k0 >= count) { return; }
  let g = gy[0] / den[0];
  ${seq(R).map((r) => `let rr${r} = min(k0 + ${r}u, count - 1u) * p.Ag4; var acc${r} = ${vt(l)}(0.0);`).join('\n  ')}
  for (var ag = p.ag0; ag < p.ag1; ag = ag + 1u) {
    let a0 = ag * 4u;
    ${seq(4).map((j) => `let t${j} = attr[min(a0 + ${j}u, p.A - 1u) * D4 + k];`).join(' ')}
    ${seq(R).map((r) => `{ let v = r[rr${r} + ag]; acc${r} = acc${r} + v.x * t0 + v.y * t1 + v.z * t2 + v.w * t3; }`).join('\n    ')}
  }
  ${seq(R).map((r) => `if (k0 + ${r}u < count) { let o = list[1u + k0 + ${r}u] * D4 + k; if (p.ag0 == 0u) { dx[o] = g * acc${r}; } else { dx[o] = dx[o] + g * acc${r}; } }`).join('\n  ')}
}`,
      grid: ({ N }) => [ceilDiv(ceilDiv(N!, R) * (D / l), WG)],
      loopTrips: ({ ag0, ag1 }) => loopCost(ag1! - ag0!),
      minSizes: ({ N, A, Ag4 }) => ({ attr: A! * (D / l), list: N! + 1, den: 1, gy: 1, dx: N! * (D / l), r: Ag4! }),
    }),
  );
}

function mlDattrKernel(D: number, t: MlTiles): Kernel {
  const l = lanesFor(D);
  const G = t.DTA / 4;
  const name = `multilabel_bce_dattr_d${D}_a${t.DTA}`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// part[s, a, :] = sum_k r[k, a] x[n_k, :] over the valid rows k of chunk s (k in [s*chunk, (s+1)*chunk),
// ascending). One thread per (chunk, ${t.DTA} attributes, one ${l === 4 ? 'vec4' : 'float'} of D); multilabel_bce_dattr_sum
// adds the chunks in order.
struct Params { A: u32, Ag4: u32, Tg: u32, S: u32, chunk: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${vt(l)}>;      // [N, D]
@group(0) @binding(2) var<storage, read> r: array<vec4<f32>>;     // [count, Ag4]
@group(0) @binding(3) var<storage, read> list: array<u32>;        // [N + 1]: count, valid rows
@group(0) @binding(4) var<storage, read_write> part: array<${vt(l)}>; // [S, A, D]
${dConsts(D)}
${ENTRY} {
  ${LINEAR}
  if (i >= p.S * p.Tg * D4) { return; }
  let k = i % D4;
  let tg = (i / D4) % p.Tg;
  let s = i / (D4 * p.Tg);
  let count = list[0];
  let lo = min(s * p.chunk, count);
  let hi = min(lo + p.chunk, count);
  ${seq(G).map((gg) => `let c${gg} = min(tg * ${G}u + ${gg}u, p.Ag4 - 1u);`).join(' ')}
  ${seq(t.DTA).map((j) => `var acc${j} = ${vt(l)}(0.0);`).join(' ')}
  for (var kk = lo; kk < hi; kk = kk + 1u) {
    let xv = x[list[1u + kk] * D4 + k];
    ${seq(G)
      .map((gg) => `{ let v = r[kk * p.Ag4 + c${gg}]; ${seq(4).map((j) => `acc${4 * gg + j} = acc${4 * gg + j} + v.${'xyzw'[j]} * xv;`).join(' ')} }`)
      .join('\n    ')}
  }
  let a0 = tg * ${t.DTA}u;
  ${seq(t.DTA).map((j) => `if (a0 + ${j}u < p.A) { part[(s * p.A + a0 + ${j}u) * D4 + k] = acc${j}; }`).join('\n  ')}
}`,
      grid: ({ S, Tg }) => [ceilDiv(S! * Tg! * (D / l), WG)],
      minSizes: ({ A, S, Ag4 }) => ({ list: 1, part: S! * A! * (D / l), r: Ag4! }),
      loopTrips: ({ chunk }) => loopCost(chunk!),
    }),
  );
}

function mlDattrSumKernel(D: number): Kernel {
  const l = lanesFor(D);
  const name = `multilabel_bce_dattr_sum_d${D}`;
  return cachedKernel(name, () =>
    defineKernel({
      name,
      foldable: true,
      wgsl: /* wgsl */ `
// dattr[a, :] = g sum_s part[s, a, :] (chunks in order), g = gy / den. One thread per (attribute, chunk of D).
struct Params { A: u32, S: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<${vt(l)}>;   // [S, A, D]
@group(0) @binding(2) var<storage, read> den: array<f32>;         // [1]
@group(0) @binding(3) var<storage, read> gy: array<f32>;          // [1]
@group(0) @binding(4) var<storage, read_write> dattr: array<${vt(l)}>; // [A, D]
${dConsts(D)}
${ENTRY} {
  ${LINEAR}
  if (i >= p.A * D4) { return; }
  var acc = ${vt(l)}(0.0);
  for (var s = 0u; s < p.S; s = s + 1u) { acc = acc + part[s * p.A * D4 + i]; }
  dattr[i] = (gy[0] / den[0]) * acc;
}`,
      grid: ({ A }) => [ceilDiv(A! * (D / l), WG)],
      minSizes: ({ A, S }) => ({ part: S! * A! * (D / l), den: 1, gy: 1, dattr: A! * (D / l) }),
      loopTrips: ({ S }) => loopCost(S!),
    }),
  );
}

interface MlAttrs {
  mode: TargetMode;
  /** CSR: the longest id list (bounds the forward's per-row loop), when the caller knows it. */
  maxLen?: number;
  reduction: Reduction;
  hasMask: boolean;
  tiles: MlTiles;
}

const mlOp = defineOp<MlAttrs>({
  name: 'multilabel_bce',
  forward(ctx, inputs, at) {
    const [x, attr] = inputs as [Tensor, Tensor];
    if (x.ndim !== 2 || attr.ndim !== 2 || x.shape[1] !== attr.shape[1] || x.dtype !== 'f32' || attr.dtype !== 'f32') {
      throw new Error(`multiLabelBce: x ${x.describe()} and attrTable ${attr.describe()} must be f32 [N, D] and [A, D]`);
    }
    const [N, D] = x.shape as [number, number];
    const A = attr.shape[0]!;
    if (N === 0 || D === 0 || A === 0) throw new Error(`multiLabelBce: empty input (x ${x.describe()}, attrTable ${attr.describe()})`);
    const nT = at.mode === 'csr' ? 2 : 1;
    const mask = at.hasMask ? inputs[2 + nT]! : null;
    if (mask && (mask.dtype !== 'f32' || mask.size !== N)) throw new Error(`multiLabelBce: mask ${mask.describe()} must be f32 [${N}]`);
    const { TR, TA } = at.tiles;
    const Ag4 = ceilDiv(A, 4);
    const Ta = ceilDiv(A, TA);
    const writeR = ctx.recording;
    const rowW = Tensor.empty([N]); // [N]
    const list = Tensor.empty([N + 1], 'u32'); // [N + 1]: count, valid rows
    for (const [n0, n1] of ranges(N, maxLoopIterations(loopBudget(), 1, loopCost(256) + 2) * 256)) {
      compactKernel.run({ mask: mask ?? x, rowW, list }, { N, hasMask: mask ? 1 : 0, n0, n1 });
    }
    const part = Tensor.empty([ceilDiv(N, TR) * Ta]); // [N / TR * A / TA] tile partial sums
    const r = Tensor.empty(writeR ? [N, Ag4 * 4] : [4]); // [count <= N, A rounded up to 4] residual
    const params = { N, A, Ag4, Ta, writeR: writeR ? 1 : 0 };
    if (at.mode === 'csr') {
      const [toff, tids] = [inputs[2]!, inputs[3]!];
      if (toff.dtype !== 'i32' || toff.size !== N + 1) throw new Error(`multiLabelBce: target offsets ${toff.describe()} must be i32 [${N + 1}]`);
      if (tids.dtype !== 'i32') throw new Error(`multiLabelBce: target ids ${tids.describe()} must be i32`);
      // Each thread loops over the id lists of its TR rows: bounded by the longest list (csrTargets records it)
      // or else by all ids. Lists too long for the loop budget go through dense targets instead.
      const maxLen = Math.min(at.maxLen ?? tids.size, tids.size);
      const trips = mlFwdTrips('csr', D, at.tiles, maxLen);
      if (trips <= loopBudget()) {
        // An empty id list binds the offsets instead (never read: every row's range is empty).
        mlFwdKernel('csr', D, at.tiles).run({ x, attr, toff, tids: tids.size ? tids : toff, rowW, list, part, r }, params, { loopTrips: trips });
      } else {
        const tdense = Tensor.empty([N, A]); // [N, A] 0/1 targets
        fillInPlace(tdense, 0);
        csrDenseKernel.run({ toff, tids, tdense }, { nnz: tids.size, N, A });
        mlFwdKernel('dense', D, at.tiles).run({ x, attr, tdense, rowW, list, part, r }, params);
        tdense.dispose();
      }
    } else {
      const t = inputs[2]!;
      if (t.dtype !== 'f32' || t.size !== N * A) throw new Error(`multiLabelBce: targets ${t.describe()} must be f32 [${N}, ${A}]`);
      mlFwdKernel('dense', D, at.tiles).run({ x, attr, tdense: t, rowW, list, part, r }, params);
    }
    const { loss, den } = reduceLoss({ t: part }, { t: rowW }, at.reduction === 'mean', A);
    part.dispose();
    if (ctx.recording) {
      ctx.save(x, attr, r, list, den);
      ctx.extra.dims = { N, D, A, Ag4 };
    }
    r.dispose();
    rowW.dispose();
    list.dispose();
    den.dispose();
    return loss;
  },
  backward(ctx, gy) {
    const [x, attr, r, list, den] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
    const { N, D, A, Ag4 } = ctx.extra.dims as { N: number; D: number; A: number; Ag4: number };
    const t = ctx.attrs.tiles;
    let dx: Tensor | null = null;
    let dattr: Tensor | null = null;
    if (ctx.needsGrad[0]) {
      dx = zeros([N, D]); // [N, D]: masked rows stay 0
      for (const [ag0, ag1] of ranges(Ag4, maxLoopIterations(loopBudget()))) {
        mlDxKernel(D, t).run({ attr, r, list, den, gy, dx }, { N, A, Ag4, ag0, ag1 });
      }
    }
    if (ctx.needsGrad[1]) {
      // Split the row loop into S chunks (about 8k threads in all, >= 32 rows per chunk), summed in order after.
      const Tg = ceilDiv(A, t.DTA);
      const threads = Tg * (D / lanesFor(D));
      // More chunks when a chunk would pass the loop budget (llvmpipe: 65,535 iterations per invocation).
      const S = Math.max(1, Math.min(16, Math.ceil(8192 / threads), Math.ceil(N / 32)), Math.ceil(N / Math.max(1, maxLoopIterations(loopBudget()))));
      const part = Tensor.empty([S, A, D]); // [S, A, D]
      mlDattrKernel(D, t).run({ x, r, list, part }, { A, Ag4, Tg, S, chunk: ceilDiv(N, S) });
      dattr = Tensor.empty([A, D]); // [A, D]
      mlDattrSumKernel(D).run({ part, den, gy, dattr }, { A, S });
      part.dispose();
    }
    const g: Array<Tensor | null> = [dx, dattr, null];
    if (ctx.attrs.mode === 'csr') g.push(null);
    if (ctx.attrs.hasMask) g.push(null);
    return g;
  },
});

/** Positive attribute ids per row as CSR: row n's ids are ids[offsets[n] .. offsets[n+1]). */
export interface CsrTargets {
  offsets: Tensor; // [N + 1] i32
  ids: Tensor; // [nnz] i32
  /** The longest row list (csrTargets() records it): bounds the forward's loops; absent: nnz is assumed. */
  maxLen?: number;
}

/** Upload per-row lists of positive ids as CsrTargets (host-side helper for data loaders and tests). */
export function csrTargets(lists: ReadonlyArray<ArrayLike<number>>): CsrTargets {
  const offsets = new Int32Array(lists.length + 1);
  for (let n = 0; n < lists.length; n++) offsets[n + 1] = offsets[n]! + lists[n]!.length;
  const ids = new Int32Array(Math.max(1, offsets[lists.length]!));
  let k = 0;
  for (const l of lists) for (let j = 0; j < l.length; j++) ids[k++] = l[j]!;
  const idsT = Tensor.from(ids.subarray(0, Math.max(k, 1)), [Math.max(k, 1)]); // [nnz] (one dummy 0 when empty)
  // The dummy id is outside every row's range, so it is never read.
  const maxLen = lists.reduce((m, l) => Math.max(m, l.length), 0);
  return { offsets: Tensor.from(offsets, [lists.length + 1]), ids: idsT, maxLen }; // [N + 1], [nnz]
}

export interface MultiLabelOptions {
  /** Row weights f32 [N] (0/1: which positions count). */
  mask?: Tensor;
  /** 'sum' (default, official) or 'mean' over sum(w) * A elements. */
  reduction?: Reduction;
  /** Override the tile shape (benchmarks). */
  tiles?: MlTiles;
}

/**
 * Official AAP/MAP loss: sum over valid rows and ALL attributes of BCE(sigmoid(<x_n, attr_a>), t_na), logs clamped
 * at -100. x [N, D], attrTable [A, D], targets CSR (offsets [N+1], ids [nnz]) or dense f32 [N, A].
 * Gradients to x and the whole attribute table.
 */
export function multiLabelBce(x: Tensor, attrTable: Tensor, targets: CsrTargets | Tensor, opts: MultiLabelOptions = {}): Tensor {
  const dense = targets instanceof Tensor;
  const inputs = dense ? [x, attrTable, targets] : [x, attrTable, targets.offsets, targets.ids];
  if (opts.mask) inputs.push(opts.mask);
  const tiles = opts.tiles ?? ML_TILES;
  if (tiles.TA % 4 || tiles.DTA % 4) throw new Error(`multiLabelBce: tiles.TA and tiles.DTA must be multiples of 4`);
  const maxLen = dense ? undefined : targets.maxLen;
  return mlOp.apply(inputs, { mode: dense ? 'dense' : 'csr', reduction: opts.reduction ?? 'sum', hasMask: !!opts.mask, tiles, ...(maxLen !== undefined ? { maxLen } : {}) });
}

// ------------------------------------------------------------------ float64 references
const clampInt = (x: number, lo: number, hi: number): number => Math.min(Math.max(Math.trunc(x), lo), hi);
export const refSigmoid = (x: number): number => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
export const refSoftplus = (x: number): number => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));

function dotRows(a: F64, i: number, b: F64, j: number): number {
  const D = a.shape[1]!;
  let s = 0;
  for (let d = 0; d < D; d++) s += a.data[i * D + d]! * b.data[j * D + d]!;
  return s;
}

/** Row loss and (dl/dsp, dl/dsn) of the pairwise kinds, float64 (PyTorch semantics; see the header). */
export function refPairRow(kind: PairKind, sp: number, sn: number): [number, number, number] {
  const σ = refSigmoid;
  if (kind === 'pairwise_sigmoid') {
    const d = σ(sp) - σ(sn);
    const logp = -refSoftplus(-d); // log sigmoid(d)
    const clamped = logp < -100;
    const dd = clamped ? 0 : -σ(-d);
    return [-Math.max(logp, -100), dd * σ(sp) * σ(-sp), -dd * σ(sn) * σ(-sn)];
  }
  const a = σ(sp);
  const b = σ(-sn);
  return [-Math.log(a + 1e-24) - Math.log(b + 1e-24), -σ(-sp) * (a / (a + 1e-24)), σ(sn) * (b / (b + 1e-24))];
}

export interface RefPairInputs {
  kind: PairKind;
  a: F64;
  /** Dense form: pos and neg [N, D]. */
  pos?: F64;
  neg?: F64;
  /** Id form: table [V, D] with posIds / negIds [N]. */
  table?: F64;
  posIds?: F64;
  negIds?: F64;
  mask?: F64 | null;
  reduction: Reduction;
}

function pairRows(x: RefPairInputs): { N: number; w: number[]; pr: (n: number) => [F64, number]; nr: (n: number) => [F64, number] } {
  const N = x.a.shape[0]!;
  const V = x.table?.shape[0] ?? 0;
  const w = Array.from({ length: N }, (_, n) => {
    let v = x.mask ? x.mask.data[n]! : 1;
    if (x.kind === 'bce_neg_sampling' && !(x.posIds!.data[n]! > 0)) v = 0;
    return v;
  });
  return {
    N,
    w,
    pr: (n) => (x.table ? [x.table, clampInt(x.posIds!.data[n]!, 0, V - 1)] : [x.pos!, n]),
    nr: (n) => (x.table ? [x.table, clampInt(x.negIds!.data[n]!, 0, V - 1)] : [x.neg!, n]),
  };
}

/** Float64 pairwise_sigmoid / bce_neg_sampling loss (shape []). */
export function refPairLoss(x: RefPairInputs): F64 {
  const R = pairRows(x);
  let L = 0;
  let W = 0;
  for (let n = 0; n < R.N; n++) {
    const w = R.w[n]!;
    W += w;
    if (w === 0) continue;
    const [P, i] = R.pr(n);
    const [Q, j] = R.nr(n);
    L += w * refPairRow(x.kind, dotRows(x.a, n, P, i), dotRows(x.a, n, Q, j))[0];
  }
  const den = x.reduction === 'mean' && W !== 0 ? W : 1;
  return { data: Float64Array.of(L / den), shape: [] };
}

/** Float64 gradients of refPairLoss times gy: { da, dpos, dneg } (dense) or { da, dtable } (ids). */
export function refPairGrad(x: RefPairInputs, gy: number): { da: F64; dpos?: F64; dneg?: F64; dtable?: F64 } {
  const R = pairRows(x);
  const D = x.a.shape[1]!;
  const W = R.w.reduce((s, v) => s + v, 0);
  const den = x.reduction === 'mean' && W !== 0 ? W : 1;
  const da = ref.zerosF64(x.a.shape);
  const dpos = x.table ? null : ref.zerosF64(x.a.shape);
  const dneg = x.table ? null : ref.zerosF64(x.a.shape);
  const dtable = x.table ? ref.zerosF64(x.table.shape) : null;
  for (let n = 0; n < R.N; n++) {
    const w = R.w[n]!;
    if (w === 0) continue;
    const [P, i] = R.pr(n);
    const [Q, j] = R.nr(n);
    const [, cp0, cn0] = refPairRow(x.kind, dotRows(x.a, n, P, i), dotRows(x.a, n, Q, j));
    const cp = (gy * w * cp0) / den;
    const cn = (gy * w * cn0) / den;
    for (let d = 0; d < D; d++) {
      const av = x.a.data[n * D + d]!;
      da.data[n * D + d] = cp * P.data[i * D + d]! + cn * Q.data[j * D + d]!;
      if (dtable) {
        dtable.data[i * D + d]! += cp * av;
        dtable.data[j * D + d]! += cn * av;
      } else {
        dpos!.data[n * D + d] = cp * av;
        dneg!.data[n * D + d] = cn * av;
      }
    }
  }
  return dtable ? { da, dtable } : { da, dpos: dpos!, dneg: dneg! };
}

/** BCE(sigmoid(z), t) with PyTorch's log clamp at -100 (logs evaluated stably), and its derivative in z. */
export function refBceElem(z: number, t: number): [number, number] {
  const lp = -refSoftplus(-z);
  const ln = -refSoftplus(z);
  const loss = -(t * Math.max(lp, -100) + (1 - t) * Math.max(ln, -100));
  const g = -t * (lp > -100 ? refSigmoid(-z) : 0) + (1 - t) * (ln > -100 ? refSigmoid(z) : 0);
  return [loss, g];
}

/** Float64 multi-label BCE: x [N, D], attr [A, D], t [N, A] dense targets (use refCsrToDense for CSR). */
export function refMultiLabelBce(x: F64, attr: F64, t: F64, mask: F64 | null, reduction: Reduction): F64 {
  const [N] = x.shape as [number];
  const A = attr.shape[0]!;
  let L = 0;
  let W = 0;
  for (let n = 0; n < N; n++) {
    const w = mask ? mask.data[n]! : 1;
    W += w;
    if (w === 0) continue;
    for (let a = 0; a < A; a++) L += w * refBceElem(dotRows(x, n, attr, a), t.data[n * A + a]!)[0];
  }
  const den = reduction === 'mean' && W !== 0 ? W * A : 1;
  return { data: Float64Array.of(L / den), shape: [] };
}

/** Float64 gradients of refMultiLabelBce times gy: [dx, dattr]. */
export function refMultiLabelBceGrad(x: F64, attr: F64, t: F64, mask: F64 | null, reduction: Reduction, gy: number): [F64, F64] {
  const [N, D] = x.shape as [number, number];
  const A = attr.shape[0]!;
  let W = 0;
  for (let n = 0; n < N; n++) W += mask ? mask.data[n]! : 1;
  const den = reduction === 'mean' && W !== 0 ? W * A : 1;
  const dx = ref.zerosF64(x.shape);
  const dattr = ref.zerosF64(attr.shape);
  for (let n = 0; n < N; n++) {
    const w = mask ? mask.data[n]! : 1;
    if (w === 0) continue;
    for (let a = 0; a < A; a++) {
      const g = (gy * w * refBceElem(dotRows(x, n, attr, a), t.data[n * A + a]!)[1]) / den;
      for (let d = 0; d < D; d++) {
        dx.data[n * D + d]! += g * attr.data[a * D + d]!;
        dattr.data[a * D + d]! += g * x.data[n * D + d]!;
      }
    }
  }
  return [dx, dattr];
}

/** Dense [N, A] 0/1 targets from per-row positive id lists (ids outside [0, A) are ignored, as in the kernel). */
export function refCsrToDense(lists: ReadonlyArray<ArrayLike<number>>, A: number): F64 {
  const t = ref.zerosF64([lists.length, A]);
  lists.forEach((l, n) => {
    for (let j = 0; j < l.length; j++) {
      const a = l[j]!;
      if (a >= 0 && a < A) t.data[n * A + a] = 1;
    }
  });
  return t;
}
