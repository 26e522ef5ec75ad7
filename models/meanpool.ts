// A small next-item model for the demo and the end-to-end tests: the user state is the mean of the embeddings
// of the last L items (left-padded, as the official S3-Rec layout), scored against item embeddings by dot
// product (tied input/output embeddings, as S3-Rec), trained with the official fine-tuning loss (BCE with one
// sampled negative, kernels/pairwise.ts) and Adam. Everything runs on the engine's kernels.
import { Tensor, type Shape } from '../engine/index.js';
import { div, embedding, mul, sum } from '../kernels/index.js';
import { Module } from './nn.js';
import { normal_ } from './init.js';

export interface MeanPoolConfig {
  /** itemSize = maxItem + 2 (pad 0 .. maxItem, mask id). */
  itemSize: number;
  dim: number;
  /** N(0, initStd) initialisation (S3-Rec: 0.02). */
  initStd?: number;
}

export class MeanPoolRec extends Module {
  readonly itemEmbeddings: Tensor; // [V, D]
  constructor(readonly cfg: MeanPoolConfig) {
    super();
    this.itemEmbeddings = this.registerParameter('item_embeddings', normal_(Tensor.empty([cfg.itemSize, cfg.dim]), cfg.initStd ?? 0.02));
  }

  /**
   * ids [B, L] i32 (0 = padding), mask [B, L, 1] f32 (1 = real item), count [B, 1] f32 (real items, >= 1)
   * -> user states [B, D].
   */
  forward(ids: Tensor, mask: Tensor, count: Tensor, hostIds?: Int32Array): Tensor {
    const e = embedding(this.itemEmbeddings, ids, { paddingIdx: 0, ...(hostIds ? { hostIds } : {}) }); // [B, L, D]
    const masked = mul(e, mask); // [B, L, D]
    const pooled = sum(masked, 1); // [B, D]
    return div(pooled, count); // [B, D]
  }

  /** Scores of candidates: h [B, D], cands [B, C] i32 -> [B, C]. */
  scoreCandidates(h: Tensor, cands: Tensor): Tensor {
    const [B, D] = h.shape as [number, number];
    const c = embedding(this.itemEmbeddings, cands); // [B, C, D]
    const hv = h.view([B, 1, D] as Shape); // [B, 1, D]
    const s = sum(mul(c, hv), 2); // [B, C]
    hv.dispose();
    return s;
  }
}

/** Host-side inputs of a left-padded batch: ids [B*L], mask [B*L], count [B]. */
export function poolInputs(ids: Int32Array, lengths: Int32Array, L: number): { mask: Float32Array; count: Float32Array } {
  const B = lengths.length;
  const mask = new Float32Array(B * L);
  const count = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const n = lengths[b]!;
    count[b] = Math.max(1, n);
    for (let j = L - n; j < L; j++) mask[b * L + j] = ids[b * L + j]! > 0 ? 1 : 0;
  }
  return { mask, count };
}
