// kernels/gather_dot.ts — gather_dot: scores of each query row against its own list of table rows, without
// materialising the gathered rows (S3-Rec's sampled evaluation: 256 users x 100 candidates x 64).
//
//   score[b, n] = sum_d h[b, d] * table[ids[b, n], d]        h [B, D], table [V, D], ids [B, N] i32 -> [B, N]
//
// Inference only (no gradient): the evaluation passes call it under noGrad; a graph through it throws.
// Kernel gather_dot{w=W}: one thread per (b, n) on a folded 1-D grid, a serial loop over D / W with the rows read
// as vecW<f32> (W the widest of 4, 2, 1 dividing D, common.ts vecWidth). Ids outside [0, V) give NaN (and
// CHECK_IDS reports them at the next sync).
// Memory traffic: reads B*N*D gathered + B*N*D cached floats (h[b] is re-read per candidate, from cache) and B*N
// ids, writes B*N. llvmpipe's loop budget: the loop over D / W stays far under 65,535 for any D below 4 * 65,535
// (declared through loopTrips).
// Variants (bench/gather_dot.bench.ts): this kernel, the composition (`embedding`, a broadcast multiply and a row
// sum) and tfjs. The kernel is the one used: it writes no [B, N, D] temporary, and unlike `embedding` + a batched
// matmul it wastes no 8x8 register tile on a one-column product.
// Timings: `npm run bench -- gather_dot` / docs/BENCHMARKS.md (rows gather_dot.fused, .composed, .tfjs).
import { ceilDiv, checkIds, isGradEnabled, loopCost, ref, Tensor } from '../engine/index.js';
import { foldedIndex, kernelFamily, main1d, vecType, vecWidth, type VecWidth } from './common.js';

type F64 = ref.F64;
const WG = 64;

/** `gather_dot{w=4}`: rows read as vecW<f32>. */
const gatherDotKernel = kernelFamily('gather_dot', ({ w }: { w: VecWidth }) => {
  const T = vecType(w);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// score[b, n] = dot(h[b], table[ids[b, n]]); one thread per (b, n), rows read as ${T} (DW = D / ${w}).
struct Params { P: u32, N: u32, DW: u32, V: u32, nan: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<${T}>;          // [B, D]
@group(0) @binding(2) var<storage, read> table: array<${T}>;      // [V, D]
@group(0) @binding(3) var<storage, read> ids: array<i32>;         // [B, N]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // [B, N]
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.P) { return; }
  let i = ids[t];
  if (i < 0 || u32(i) >= p.V) { out[t] = p.nan; return; }
  let hb = (t / p.N) * p.DW;
  let tb = u32(i) * p.DW;
  var acc = ${T}(0.0);
  for (var d = 0u; d < p.DW; d = d + 1u) { acc = acc + h[hb + d] * table[tb + d]; }
  out[t] = ${w === 1 ? 'acc' : `dot(acc, ${T}(1.0))`};
}`,
    grid: ({ P }) => [ceilDiv(P!, WG)],
    minSizes: ({ P, DW, V }) => ({ ids: P!, out: P!, table: V! * DW! }),
    loopTrips: ({ DW }) => loopCost(DW!),
  };
});

/** score[b, n] = <h[b], table[ids[b, n]]>: h [B, D], table [V, D] f32, ids [B, N] i32 -> [B, N]. Not differentiable. */
export function gatherDot(h: Tensor, table: Tensor, ids: Tensor): Tensor {
  if (h.ndim !== 2 || table.ndim !== 2 || h.shape[1] !== table.shape[1]) throw new Error(`gatherDot: h ${h.describe()} and table ${table.describe()} must be [B, D] and [V, D]`);
  if (ids.ndim !== 2 || ids.shape[0] !== h.shape[0]) throw new Error(`gatherDot: ids ${ids.describe()} must be [B, N] with B = ${h.shape[0]}`);
  if (h.dtype !== 'f32' || table.dtype !== 'f32') throw new Error(`gatherDot: h and table must be f32, got ${h.describe()}, ${table.describe()}`);
  if (ids.dtype !== 'i32') throw new Error(`gatherDot: ids ${ids.describe()} must be i32`);
  if (isGradEnabled() && (h.requiresGrad || table.requiresGrad)) throw new Error('gatherDot: inference only (no gradient); call it under noGrad()');
  const [B, D] = h.shape as [number, number];
  const [V] = table.shape as [number];
  const N = ids.shape[1]!;
  const out = Tensor.empty([B, N]); // [B, N]
  if (B * N === 0) return out;
  checkIds(ids, V, 'gatherDot', 'id');
  const w = vecWidth(D);
  gatherDotKernel({ w }).run({ h, table, ids, out }, { P: B * N, N, DW: D / w, V, nan: NaN });
  return out;
}

/** float64 reference of gatherDot (NaN for ids outside [0, V)). */
export function refGatherDot(h: F64, table: F64, ids: F64): F64 {
  const [B, D] = h.shape as [number, number];
  const V = table.shape[0]!;
  const N = ids.shape[1]!;
  const out = new Float64Array(B * N);
  for (let b = 0; b < B; b++) {
    for (let n = 0; n < N; n++) {
      const i = ids.data[b * N + n]!;
      if (!(i >= 0 && i < V)) {
        out[b * N + n] = NaN;
        continue;
      }
      let s = 0;
      for (let d = 0; d < D; d++) s += h.data[b * D + d]! * table.data[i * D + d]!;
      out[b * N + n] = s;
    }
  }
  return { data: out, shape: [B, N] };
}
