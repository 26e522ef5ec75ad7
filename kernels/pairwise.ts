// kernels/pairwise.ts — pairwise_sigmoid: the official S3-Rec MIP and SP loss (S3REC_SPEC §4.2), fused (scores,
// loss, reduction; hand-written backward).
//
//   per row n with weight w_n (mask, default 1):
//   sp = <a_n, pos_n>, sn = <a_n, neg_n>,  l_n = BCE(sigmoid(sigmoid(sp) - sigmoid(sn)), 1)
//      = min(-log sigmoid(sigmoid(sp) - sigmoid(sn)), 100)      (nn.BCELoss's log clamp at -100; never active
//                                                                here: l_n is in [0.3133, 1.3133])
//   loss = sum_n w_n l_n (reduction 'sum', the official one) or / sum_n w_n ('mean').
//   Dense form: a, pos, neg [N, D]. Id form: pos_n = table[posIds[n]], neg_n = table[negIds[n]] (MIP scores
//   mip_norm(H_t) against item_emb; ids clamped to [0, V)), gradients scattered into the table deterministically.
//   Backward: dl/dsp = -sigmoid(-d) sigmoid'(sp), dl/dsn = sigmoid(-d) sigmoid'(sn), d = sigmoid(sp) - sigmoid(sn).
// Kernels, parallel strategy and memory traffic: the two-score row-loss builder (common_pairs.ts):
//   pairwise_sigmoid_fwd{lanes,mode} one thread per row (the two dots), pairwise_sigmoid_bwd{lanes,mode} one thread
//   per (row, slot of D), the table gradient through scatter.ts's row index, common.ts's loss_reduce.
// Variants (bench/pairwise.bench.ts): the fused kernels, their composition from engine ops and tfjs; the fused
//   kernels are the default, well ahead of both. Timings: `npm run bench -- pairwise` / docs/BENCHMARKS.md.
// The other official S3-Rec losses: bce_neg_sampling.ts (fine-tuning), multilabel_bce.ts (AAP, MAP).
import { checkIds, ref, type Tensor } from '../engine/index.js';
import { refSigmoid, refSoftplus, type Reduction } from './common.js';
import { pairScoreLoss, refPairScoreGrad, refPairScoreLoss, type RefPairScoreInputs } from './common_pairs.js';
import { refBceNegSamplingRow } from './bce_neg_sampling.js';

type F64 = ref.F64;

const pairwiseSigmoid = pairScoreLoss({
  name: 'pairwise_sigmoid',
  rowWgsl: /* wgsl */ `
fn row_loss(sp: f32, sn: f32) -> f32 {
  let d = sigmoid_(sp) - sigmoid_(sn);
  return min(softplus(-d), 100.0); // -max(log sigmoid(d), -100)
}
fn row_grad(sp: f32, sn: f32) -> vec2<f32> {
  let dd = -sigmoid_(-(sigmoid_(sp) - sigmoid_(sn))); // d/dd softplus(-d); the clamp is never active (d in (-1, 1))
  return vec2<f32>(dd * sigmoid_(sp) * sigmoid_(-sp), -dd * sigmoid_(sn) * sigmoid_(-sn));
}`,
  gated: false,
  apiName: (mode) => (mode === 'ids' ? 'pairwiseSigmoidLossIds' : 'pairwiseSigmoidLoss'),
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
  return pairwiseSigmoid.apply('dense', inputs, opts.reduction ?? 'sum', !!opts.mask);
}

/** Official MIP loss, id form: positives / negatives are table[posIds] / table[negIds]; gradients into the table. */
export function pairwiseSigmoidLossIds(a: Tensor, table: Tensor, posIds: Tensor, negIds: Tensor, opts: PairwiseOptions = {}): Tensor {
  const V = table.shape[0] ?? 0;
  checkIds(posIds, V, 'pairwise_sigmoid', 'positive id'); // ids outside [0, V): an error at the next sync (CHECK_IDS=0: clamped)
  checkIds(negIds, V, 'pairwise_sigmoid', 'negative id');
  const inputs = [a, table, posIds, negIds];
  if (opts.mask) inputs.push(opts.mask);
  return pairwiseSigmoid.apply('ids', inputs, opts.reduction ?? 'sum', !!opts.mask);
}

// ------------------------------------------------------------------ float64 references
/** Row loss and (dl/dsp, dl/dsn) of pairwise_sigmoid, float64 (PyTorch semantics, the log clamp included). */
export function refPairwiseSigmoidRow(sp: number, sn: number): [number, number, number] {
  const σ = refSigmoid;
  const d = σ(sp) - σ(sn);
  const logp = -refSoftplus(-d); // log sigmoid(d)
  const dd = logp < -100 ? 0 : -σ(-d);
  return [-Math.max(logp, -100), dd * σ(sp) * σ(-sp), -dd * σ(sn) * σ(-sn)];
}

/** Float64 pairwise_sigmoid loss (shape []), dense form (pos, neg) or id form (table, posIds, negIds). */
export const refPairwiseSigmoidLoss = (x: RefPairScoreInputs): F64 => refPairScoreLoss(x, refPairwiseSigmoidRow, false);

/** Float64 gradients of refPairwiseSigmoidLoss times gy: { da, dpos, dneg } (dense) or { da, dtable } (ids). */
export const refPairwiseSigmoidGrad = (x: RefPairScoreInputs, gy: number): { da: F64; dpos?: F64; dneg?: F64; dtable?: F64 } =>
  refPairScoreGrad(x, refPairwiseSigmoidRow, false, gy);

// ------------------------------------------------------------------ the references of both two-score losses by kind
// (the shape the tests and benchmarks were written against before bce_neg_sampling moved to its own file)
export type PairKind = 'pairwise_sigmoid' | 'bce_neg_sampling';

export interface RefPairInputs extends RefPairScoreInputs {
  kind: PairKind;
}

const ROWS: Record<PairKind, { row: (sp: number, sn: number) => [number, number, number]; gated: boolean }> = {
  pairwise_sigmoid: { row: refPairwiseSigmoidRow, gated: false },
  bce_neg_sampling: { row: refBceNegSamplingRow, gated: true },
};

/** Row loss and (dl/dsp, dl/dsn) of either two-score kind, float64. */
export const refPairRow = (kind: PairKind, sp: number, sn: number): [number, number, number] => ROWS[kind].row(sp, sn);

/** Float64 pairwise_sigmoid / bce_neg_sampling loss (shape []). */
export const refPairLoss = (x: RefPairInputs): F64 => refPairScoreLoss(x, ROWS[x.kind].row, ROWS[x.kind].gated);

/** Float64 gradients of refPairLoss times gy. */
export const refPairGrad = (x: RefPairInputs, gy: number): { da: F64; dpos?: F64; dneg?: F64; dtable?: F64 } =>
  refPairScoreGrad(x, ROWS[x.kind].row, ROWS[x.kind].gated, gy);
