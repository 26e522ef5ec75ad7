// kernels/euclid_score.ts — euclid_score: AttRec's distance between a user and candidate items (ATTREC_SPEC §2.4),
// fused, with a deterministic backward.
//
//   score[b, n] = alpha * ||u[b] - X[i]||^2 + (1 - alpha) * ||m[b] - Q[i]||^2,   i = idx[b, n]
//
//   u, m [B, D] f32 (long-term user vector P[user], short-term intent m); X, Q [V, D] f32 (the long-term and the
//   short-term item tables); idx [B, N] i32; score [B, N] f32. A distance: smaller = more likely (AttRec ranks by
//   -score). Differences are taken before squaring (no ||u||^2 - 2u.X + ||X||^2 expansion), so large
//   magnitudes (+-1000) keep their precision.
//
// Kernels:
//   euclid_score            forward. One thread per (b, n) with a serial loop over D (two running sums). No
//                           barriers (expensive on llvmpipe); on a real GPU the X/Q row reads are gathers either
//                           way and u/m rows are shared by the N threads of a user through the cache.
//                           Reads B*N*(2D gathered + 2D cached) floats, writes B*N.
//   euclid_score_bwd_rows   du[b, d] = 2*alpha * sum_n g[b,n] (u[b,d] - X[i,d]); dm likewise with m, Q, 1-alpha.
//                           One thread per (b, d), a serial loop over n (fixed order). Reads 2*B*N*D, writes 2*B*D.
//   inverse index           CSR of the B*N positions by item (offsets [V+1], perm [P], positions ascending inside
//                           an item): kernels/scatter.ts buildInverseIndex (a stable GPU radix sort, no atomics,
//                           no readback; ids outside [0, V) go to its sink segment).
//   euclid_score_bwd_table  dX[i, d] = 2*alpha * sum_{p in seg(i)} g[p] (X[i,d] - u[b(p),d]); dQ likewise.
//                           One thread per (i, d) over its segment in position order; no float atomics. Writes
//                           every row (zeros for rows no pair hits): 2*V*D floats, reads 2*P*D. The CSR's offsets
//                           and perm are copied into one buffer (two buffer copies of 4*(V+1+P) bytes) so that
//                           the kernel binds 8 storage buffers, WebGPU's guaranteed per-stage limit (9 before).
// llvmpipe's loop budget (65,535 iterations per invocation): the rows pass loops over N candidates and the table
// pass over a segment (an item hit B*N times), so both take ranges / pieces of at most the budget per dispatch,
// the unscaled sums carried in du/dm and dX/dQ (bit-identical to one dispatch).
// Gradients nobody needs are skipped (ctx.needsGrad): no CSR/table pass unless X or Q need one; override flags
// drop the unneeded half of each pass (its binding then gets a 1-element scratch tensor).
// Ids outside [0, V) give a NaN score (and NaN du/dm for that row) instead of reading out of bounds; they are
// left out of dX/dQ.
// Every kernel reads rows as vecW<f32>, W the widest of 4, 2, 1 dividing D (AttRec's D = 150: vec2; names get
// {w=W}): on llvmpipe each storage load is a per-lane scalar loop, so wider loads mean fewer of them.
// Rejected variant: a workgroup per (row, block of d) for the backward passes (uniform per-row loads, no
// div/mod) measured no faster on llvmpipe (11.2 vs 14.5 ms for B=1000 N=3) and was dropped.
// Measured (npm run bench -- euclid., llvmpipe, 2 shared cores, medians of interleaved runs, forward + backward
// into u, m, X, Q): B=1000 N=3 D=150 V=1682: fused 9.6-11.1 ms, composed engine ops 56-58 ms (5.8-6.1x),
// tfjs-webgpu 342-350 ms (31-36x); B=256 N=100: fused 25-28 ms, composed 248-449 ms, tfjs 484-930 ms.
import { ceilDiv, checkIds, defineOp, loopBudget, loopCost, maxLoopIterations, ref, rt, shapeStr, Tensor, zeros, type Op } from '../engine/index.js';
import { foldedIndex, kernelFamily, main1d, vecType, vecWidth, type VecWidth } from './common.js';
import { buildInverseIndex, type Csr } from './scatter.js';

type F64 = ref.F64;
const WG = 64;

/** Bindings 1-4 of every euclid_score kernel: the user rows and the item tables, rows read as T. */
const ROWS_AND_TABLES = (T: string): string => /* wgsl */ `
@group(0) @binding(1) var<storage, read> u: array<${T}>;          // [B, D]
@group(0) @binding(2) var<storage, read> m: array<${T}>;          // [B, D]
@group(0) @binding(3) var<storage, read> X: array<${T}>;          // [V, D]
@group(0) @binding(4) var<storage, read> Q: array<${T}>;          // [V, D]`;

/** Forward: one thread per (b, n), rows read as vecW: `euclid_score{w=2}`. */
const fwdKernel = kernelFamily('euclid_score', ({ w }: { w: VecWidth }) => {
  const T = vecType(w);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// score[b, n] = alpha ||u[b] - X[i]||^2 + (1 - alpha) ||m[b] - Q[i]||^2, i = idx[b, n]. One thread per (b, n);
// rows read as ${T} (DW = D / ${w} per row).
struct Params { P: u32, N: u32, DW: u32, V: u32, alpha: f32, nan: f32 }
@group(0) @binding(0) var<uniform> p: Params;${ROWS_AND_TABLES(T)}
@group(0) @binding(5) var<storage, read> idx: array<i32>;         // [B, N]
@group(0) @binding(6) var<storage, read_write> out: array<f32>;   // [B, N]
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.P) { return; }
  let i = idx[t];
  if (i < 0 || u32(i) >= p.V) { out[t] = p.nan; return; }
  let ub = (t / p.N) * p.DW;
  let xb = u32(i) * p.DW;
  var sl = 0.0;
  var ss = 0.0;
  for (var d = 0u; d < p.DW; d = d + 1u) {
    let dl = u[ub + d] - X[xb + d];
    let ds = m[ub + d] - Q[xb + d];
    sl = sl + ${w === 1 ? 'dl * dl' : 'dot(dl, dl)'};
    ss = ss + ${w === 1 ? 'ds * ds' : 'dot(ds, ds)'};
  }
  out[t] = p.alpha * sl + (1.0 - p.alpha) * ss;
}`,
    grid: ({ P }) => [ceilDiv(P!, WG)],
    loopTrips: ({ DW }) => loopCost(DW!),
  };
});

/** Backward into u and m: one thread per (b, W consecutive d), a serial loop over n. */
const rowsKernel = kernelFamily('euclid_score_bwd_rows', ({ w }: { w: VecWidth }) => {
  const T = vecType(w);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// du[b, d] = cu * sum_n g[b, n] (u[b, d] - X[i, d]), dm[b, d] = cm * sum_n g[b, n] (m[b, d] - Q[i, d]),
// cu = 2 alpha, cm = 2 (1 - alpha). One thread per (b, ${w} consecutive d), n in order. WANT_U/WANT_M = 0 skip a half.
// Candidates [n0, n1) per dispatch (past llvmpipe's loop budget: several; the unscaled sums wait in du / dm).
override WANT_U: u32 = 1u;
override WANT_M: u32 = 1u;
struct Params { BDW: u32, N: u32, DW: u32, V: u32, cu: f32, cm: f32, nan: f32, n0: u32, n1: u32 }
@group(0) @binding(0) var<uniform> p: Params;${ROWS_AND_TABLES(T)}
@group(0) @binding(5) var<storage, read> idx: array<i32>;         // [B, N]
@group(0) @binding(6) var<storage, read> gy: array<f32>;          // [B, N]
@group(0) @binding(7) var<storage, read_write> du: array<${T}>;   // [B, D] (or [${w}] when WANT_U = 0)
@group(0) @binding(8) var<storage, read_write> dm: array<${T}>;   // [B, D] (or [${w}] when WANT_M = 0)
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.BDW) { return; }
  let b = t / p.DW;
  let d = t - b * p.DW;
  let uv = u[t];
  let mv = m[t];
  var gu = ${T}(0.0);
  var gm = ${T}(0.0);
  if (p.n0 != 0u) {
    if (WANT_U != 0u) { gu = du[t]; }
    if (WANT_M != 0u) { gm = dm[t]; }
  }
  for (var n = p.n0; n < p.n1; n = n + 1u) {
    let g = gy[b * p.N + n];
    let i = idx[b * p.N + n];
    if (i < 0 || u32(i) >= p.V) { gu = ${T}(p.nan); gm = ${T}(p.nan); continue; }
    let r = u32(i) * p.DW + d;
    if (WANT_U != 0u) { gu = gu + g * (uv - X[r]); }
    if (WANT_M != 0u) { gm = gm + g * (mv - Q[r]); }
  }
  let last = p.n1 == p.N;
  if (WANT_U != 0u) { du[t] = select(gu, p.cu * gu, last); }
  if (WANT_M != 0u) { dm[t] = select(gm, p.cm * gm, last); }
}`,
    grid: ({ BDW }) => [ceilDiv(BDW!, WG)],
    loopTrips: ({ n0, n1 }) => loopCost(n1! - n0!),
  };
});

/** Backward into X and Q: one thread per (i, W consecutive d) over its CSR segment. */
const tableKernel = kernelFamily('euclid_score_bwd_table', ({ w }: { w: VecWidth }) => {
  const T = vecType(w);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// dX[i, d] = cx * sum_{q in seg(i)} g[q] (X[i, d] - u[b(q), d]), dQ[i, d] = cq * sum g[q] (Q[i, d] - m[b(q), d]),
// seg(i) = perm[offsets[i] .. offsets[i+1]) in ascending position order, b(q) = q / N (offsets and perm are one
// buffer: csr = offsets [V + 1] | perm [B * N], perm from element pb = V + 1). One thread per
// (i, ${w} consecutive d). Piece [s0, s0 + len) of each segment per dispatch (a hot item can own every position,
// past llvmpipe's loop budget): the unscaled sums of unfinished segments wait in dX / dQ.
override WANT_X: u32 = 1u;
override WANT_Q: u32 = 1u;
struct Params { VDW: u32, N: u32, DW: u32, cx: f32, cq: f32, s0: u32, len: u32, pb: u32 }
@group(0) @binding(0) var<uniform> p: Params;${ROWS_AND_TABLES(T)}
@group(0) @binding(5) var<storage, read> gy: array<f32>;          // [B, N]
@group(0) @binding(6) var<storage, read> csr: array<u32>;         // [V + 1 + B * N] offsets | perm
@group(0) @binding(7) var<storage, read_write> dX: array<${T}>;   // [V, D] (or [${w}] when WANT_X = 0)
@group(0) @binding(8) var<storage, read_write> dQ: array<${T}>;   // [V, D] (or [${w}] when WANT_Q = 0)
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.VDW) { return; }
  let i = t / p.DW;
  let d = t - i * p.DW;
  let xv = X[t];
  let qv = Q[t];
  var gx = ${T}(0.0);
  var gq = ${T}(0.0);
  let a = csr[i];                // offsets[i]
  let e = csr[i + 1u];           // offsets[i + 1]
  let k0 = a + min(p.s0, e - a);
  let k1 = k0 + min(p.len, e - k0);
  if (p.s0 != 0u) {
    if (k0 == k1) { return; }
    if (WANT_X != 0u) { gx = dX[t]; }
    if (WANT_Q != 0u) { gq = dQ[t]; }
  }
  for (var k = k0 + p.pb; k < k1 + p.pb; k = k + 1u) {
    let q = csr[k];              // perm[k - pb]
    let g = gy[q];
    let r = (q / p.N) * p.DW + d;
    if (WANT_X != 0u) { gx = gx + g * (xv - u[r]); }
    if (WANT_Q != 0u) { gq = gq + g * (qv - m[r]); }
  }
  let last = k1 == e;
  if (WANT_X != 0u) { dX[t] = select(gx, p.cx * gx, last); }
  if (WANT_Q != 0u) { dQ[t] = select(gq, p.cq * gq, last); }
}`,
    grid: ({ VDW }) => [ceilDiv(VDW!, WG)],
    loopTrips: ({ len }) => loopCost(len!),
  };
});

/** The CSR's offsets [V + 1] and perm [P] copied into one u32 buffer [V + 1 + P] (buffer copies, no kernel); disposes the CSR. */
function joinedCsr(c: Csr, V: number, P: number): Tensor {
  const out = Tensor.empty([V + 1 + P], 'u32'); // [V + 1 + P]
  const q = rt().queue;
  q.copy(c.offsets.buffer, c.offsets.byteOffset, out.buffer, out.byteOffset, 4 * (V + 1));
  q.copy(c.perm.buffer, c.perm.byteOffset, out.buffer, out.byteOffset + 4 * (V + 1), 4 * P);
  c.dispose();
  return out;
}

export interface EuclidScoreAttrs {
  /** Weight of the long-term term (AttRec's code: 0.2). */
  alpha: number;
}

function checkInputs(u: Tensor, m: Tensor, X: Tensor, Q: Tensor, idx: Tensor): { B: number; D: number; V: number; N: number } {
  const where = `euclid_score(u ${u.describe()}, m ${m.describe()}, X ${X.describe()}, Q ${Q.describe()}, idx ${idx.describe()})`;
  if (u.ndim !== 2 || m.ndim !== 2 || X.ndim !== 2 || Q.ndim !== 2 || idx.ndim !== 2) throw new Error(`${where}: u, m, X, Q, idx must be 2-D`);
  const [B, D] = u.shape as [number, number];
  const [V] = X.shape as [number, number];
  const N = idx.shape[1]!;
  if (shapeStr(m.shape) !== shapeStr(u.shape)) throw new Error(`${where}: m must have u's shape`);
  if (X.shape[1] !== D || shapeStr(Q.shape) !== shapeStr(X.shape)) throw new Error(`${where}: X and Q must both be [V, ${D}]`);
  if (idx.shape[0] !== B) throw new Error(`${where}: idx must be [${B}, N]`);
  for (const [k, t] of Object.entries({ u, m, X, Q })) if (t.dtype !== 'f32') throw new Error(`${where}: ${k} must be f32`);
  if (idx.dtype !== 'i32') throw new Error(`${where}: idx must be i32`);
  if (B * D === 0 || V === 0) throw new Error(`${where}: empty u/m or table`);
  return { B, D, V, N };
}

export const euclidScoreOp: Op<EuclidScoreAttrs> = defineOp<EuclidScoreAttrs>({
  name: 'euclid_score',
  forward(ctx, [u, m, X, Q, idx], { alpha }) {
    const { B, D, V, N } = checkInputs(u!, m!, X!, Q!, idx!);
    const out = Tensor.empty([B, N]); // [B, N]
    const w = vecWidth(D);
    if (B * N) fwdKernel({ w }).run({ u: u!, m: m!, X: X!, Q: Q!, idx: idx!, out }, { P: B * N, N, DW: D / w, V, alpha, nan: NaN });
    ctx.save(u!, m!, X!, Q!, idx!);
    ctx.extra.dims = { B, D, V, N };
    return out;
  },
  backward(ctx, gy) {
    const [u, m, X, Q, idx] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
    const { B, D, V, N } = ctx.extra.dims as { B: number; D: number; V: number; N: number };
    const a = ctx.attrs.alpha;
    const [needU = false, needM = false, needX = false, needQ = false] = ctx.needsGrad;
    if (N === 0) {
      // No (b, n) pairs: every gradient is zero (and the kernels would bind empty buffers).
      return [needU ? zeros([B, D]) : null, needM ? zeros([B, D]) : null, needX ? zeros([V, D]) : null, needQ ? zeros([V, D]) : null, null];
    }
    const w = vecWidth(D);
    // A skipped half of a pass writes nothing; its binding gets a one-vector scratch tensor.
    const outOrScratch = (need: boolean, shape: number[]): Tensor => Tensor.empty(need ? shape : [w]);
    let du: Tensor | null = null;
    let dm: Tensor | null = null;
    if (needU || needM) {
      du = outOrScratch(needU, [B, D]); // [B, D]
      dm = outOrScratch(needM, [B, D]); // [B, D]
      const per = Math.max(1, maxLoopIterations(loopBudget())); // candidates per dispatch
      for (let n0 = 0; n0 < N; n0 += per) {
        rowsKernel({ w }).run(
          { u, m, X, Q, idx, gy, du, dm },
          { BDW: (B * D) / w, N, DW: D / w, V, cu: 2 * a, cm: 2 * (1 - a), nan: NaN, n0, n1: Math.min(N, n0 + per) },
          { overrides: { WANT_U: needU ? 1 : 0, WANT_M: needM ? 1 : 0 } },
        );
      }
    }
    let dX: Tensor | null = null;
    let dQ: Tensor | null = null;
    if (needX || needQ) {
      dX = outOrScratch(needX, [V, D]); // [V, D]
      dQ = outOrScratch(needQ, [V, D]); // [V, D]
      const P = B * N;
      const csr = joinedCsr(buildInverseIndex(idx, V), V, P); // [V + 1 + P] u32: offsets | perm
      // A segment may hold all B*N positions: pieces of `len` positions per dispatch past the loop budget.
      const len = Math.max(1, Math.min(P, maxLoopIterations(loopBudget())));
      for (let s0 = 0; s0 < P; s0 += len) {
        tableKernel({ w }).run(
          { u, m, X, Q, gy, csr, dX, dQ },
          { VDW: (V * D) / w, N, DW: D / w, cx: 2 * a, cq: 2 * (1 - a), s0, len, pb: V + 1 },
          { overrides: { WANT_X: needX ? 1 : 0, WANT_Q: needQ ? 1 : 0 } },
        );
      }
      csr.dispose();
    }
    const keepIf = (need: boolean, t: Tensor | null): Tensor | null => {
      if (need) return t;
      t?.dispose();
      return null;
    };
    return [keepIf(needU, du), keepIf(needM, dm), keepIf(needX, dX), keepIf(needQ, dQ), null];
  },
});

/**
 * AttRec's distance score[b, n] = alpha ||u[b] - X[idx[b,n]]||^2 + (1 - alpha) ||m[b] - Q[idx[b,n]]||^2.
 * u, m [B, D]; X, Q [V, D]; idx [B, N] i32 -> [B, N]. Smaller is better. Differentiable in u, m, X, Q.
 */
export function euclidScore(u: Tensor, m: Tensor, X: Tensor, Q: Tensor, idx: Tensor, opts: { alpha?: number } = {}): Tensor {
  const out = euclidScoreOp.apply([u, m, X, Q, idx], { alpha: opts.alpha ?? 0.2 });
  checkIds(idx, X.shape[0]!, 'euclidScore', 'candidate id'); // thrown at the next sync/readback
  return out;
}

// ------------------------------------------------------------------ float64 reference
function refDims(u: F64, X: F64, idx: F64): { B: number; D: number; V: number; N: number } {
  return { B: u.shape[0]!, D: u.shape[1]!, V: X.shape[0]!, N: idx.shape[1]! };
}

/** Float64 reference of euclid_score (NaN for ids outside [0, V)). */
export function refEuclidScore(u: F64, m: F64, X: F64, Q: F64, idx: F64, alpha: number): F64 {
  const { B, D, V, N } = refDims(u, X, idx);
  const out = ref.zerosF64([B, N]);
  for (let b = 0; b < B; b++) {
    for (let n = 0; n < N; n++) {
      const i = idx.data[b * N + n]!;
      if (!(i >= 0 && i < V)) {
        out.data[b * N + n] = NaN;
        continue;
      }
      let sl = 0;
      let ss = 0;
      for (let d = 0; d < D; d++) {
        const dl = u.data[b * D + d]! - X.data[i * D + d]!;
        const ds = m.data[b * D + d]! - Q.data[i * D + d]!;
        sl += dl * dl;
        ss += ds * ds;
      }
      out.data[b * N + n] = alpha * sl + (1 - alpha) * ss;
    }
  }
  return out;
}

/** Float64 reference gradients [du, dm, dX, dQ] of euclid_score for the output gradient gy [B, N]. */
export function refEuclidScoreGrad(u: F64, m: F64, X: F64, Q: F64, idx: F64, alpha: number, gy: F64): [F64, F64, F64, F64] {
  const { B, D, V, N } = refDims(u, X, idx);
  const du = ref.zerosF64([B, D]);
  const dm = ref.zerosF64([B, D]);
  const dX = ref.zerosF64([V, D]);
  const dQ = ref.zerosF64([V, D]);
  for (let b = 0; b < B; b++) {
    for (let n = 0; n < N; n++) {
      const i = idx.data[b * N + n]!;
      const g = gy.data[b * N + n]!;
      for (let d = 0; d < D; d++) {
        if (!(i >= 0 && i < V)) {
          du.data[b * D + d] = NaN;
          dm.data[b * D + d] = NaN;
          continue;
        }
        const dl = u.data[b * D + d]! - X.data[i * D + d]!;
        const ds = m.data[b * D + d]! - Q.data[i * D + d]!;
        du.data[b * D + d]! += 2 * alpha * g * dl;
        dm.data[b * D + d]! += 2 * (1 - alpha) * g * ds;
        dX.data[i * D + d]! -= 2 * alpha * g * dl;
        dQ.data[i * D + d]! -= 2 * (1 - alpha) * g * ds;
      }
    }
  }
  return [du, dm, dX, dQ];
}
