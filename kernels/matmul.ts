// kernels/matmul.ts — C = op(A)·op(B), batched, with the transposes handled inside the kernels.
//
// Shapes: a [..., M, K] (or [..., K, M] with transA), b [..., K, N] (or [..., N, K] with transB) → c [..., M, N].
// The batch dims of a and b are equal, or one operand is 2-D and shared by every batch entry of the other (b 2-D:
// a weight; an untransposed a then folds its batch into M, one [batch·M, K] x [K, N] product: the Linear case).
//
// Variants (kernels of one family; pickVariant() chooses per shape from the table below, `variant` forces one):
//   naive    matmul_naive     one thread per output, scalar loads, a serial K loop. Reference speed.
//   smem4x4  matmul_smem4x4   tfjs's scheme: a 32x32 C tile per 8x8 workgroup, each thread 4 rows x 4 cols,
//                             A and B staged through workgroup memory 32 k at a time (2 barriers per k tile).
//   reg4x4   matmul_reg4x4    no workgroup memory, no barriers: each thread reads A and B straight from storage
//   reg8x8   matmul_reg8x8    with vec4 loads and keeps a TM x TN block of C in registers (reg4x4: 32x32 C per
//   reg8x16  matmul_reg8x16   64-thread workgroup, as the tile). The 64 threads are arranged as wx x 64/wx
//                             (a uniform) so that narrow N (64) wastes no lanes; threads past the edge return.
//   (reg16x16 was tried: never better than reg8x16, and 8x slower to compile; not kept.)
// Every variant takes any M, N, K (edges, K % 4 != 0, size 1) and all four transpose combinations. In the reg
// kernels an operand whose contiguous dimension is a multiple of 4 is bound as array<vec4<f32>>, otherwise as
// array<f32> (the same code then reads 4 scalars where it would read one vec4); C is written as vec4 when
// N % 4 == 0. Rows/columns past the edge are clamped on load (no branches in the K loop), skipped on store.
// Split-K (reg kernels): an output with too few threads of work (a weight gradient, [12800, 64]ᵀ x [12800, 256])
// is computed as `splits` partial products over K slices, then summed by reduce.ts (fixed order, deterministic).
// llvmpipe's loop budget (65,535 iterations per invocation): a reg thread loops kChunk / 4 times, so K beyond
// ~262,000 is always split; naive / smem4x4 (no split-K) give way to the default variant past it.
// Outputs over maxStorageBufferBindingSize (128 MB here; [5000, 64] x [12103, 64]ᵀ is 242 MB) are computed in
// row chunks bound as sub-regions of a and c.
//
// Why register tiles and no barriers (measured on this adapter, Mesa 22.3 llvmpipe through Dawn's GLES backend):
// llvmpipe runs 8 invocations as one AVX2 vector, but a storage load costs ~11 ns per vec4 and ~7 ns per f32 per
// 8 lanes whatever the address pattern (uniform, contiguous and strided cost the same, as for a per-lane scalar
// loop), and workgroup-memory loads are no cheaper; so staging tiles in workgroup memory saves nothing and adds
// barriers (coroutine switches). FMAs are cheap (~70 GFLOP/s with 64 live accumulators per thread, ~33 with 256,
// which spill). A TM x TN thread tile needs TM + TN vec4 loads per 4 k for 4·TM·TN FMAs: bigger tiles win until
// spills dominate. llvmpipe also runs a workgroup's 8-lane groups one after another (no barrier, no interleaving),
// so a long K loop streams its whole K range per group: split-K helps a long-K product beyond the 2 cores it
// fills. On a real GPU the reg kernels are ordinary register-blocked GEMMs with vec4 loads (tfjs's packed vec4
// shape without the shared-memory staging); smem4x4 is the conventional GPU choice and stays available.
//
// A weight b (2-D, vec4 rows, at most 64 KiB: the Linear forward x·Wᵀ and its input gradient dY·W) is bound as a
// uniform array on Mesa's software adapters (MATMUL_TUNING.uniformB; same kernel, `var<uniform> b`); an
// untransposed one of up to 128 KiB as two (rows [0, K0) in b, [K0, K) in b2, one K loop each): llvmpipe
// gathers uniform loads without the per-lane branch of its storage loads (faster on every Linear shape measured:
// `npm run bench -- matmul`, the reg8x16_storage_b rows).
//
// Memory traffic: a thread reads (TM + TN)·K floats, so A is read ceil(N / TN) times and B ceil(M / TM) times in
// all (mostly from cache); C is written once (split-K: splits·M·N written and read back by the reduction).
// FLOPs: 2·batch·M·N·K.
//
// Variants, slowest to fastest on llvmpipe: naive, smem4x4 (the conventional GPU tiling; its barriers cost more
// than they save here), reg4x4, reg8x8, reg8x16. pickVariant takes reg8x16 everywhere except small outputs
// (M·N <= 64·64: attention's per-batch 50x50 scores), where reg8x8 leaves fewer idle threads at the edges; both
// beat the tfjs-webgpu peer on every benchmarked shape. Timings per shape (cubes, the S3-Rec Linear shapes and their
// weight gradients, scores against all items, attention's batched products), side by side with tfjs:
// `npm run bench -- matmul`, tables in docs/BENCHMARKS.md.
//
// Backward (composed from the same op, same variant; C = op(A)·op(B)):
//   tA=F tB=F: dA = dC·Bᵀ          dB = Aᵀ·dC
//   tA=F tB=T: dA = dC·B           dB = dCᵀ·A
//   tA=T tB=F: dA = B·dCᵀ          dB = A·dC
//   tA=T tB=T: dA = Bᵀ·dCᵀ         dB = dCᵀ·Aᵀ
// A shared 2-D operand's gradient is summed over the batch: folded into the product's K when b is shared and a
// untransposed (one [K, batch·M] x [batch·M, N] product), else a batched product then sum over the batch axis.
// Linear's backward (MATMUL_TUNING.fuseBiasGrad): dW = dYᵀ·X reads dY as vec4s of 4 output features per k, so the
// same kernel also sums them over the rows (Spec.sumA): the bias gradient comes out of the weight-gradient product
// (after C in its buffer, through the same split-K sum) instead of a column reduction of dY. One S3-Rec pretraining
// step then runs 190 dispatches instead of 221 (llvmpipe spends 60-130 µs on each, whatever its size).
import { ceilDiv, defineOp, loopBudget, loopCost, maxLoopIterations, noGrad, ref, rt, shapeStr, Tensor, zeros, type Bindable, type Kernel } from '../engine/index.js';
import { bufferRegion, fill, isMesaAdapter, kernelFamily, vecType } from './common.js';
import { add } from './elementwise.js';
import { sum } from './reduce.js';

type F64 = ref.F64;

export const MATMUL_VARIANTS = ['naive', 'smem4x4', 'reg4x4', 'reg8x8', 'reg8x16'] as const;
export type MatmulVariant = (typeof MATMUL_VARIANTS)[number];

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** Force a kernel variant (tests, benchmarks); default: chosen per shape by pickVariant(). */
  variant?: MatmulVariant;
}

const WG = 64; // threads per workgroup in every variant

/** One specialisation of a variant: transposes and which operands are read/written as vec4. */
interface Spec {
  tA: boolean;
  tB: boolean;
  vA: boolean;
  vB: boolean;
  vC: boolean;
  /** Epilogue: c = acc + bias[col] (reg kernels; the fused Linear). */
  bias?: boolean;
  /** Also the sums over k of op(A)'s rows, sa[m] = sum_k A[k, m] (reg kernels, tA with vA and vC: the Linear's bias
   *  gradient beside its weight gradient), stored after C in the same buffer (see launch()). */
  sumA?: boolean;
  /** b bound as a uniform array of this many vec4s (reg kernels, vB, one 2-D b: a weight up to 64 KiB; see MATMUL_TUNING.uniformB). */
  uB?: number;
  /** An untransposed b over one uniform binding: rows k < uK0 in b (uB vec4s), the rest in b2 (uB2 vec4s). */
  uK0?: number;
  uB2?: number;
}

const TILES: Record<Exclude<MatmulVariant, 'naive' | 'smem4x4'>, [number, number]> = {
  reg4x4: [4, 4],
  reg8x8: [8, 8],
  reg8x16: [8, 16],
};

function specTag(s: Spec): string {
  return `${s.tA ? 't' : 'n'}${s.tB ? 't' : 'n'}.${s.vA ? 'a4' : 'a1'}${s.vB ? (s.uB ? 'bu' : 'b4') : 'b1'}${s.vC ? 'c4' : 'c1'}${s.bias ? '.bias' : ''}${s.sumA ? '.suma' : ''}`;
}

const PARAMS = /* wgsl */ `
// Strides are per batch entry, in elements of the binding's type (vec4s for a vec4 binding); a stride of 0 shares
// that operand across the batch. Split-K (reg kernels): z = batch·splits, split s sums k in
// [s·kChunk, (s+1)·kChunk) into its own [M, N] slice of c; the launcher adds the slices up.
// wx: the reg kernels' workgroup of 64 threads is arranged as wx columns x 64/wx rows of threads (a uniform, not
// an override, so one pipeline serves every arrangement).
struct Params { M: u32, N: u32, K: u32, batch: u32, splits: u32, kChunk: u32, wx: u32, strideA: u32, strideB: u32, strideC: u32 }
@group(0) @binding(0) var<uniform> p: Params;`;

/** The operand bindings of every variant: {A_T} / {C_T} are f32 or vec4<f32> (Spec.vA / vC); {B_DECL} binds b as storage (f32 / vec4, Spec.vB) or as a uniform array (Spec.uB). */
const BINDINGS = /* wgsl */ `
@group(0) @binding(1) var<storage, read> a: array<{A_T}>;        // {A_SHAPE}
{B_DECL}
@group(0) @binding(3) var<storage, read_write> c: array<{C_T}>;  // [batch, M, N]{BIAS_BINDING}`;

const BIAS_BINDING = /* wgsl */ `
@group(0) @binding(4) var<storage, read> bias: array<f32>;        // [N], added to every row of C`;

function bindings(s: Spec): string {
  return fill(BINDINGS, {
    A_T: vecType(s.vA ? 4 : 1),
    B_DECL: s.uB2
      ? `@group(0) @binding(2) var<uniform> b: array<vec4<f32>, ${s.uB}>;  // [K, N] rows k < K0 (one weight over two uniform arrays)
@group(0) @binding(5) var<uniform> b2: array<vec4<f32>, ${s.uB2}>; // [K, N] rows k >= K0
const K0 = ${s.uK0}u;`
      : s.uB
      ? `@group(0) @binding(2) var<uniform> b: array<vec4<f32>, ${s.uB}>; // ${s.tB ? '[N, K]' : '[K, N]'} (one weight, read as a uniform array)`
      : `@group(0) @binding(2) var<storage, read> b: array<${vecType(s.vB ? 4 : 1)}>;        // ${s.tB ? '[batch | 1, N, K]' : '[batch | 1, K, N]'}`,
    C_T: vecType(s.vC ? 4 : 1),
    A_SHAPE: s.tA ? '[batch | 1, K, M]' : '[batch | 1, M, K]',
    BIAS_BINDING: s.bias ? BIAS_BINDING : '',
  });
}

// ------------------------------------------------------------------ reg kernels (reg4x4, reg8x8, reg8x16)
// The tile scheme. Thread li of workgroup (x, y, z) sits at column li % wx, row li / wx of the workgroup's
// wx x 64/wx grid of threads and owns the TM x TN block of C at rows row0 + i (i < TM) and columns col0 + j
// (j < TN) of batch entry z / splits, in the registers acc{i}_{j}. Its K slice is walked 4 k at a time: per step
// it loads the 4 k of its TM rows of A and TN columns of B (TM + TN vec4s, or the same values as scalars), then
// does the 4·TM·TN FMAs acc{i}_{j} = fma(A[row0 + i, k + kk], B[k + kk, col0 + j], acc{i}_{j}) in k order
// (kk = 0..3); a K % 4 tail (only when no operand is a vec4 along K) does one k at a time. Rows and columns past
// the edge are clamped on load (no branches in the K loop) and skipped on store; threads wholly past it return.
//
// The kernel is one WGSL template (REG_WGSL); its {PLACEHOLDERS} are the tile's statements, each written once
// below as one line of WGSL over the tile indices and written out by tile() (no loops: constant names keep the
// accumulators and loads in registers). An operand's lines depend on its storage layout (REG_LAYOUTS).

/**
 * `text` written out once per t in [0, n) (every `step`-th t), joined by `sep`: common.ts `unroll` for a register
 * tile, whose statements also name the vec4 that holds an index. For the index `key` (here i: a row of the tile,
 * j: a column, kk: a k within the 4-k step): `{i}` -> t, `{i+d}` -> t + d, `{i/4}` -> t / 4 (its vec4), and the
 * swizzles `{xyzw[i]}` -> x, y, z, w for t = 0..3 and `{xyzw[i%4]}` -> its lane in its vec4. Nest with distinct keys.
 */
function tile(n: number, text: string, key: string, sep = '\n', step = 1): string {
  const re = new RegExp(`\\{(xyzw\\[)?${key}(?:([+/%])(\\d+))?(\\])?\\}`, 'g');
  const out: string[] = [];
  for (let t = 0; t < n; t += step) {
    out.push(
      text.replace(re, (m, swizzle: string | undefined, op: string | undefined, d: string | undefined, close: string | undefined) => {
        if (!swizzle !== !close) return m;
        const v = op === '+' ? t + Number(d) : op === '/' ? Math.floor(t / Number(d)) : op === '%' ? t % Number(d) : t;
        return swizzle ? 'xyzw'[v]! : String(v);
      }),
    );
  }
  return out.join(sep);
}

const REG_WGSL = /* wgsl */ `// matmul_reg{TM}x{TN} ({TAG}): C = {OP_A}·{OP_B}; each thread a {TM}x{TN} block of C in registers.
${PARAMS}{BINDINGS}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let row0 = (wid.y * (${WG}u / p.wx) + li / p.wx) * {TM}u;
  let col0 = (wid.x * p.wx + li % p.wx) * {TN}u;
  // No barriers below: threads past the edge leave (llvmpipe then skips all-idle 8-lane groups).
  if (row0 >= p.M || col0 >= p.N) { return; }
  let bz = wid.z / p.splits;
  let kBeg = (wid.z % p.splits) * p.kChunk; // a multiple of 4
  let kEnd = min(p.K, kBeg + p.kChunk);
  let kEnd4 = kBeg + (kEnd - kBeg) / 4u * 4u;
  let aBase = bz * p.strideA;
  let bBase = bz * p.strideB;
  let K4 = p.K / 4u;
  let M4 = p.M / 4u;
  let N4 = p.N / 4u;
  {A_OFFSETS}
  {B_OFFSETS}
  {ACC_ZERO}
  {K_LOOPS}{TAIL}
  let cBase = wid.z * p.strideC;{BIAS}
  {STORES}{SUM_STORES}
}`;

/** The main loop of REG_WGSL over 4-k steps [FROM, TO) (two of them when b is split over two bindings: uK0). */
const REG_LOOP = /* wgsl */ `for (var ks = {FROM}; ks < {TO}; ks = ks + 1u) {
    let k = ks * 4u;
    {A_LOADS}
    {B_LOADS}
    {FMAS}{SUMS}
  }`;

/** The K % 4 tail of REG_WGSL: one k per trip, the same loads and FMAs for a single k. */
const REG_TAIL = /* wgsl */ `
  for (var k = kEnd4; k < kEnd; k = k + 1u) {
    {A_LOADS}
    {B_LOADS}
    {FMAS}{SUMS}
  }`;

/** The fused Linear's epilogue of REG_WGSL: the bias added in registers before the store (columns clamped like the loads). */
const REG_BIAS = /* wgsl */ `
  {BIAS_LOADS}
  {BIAS_ADDS}`;

/** Tile statements (tile(): i < TM, j < TN, kk < 4). */
const ACC_ZERO = 'var acc{i}_{j} = 0.0;';
const FMA = 'acc{i}_{j} = fma({A}, {B}, acc{i}_{j});'; // {A}, {B}: the operands' elements (REG_LAYOUTS el / el1)
const BIAS_LOAD = 'let bb{j} = bias[min(col0 + {j}u, p.N - 1u)];';
const BIAS_ADD = 'acc{i}_{j} = acc{i}_{j} + bb{j};';
const STORE_ROW = /* wgsl */ `if (row0 + {i}u < p.M) {
    {STORE_COLS}
  }`;
const STORE_F32 = 'if (col0 + {j}u < p.N) { c[cBase + (row0 + {i}u) * p.N + col0 + {j}u] = acc{i}_{j}; }';
const STORE_VEC4 = 'if (col0 / 4u + {j/4}u < N4) { c[cBase + (row0 + {i}u) * N4 + col0 / 4u + {j/4}u] = vec4<f32>(acc{i}_{j}, acc{i}_{j+1}, acc{i}_{j+2}, acc{i}_{j+3}); }'; // per 4 columns
// sumA (aCols4 only: A [K, M] as vec4s of 4 rows of C): sa{i/4} = the thread's sum over its k of those 4 rows,
// added in k order; the threads of the first column of tiles store them after C's M x N values.
const SUM_ZERO = 'var sa{i/4} = vec4<f32>(0.0);';
const SUM_ADD4 = 'sa{i/4} = (((sa{i/4} + at0_{i/4}) + at1_{i/4}) + at2_{i/4}) + at3_{i/4};';
const SUM_ADD1 = 'sa{i/4} = sa{i/4} + a1_{i/4};';
const SUM_STORE = 'if (row0 / 4u + {i/4}u < M4) { c[cBase + p.M * N4 + row0 / 4u + {i/4}u] = sa{i/4}; }';

/**
 * How a reg kernel reads one operand, for each storage layout: WGSL lines over the operand's tile index (A: i, the
 * tile's rows of C; B: j, its columns), written out by tile() in regWgsl.
 *   offset    the clamped start of each row / column of the operand, once per thread;
 *   loads     the loads of one 4-k step (a line that names kk is written for kk = 0..3, outermost);
 *   el        the element (tile index, k + kk) that the FMAs read;
 *   tail/el1  the same for one k of the K % 4 tail (tail null: K % 4 == 0 for this layout, no tail loop);
 *   step      4: offset / loads / tail once per vec4 (4 tile indices), else once per index.
 * rows: the operand's rows run along K (A untransposed, B transposed): row offsets aR / bR, per index one vec4 of
 *   4 consecutive k (or 4 scalars) av / bt, element .x/.y/.z/.w = k + 0..3.
 * cols: they run along M / N (A transposed, B untransposed): column offsets aC / bC, per k one vec4 of 4 tile
 *   indices (or one scalar per index) at / bv.
 * Suffix 4: bound as array<vec4<f32>> (the contiguous dimension is a multiple of 4).
 */
interface Layout {
  key: 'i' | 'j';
  step: 1 | 4;
  offset: string;
  loads: string;
  el: string;
  tail: string | null;
  el1: string;
}

const REG_LAYOUTS = {
  // a [M, K]
  aRows4: {
    key: 'i', step: 1,
    offset: 'let aR{i} = aBase + min(row0 + {i}u, p.M - 1u) * K4;',
    loads: 'let av{i} = a[aR{i} + ks];',
    el: 'av{i}.{xyzw[kk]}',
    tail: null, el1: '',
  },
  aRows: {
    key: 'i', step: 1,
    offset: 'let aR{i} = aBase + min(row0 + {i}u, p.M - 1u) * p.K;',
    loads: 'let av{i} = vec4<f32>(a[aR{i} + k], a[aR{i} + k + 1u], a[aR{i} + k + 2u], a[aR{i} + k + 3u]);',
    el: 'av{i}.{xyzw[kk]}',
    tail: 'let a1_{i} = a[aR{i} + k];', el1: 'a1_{i}',
  },
  // a [K, M] (transA)
  aCols4: {
    key: 'i', step: 4,
    offset: 'let aC{i/4} = aBase + min(row0 / 4u + {i/4}u, M4 - 1u);',
    loads: 'let at{kk}_{i/4} = a[aC{i/4} + (k + {kk}u) * M4];',
    el: 'at{kk}_{i/4}.{xyzw[i%4]}',
    tail: 'let a1_{i/4} = a[aC{i/4} + k * M4];', el1: 'a1_{i/4}.{xyzw[i%4]}',
  },
  aCols: {
    key: 'i', step: 1,
    offset: 'let aC{i} = aBase + min(row0 + {i}u, p.M - 1u);',
    loads: 'let at{kk}_{i} = a[aC{i} + (k + {kk}u) * p.M];',
    el: 'at{kk}_{i}',
    tail: 'let a1_{i} = a[aC{i} + k * p.M];', el1: 'a1_{i}',
  },
  // b [N, K] (transB)
  bRows4: {
    key: 'j', step: 1,
    offset: 'let bR{j} = bBase + min(col0 + {j}u, p.N - 1u) * K4;',
    loads: 'let bt{j} = b[bR{j} + ks];',
    el: 'bt{j}.{xyzw[kk]}',
    tail: null, el1: '',
  },
  bRows: {
    key: 'j', step: 1,
    offset: 'let bR{j} = bBase + min(col0 + {j}u, p.N - 1u) * p.K;',
    loads: 'let bt{j} = vec4<f32>(b[bR{j} + k], b[bR{j} + k + 1u], b[bR{j} + k + 2u], b[bR{j} + k + 3u]);',
    el: 'bt{j}.{xyzw[kk]}',
    tail: 'let b1_{j} = b[bR{j} + k];', el1: 'b1_{j}',
  },
  // b [K, N]
  bCols4: {
    key: 'j', step: 4,
    offset: 'let bC{j/4} = bBase + min(col0 / 4u + {j/4}u, N4 - 1u);',
    loads: 'let bv{kk}_{j/4} = b[bC{j/4} + (k + {kk}u) * N4];',
    el: 'bv{kk}_{j/4}.{xyzw[j%4]}',
    tail: 'let b1_{j/4} = b[bC{j/4} + k * N4];', el1: 'b1_{j/4}.{xyzw[j%4]}',
  },
  bCols: {
    key: 'j', step: 1,
    offset: 'let bC{j} = bBase + min(col0 + {j}u, p.N - 1u);',
    loads: 'let bv{kk}_{j} = b[bC{j} + (k + {kk}u) * p.N];',
    el: 'bv{kk}_{j}',
    tail: 'let b1_{j} = b[bC{j} + k * p.N];', el1: 'b1_{j}',
  },
} as const satisfies Record<string, Layout>;

/** A register-tiled kernel's WGSL: REG_WGSL filled for a TM x TN tile and one specialisation (see the tile scheme above). */
function regWgsl(TM: number, TN: number, s: Spec): string {
  const L = REG_LAYOUTS;
  const A: Layout = s.tA ? (s.vA ? L.aCols4 : L.aCols) : s.vA ? L.aRows4 : L.aRows;
  const B: Layout = s.tB ? (s.vB ? L.bRows4 : L.bRows) : s.vB ? L.bCols4 : L.bCols;
  const n = (o: Layout): number => (o.key === 'i' ? TM : TN);
  // One of an operand's lines over its tile index (per vec4 with step 4), and over kk = 0..3 (outermost) when it names kk.
  const lines = (o: Layout, line: string, sep: string): string => tile(line.includes('{kk}') ? 4 : 1, tile(n(o), line, o.key, sep, o.step), 'kk', sep);
  // The TM x TN products of one k (each row i one line), for elements {A} / {B}.
  const products = (elA: string, elB: string, sep: string): string => tile(TM, tile(TN, fill(FMA, { A: elA, B: elB }), 'j', ' '), 'i', sep);
  // b split over two uniform bindings (uK0, untransposed b only): rows k >= K0 are read from b2 at row k - K0.
  const second = (line: string): string => line.replace('b[', 'b2[').replace('(k + ', '(k - K0 + ').replace(' + k * ', ' + (k - K0) * ');
  if (s.sumA && A !== L.aCols4) throw new Error('matmul: sumA needs a transposed vec4 a');
  const sums = (line: string): string => (s.sumA ? '\n    ' + tile(TM, line, 'i', '\n    ', 4) : '');
  const loop = (from: string, to: string, bLoads: string): string =>
    fill(REG_LOOP, {
      FROM: from, TO: to, A_LOADS: lines(A, A.loads, '\n    '), B_LOADS: lines(B, bLoads, '\n    '),
      FMAS: tile(4, products(A.el, B.el, '\n    '), 'kk', '\n    '), SUMS: sums(SUM_ADD4),
    });
  const kLoops = s.uK0
    ? `${loop('kBeg / 4u', 'min(kEnd4, K0) / 4u', B.loads)}\n  ${loop('max(kBeg, K0) / 4u', 'kEnd4 / 4u', second(B.loads))}`
    : loop('kBeg / 4u', 'kEnd4 / 4u', B.loads);
  const tail =
    A.tail === null || B.tail === null
      ? ''
      : fill(REG_TAIL, { A_LOADS: lines(A, A.tail, '\n    '), B_LOADS: lines(B, s.uK0 ? second(B.tail) : B.tail, '\n    '), FMAS: products(A.el1, B.el1, '\n    '), SUMS: sums(SUM_ADD1) });
  const bias = s.bias ? fill(REG_BIAS, { BIAS_LOADS: tile(TN, BIAS_LOAD, 'j', ' '), BIAS_ADDS: tile(TM, tile(TN, BIAS_ADD, 'j', ' '), 'i', '\n  ') }) : '';
  const storeCols = s.vC ? tile(TN, STORE_VEC4, 'j', '\n    ', 4) : tile(TN, STORE_F32, 'j', '\n    ');
  return fill(REG_WGSL, {
    TM,
    TN,
    TAG: specTag(s),
    OP_A: s.tA ? 'Aᵀ' : 'A',
    OP_B: s.tB ? 'Bᵀ' : 'B',
    BINDINGS: bindings(s),
    A_OFFSETS: lines(A, A.offset, '\n  '),
    B_OFFSETS: lines(B, B.offset, '\n  '),
    ACC_ZERO: tile(TM, tile(TN, ACC_ZERO, 'j', ' '), 'i', '\n  ') + (s.sumA ? '\n  ' + tile(TM, SUM_ZERO, 'i', ' ', 4) : ''),
    K_LOOPS: kLoops,
    TAIL: tail,
    BIAS: bias,
    STORES: tile(TM, fill(STORE_ROW, { STORE_COLS: storeCols }), 'i', '\n  '),
    SUM_STORES: s.sumA ? `\n  if (col0 == 0u) {\n    ${tile(TM, SUM_STORE, 'i', '\n    ', 4)}\n  }` : '',
  });
}

// ------------------------------------------------------------------ smem4x4: tfjs's shared-memory scheme
/**
 * 8x8 threads, a 32x32 tile of C per workgroup; per 32-k step the workgroup stages A [32 rows x 32 k] and
 * B [32 k x 32 cols] in workgroup memory (each thread loads 16 + 16 scalars, clamped at the edges and zeroed past
 * K), barrier, then every thread does 32 k x 4 x 4 FMAs from workgroup memory, barrier.
 */
function smemWgsl(s: Spec): string {
  return /* wgsl */ `
// matmul_smem4x4 (${specTag(s)}): C = ${s.tA ? 'Aᵀ' : 'A'}·${s.tB ? 'Bᵀ' : 'B'}; 32x32 C tile per workgroup staged through workgroup memory.
${PARAMS}${bindings(s)}
var<workgroup> As: array<array<f32, 32>, 32>; // [k][row]
var<workgroup> Bs: array<array<f32, 32>, 32>; // [k][col]
@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tileRow = wid.y * 32u;
  let tileCol = wid.x * 32u;
  let aBase = wid.z * p.strideA;
  let bBase = wid.z * p.strideB;
  let t = lid.y * 8u + lid.x;
  var acc: array<array<f32, 4>, 4>;
  for (var i = 0u; i < 4u; i = i + 1u) { for (var j = 0u; j < 4u; j = j + 1u) { acc[i][j] = 0.0; } }
  for (var k0 = 0u; k0 < p.K; k0 = k0 + 32u) {
    // 1024 elements of each tile, 16 per thread; element e = t + 64 q: tile row/col e / 32, k e % 32.
    for (var q = 0u; q < 16u; q = q + 1u) {
      let el = t + 64u * q;
      let rc = el / 32u;
      let kk = el % 32u;
      let k = min(k0 + kk, p.K - 1u);
      let inK = k0 + kk < p.K;
      let r = min(tileRow + rc, p.M - 1u);
      let cc = min(tileCol + rc, p.N - 1u);
      As[kk][rc] = select(0.0, ${s.tA ? 'a[aBase + (k) * p.M + r]' : 'a[aBase + r * p.K + k]'}, inK);
      Bs[kk][rc] = select(0.0, ${s.tB ? 'b[bBase + cc * p.K + k]' : 'b[bBase + (k) * p.N + cc]'}, inK);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 32u; kk = kk + 1u) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i = i + 1u) { av[i] = As[kk][lid.y * 4u + i]; bv[i] = Bs[kk][lid.x * 4u + i]; }
      for (var i = 0u; i < 4u; i = i + 1u) { for (var j = 0u; j < 4u; j = j + 1u) { acc[i][j] = fma(av[i], bv[j], acc[i][j]); } }
    }
    workgroupBarrier();
  }
  let cBase = wid.z * p.strideC;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let r = tileRow + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j = j + 1u) {
      let cc = tileCol + lid.x * 4u + j;
      if (r < p.M && cc < p.N) { c[cBase + r * p.N + cc] = acc[i][j]; }
    }
  }
}`;
}

// ------------------------------------------------------------------ naive
function naiveWgsl(s: Spec): string {
  return /* wgsl */ `
// matmul_naive (${specTag(s)}): C = ${s.tA ? 'Aᵀ' : 'A'}·${s.tB ? 'Bᵀ' : 'B'}; one thread per element of C, a serial loop over K.
${PARAMS}${bindings(s)}
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) g: vec3u) {
  let row = g.y;
  let col = g.x;
  if (row >= p.M || col >= p.N) { return; }
  let aBase = g.z * p.strideA;
  let bBase = g.z * p.strideB;
  var acc = 0.0;
  for (var k = 0u; k < p.K; k = k + 1u) {
    let av = ${s.tA ? 'a[aBase + k * p.M + row]' : 'a[aBase + row * p.K + k]'};
    let bv = ${s.tB ? 'b[bBase + col * p.K + k]' : 'b[bBase + k * p.N + col]'};
    acc = fma(av, bv, acc);
  }
  c[g.z * p.strideC + row * p.N + col] = acc;
}`;
}

// ------------------------------------------------------------------ kernel cache and launcher
function isReg(v: MatmulVariant): v is keyof typeof TILES {
  return v in TILES;
}

/**
 * One kernel family per variant, one kernel per specialisation, named by its flags:
 * `matmul_reg8x16{tB,vA,vB,vC}` (transposed b, vec4 loads of a and b, vec4 stores of c), `matmul_naive{tA}`.
 */
const families = Object.fromEntries(
  MATMUL_VARIANTS.map((variant) => [
    variant,
    kernelFamily(`matmul_${variant}`, (s: Spec) => {
      // Outputs per thread: TM rows x TN columns.
      const [TM, TN] = isReg(variant) ? TILES[variant] : variant === 'smem4x4' ? [4, 4] : [1, 1];
      return {
        wgsl: variant === 'naive' ? naiveWgsl(s) : variant === 'smem4x4' ? smemWgsl(s) : regWgsl(TM, TN, s),
        // Reg kernels: wx x 64/wx threads per workgroup (a param); naive and smem: fixed 8x8.
        grid: ({ M, N, batch, splits, wx }, [x, y]) => {
          const [gx, gy] = isReg(variant) ? [wx!, WG / wx!] : [x, y];
          return [ceilDiv(N!, gx * TN), ceilDiv(M!, gy * TM), batch! * splits!];
        },
        minSizes: ({ M, N, K, batch, splits, strideA, strideB }) => ({
          a: ((strideA ? batch! : 1) * M! * K!) / (s.vA ? 4 : 1),
          ...(s.uB2 ? { b: s.uB!, b2: s.uB2 } : { b: ((strideB ? batch! : 1) * K! * N!) / (s.vB ? 4 : 1) }),
          c: (batch! * splits! * (M! * N! + (s.sumA ? M! : 0))) / (s.vC ? 4 : 1),
          ...(s.bias ? { bias: N! } : {}),
        }),
        loopTrips: ({ K, kChunk }) => (isReg(variant) ? regTrips(kChunk!) + (s.uK0 ? loopCost(0) : 0) : nonRegTrips(variant, K!)),
      };
    }),
  ]),
) as Record<MatmulVariant, (s: Spec) => Kernel>;

const kernelFor = (variant: MatmulVariant, s: Spec): Kernel => families[variant](s);

/** Loop cost of a reg thread: its K slice in steps of 4, then the K % 4 tail. */
const regTrips = (kChunk: number): number => loopCost(ceilDiv(kChunk, 4)) + loopCost(3);
/** Loop cost of a naive thread (a K loop) or an smem4x4 thread (32-k tiles of 16 loads and 32 x 4 x 4 FMAs). */
function nonRegTrips(variant: MatmulVariant, K: number): number {
  if (variant === 'naive') return loopCost(K);
  const l4 = loopCost(4, loopCost(4));
  return 2 * l4 + loopCost(ceilDiv(K, 32), loopCost(16) + loopCost(32, 2 * loopCost(4) + l4));
}

/** The default variant for a problem (per batch entry: M x N), from the measurements in the header. */
export function pickVariant(M: number, N: number): MatmulVariant {
  // Small outputs (attention's 50x50 scores per batch entry): 8x8 leaves the fewest idle threads at the edges.
  // Everything else measured (cubes, the Linear shapes and their weight gradients, scores against all items):
  // 8x16 is best or within noise of the best.
  return M * N <= 64 * 64 ? 'reg8x8' : 'reg8x16';
}

interface Dims {
  batch: number;
  M: number;
  N: number;
  K: number;
  /** a (resp. b) is 2-D and shared by every batch entry of the other operand. */
  sharedA: boolean;
  sharedB: boolean;
  outShape: number[];
}

function dims(a: Tensor, b: Tensor, tA: boolean, tB: boolean): Dims {
  const what = (): string => `matmul: a ${shapeStr(a.shape)}${tA ? 'ᵀ' : ''} x b ${shapeStr(b.shape)}${tB ? 'ᵀ' : ''}`;
  if (a.ndim < 2 || b.ndim < 2) throw new Error(`${what()}: both operands need at least 2 dims`);
  if (a.dtype !== 'f32' || b.dtype !== 'f32') throw new Error(`${what()}: f32 only`);
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const M = tA ? ac : ar;
  const K = tA ? ar : ac;
  const Kb = tB ? bc : br;
  const N = tB ? br : bc;
  if (K !== Kb) throw new Error(`${what()}: inner dims differ (${K} vs ${Kb})`);
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const sharedA = batchA.length === 0 && batchB.length > 0;
  const sharedB = batchB.length === 0 && batchA.length > 0;
  if (!sharedA && !sharedB && (batchA.length !== batchB.length || batchA.some((d, i) => d !== batchB[i]))) {
    throw new Error(`${what()}: batch dims must be equal, or one operand must be 2-D`);
  }
  const batchDims = sharedA ? batchB : batchA;
  return { batch: batchDims.reduce((x, y) => x * y, 1), M, N, K, sharedA, sharedB, outShape: [...batchDims, M, N] };
}

// Split-K: a product with fewer than splitThreads threads of work (a weight gradient such as
// [12800, 64]ᵀ x [12800, 256]: 64 threads = one workgroup = one of llvmpipe's cores) is cut along K into
// slices of at least splitMinK, computed side by side and added up by a reduction (fixed order: deterministic).
// Mutable for benchmarks.
//
// uniformB: a 2-D b that fits a uniform binding (a weight: the Linear forward x·Wᵀ and input gradient dY·W) is
// bound as `var<uniform> b: array<vec4<f32>, K·N/4>` instead of a storage array (same kernel otherwise; an
// untransposed b of up to twice the binding limit as two arrays split at a row K0 whose byte offset is aligned). On
// llvmpipe (Mesa 22.3) uniform loads are gathered without the per-lane branch of its storage loads, and measured
// faster (docs/BENCHMARKS.md). On a real GPU indexed uniform reads can serialise (different addresses per lane),
// and SwiftShader was not timed, so 'auto' takes it on Mesa's software adapters only. Only for M >= uniformMinRows
// (b is re-read once per TM rows of C: a weight under many rows gains, a weight gradient's activation operand
// hardly), and a uniform array's size is part of the pipeline, so it is declared as the buffer's whole pool size
// class (capped at the binding limit), not the operand's size: operands whose sizes change from call to call (the
// tokens of varlen batches) share a handful of pipelines instead of compiling one each.
export const MATMUL_TUNING: { splitThreads: number; splitMinK: number; uniformB: 'auto' | boolean; uniformMinRows: number; fuseBiasGrad: boolean } = {
  splitThreads: 2048,
  splitMinK: 256,
  uniformB: 'auto',
  uniformMinRows: 128,
  fuseBiasGrad: true,
};

/**
 * How b is read as uniform arrays here, or null (MATMUL_TUNING, the binding limits, its buffer's usage): the vec4
 * counts of the bindings, `b` from byte 0 and (an untransposed b of N columns, N > 0, over the limit) `b2` from row
 * K0 at an aligned offset. Each binding runs to the end of the buffer or the limit (see MATMUL_TUNING).
 */
function uniformB(b: Tensor, M: number, N: number): { uB: number; uK0?: number; uB2?: number } | null {
  const want = MATMUL_TUNING.uniformB === 'auto' ? isMesaAdapter() : MATMUL_TUNING.uniformB;
  if (!want || M < MATMUL_TUNING.uniformMinRows) return null;
  const lim = rt().device.limits;
  const max = lim.maxUniformBufferBindingSize;
  const align = lim.minUniformBufferOffsetAlignment;
  const size = b.buffer.size;
  if (b.byteLength % 16 !== 0 || b.byteOffset !== 0 || (b.buffer.usage & GPUBufferUsage.UNIFORM) === 0) return null;
  if (b.byteLength <= max) return { uB: Math.floor(Math.min(size, max) / 16) };
  if (!N || b.byteLength > 2 * max) return null;
  const K = b.size / N;
  for (let K0 = Math.floor(max / (16 * N)) * 4; K0 >= 4; K0 -= 4) {
    const at = K0 * N * 4;
    if (at % align === 0 && (K - K0) * N * 4 <= max) return { uB: at / 16, uK0: K0, uB2: Math.floor(Math.min(size - at, max) / 16) };
  }
  return null;
}

/**
 * C = op(A)·op(B) as a new tensor of shape d.outShape (no autograd). With sumA (Linear.backward, fusedBiasGrad): a flat
 * [M·N + M] tensor, C's M x N values then sa[m] = sum_k A[k, m].
 */
function launch(a: Tensor, b: Tensor, d: Dims, tA: boolean, tB: boolean, variant: MatmulVariant, bias: Tensor | null = null, sumA = false): Tensor {
  let { batch, M } = d;
  const { N, K, sharedA, sharedB } = d;
  // llvmpipe's loop budget (65,535 iterations per invocation): a reg thread loops K / 4 times per K slice, so a
  // longer K is split (below); naive / smem4x4 have no split-K and give way to the default variant.
  const budget = loopBudget();
  if (!isReg(variant) && nonRegTrips(variant, K) > budget) variant = pickVariant(d.M, d.N);
  const maxK4 = maxLoopIterations(budget, 0, loopCost(3)); // K / 4 steps one thread may take
  if (bias && ceilDiv(K, 4) > maxK4) {
    // The bias epilogue cannot split K: product first, then the bias row added.
    const y = launch(a, b, d, tA, tB, variant, null);
    const yb = noGrad(() => add(y, bias)); // [..., M, N]
    y.dispose();
    return yb;
  }
  // A shared weight with an untransposed a: fold the batch into M (one [batch·M, K] product).
  const foldA = sharedB && !tA && batch > 1;
  if (foldA) {
    M *= batch;
    batch = 1;
  }
  const reg = isReg(variant);
  const s: Spec = {
    tA,
    tB,
    vA: reg && (tA ? M : K) % 4 === 0,
    vB: reg && (tB ? K : N) % 4 === 0,
    vC: reg && N % 4 === 0,
    ...(bias ? { bias: true } : {}),
    ...(sumA ? { sumA: true } : {}),
  };
  if (sumA && !(reg && tA && s.vA && s.vC && batch === 1 && !bias)) throw new Error('matmul: sumA needs a register-tiled, transposed, vec4 a and c, single product');
  // One 2-D b (shared by the batch, or a batch of 1) read as a uniform array: the whole of it is the binding, or
  // (untransposed, up to twice the limit) rows [0, K0) and [K0, K) as two bindings.
  const u = reg && s.vB && (sharedB || batch === 1) && b.size === K * N ? uniformB(b, M, tB ? 0 : N) : null;
  if (u) Object.assign(s, u);
  if (bias && !reg) throw new Error(`matmul: the bias epilogue needs a register-tiled variant, not ${variant}`);
  const k = kernelFor(variant, s);
  const [TM, TN] = isReg(variant) ? TILES[variant] : [1, 1];
  // Reg kernels: 64 threads arranged so that one workgroup row spans N if it can (N = 64 with TN = 16: wx = 4).
  const wx = Math.min(WG, 2 ** Math.ceil(Math.log2(ceilDiv(N, TN))));
  const limits = rt().device.limits;
  const maxBind = limits.maxStorageBufferBindingSize;
  const threads = batch * ceilDiv(M, TM) * ceilDiv(N, TN);
  let splits = 1;
  const { splitThreads, splitMinK } = MATMUL_TUNING;
  if (reg && !bias && threads < splitThreads && K >= 2 * splitMinK) splits = Math.min(ceilDiv(splitThreads, threads), Math.floor(K / splitMinK));
  if (reg && ceilDiv(K, 4) > maxK4) splits = Math.max(splits, ceilDiv(ceilDiv(K, 4), Math.max(1, maxK4)));
  const kChunk = splits > 1 ? Math.min(ceilDiv(ceilDiv(K, splits), 4) * 4, 4 * Math.max(1, maxK4)) : K; // a multiple of 4 (vec4 loads along K)
  splits = kChunk ? ceilDiv(K, kChunk) : 1;
  const slice = M * N + (sumA ? M : 0); // one split's C (and sa) values
  const out = Tensor.empty(sumA ? (splits > 1 ? [splits, slice] : [slice]) : splits > 1 ? [batch, splits, M, N] : d.outShape); // [..., (splits,) M, N]
  // b as uniform arrays: the declared sizes of the buffer (from byte 0 / from row K0), as regions of it.
  const bB: Record<string, Bindable> = s.uB2
    ? { b: bufferRegion(b, 0, s.uB! * 16), b2: bufferRegion(b, s.uK0! * N * 4, s.uB2 * 16) }
    : s.uB
      ? { b: bufferRegion(b, 0, s.uB * 16) }
      : { b };
  const call = (aB: Bindable, cB: Bindable, m: number): void => {
    k.run(
      bias ? { a: aB, ...bB, c: cB, bias } : { a: aB, ...bB, c: cB },
      {
        M: m,
        N,
        K,
        batch,
        splits,
        kChunk,
        wx,
        strideA: sharedA || foldA ? 0 : (M * K) / (s.vA ? 4 : 1),
        strideB: sharedB ? 0 : (K * N) / (s.vB ? 4 : 1),
        strideC: slice / (s.vC ? 4 : 1),
      },
    );
  };
  if (a.byteLength <= maxBind && out.byteLength <= maxBind) {
    call(a, out, M);
    if (splits === 1) return out;
    const flat = out.view([batch, splits, slice]); // [batch, splits, M·N (+ M)]
    const summed = sum(flat, 1); // [batch, M·N (+ M)]
    const res = summed.view(sumA ? [slice] : d.outShape); // [..., M, N] or [M·N + M]
    for (const t of [flat, summed, out]) t.dispose();
    return res;
  }
  // Over the binding cap (e.g. [12800, 64] x [12103, 64]ᵀ = 620 MB of logits): dispatch row chunks of one
  // 2-D product, binding sub-regions of a and c. Chunks are multiples of the offset alignment (in rows), so
  // every byte offset r0·K·4 and r0·N·4 stays aligned.
  if (batch !== 1 || splits !== 1 || tA || sumA || b.byteLength > maxBind) {
    out.dispose();
    throw new Error(
      `matmul: a ${shapeStr(a.shape)} x b ${shapeStr(b.shape)} needs a binding over maxStorageBufferBindingSize (${maxBind} bytes); ` +
        'only an untransposed 2-D product (or one with a shared 2-D b) is split into row chunks',
    );
  }
  const align = limits.minStorageBufferOffsetAlignment;
  const chunk = Math.floor(Math.floor(maxBind / (4 * Math.max(K, N))) / align) * align;
  if (chunk < 1) {
    out.dispose();
    throw new Error(`matmul: ${align} rows of ${Math.max(K, N)} floats do not fit a storage binding`);
  }
  for (let r0 = 0; r0 < M; r0 += chunk) {
    const m = Math.min(chunk, M - r0);
    call(bufferRegion(a, r0 * K * 4, m * K * 4), bufferRegion(out, r0 * N * 4, m * N * 4), m);
  }
  return out;
}

// ------------------------------------------------------------------ op
interface Attrs {
  transA: boolean;
  transB: boolean;
  variant: MatmulVariant | undefined;
}

/** Sum a per-batch gradient [...batch, R, C] over the batch to the shared operand's [R, C]. */
function sumBatch(g: Tensor, shape: readonly number[]): Tensor {
  const batch = g.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  const flat = g.view([batch, shape[0]!, shape[1]!]); // [batch, R, C]
  const out = sum(flat, 0); // [R, C]
  flat.dispose();
  g.dispose();
  return out;
}

const matmulOp = defineOp<Attrs>({
  name: 'matmul',
  forward(ctx, [a, b], { transA, transB, variant }) {
    const d = dims(a!, b!, transA, transB);
    if (ctx.recording) ctx.save(a!, b!);
    if (d.M === 0 || d.N === 0) return Tensor.empty(d.outShape); // [..., M, N], no elements
    if (d.K === 0) return zeros(d.outShape); // [..., M, N]
    return launch(a!, b!, d, transA, transB, variant ?? pickVariant(d.M, d.N)); // [..., M, N]
  },
  backward(ctx, gy) {
    const [a, b] = ctx.saved as [Tensor, Tensor];
    const { transA: tA, transB: tB, variant } = ctx.attrs;
    const mm = (x: Tensor, y: Tensor, ta: boolean, tb: boolean): Tensor => matmulOp.apply([x, y], { transA: ta, transB: tb, variant });
    const sharedA = a.ndim === 2 && b.ndim > 2;
    const sharedB = b.ndim === 2 && a.ndim > 2;
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    if (ctx.needsGrad[0]) {
      // dA in a's layout: [..., M, K] (or [..., K, M] with transA).
      ga = !tA ? (tB ? mm(gy, b, false, false) : mm(gy, b, false, true)) : tB ? mm(b, gy, true, true) : mm(b, gy, false, true);
      if (sharedA) ga = sumBatch(ga, a.shape);
    }
    if (ctx.needsGrad[1]) {
      if (sharedB && !tA) {
        // Fold the batch into the product's inner dim: a [batch·M, K], gy [batch·M, N].
        const rows = a.shape.slice(0, -1).reduce((x, y) => x * y, 1);
        const a2 = a.view([rows, a.shape.at(-1)!]); // [batch·M, K]
        const g2 = gy.view([rows, gy.shape.at(-1)!]); // [batch·M, N]
        gb = tB ? mm(g2, a2, true, false) : mm(a2, g2, true, false); // [N, K] or [K, N]
        a2.dispose();
        g2.dispose();
      } else {
        // dB in b's layout: [..., K, N] (or [..., N, K] with transB).
        gb = !tA ? (tB ? mm(gy, a, true, false) : mm(a, gy, true, false)) : tB ? mm(gy, a, true, true) : mm(a, gy, false, false);
        if (sharedB) gb = sumBatch(gb, b.shape);
      }
    }
    return [ga, gb];
  },
});

/**
 * C = op(a)·op(b): a [..., M, K] (or [..., K, M] with transA), b [..., K, N] (or [..., N, K] with transB).
 * Batch dims are equal, or one operand is 2-D and shared across the other's batch.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  return matmulOp.apply([a, b], { transA: opts.transA ?? false, transB: opts.transB ?? false, variant: opts.variant });
}

// ------------------------------------------------------------------ linear: x Wᵀ + b with the bias fused
const linearOp = defineOp<Record<string, never>>({
  name: 'linear',
  forward(ctx, [x, w, b]) {
    const inF = w!.shape[1]!;
    const outF = w!.shape[0]!;
    if (w!.ndim !== 2 || b!.ndim !== 1 || b!.shape[0] !== outF || x!.ndim < 1 || x!.shape[x!.ndim - 1] !== inF) {
      throw new Error(`linear: x ${x!.describe()}, weight ${w!.describe()} [out, in], bias ${b!.describe()} [out] do not fit`);
    }
    const rows = x!.size / Math.max(1, inF);
    const x2 = x!.view([rows, inF]); // [rows, in]
    if (ctx.recording) ctx.save(x2, w!);
    const outShape = [...x!.shape.slice(0, -1), outF];
    let y: Tensor;
    if (rows === 0 || outF === 0) y = Tensor.empty([rows, outF]);
    else if (inF === 0) y = zeros([rows, outF]);
    else y = launch(x2, w!, dims(x2, w!, false, true), false, true, pickVariant(rows, outF), b!); // [rows, out]
    x2.dispose();
    const out = y.view(outShape); // [..., out]
    y.dispose();
    return out;
  },
  backward(ctx, gy) {
    const [x2, w] = ctx.saved as [Tensor, Tensor];
    const [rows, outF] = [x2.shape[0]!, w.shape[0]!];
    const g2 = gy.view([rows, outF]); // [rows, out]
    const gx = ctx.needsGrad[0] ? matmulOp.apply([g2, w], { transA: false, transB: false, variant: undefined }) : null; // [rows, in]
    let gw: Tensor | null = null;
    let gb: Tensor | null = null;
    if (ctx.needsGrad[1] && ctx.needsGrad[2] && fusedBiasGrad(g2, x2)) [gw, gb] = weightAndBiasGrad(g2, x2); // one kernel
    else {
      gw = ctx.needsGrad[1] ? matmulOp.apply([g2, x2], { transA: true, transB: false, variant: undefined }) : null; // [out, in]
      gb = ctx.needsGrad[2] ? sum(g2, 0) : null; // [out]
    }
    g2.dispose();
    let gxo: Tensor | null = null;
    if (gx) {
      gxo = gx.view([...gy.shape.slice(0, -1), x2.shape[1]!]); // [..., in]
      gx.dispose();
    }
    return [gxo, gw, gb];
  },
});

/**
 * Whether the Linear backward computes its bias gradient inside the weight-gradient product (MATMUL_TUNING.fuseBiasGrad):
 * dW = dYᵀ·X with dY read as vec4s of 4 output features, so the sum over rows of each feature comes from the same
 * loads (one kernel and one split-K sum instead of a product, its sum and a column reduction of dY).
 */
function fusedBiasGrad(g2: Tensor, x2: Tensor): boolean {
  const [rows, outF] = [g2.shape[0]!, g2.shape[1]!];
  const inF = x2.shape[1]!;
  const max = rt().device.limits.maxStorageBufferBindingSize;
  return MATMUL_TUNING.fuseBiasGrad && rows > 0 && outF > 0 && inF > 0 && outF % 4 === 0 && inF % 4 === 0 && g2.byteLength <= max && 4 * outF * (inF + 1) <= max;
}

/** dW = dYᵀ·X [out, in] and db = the column sums of dY [out], from one register-tiled product (fusedBiasGrad). */
function weightAndBiasGrad(g2: Tensor, x2: Tensor): [Tensor, Tensor] {
  const d = dims(g2, x2, true, false); // M = out, N = in, K = rows
  const both = launch(g2, x2, d, true, false, pickVariant(d.M, d.N), null, true); // [M·N + M]
  const gw = both.prefixView([d.M, d.N]); // [out, in]
  const gb = Tensor.empty([d.M]); // [out]
  rt().queue.copy(both.buffer, 4 * d.M * d.N, gb.buffer, 0, 4 * d.M);
  both.dispose();
  return [gw, gb];
}

/** y = x Wᵀ + b (torch.nn.Linear): x [..., in], weight [out, in], bias [out] -> [..., out]; the bias add is fused
 * into the matmul's store (one kernel instead of a matmul and a broadcast add). */
export function linear(x: Tensor, weight: Tensor, bias: Tensor): Tensor {
  return linearOp.apply([x, weight, bias], {});
}

// ------------------------------------------------------------------ float64 reference
/** op(x) of a row-major [..., R, C] array as strides: element (r, c) of op(x) in batch entry bi is at
 * bi·size + r·sr + c·sc. */
function view(x: F64, trans: boolean): { rows: number; cols: number; size: number; sr: number; sc: number } {
  const R = x.shape.at(-2)!;
  const C = x.shape.at(-1)!;
  return trans ? { rows: C, cols: R, size: R * C, sr: 1, sc: C } : { rows: R, cols: C, size: R * C, sr: C, sc: 1 };
}

function refDims(a: F64, b: F64): { batch: number; sharedA: boolean; sharedB: boolean; batchDims: number[] } {
  const sharedA = a.shape.length === 2 && b.shape.length > 2;
  const sharedB = b.shape.length === 2 && a.shape.length > 2;
  const batchDims = (sharedA ? b : a).shape.slice(0, -2);
  return { batch: batchDims.reduce((p, q) => p * q, 1), sharedA, sharedB, batchDims };
}

/** Float64 reference: op(a)·op(b) with the same batch rules as matmul(). */
export function refMatmul(a: F64, b: F64, opts: { transA?: boolean; transB?: boolean } = {}): F64 {
  const A = view(a, opts.transA ?? false);
  const B = view(b, opts.transB ?? false);
  const { batch, sharedA, sharedB, batchDims } = refDims(a, b);
  const M = A.rows;
  const K = A.cols;
  const N = B.cols;
  if (B.rows !== K) throw new Error(`refMatmul: inner dims ${K} vs ${B.rows}`);
  const out = ref.zerosF64([...batchDims, M, N]);
  const ad = a.data;
  const bd = b.data;
  for (let bi = 0; bi < batch; bi++) {
    const ao = sharedA ? 0 : bi * A.size;
    const bo = sharedB ? 0 : bi * B.size;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0, ia = ao + i * A.sr, ib = bo + j * B.sc; k < K; k++, ia += A.sc, ib += B.sr) s += ad[ia]! * bd[ib]!;
        out.data[(bi * M + i) * N + j] = s;
      }
    }
  }
  return out;
}

/** Float64 reference gradients of refMatmul for an output gradient gy: [da, db]. */
export function refMatmulGrad(a: F64, b: F64, gy: F64, opts: { transA?: boolean; transB?: boolean } = {}): [F64, F64] {
  const A = view(a, opts.transA ?? false);
  const B = view(b, opts.transB ?? false);
  const { batch, sharedA, sharedB } = refDims(a, b);
  const M = A.rows;
  const K = A.cols;
  const N = B.cols;
  const da = ref.zerosF64(a.shape);
  const db = ref.zerosF64(b.shape);
  const ad = a.data;
  const bd = b.data;
  for (let bi = 0; bi < batch; bi++) {
    const ao = sharedA ? 0 : bi * A.size;
    const bo = sharedB ? 0 : bi * B.size;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        const g = gy.data[(bi * M + i) * N + j]!;
        // dA[i, k] += g·B[k, j]; dB[k, j] += g·A[i, k] (at the transposed positions when the flags are set)
        for (let k = 0, ia = ao + i * A.sr, ib = bo + j * B.sc; k < K; k++, ia += A.sc, ib += B.sr) {
          da.data[ia]! += g * bd[ib]!;
          db.data[ib]! += g * ad[ia]!;
        }
      }
    }
  }
  return [da, db];
}
