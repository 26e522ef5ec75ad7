// kernels/varlen.ts — padding-free (varlen) batches: pack left-padded [B, L] sequences into T real tokens.
//
// What it computes:
//   packBatch(ids [B, L] host ids, 0 = padding, left padded as the official S3-Rec code): the layout of the
//   T = sum_b len_b real tokens, sequence after sequence, oldest first:
//     offsets [B+1] i32, seqOf [T] i32, positions [T] i32 (slot in the padded layout = the absolute position
//     the official code uses: L - len_b + x), padIndex [T] i32 (row b*L + slot of the padded [B*L, C] matrix),
//     tokenOf [B*L] i32 (inverse: token of a padded row, -1 on pads), last [B] i32 (last token of each
//     sequence = padded slot L-1, the official read-out row), tokens [T] i32 (the ids).
//   packRows(x [B, L, C] | [B*L, C]) -> [T, C]; unpackRows(x [T, C]) -> [B, L, C] (zeros on pads);
//   lastRows(x [T, C]) -> [B, C]. All three are one kernel: an injective row gather out[m] = x[index[m]]
//   (index -1 -> zeros), whose backward is the same gather with the inverse map (a bijection between real
//   padded rows and tokens), so no scatter-add and no atomics are needed.
// Every per-token op of the encoder (Linear, GELU, LayerNorm, residual adds, dropout) runs on [T, C]
// unchanged; position embeddings are gathered with `positions`; attention uses attentionVarlen (attention_masked.ts),
// which builds its GPU index (offsets | seq_of | row blocks, one i32 buffer) from the host offsets on first use and
// caches it on the batch (`cache`), so offsets and seqOf are not uploaded on their own.
// Parallel strategy: one thread per output element; memory traffic: reads and writes M*C floats + M indices.
import { ceilDiv, defineKernel, defineOp, ref, Tensor, vec4Count } from '../engine/index.js';
import type { VarlenLayout } from './attention_masked.js';
import { foldedIndex, main1d } from './common.js';

type F64 = ref.F64;
const WG = 256;

/** Host-side plan of a packed batch. */
export interface PackPlan {
  B: number;
  L: number;
  T: number;
  lengths: Int32Array; // [B]
  offsets: Int32Array; // [B + 1]
  seqOf: Int32Array; // [T]
  positions: Int32Array; // [T]
  padIndex: Int32Array; // [T]
  tokenOf: Int32Array; // [B * L]
  last: Int32Array; // [B]
  lastInverse: Int32Array; // [T]
  tokens: Int32Array; // [T]
}

/**
 * Plan the packing of left-padded ids [B*L] (row-major). A sequence's real tokens must be contiguous and end at
 * slot L-1 (left padding, as the official code): anything else throws. Empty sequences (all pads) are allowed.
 */
export function planPack(ids: ArrayLike<number>, B: number, L: number): PackPlan {
  if (ids.length !== B * L) throw new Error(`planPack: ${ids.length} ids for B*L = ${B}*${L}`);
  const lengths = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    let first = L;
    for (let s = 0; s < L; s++) {
      if (ids[b * L + s] !== 0) {
        first = s;
        break;
      }
    }
    for (let s = first; s < L; s++) {
      if (ids[b * L + s] === 0) throw new Error(`planPack: sequence ${b} has padding at slot ${s} after a real token (left padding expected)`);
    }
    lengths[b] = L - first;
  }
  const offsets = new Int32Array(B + 1);
  for (let b = 0; b < B; b++) offsets[b + 1] = offsets[b]! + lengths[b]!;
  const T = offsets[B]!;
  const seqOf = new Int32Array(T);
  const positions = new Int32Array(T);
  const padIndex = new Int32Array(T);
  const tokens = new Int32Array(T);
  const tokenOf = new Int32Array(B * L).fill(-1);
  const last = new Int32Array(B).fill(-1);
  const lastInverse = new Int32Array(T).fill(-1);
  for (let b = 0; b < B; b++) {
    const n = lengths[b]!;
    for (let x = 0; x < n; x++) {
      const t = offsets[b]! + x;
      const slot = L - n + x;
      seqOf[t] = b;
      positions[t] = slot;
      padIndex[t] = b * L + slot;
      tokenOf[b * L + slot] = t;
      tokens[t] = ids[b * L + slot]!;
    }
    if (n > 0) {
      last[b] = offsets[b + 1]! - 1;
      lastInverse[offsets[b + 1]! - 1] = b;
    }
  }
  return { B, L, T, lengths, offsets, seqOf, positions, padIndex, tokenOf, last, lastInverse, tokens };
}

/**
 * A packed batch on the GPU: the attention layout (host offsets; attention's index tensors are built on first use
 * into `cache`) plus the gather maps. dispose() frees them.
 */
export interface PackedBatch extends VarlenLayout {
  plan: PackPlan;
  B: number;
  T: number;
  positions: Tensor; // [T] i32
  tokens: Tensor; // [T] i32
  padIndex: Tensor; // [T] i32
  tokenOf: Tensor; // [B * L] i32
  last: Tensor; // [B] i32
  lastInverse: Tensor; // [T] i32
  dispose(): void;
}

export function packBatch(ids: ArrayLike<number>, B: number, L: number): PackedBatch {
  const plan = planPack(ids, B, L);
  const up = (a: Int32Array): Tensor => Tensor.from(a.length ? a : new Int32Array(1), [Math.max(1, a.length)], 'i32');
  const ts = {
    positions: up(plan.positions), // [T]
    tokens: up(plan.tokens), // [T]
    padIndex: up(plan.padIndex), // [T]
    tokenOf: up(plan.tokenOf), // [B * L]
    last: up(plan.last), // [B]
    lastInverse: up(plan.lastInverse), // [T]
  };
  const cache = new Map<string, Tensor>();
  return {
    plan,
    B,
    T: plan.T,
    L,
    hostOffsets: plan.offsets,
    cache,
    ...ts,
    dispose() {
      for (const t of Object.values(ts)) t.dispose();
      for (const t of cache.values()) t.dispose();
      cache.clear();
    },
  };
}

// ------------------------------------------------------------------ injective row gather
// varlen_gather_rows{vec4} (C a multiple of 4): n and C count vec4s of 4 columns (llvmpipe loads and stores per
// instruction, so vec4 runs faster there).
const gatherRowsKernels = [false, true].map((v) => defineKernel({
  name: v ? 'varlen_gather_rows{vec4}' : 'varlen_gather_rows',
  foldable: true,
  wgsl: /* wgsl */ `
// out[m, c] = index[m] >= 0 ? x[index[m], c] : 0. One thread per output ${v ? 'vec4' : 'element'}.
struct Params { n: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${v ? 'vec4<f32>' : 'f32'}>;         // [N, C]
@group(0) @binding(2) var<storage, read> index: array<i32>;     // [M]
@group(0) @binding(3) var<storage, read_write> out: array<${v ? 'vec4<f32>' : 'f32'}>; // [M, C]
${main1d(WG)} {
  let i = ${foldedIndex(WG)};
  if (i >= p.n) { return; }
  let m = i / p.C;
  let src = index[m];
  out[i] = select(${v ? 'vec4<f32>(0.0)' : '0.0'}, x[u32(src) * p.C + i % p.C], src >= 0);
}`,
  grid: ({ n }) => [ceilDiv(n!, WG)],
  minSizes: ({ n }) => ({ out: n! }),
}));

function gatherRows(x: Tensor, index: Tensor, M: number, outShape: readonly number[]): Tensor {
  const C = x.shape[x.ndim - 1]!;
  const out = Tensor.empty(outShape); // [M, C] (outShape)
  const v = vec4Count(C, x, out); // vec4s per row
  if (M * C > 0) gatherRowsKernels[v ? 1 : 0]!.run({ x, index, out }, v ? { n: M * v, C: v } : { n: M * C, C });
  return out;
}

interface GatherAttrs {
  index: Tensor; // [M] i32
  inverse: Tensor; // [N] i32
  M: number;
  N: number;
  outShape: readonly number[];
}

/** out = x rows picked by an injective index; backward = the same gather with the inverse map. */
const injectiveGatherOp = defineOp<GatherAttrs>({
  name: 'varlen_gather_rows',
  forward(ctx, [x], { index, M, outShape }) {
    ctx.extra.inShape = x!.shape;
    return gatherRows(x!, index, M, outShape);
  },
  backward(ctx, gy) {
    const { inverse, N } = ctx.attrs;
    const inShape = ctx.extra.inShape as readonly number[];
    return [gatherRows(gy, inverse, N, inShape)];
  },
});

function rows(x: Tensor, what: string, N: number): number {
  const C = x.shape[x.ndim - 1]!;
  if (x.dtype !== 'f32' || x.size !== N * C) throw new Error(`${what}: ${x.describe()} does not hold ${N} rows of ${C}`);
  return C;
}

/** [B, L, C] (or [B*L, C]) padded rows -> [T, C] packed tokens. */
export function packRows(x: Tensor, pb: PackedBatch): Tensor {
  const C = rows(x, 'packRows', pb.B * pb.L);
  return injectiveGatherOp.apply([x], { index: pb.padIndex, inverse: pb.tokenOf, M: pb.T, N: pb.B * pb.L, outShape: [pb.T, C] });
}

/** [T, C] packed tokens -> [B, L, C] padded rows, zeros on the pad slots. */
export function unpackRows(x: Tensor, pb: PackedBatch): Tensor {
  const C = rows(x, 'unpackRows', pb.T);
  return injectiveGatherOp.apply([x], { index: pb.tokenOf, inverse: pb.padIndex, M: pb.B * pb.L, N: pb.T, outShape: [pb.B, pb.L, C] });
}

/** [T, C] -> [B, C]: the last real token of each sequence (padded slot L-1; zeros for empty sequences). */
export function lastRows(x: Tensor, pb: PackedBatch): Tensor {
  const C = rows(x, 'lastRows', pb.T);
  return injectiveGatherOp.apply([x], { index: pb.last, inverse: pb.lastInverse, M: pb.B, N: pb.T, outShape: [pb.B, C] });
}

// ------------------------------------------------------------------ float64 reference
/** out[m] = index[m] >= 0 ? x[index[m]] : 0, rows of C. */
export function refInjectiveGather(x: F64, index: ArrayLike<number>, outShape: number[]): F64 {
  const C = x.shape[x.shape.length - 1]!;
  const out = new Float64Array(index.length * C);
  for (let m = 0; m < index.length; m++) {
    const s = index[m]!;
    if (s >= 0) for (let c = 0; c < C; c++) out[m * C + c] = x.data[s * C + c]!;
  }
  return { data: out, shape: outShape };
}
