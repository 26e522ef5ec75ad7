// kernels/multilabel_bce.ts — multilabel_bce: the official S3-Rec AAP and MAP loss (S3REC_SPEC §4.2), fused
// (scores against ALL attributes, BCE, reduction; hand-written backward).
//
//   z[n, a] = <x_n, attr_a> for all A attributes,
//   loss = sum_n w_n sum_a -(t log_c sigmoid(z) + (1 - t) log_c(1 - sigmoid(z))),  log_c = max(log, -100);
//   targets t: a CSR list of positive attribute ids per row (offsets [N+1], ids [nnz]) or dense [N, A] f32.
//   The logs are evaluated stably (log sigmoid(z) = -softplus(-z)) and then clamped at -100, as BCELoss clamps:
//   identical to PyTorch wherever PyTorch's f32 sigmoid is not saturated (|z| < ~16) and where both clamp
//   (|z| > 100: loss 100, zero gradient); for 16 < |z| < 100 PyTorch's f32 sigmoid rounds to 0/1 and it reports
//   100 with zero gradient, this kernel the exact softplus and its gradient.
//   'mean' divides by sum_n w_n * A (BCELoss's element mean). Shapes: x [N, D], attr [A, D], mask [N] f32 -> [].
// Parallel strategy (llvmpipe: storage loads dominate and barriers are expensive; all kernels are barrier-free
//   apart from the one-workgroup compaction, and register-blocked as on a real GPU):
//   multilabel_bce_compact          lists the valid rows (one-workgroup scan, ascending), so masked rows cost
//                                   nothing (S3-Rec batches are ~85% padding);
//   multilabel_bce_fwd{D,TA,TR,targets}  a register tile of TR valid rows x TA attributes per thread (ML_TILES;
//                                   8 x 8 by bench, 4 x 4 / 4 x 8 / 8 x 16 / 16 x 16 no faster on llvmpipe):
//                                   TR*TA dot products, BCE against the targets, a tile partial sum, and
//                                   the residual r = w dBCE/dz [count, A];
//   multilabel_bce_dx{D,R}          dx = g r attr (DXR rows x one vec4 of D per thread);
//   multilabel_bce_dattr{D,TA}      dattr = g r^T x split into S row chunks (about 8k threads), rows ascending;
//   multilabel_bce_dattr_sum{D}     adds the chunks in order. Deterministic, no atomics.
//   multilabel_bce_csr_to_dense     CSR targets whose lists are too long for the forward's per-tile loop.
//   The tiles are written out (common.ts unroll): the accumulators of a tile are registers, no loop.
// Memory traffic: the forward reads x and attr once per tile (cached), writes count*A (residual, only when a
// gradient is needed) and the tile partials; the backward reads the residual twice, writes ND + S*A*D.
// Variants (bench/multilabel_bce.bench.ts): the fused kernels (also with every row valid, their worst case: row
//   multilabel_bce.fused_allrows), their composition from engine ops and tfjs; the fused kernels are the
//   default, well ahead of both. Timings: `npm run bench -- multilabel_bce` / docs/BENCHMARKS.md.
// llvmpipe's loop budget (65,535 iterations per invocation, all loops together): the compaction takes ranges of
// rows, the forward's CSR loop is bounded by the longest id list (csrTargets records it; lists too long go
// through dense targets), dx ranges of attributes, dattr more row chunks; each dispatch declares its cost.
import { ceilDiv, chunkRanges as ranges, defineKernel, defineOp, fillInPlace, loopBudget, loopCost, maxLoopIterations, ref, Tensor, zeros } from '../engine/index.js';
import { dotvWgsl, foldedIndex, kernelFamily, lanesFor, main1d, reduceLoss, refSigmoid, refSoftplus, slotsConst, unroll, vecType, type Reduction } from './common.js';

type F64 = ref.F64;
const WG = 64;
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
  name: 'multilabel_bce_compact',
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
  name: 'multilabel_bce_csr_to_dense',
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
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
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

/** Loop cost of the multilabel forward with rows of at most maxLen target ids (CSR). */
function mlFwdTrips(mode: TargetMode, D: number, t: Pick<MlTiles, 'TR' | 'TA'>, maxLen: number): number {
  const targets = mode === 'csr' ? loopCost(maxLen) : loopCost(4);
  return loopCost(D / lanesFor(D)) + t.TR * (targets + (t.TA / 4) * loopCost(4));
}


/** Forward: one thread per tile of TR valid rows x TA attributes (see the header). */
const mlFwdKernel = kernelFamily(
  'multilabel_bce_fwd',
  ({ targets, D, TR, TA }: { targets: TargetMode; D: number; TR: number; TA: number }) => {
    const T = vecType(lanesFor(D));
    const G = TA / 4; // vec4 groups of attributes
    // The targets of row {r} for the tile's attributes as G vec4s t{g}: from the CSR id list, or dense.
    const loadTargets =
      targets === 'csr'
        ? /* wgsl */ `
    ${unroll(G, 'var t{g} = vec4<f32>(0.0); let av{g} = vec4<i32>(i32(a0 + 4u * {g}u)) + vec4<i32>(0, 1, 2, 3);', 'g', ' ')}
    for (var j = toff[n{r}]; j < toff[n{r} + 1u]; j = j + 1) {
      let id = vec4<i32>(tids[j]);
      ${unroll(G, 't{g} = select(t{g}, vec4<f32>(1.0), av{g} == id);', 'g', ' ')}
    }`
        : /* wgsl */ `
    ${unroll(G, 'var t{g} = vec4<f32>(0.0);', 'g', ' ')}
    for (var j = 0u; j < 4u; j = j + 1u) {
      ${unroll(G, 'if (a0 + 4u * {g}u + j < p.A) { t{g}[j] = tdense[n{r} * p.A + a0 + 4u * {g}u + j]; }', 'g', '\n      ')}
    }`;
    // BCE of row {r} against attribute group {g}: the tile partial sum and the residual's vec4.
    const groupBce = /* wgsl */ `{
      var rr = vec4<f32>(0.0);
      for (var j = 0u; j < 4u; j = j + 1u) {
        if (a0 + 4u * {g}u + j < p.A) {
          let e = bce_elem(z{r}_{g}[j], t{g}[j]);
          psum = psum + w * e.x;
          rr[j] = w * e.y;
        }
      }
      if (p.writeR == 1u && ag * ${G}u + {g}u < p.Ag4) { r[(k0 + {r}u) * p.Ag4 + ag * ${G}u + {g}u] = rr; }
    }`;
    return {
      foldable: true,
      wgsl: /* wgsl */ `
// One thread per tile of ${TR} valid rows x ${TA} attributes: ${TR * TA} dot products over D, BCE against the targets,
// the weighted partial sum of the tile, and (writeR) the residual r[k, a] = w dBCE/dz for the k-th valid row
// (0 for a >= A). Rows n{r} of the tile, attribute a0 + 4 g + q in vec4 group g, lane q.
struct Params { N: u32, A: u32, Ag4: u32, Ta: u32, writeR: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${T}>;      // [N, D]
@group(0) @binding(2) var<storage, read> attr: array<${T}>;   // [A, D]
${
  targets === 'csr'
    ? `@group(0) @binding(3) var<storage, read> toff: array<i32>; // [N + 1] CSR offsets of the positive attribute ids
@group(0) @binding(4) var<storage, read> tids: array<i32>;         // [nnz] positive attribute ids`
    : '@group(0) @binding(3) var<storage, read> tdense: array<f32>; // [N, A] targets'
}
@group(0) @binding(5) var<storage, read> rowW: array<f32>;          // [N]
@group(0) @binding(6) var<storage, read> list: array<u32>;          // [N + 1]: count, valid rows
@group(0) @binding(7) var<storage, read_write> part: array<f32>;    // [ceil(N / ${TR}) * Ta] tile partial sums
@group(0) @binding(8) var<storage, read_write> r: array<vec4<f32>>; // [count, Ag4] residual (4 attributes each)
${slotsConst(D)}
${dotvWgsl(lanesFor(D))}
${BCE_ELEM}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  let count = list[0];
  let rg = i / p.Ta;
  let ag = i % p.Ta;
  let k0 = rg * ${TR}u;
  if (k0 >= count) { if (i < ((p.N + ${TR - 1}u) / ${TR}u) * p.Ta) { part[i] = 0.0; } return; }
  let a0 = ag * ${TA}u;
${unroll(TR, '  let n{r} = list[1u + min(k0 + {r}u, count - 1u)];', 'r')}
${unroll(G, unroll(4, '  let ar{g}_{q} = min(a0 + 4u * {g}u + {q}u, p.A - 1u) * D4;', 'q'), 'g')}
${unroll(TR, unroll(G, 'var z{r}_{g} = vec4<f32>(0.0);', 'g', ' '), 'r').replace(/^/gm, '  ')}
  for (var k = 0u; k < D4; k = k + 1u) {
    ${unroll(G, unroll(4, 'let at{g}_{q} = attr[ar{g}_{q} + k];', 'q', ' '), 'g', ' ')}
${unroll(TR, `    { let xv = x[n{r} * D4 + k]; ${unroll(G, 'z{r}_{g} = z{r}_{g} + vec4<f32>(dotv(xv, at{g}_0), dotv(xv, at{g}_1), dotv(xv, at{g}_2), dotv(xv, at{g}_3));', 'g', ' ')} }`, 'r')}
  }
  var psum = 0.0;
${unroll(TR, `  if (k0 + {r}u < count) {
    let w = rowW[n{r}];${loadTargets}
    ${unroll(G, groupBce, 'g', '\n    ')}
  }`, 'r')}
  part[i] = psum;
}`,
      grid: ({ N, Ta }) => [ceilDiv(ceilDiv(N!, TR) * Ta!, WG)],
      // the D loop, then per row of the tile its target loop (CSR: its id list) and G loops of 4 attributes
      loopTrips: mlFwdTrips(targets, D, { TR, TA }, 0), // CSR: the launcher passes the bound of its id lists (RunOptions.loopTrips)
      minSizes: ({ N, A, Ta, Ag4, writeR }) => ({
        x: N! * (D / lanesFor(D)),
        attr: A! * (D / lanesFor(D)),
        rowW: N!,
        list: N! + 1,
        part: ceilDiv(N!, TR) * Ta!,
        r: writeR ? N! * Ag4! : 1,
        ...(targets === 'csr' ? { toff: N! + 1 } : { tdense: N! * A! }),
      }),
    };
  },
);

/** dx = g r attr: one thread per (R valid rows, one slot of D), 4 attributes per step. */
const mlDxKernel = kernelFamily('multilabel_bce_dx', ({ D, R }: { D: number; R: number }) => {
  const l = lanesFor(D);
  const T = vecType(l);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// dx[n, :] = g sum_a r[k, a] attr[a, :] for the k-th valid row n (dx is zero-filled before), g = gy / den.
// One thread per (${R} valid rows, one ${l === 4 ? 'vec4' : 'float'} of D); 4 attributes per step. Attribute groups
// [ag0, ag1) per dispatch (past the loop budget: several dispatches, each adding its part to dx).
struct Params { N: u32, A: u32, Ag4: u32, ag0: u32, ag1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> attr: array<${T}>;   // [A, D]
@group(0) @binding(2) var<storage, read> r: array<vec4<f32>>;     // [count, Ag4]
@group(0) @binding(3) var<storage, read> list: array<u32>;        // [N + 1]: count, valid rows
@group(0) @binding(4) var<storage, read> den: array<f32>;         // [1]
@group(0) @binding(5) var<storage, read> gy: array<f32>;          // [1]
@group(0) @binding(6) var<storage, read_write> dx: array<${T}>; // [N, D]
${slotsConst(D)}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  let count = list[0];
  let rg = i / D4;
  let k = i % D4;
  let k0 = rg * ${R}u;
  if (k0 >= count) { return; }
  let g = gy[0] / den[0];
${unroll(R, '  let rr{r} = min(k0 + {r}u, count - 1u) * p.Ag4; var acc{r} = T_(0.0);', 'r').replace(/T_/g, T)}
  for (var ag = p.ag0; ag < p.ag1; ag = ag + 1u) {
    let a0 = ag * 4u;
    ${unroll(4, 'let t{q} = attr[min(a0 + {q}u, p.A - 1u) * D4 + k];', 'q', ' ')}
${unroll(R, '    { let v = r[rr{r} + ag]; acc{r} = acc{r} + v.x * t0 + v.y * t1 + v.z * t2 + v.w * t3; }', 'r')}
  }
${unroll(R, '  if (k0 + {r}u < count) { let o = list[1u + k0 + {r}u] * D4 + k; if (p.ag0 == 0u) { dx[o] = g * acc{r}; } else { dx[o] = dx[o] + g * acc{r}; } }', 'r')}
}`,
    grid: ({ N }) => [ceilDiv(ceilDiv(N!, R) * (D / l), WG)],
    loopTrips: ({ ag0, ag1 }) => loopCost(ag1! - ag0!),
    minSizes: ({ N, A, Ag4 }) => ({ attr: A! * (D / l), list: N! + 1, den: 1, gy: 1, dx: N! * (D / l), r: Ag4! }),
  };
});

/** dattr partials: one thread per (row chunk, TA attributes, one slot of D). */
const mlDattrKernel = kernelFamily('multilabel_bce_dattr', ({ D, TA }: { D: number; TA: number }) => {
  const l = lanesFor(D);
  const T = vecType(l);
  const G = TA / 4;
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// part[s, a, :] = sum_k r[k, a] x[n_k, :] over the valid rows k of chunk s (k in [s*chunk, (s+1)*chunk),
// ascending). One thread per (chunk, ${TA} attributes, one ${l === 4 ? 'vec4' : 'float'} of D): attribute tg * ${TA} + 4 g + q
// in acc{g}_{q}; multilabel_bce_dattr_sum adds the chunks in order.
struct Params { A: u32, Ag4: u32, Tg: u32, S: u32, chunk: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${T}>;      // [N, D]
@group(0) @binding(2) var<storage, read> r: array<vec4<f32>>;     // [count, Ag4]
@group(0) @binding(3) var<storage, read> list: array<u32>;        // [N + 1]: count, valid rows
@group(0) @binding(4) var<storage, read_write> part: array<${T}>; // [S, A, D]
${slotsConst(D)}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.S * p.Tg * D4) { return; }
  let k = i % D4;
  let tg = (i / D4) % p.Tg;
  let s = i / (D4 * p.Tg);
  let count = list[0];
  let lo = min(s * p.chunk, count);
  let hi = min(lo + p.chunk, count);
  ${unroll(G, `let c{g} = min(tg * ${G}u + {g}u, p.Ag4 - 1u);`, 'g', ' ')}
  ${unroll(G, unroll(4, `var acc{g}_{q} = ${T}(0.0);`, 'q', ' '), 'g', ' ')}
  for (var kk = lo; kk < hi; kk = kk + 1u) {
    let xv = x[list[1u + kk] * D4 + k];
${unroll(G, '    { let v = r[kk * p.Ag4 + c{g}]; acc{g}_0 = acc{g}_0 + v.x * xv; acc{g}_1 = acc{g}_1 + v.y * xv; acc{g}_2 = acc{g}_2 + v.z * xv; acc{g}_3 = acc{g}_3 + v.w * xv; }', 'g')}
  }
  let a0 = tg * ${TA}u;
${unroll(G, unroll(4, '  if (a0 + 4u * {g}u + {q}u < p.A) { part[(s * p.A + a0 + 4u * {g}u + {q}u) * D4 + k] = acc{g}_{q}; }', 'q'), 'g')}
}`,
    grid: ({ S, Tg }) => [ceilDiv(S! * Tg! * (D / l), WG)],
    minSizes: ({ A, S, Ag4 }) => ({ list: 1, part: S! * A! * (D / l), r: Ag4! }),
    loopTrips: ({ chunk }) => loopCost(chunk!),
  };
});

/** dattr = g * the sum of the chunk partials in order: one thread per (attribute, slot of D). */
const mlDattrSumKernel = kernelFamily('multilabel_bce_dattr_sum', ({ D }: { D: number }) => {
  const l = lanesFor(D);
  const T = vecType(l);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// dattr[a, :] = g sum_s part[s, a, :] (chunks in order), g = gy / den. One thread per (attribute, chunk of D).
struct Params { A: u32, S: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<${T}>;   // [S, A, D]
@group(0) @binding(2) var<storage, read> den: array<f32>;         // [1]
@group(0) @binding(3) var<storage, read> gy: array<f32>;          // [1]
@group(0) @binding(4) var<storage, read_write> dattr: array<${T}>; // [A, D]
${slotsConst(D)}
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.A * D4) { return; }
  var acc = ${T}(0.0);
  for (var s = 0u; s < p.S; s = s + 1u) { acc = acc + part[s * p.A * D4 + i]; }
  dattr[i] = (gy[0] / den[0]) * acc;
}`,
    grid: ({ A }) => [ceilDiv(A! * (D / l), WG)],
    minSizes: ({ A, S }) => ({ part: S! * A! * (D / l), den: 1, gy: 1, dattr: A! * (D / l) }),
    loopTrips: ({ S }) => loopCost(S!),
  };
});

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
        mlFwdKernel({ targets: 'csr', D, TR, TA }).run({ x, attr, toff, tids: tids.size ? tids : toff, rowW, list, part, r }, params, { loopTrips: trips });
      } else {
        const tdense = Tensor.empty([N, A]); // [N, A] 0/1 targets
        fillInPlace(tdense, 0);
        csrDenseKernel.run({ toff, tids, tdense }, { nnz: tids.size, N, A });
        mlFwdKernel({ targets: 'dense', D, TR, TA }).run({ x, attr, tdense, rowW, list, part, r }, params);
        tdense.dispose();
      }
    } else {
      const t = inputs[2]!;
      if (t.dtype !== 'f32' || t.size !== N * A) throw new Error(`multiLabelBce: targets ${t.describe()} must be f32 [${N}, ${A}]`);
      mlFwdKernel({ targets: 'dense', D, TR, TA }).run({ x, attr, tdense: t, rowW, list, part, r }, params);
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
        mlDxKernel({ D, R: t.DXR }).run({ attr, r, list, den, gy, dx }, { N, A, Ag4, ag0, ag1 });
      }
    }
    if (ctx.needsGrad[1]) {
      // Split the row loop into S chunks (about 8k threads in all, >= 32 rows per chunk), summed in order after.
      const Tg = ceilDiv(A, t.DTA);
      const threads = Tg * (D / lanesFor(D));
      // More chunks when a chunk would pass the loop budget (llvmpipe: 65,535 iterations per invocation).
      const S = Math.max(1, Math.min(16, Math.ceil(8192 / threads), Math.ceil(N / 32)), Math.ceil(N / Math.max(1, maxLoopIterations(loopBudget()))));
      const part = Tensor.empty([S, A, D]); // [S, A, D]
      mlDattrKernel({ D, TA: t.DTA }).run({ x, r, list, part }, { A, Ag4, Tg, S, chunk: ceilDiv(N, S) });
      dattr = Tensor.empty([A, D]); // [A, D]
      mlDattrSumKernel({ D }).run({ part, den, gy, dattr }, { A, S });
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
function dotRows(a: F64, i: number, b: F64, j: number): number {
  const D = a.shape[1]!;
  let s = 0;
  for (let d = 0; d < D; d++) s += a.data[i * D + d]! * b.data[j * D + d]!;
  return s;
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
