// kernels/embedding.ts — embedding lookup: out[..., :] = weight[ids[...], :] with PyTorch's padding_idx rules.
//
// Shapes: weight [V, D] f32, ids [...] i32/u32 -> out [..., D].
// Semantics (torch.nn.functional.embedding):
//   - forward reads the row even for paddingIdx (official S3-Rec keeps a random pad row and adds it at pad
//     slots, so the pad row is NOT zeroed here);
//   - backward gives ZERO gradient to the paddingIdx row (its positions go to the inverse index's sink);
//   - ids outside [0, V) (negative i32 included): the output row is 0 and no gradient flows, and the engine's
//     GPU range check (engine/checks.ts, off with CHECK_IDS=0) throws `embedding: id 1000000 at position 3 is
//     outside [0, 10)` at the next sync/readback (torch raises at once; a GPU kernel cannot);
//   - ids never get gradients.
// Forward: the index_select kernel of kernels/shape.ts (one thread per output element, vec4 when D % 4 == 0):
//   reads N*D + N values, writes N*D (N = ids.size).
// Backward: gWeight [V, D] = deterministic segment-sum of gy [N, D] by ids (kernels/scatter.ts): summed in
//   ascending position, bit-reproducible, no float atomics. The inverse index is built on the GPU from the
//   ids tensor (radix sort, no readback), or on the host when the caller passes `hostIds` (the data loader has
//   the batch's ids as an Int32Array; cheaper: no sort dispatches). Dense output: every row written.
// Variants: see bench/embedding.bench.ts (embedding.fwd/.bwd at S3-Rec and AttRec shapes; GPU vs host index).
import { checkIds, defineOp, ref, shapeStr, Tensor } from '../engine/index.js';
import { scatterAddRows } from './scatter.js';
import { indexSelectInto } from './shape.js';

type F64 = ref.F64;

interface EmbeddingAttrs {
  paddingIdx: number | null;
  hostIds: Int32Array | null;
}

const embeddingOp = defineOp<EmbeddingAttrs>({
  name: 'embedding',
  forward(ctx, [weight, ids], { hostIds }) {
    const [V, D] = weight!.shape as [number, number];
    const out = Tensor.empty([...ids!.shape, D]); // [..., D]
    indexSelectInto(weight!, ids!, out, 1, V, D);
    if (ctx.needsGrad[0] && !hostIds) ctx.save(ids!);
    ctx.extra.VDN = [V, D, ids!.size];
    return out;
  },
  backward(ctx, gy) {
    if (!ctx.needsGrad[0]) return [null, null];
    const [V, D, N] = ctx.extra.VDN as [number, number, number];
    const g2 = gy.view([N, D]); // [N, D]
    const gw = scatterAddRows(g2, ctx.attrs.hostIds ?? ctx.saved[0]!, V, { exclude: ctx.attrs.paddingIdx }); // [V, D]
    g2.dispose();
    return [gw, null];
  },
});

export interface EmbeddingOptions {
  /** Row that gets no gradient (negative counts from V, as torch). Its forward value is still read. */
  paddingIdx?: number | null;
  /** The host copy of ids (same order): backward then builds its inverse index on the host (no GPU sort). */
  hostIds?: ArrayLike<number>;
}

/** weight [V, D], ids [...] (i32/u32) -> [..., D]. See the header for padding and out-of-range ids. */
export function embedding(weight: Tensor, ids: Tensor, opts: EmbeddingOptions = {}): Tensor {
  if (weight.ndim !== 2 || weight.dtype !== 'f32') throw new Error(`embedding: weight ${weight.describe()} must be f32 [V, D]`);
  if (ids.dtype === 'f32') throw new Error(`embedding: ids ${ids.describe()} must be i32 or u32`);
  const V = weight.shape[0]!;
  let paddingIdx: number | null = null;
  if (opts.paddingIdx !== undefined && opts.paddingIdx !== null) {
    const p = opts.paddingIdx;
    if (!Number.isInteger(p) || p < -V || p >= V) throw new Error(`embedding: paddingIdx ${p} is out of range for weight ${shapeStr(weight.shape)}`);
    paddingIdx = p < 0 ? p + V : p;
  }
  let hostIds: Int32Array | null = null;
  if (opts.hostIds) {
    if (opts.hostIds.length !== ids.size) throw new Error(`embedding: hostIds has ${opts.hostIds.length} values, ids ${ids.describe()} has ${ids.size}`);
    hostIds = Int32Array.from(opts.hostIds); // a snapshot: the loader may reuse its array before backward
  }
  checkIds(ids, V, 'embedding', 'id'); // thrown at the next sync/readback
  return embeddingOp.apply([weight, ids], { paddingIdx, hostIds });
}

// ------------------------------------------------------------------------------------------ references
/** out[n, :] = weight[ids[n], :], zeros for ids outside [0, V). */
export function refEmbedding(weight: F64, ids: F64): F64 {
  const [V, D] = weight.shape as [number, number];
  const N = ids.data.length;
  const out = new Float64Array(N * D);
  for (let n = 0; n < N; n++) {
    const v = ids.data[n]!;
    if (v < 0 || v >= V) continue;
    for (let d = 0; d < D; d++) out[n * D + d] = weight.data[v * D + d]!;
  }
  return { data: out, shape: [...ids.shape, D] };
}

/** gWeight[v] = sum of gy rows whose id is v; 0 for paddingIdx and ids outside [0, V). */
export function refEmbeddingGrad(weight: F64, ids: F64, gy: F64, paddingIdx: number | null = null): F64 {
  const [V, D] = weight.shape as [number, number];
  const out = new Float64Array(V * D);
  for (let n = 0; n < ids.data.length; n++) {
    const v = ids.data[n]!;
    if (v < 0 || v >= V || v === paddingIdx) continue;
    for (let d = 0; d < D; d++) out[v * D + d]! += gy.data[n * D + d]!;
  }
  return { data: out, shape: [V, D] };
}
