// kernels/bce_neg_sampling.ts — bce_neg_sampling: the official S3-Rec fine-tuning loss (SASRec's BCE with one
// sampled negative, S3REC_SPEC §5), fused (scores, loss, reduction; hand-written backward).
//
//   rows with posIds[n] > 0 (times mask, if given; pos <= 0 marks padding):
//   sp = <h_n, table[posIds[n]]>, sn = <h_n, table[negIds[n]]> (ids clamped to [0, V))
//   l_n = -log(sigmoid(sp) + 1e-24) - log(1 - sigmoid(sn) + 1e-24),  loss = sum_n w_n l_n / sum_n w_n
//   (0 when no row is valid; PyTorch would give NaN; 'sum' drops the division). 1 - sigmoid(sn) is evaluated as
//   sigmoid(-sn): same value without the cancellation that makes f32 round it to 0 for sn > ~17.
//   Backward: dl/dsp = -sigmoid(-sp) a / (a + 1e-24), dl/dsn = sigmoid(sn) b / (b + 1e-24), a = sigmoid(sp),
//   b = sigmoid(-sn); gradients to h and (deterministically scattered) to the table.
// Kernels, parallel strategy and memory traffic: the two-score row-loss builder (common_pairs.ts), id form:
//   bce_neg_sampling_fwd{lanes,mode=ids} one thread per row, bce_neg_sampling_bwd{lanes,mode=ids} one thread per
//   (row, slot of D), the table gradient through scatter.ts's row index, common.ts's loss_reduce.
// Variants (bench/bce_neg_sampling.bench.ts): the fused kernels, their composition from engine ops and tfjs; the
//   fused kernels are the default, well ahead of both. Timings: `npm run bench -- bce_neg_sampling` /
//   docs/BENCHMARKS.md.
import { checkIds, ref, type Tensor } from '../engine/index.js';
import { refSigmoid, type Reduction } from './common.js';
import { pairScoreLoss, refPairScoreGrad, refPairScoreLoss } from './common_pairs.js';

type F64 = ref.F64;

const bceNegSamplingLoss = pairScoreLoss({
  name: 'bce_neg_sampling',
  rowWgsl: /* wgsl */ `
fn row_loss(sp: f32, sn: f32) -> f32 {
  return -log(sigmoid_(sp) + 1e-24) - log(sigmoid_(-sn) + 1e-24);
}
fn row_grad(sp: f32, sn: f32) -> vec2<f32> {
  let a = sigmoid_(sp);
  let b = sigmoid_(-sn);
  return vec2<f32>(-sigmoid_(-sp) * (a / (a + 1e-24)), sigmoid_(sn) * (b / (b + 1e-24)));
}`,
  gated: true,
  apiName: () => 'bceNegSampling',
});

export interface BceNegSamplingOptions {
  /** Extra row weights f32 [N], multiplied with (pos > 0). */
  mask?: Tensor;
  /** 'mean' (default, official: over the rows with pos > 0) or 'sum'. */
  reduction?: Reduction;
}

/**
 * Official fine-tuning loss (SASRec BCE, one sampled negative): h [N, D], table [V, D], pos/neg [N] i32;
 * rows with pos <= 0 are padding. Gradients to h and the table.
 */
export function bceNegSampling(h: Tensor, table: Tensor, pos: Tensor, neg: Tensor, opts: BceNegSamplingOptions = {}): Tensor {
  checkIds(neg, table.shape[0] ?? 0, 'bce_neg_sampling', 'negative id'); // (pos <= 0 marks padding rows: unchecked)
  const inputs = [h, table, pos, neg];
  if (opts.mask) inputs.push(opts.mask);
  return bceNegSamplingLoss.apply('ids', inputs, opts.reduction ?? 'mean', !!opts.mask);
}

// ------------------------------------------------------------------ float64 reference
/** Row loss and (dl/dsp, dl/dsn) of bce_neg_sampling, float64. */
export function refBceNegSamplingRow(sp: number, sn: number): [number, number, number] {
  const a = refSigmoid(sp);
  const b = refSigmoid(-sn);
  return [-Math.log(a + 1e-24) - Math.log(b + 1e-24), -refSigmoid(-sp) * (a / (a + 1e-24)), refSigmoid(sn) * (b / (b + 1e-24))];
}

/** The inputs of the reference: h [N, D], table [V, D], posIds / negIds [N], optional mask, the reduction. */
export interface RefBceNegSamplingInputs {
  h: F64;
  table: F64;
  posIds: F64;
  negIds: F64;
  mask?: F64 | null;
  reduction: Reduction;
}

const asPair = (x: RefBceNegSamplingInputs) => ({ a: x.h, table: x.table, posIds: x.posIds, negIds: x.negIds, mask: x.mask ?? null, reduction: x.reduction });

/** Float64 bce_neg_sampling loss (shape []). */
export const refBceNegSampling = (x: RefBceNegSamplingInputs): F64 => refPairScoreLoss(asPair(x), refBceNegSamplingRow, true);

/** Float64 gradients of refBceNegSampling times gy: dh and dtable. */
export function refBceNegSamplingGrad(x: RefBceNegSamplingInputs, gy: number): { dh: F64; dtable: F64 } {
  const g = refPairScoreGrad(asPair(x), refBceNegSamplingRow, true, gy);
  return { dh: g.da, dtable: g.dtable! };
}
