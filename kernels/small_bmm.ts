// kernels/small_bmm.ts — small_bmm: batched products whose per-entry matrices are tiny on one or two sides
// (AttRec's attention: L = 5 rows, D = 150 columns, 1000 batch entries), where the tiled matmul wastes its 8x8 /
// 8x16 register tiles.
//
//   smallBmmNT(a, b):  c[t, i, j] = sum_k a[t, i, k] b[t, j, k]     a [Bt, M, K], b [Bt, N, K] -> c [Bt, M, N]
//   smallBmmNN(a, b):  c[t, i, k] = sum_j a[t, i, j] b[t, j, k]     a [Bt, M, J], b [Bt, J, K] -> c [Bt, M, K]
//   (a third kernel, tn: c[t, j, k] = sum_i a[t, i, j] b[t, i, k], serves the backward passes)
// Backward (composed from the three kernels): NT: da = NN(dc, b), db = TN(dc, a); NN: da = NT(dc, b), db = TN(a, dc).
// a and b may be the same tensor (AttRec: G = Z Z^T); autograd sums both gradients.
//
// Parallel strategy: one thread per output element (nt: per (t, i, j) with a serial loop over K; nn / tn: per
// (t, row, 4 columns) with a serial loop over the small inner dimension). No workgroup memory, no barriers (both
// expensive on llvmpipe); rows are read as vecW<f32> (W = widest of 4, 2, 1 dividing K; kernels named {w=W}).
// The small inner loops (nn, tn) must stay under llvmpipe's 65,535 loop iterations: M, J <= 4096 is enforced.
// Memory traffic: nt reads 2*Bt*M*N*K floats (rows re-read per output, from cache), writes Bt*M*N; nn / tn read
// Bt*M*K*(J + 1) floats, write Bt*M*K.
// Variants: these kernels against the engine's batched tiled matmul (which runs one mostly idle 8x8 register tile
// per [5 x 152] batch entry) and tf.matMul at AttRec's step shape (B = 1000, L = 5, Dp = 152); the attention's
// products use these kernels. Timings: `npm run bench -- small_bmm` / docs/BENCHMARKS.md (rows small_bmm.nt.*,
// small_bmm.nn.*; `composed` is the batched matmul).
import { ceilDiv, defineOp, loopCost, Tensor } from '../engine/index.js';
import { foldedIndex, kernelFamily, main1d, vecType, vecWidth, type VecWidth } from './common.js';

const WG = 64;
const MAX_INNER = 4096;

/** nt: c[t, i, j] = sum_k a[t, i, k] b[t, j, k], one thread per output, rows read as vecW (W = vecWidth(K)). */
const ntKernel = kernelFamily('small_bmm_nt', ({ w }: { w: VecWidth }) => {
  const T = vecType(w);
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// c[t, i, j] = sum_k a[t, i, k] b[t, j, k]; one thread per output; rows as ${T} (KW = K / ${w}).
struct Params { total: u32, M: u32, N: u32, KW: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<${T}>;          // [Bt, M, K]
@group(0) @binding(2) var<storage, read> b: array<${T}>;          // [Bt, N, K]
@group(0) @binding(3) var<storage, read_write> c: array<f32>;     // [Bt, M, N]
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.total) { return; }
  let j = t % p.N;
  let ti = t / p.N;                       // t * M + i
  let bt = ti / p.M;
  let ao = ti * p.KW;
  let bo = (bt * p.N + j) * p.KW;
  var acc = ${T}(0.0);
  for (var q = 0u; q < p.KW; q = q + 1u) { acc = acc + a[ao + q] * b[bo + q]; }
  c[t] = ${w === 1 ? 'acc' : `dot(acc, ${T}(1.0))`};
}`,
    grid: ({ total }) => [ceilDiv(total!, WG)],
    minSizes: ({ total, M, N, KW }) => ({ a: (total! / N!) * KW!, b: (total! / M!) * KW!, c: total! }),
    loopTrips: ({ KW }) => loopCost(KW!),
  };
});

/**
 * nn: c[t, r, k] = sum_s a[t, r, s] b[t, s, k] (rows R = M of a [Bt, R, S], inner S = J);
 * tn: c[t, r, k] = sum_s a[t, s, r] b[t, s, k] (rows R = J, the columns of a [Bt, S, R]; inner S = M).
 * One thread per (t, r, W columns).
 */
const innerKernels = {
  nn: kernelFamily('small_bmm_nn', ({ w }: { w: VecWidth }) => innerSpec('nn', w)),
  tn: kernelFamily('small_bmm_tn', ({ w }: { w: VecWidth }) => innerSpec('tn', w)),
};

function innerSpec(mode: 'nn' | 'tn', w: VecWidth) {
  const T = vecType(w);
  const nn = mode === 'nn';
  return {
    foldable: true,
    wgsl: /* wgsl */ `
// c[t, r, k] = sum_s ${nn ? 'a[t, r, s]' : 'a[t, s, r]'} b[t, s, k]; one thread per (t, r, ${w} columns).
struct Params { total: u32, R: u32, S: u32, KW: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;           // ${nn ? '[Bt, R, S]' : '[Bt, S, R]'}
@group(0) @binding(2) var<storage, read> b: array<${T}>;          // [Bt, S, K]
@group(0) @binding(3) var<storage, read_write> c: array<${T}>;    // [Bt, R, K]
${main1d(WG)} {
  let t = ${foldedIndex(WG)};
  if (t >= p.total) { return; }
  let kq = t % p.KW;
  let tr = t / p.KW;                      // bt * R + r
  let r = tr % p.R;
  let bt = tr / p.R;
  var acc = ${T}(0.0);
  for (var s = 0u; s < p.S; s = s + 1u) { acc = acc + a[${nn ? '(bt * p.R + r) * p.S + s' : '(bt * p.S + s) * p.R + r'}] * b[(bt * p.S + s) * p.KW + kq]; }
  c[t] = acc;
}`,
    grid: ({ total }: Record<string, number>) => [ceilDiv(total!, WG)],
    minSizes: ({ total, R, S, KW }: Record<string, number>) => ({ a: (total! / KW!) * S!, b: (total! / KW! / R!) * S! * KW!, c: total! }),
    loopTrips: ({ S }: Record<string, number>) => loopCost(S!),
  };
}

function check3(name: string, x: Tensor): [number, number, number] {
  if (x.dtype !== 'f32' || x.ndim !== 3) throw new Error(`${name}: ${x.describe()} must be f32 [Bt, rows, cols]`);
  return x.shape as unknown as [number, number, number];
}

/** c [Bt, M, N] = a [Bt, M, K] . b [Bt, N, K]^T (raw launch). */
function runNT(a: Tensor, b: Tensor): Tensor {
  const [Bt, M, K] = a.shape as [number, number, number];
  const N = b.shape[1]!;
  const c = Tensor.empty([Bt, M, N]); // [Bt, M, N]
  const w = vecWidth(K);
  if (c.size && K) ntKernel({ w }).run({ a, b, c }, { total: Bt * M * N, M, N, KW: K / w });
  else if (c.size) c.write(new Float32Array(c.size));
  return c;
}

/** nn: c [Bt, R, K] = a [Bt, R, S] . b [Bt, S, K];  tn: c [Bt, R, K] = a [Bt, S, R]^T . b [Bt, S, K] (raw launch). */
function runInner(mode: 'nn' | 'tn', a: Tensor, b: Tensor): Tensor {
  const [Bt, S, K] = b.shape as [number, number, number];
  const R = mode === 'nn' ? a.shape[1]! : a.shape[2]!;
  if (S > MAX_INNER) throw new Error(`small_bmm_${mode}: inner dimension ${S} is over ${MAX_INNER} (llvmpipe loop budget); use matmul`);
  const c = Tensor.empty([Bt, R, K]); // [Bt, R, K]
  const w = vecWidth(K);
  if (c.size) innerKernels[mode]({ w }).run({ a, b, c }, { total: (Bt * R * K) / w, R, S, KW: K / w });
  return c;
}

const ntOp = defineOp({
  name: 'small_bmm_nt',
  forward(ctx, [a, b]) {
    const [Bt, , K] = check3('small_bmm_nt', a!);
    const [Bb, N, Kb] = check3('small_bmm_nt', b!);
    if (Bb !== Bt || Kb !== K) throw new Error(`small_bmm_nt: a ${a!.describe()} and b ${b!.describe()} must be [Bt, M, K] and [Bt, N, K]`);
    if (N > MAX_INNER || a!.shape[1]! > MAX_INNER) throw new Error(`small_bmm_nt: M and N must be <= ${MAX_INNER} (their backward loops over them)`);
    ctx.save(a!, b!);
    return runNT(a!, b!); // [Bt, M, N]
  },
  backward(ctx, gc) {
    const [a, b] = ctx.saved as [Tensor, Tensor];
    return [ctx.needsGrad[0] ? runInner('nn', gc, b) : null, ctx.needsGrad[1] ? runInner('tn', gc, a) : null]; // [Bt, M, K], [Bt, N, K]
  },
});

const nnOp = defineOp({
  name: 'small_bmm_nn',
  forward(ctx, [a, b]) {
    const [Bt, M, J] = check3('small_bmm_nn', a!);
    const [Bb, Jb] = check3('small_bmm_nn', b!);
    if (Bb !== Bt || Jb !== J) throw new Error(`small_bmm_nn: a ${a!.describe()} and b ${b!.describe()} must be [Bt, M, J] and [Bt, J, K]`);
    if (M > MAX_INNER) throw new Error(`small_bmm_nn: M must be <= ${MAX_INNER} (the backward loops over it)`);
    ctx.save(a!, b!);
    return runInner('nn', a!, b!); // [Bt, M, K]
  },
  backward(ctx, gc) {
    const [a, b] = ctx.saved as [Tensor, Tensor];
    return [ctx.needsGrad[0] ? runNT(gc, b) : null, ctx.needsGrad[1] ? runInner('tn', a, gc) : null]; // [Bt, M, J], [Bt, J, K]
  },
});

/** c [Bt, M, N] = a [Bt, M, K] . b [Bt, N, K]^T for small M, N (M, N <= 4096). Differentiable. */
export function smallBmmNT(a: Tensor, b: Tensor): Tensor {
  return ntOp.apply([a, b], {});
}

/** c [Bt, M, K] = a [Bt, M, J] . b [Bt, J, K] for a small inner J (and M <= 4096). Differentiable. */
export function smallBmmNN(a: Tensor, b: Tensor): Tensor {
  return nnOp.apply([a, b], {});
}
