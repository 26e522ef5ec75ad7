// kernels/common_pairs.ts — two-score row losses: the builder behind pairwise_sigmoid (pairwise.ts) and
// bce_neg_sampling (bce_neg_sampling.ts). A family gives its row loss in WGSL; pairScoreLoss() makes its
// kernels, its autograd op and its float64 reference.
//
// Per row n with weight w_n (mask, default 1; a `gated` family also zeroes rows with posIds[n] <= 0, padding):
//   sp = <a_n, pos_n>,  sn = <a_n, neg_n>,  l_n = row_loss(sp, sn)
//   loss = sum_n w_n l_n / den,  den = sum_n w_n for reduction 'mean' (1 when that is 0), 1 for 'sum'.
//   Dense form: a, pos, neg [N, D]. Id form: pos_n = table[posIds[n]], neg_n = table[negIds[n]] (ids clamped to
//   [0, V)), gradients scattered into the table deterministically (scatter.ts's row index + rows scatter).
// Backward: (dl/dsp, dl/dsn) = row_grad(sp, sn) from the saved scores, c = g w_n / den (dl/dsp, dl/dsn);
//   da = c.x pos + c.y neg; dense: dpos = c.x a, dneg = c.y a; ids: coef[n] = c, dtable = rows scatter of coef * a.
// Kernels (`<family>_fwd{lanes=4,mode=ids}`, `<family>_bwd{...}`; vec4 loads when D % 4 == 0):
//   fwd  one thread per row for the two dot products (saves the scores: rows = [w, w * l, sp, sn] planes);
//        D4 slots [k0, k1) per dispatch past llvmpipe's loop budget, the partial dots carried in the planes;
//   bwd  one thread per (row, slot of D); no loop. Masked rows cost one weight read and their stores.
//   Then common.ts's loss_reduce (fixed order). Memory traffic: forward reads 3ND (+2N ids), writes 4N; backward
//   reads 3ND, writes 3ND (dense) or ND + 2N + VD (ids).
import { ceilDiv, chunkRanges, defineOp, loopBudget, loopCost, maxLoopIterations, ref, Tensor, type Op } from '../engine/index.js';
import { concatFlat, dotvWgsl, foldedIndex, kernelFamily, lanesFor, main1d, reduceLoss, SIGMOID_WGSL, SOFTPLUS_WGSL, vecType, type Lanes, type Reduction } from './common.js';
import { buildRowIndex, scatterRows } from './scatter.js';

type F64 = ref.F64;
const WG = 64;

export type PairMode = 'dense' | 'ids';

export interface PairLossSpec {
  /** Family name: the op's name and the kernels' base (`${name}_fwd`, `${name}_bwd`). */
  name: string;
  /**
   * WGSL `fn row_loss(sp: f32, sn: f32) -> f32` and `fn row_grad(sp: f32, sn: f32) -> vec2<f32>` (dl/dsp, dl/dsn);
   * sigmoid_ and softplus (common.ts) are in scope.
   */
  rowWgsl: string;
  /** Rows with posIds[n] <= 0 are padding (weight 0): the id form only. */
  gated: boolean;
  /** The public function's name in error messages, per form. */
  apiName: (mode: PairMode) => string;
}

const PARAMS_FWD = 'struct Params { N: u32, D4: u32, V: u32, hasMask: u32, k0: u32, k1: u32 }';

/** The second operands of the forward: the dense rows, or the table and the two id lists. */
const FWD_SOURCES = {
  dense: (T: string): string => /* wgsl */ `
@group(0) @binding(2) var<storage, read> tp: array<${T}>;   // [N, D] positives
@group(0) @binding(3) var<storage, read> tn: array<${T}>;   // [N, D] negatives
fn pos_row(i: u32) -> u32 { return i * p.D4; }
fn neg_row(i: u32) -> u32 { return i * p.D4; }
fn pos_at(r: u32) -> ${T} { return tp[r]; }
fn neg_at(r: u32) -> ${T} { return tn[r]; }`,
  ids: (T: string): string => /* wgsl */ `
@group(0) @binding(2) var<storage, read> table: array<${T}>; // [V, D]
@group(0) @binding(3) var<storage, read> pid: array<i32>;       // [N] positive ids
@group(0) @binding(4) var<storage, read> nid: array<i32>;       // [N] negative ids
fn pos_row(i: u32) -> u32 { return u32(clamp(pid[i], 0, i32(p.V) - 1)) * p.D4; }
fn neg_row(i: u32) -> u32 { return u32(clamp(nid[i], 0, i32(p.V) - 1)) * p.D4; }
fn pos_at(r: u32) -> ${T} { return table[r]; }
fn neg_at(r: u32) -> ${T} { return table[r]; }`,
};

/** The backward's bindings after a (binding 1) and its per-thread body, per form; `c` = g w (dl/dsp, dl/dsn). */
const BWD_FORMS = {
  dense: {
    bindings: (T: string): string => /* wgsl */ `
@group(0) @binding(2) var<storage, read> tp: array<${T}>;     // [N, D]
@group(0) @binding(3) var<storage, read> tn: array<${T}>;     // [N, D]
@group(0) @binding(4) var<storage, read> saved: array<f32>;       // [4N + 1]: w, w * loss, sp, sn, den
@group(0) @binding(5) var<storage, read> gy: array<f32>;          // [1]
@group(0) @binding(6) var<storage, read_write> da: array<${T}>; // [N, D]
@group(0) @binding(7) var<storage, read_write> dp: array<${T}>; // [N, D]
@group(0) @binding(8) var<storage, read_write> dn: array<${T}>; // [N, D]`,
    body: (T: string): string => /* wgsl */ `if (w == 0.0) { da[i] = ${T}(0.0); dp[i] = ${T}(0.0); dn[i] = ${T}(0.0); return; }
  let c = gw * row_grad(saved[2u * p.N + n], saved[3u * p.N + n]);
  let av = a[i];
  da[i] = c.x * tp[i] + c.y * tn[i];
  dp[i] = c.x * av;
  dn[i] = c.y * av;`,
  },
  ids: {
    bindings: (T: string): string => /* wgsl */ `
@group(0) @binding(2) var<storage, read> table: array<${T}>;  // [V, D]
@group(0) @binding(3) var<storage, read> pid: array<i32>;          // [N]
@group(0) @binding(4) var<storage, read> nid: array<i32>;          // [N]
@group(0) @binding(5) var<storage, read> saved: array<f32>;        // [4N + 1]: w, w * loss, sp, sn, den
@group(0) @binding(6) var<storage, read> gy: array<f32>;           // [1]
@group(0) @binding(7) var<storage, read_write> da: array<${T}>; // [N, D]
@group(0) @binding(8) var<storage, read_write> coef: array<f32>;    // [N, 2] dloss/dsp, dloss/dsn`,
    body: (T: string): string => /* wgsl */ `if (w == 0.0) {
    da[i] = ${T}(0.0);
    if (k == 0u) { coef[2u * n] = 0.0; coef[2u * n + 1u] = 0.0; }
    return;
  }
  let c = gw * row_grad(saved[2u * p.N + n], saved[3u * p.N + n]);
  let pr = u32(clamp(pid[n], 0, i32(p.V) - 1)) * p.D4;
  let nr = u32(clamp(nid[n], 0, i32(p.V) - 1)) * p.D4;
  da[i] = c.x * table[pr + k] + c.y * table[nr + k];
  if (k == 0u) { coef[2u * n] = c.x; coef[2u * n + 1u] = c.y; }`,
  },
};

interface PairAttrs {
  mode: PairMode;
  reduction: Reduction;
  hasMask: boolean;
}

export interface PairLoss {
  /** The autograd op: inputs [a, pos, neg, mask?] (dense) or [a, table, posIds, negIds, mask?] (ids). */
  op: Op<PairAttrs>;
  apply(mode: PairMode, inputs: Tensor[], reduction: Reduction, hasMask: boolean): Tensor;
}

/** The kernels and the op of a two-score row loss (see the header). */
export function pairScoreLoss(spec: PairLossSpec): PairLoss {
  const gate = spec.gated ? 'if (pid[i] <= 0) { w = 0.0; }' : '';
  const fwdKernel = kernelFamily(`${spec.name}_fwd`, ({ mode, lanes: l }: { mode: PairMode; lanes: Lanes }) => {
    const T = vecType(l);
    return {
      foldable: true,
      wgsl: /* wgsl */ `
// One thread per row: sp = <a, pos>, sn = <a, neg>, weighted row loss. rows = [w, w * l, sp, sn] planes.
// D4 slots [k0, k1) per dispatch (rows longer than one invocation's loop budget: several dispatches, the
// partial dots carried in the sp / sn planes; the loss written by the last).
${PARAMS_FWD}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<${T}>;     // [N, D]
${FWD_SOURCES[mode](T)}
@group(0) @binding(5) var<storage, read> mask: array<f32>;       // [N] row weights (hasMask)
@group(0) @binding(6) var<storage, read_write> rows: array<f32>; // [4, N]: w, w * loss, sp, sn
${dotvWgsl(l)}
${SIGMOID_WGSL}
${SOFTPLUS_WGSL}
${spec.rowWgsl}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.N) { return; }
  var w = 1.0;
  if (p.hasMask == 1u) { w = mask[i]; }
  ${mode === 'ids' ? gate : ''}
  rows[i] = w;
  if (w == 0.0) { rows[p.N + i] = 0.0; rows[2u * p.N + i] = 0.0; rows[3u * p.N + i] = 0.0; return; }
  let pr = pos_row(i);
  let nr = neg_row(i);
  var sp = 0.0;
  var sn = 0.0;
  if (p.k0 != 0u) { sp = rows[2u * p.N + i]; sn = rows[3u * p.N + i]; }
  for (var k = p.k0; k < p.k1; k = k + 1u) {
    let av = a[i * p.D4 + k];
    sp = sp + dotv(av, pos_at(pr + k));
    sn = sn + dotv(av, neg_at(nr + k));
  }
  rows[2u * p.N + i] = sp;
  rows[3u * p.N + i] = sn;
  if (p.k1 == p.D4) { rows[p.N + i] = w * row_loss(sp, sn); }
}`,
      grid: ({ N }) => [ceilDiv(N!, WG)],
      loopTrips: ({ k0, k1 }) => loopCost(k1! - k0!),
      minSizes: ({ N, D4 }) => ({ a: N! * D4!, mask: N!, rows: 4 * N!, ...(mode === 'ids' ? { pid: N!, nid: N! } : { tp: N! * D4!, tn: N! * D4! }) }),
    };
  });

  const bwdKernel = kernelFamily(`${spec.name}_bwd`, ({ mode, lanes: l }: { mode: PairMode; lanes: Lanes }) => {
    const T = vecType(l);
    return {
      foldable: true,
      wgsl: /* wgsl */ `
// One thread per (row, chunk of D): c = g w_n (dl/dsp, dl/dsn) recomputed from the saved scores;
// da = c.x pos + c.y neg, ${mode === 'dense' ? 'dpos = c.x a, dneg = c.y a' : 'coef[n] = c (for the table scatter)'}.
struct Params { N: u32, D4: u32, V: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<${T}>;      // [N, D]
${BWD_FORMS[mode].bindings(T)}
${SIGMOID_WGSL}
${SOFTPLUS_WGSL}
${spec.rowWgsl}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.N * p.D4) { return; }
  let n = i / p.D4;
  let k = i % p.D4;
  let w = saved[n];
  let gw = gy[0] * w / saved[4u * p.N];
  ${BWD_FORMS[mode].body(T)}
}`,
      grid: ({ N, D4 }) => [ceilDiv(N! * D4!, WG)],
      minSizes: ({ N, D4 }) => ({ a: N! * D4!, saved: 4 * N! + 1, gy: 1, da: N! * D4! }),
    };
  });

  const op = defineOp<PairAttrs>({
    name: spec.name,
    forward(ctx, inputs, at) {
      const [a, p1, p2, p3] = inputs as [Tensor, Tensor, Tensor, Tensor | undefined];
      const what = spec.apiName(at.mode);
      if (a.ndim !== 2 || a.dtype !== 'f32') throw new Error(`${what}: a ${a.describe()} must be f32 [N, D]`);
      const [N, D] = a.shape as [number, number];
      if (N === 0 || D === 0) throw new Error(`${what}: empty input ${a.describe()}`);
      const mask = at.hasMask ? inputs[at.mode === 'ids' ? 4 : 3]! : null;
      if (mask && (mask.dtype !== 'f32' || mask.size !== N)) throw new Error(`${what}: mask ${mask.describe()} must be f32 [${N}]`);
      const l = lanesFor(D);
      const rows = Tensor.empty([4, N]); // [4, N]: w, w * loss, sp, sn
      let V = N;
      let bindings: Record<string, Tensor>;
      if (at.mode === 'dense') {
        for (const [nm, t] of [['pos', p1], ['neg', p2]] as const) {
          if (t.dtype !== 'f32' || t.ndim !== 2 || t.shape[0] !== N || t.shape[1] !== D) throw new Error(`${what}: ${nm} ${t.describe()} must be f32 [${N}, ${D}]`);
        }
        bindings = { a, tp: p1, tn: p2, mask: mask ?? a, rows };
      } else {
        const table = p1;
        if (table.dtype !== 'f32' || table.ndim !== 2 || table.shape[1] !== D || table.shape[0] === 0) throw new Error(`${what}: table ${table.describe()} must be f32 [V, ${D}]`);
        V = table.shape[0]!;
        for (const [nm, t] of [['posIds', p2], ['negIds', p3!]] as const) {
          if (t.dtype !== 'i32' || t.size !== N) throw new Error(`${what}: ${nm} ${t.describe()} must be i32 [${N}]`);
        }
        bindings = { a, table, pid: p2, nid: p3!, mask: mask ?? a, rows };
      }
      for (const [k0, k1] of chunkRanges(D / l, maxLoopIterations(loopBudget()))) {
        fwdKernel({ mode: at.mode, lanes: l }).run(bindings, { N, D4: D / l, V, hasMask: mask ? 1 : 0, k0, k1 });
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
        bwdKernel({ mode: 'dense', lanes: l }).run({ a, tp, tn, saved, gy, da, dp, dn }, params);
        const g: Array<Tensor | null> = [da, dp, dn];
        if (at.hasMask) g.push(null);
        return g;
      }
      const [a, table, pid, nid, saved] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
      const coef = Tensor.empty([N, 2]); // [N, 2]
      bwdKernel({ mode: 'ids', lanes: l }).run({ a, table, pid, nid, saved, gy, da, coef }, params);
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

  return { op, apply: (mode, inputs, reduction, hasMask) => op.apply(inputs, { mode, reduction, hasMask }) };
}

// ------------------------------------------------------------------ float64 reference
/** Row loss and (dl/dsp, dl/dsn) of a family, float64. */
export type RefPairRow = (sp: number, sn: number) => [number, number, number];

export interface RefPairScoreInputs {
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

const clampInt = (x: number, lo: number, hi: number): number => Math.min(Math.max(Math.trunc(x), lo), hi);

function dotRows(a: F64, i: number, b: F64, j: number): number {
  const D = a.shape[1]!;
  let s = 0;
  for (let d = 0; d < D; d++) s += a.data[i * D + d]! * b.data[j * D + d]!;
  return s;
}

function pairRows(x: RefPairScoreInputs, gated: boolean): { N: number; w: number[]; pr: (n: number) => [F64, number]; nr: (n: number) => [F64, number] } {
  const N = x.a.shape[0]!;
  const V = x.table?.shape[0] ?? 0;
  const w = Array.from({ length: N }, (_, n) => {
    let v = x.mask ? x.mask.data[n]! : 1;
    if (gated && !(x.posIds!.data[n]! > 0)) v = 0;
    return v;
  });
  return {
    N,
    w,
    pr: (n) => (x.table ? [x.table, clampInt(x.posIds!.data[n]!, 0, V - 1)] : [x.pos!, n]),
    nr: (n) => (x.table ? [x.table, clampInt(x.negIds!.data[n]!, 0, V - 1)] : [x.neg!, n]),
  };
}

/** Float64 loss (shape []) of a two-score family with row function `row`. */
export function refPairScoreLoss(x: RefPairScoreInputs, row: RefPairRow, gated: boolean): F64 {
  const R = pairRows(x, gated);
  let L = 0;
  let W = 0;
  for (let n = 0; n < R.N; n++) {
    const w = R.w[n]!;
    W += w;
    if (w === 0) continue;
    const [P, i] = R.pr(n);
    const [Q, j] = R.nr(n);
    L += w * row(dotRows(x.a, n, P, i), dotRows(x.a, n, Q, j))[0];
  }
  const den = x.reduction === 'mean' && W !== 0 ? W : 1;
  return { data: Float64Array.of(L / den), shape: [] };
}

/** Float64 gradients of refPairScoreLoss times gy: { da, dpos, dneg } (dense) or { da, dtable } (ids). */
export function refPairScoreGrad(x: RefPairScoreInputs, row: RefPairRow, gated: boolean, gy: number): { da: F64; dpos?: F64; dneg?: F64; dtable?: F64 } {
  const R = pairRows(x, gated);
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
    const [, cp0, cn0] = row(dotRows(x.a, n, P, i), dotRows(x.a, n, Q, j));
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
