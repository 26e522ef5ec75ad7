// The functional API of the op library: `import * as F from 'seqrec-webgpu/kernels'`.
export * from './elementwise.js';
export * from './reduce.js';
export { matmul, linear, refMatmul, refMatmulGrad, pickVariant, MATMUL_VARIANTS, type MatmulVariant, type MatmulOptions } from './matmul.js';
export * from './shape.js';
export * from './scatter.js';
export * from './embedding.js';
export * from './layernorm.js';
export * from './softmax.js';
export * from './dropout.js';
export * from './loss.js';
export * from './attention_masked.js';
export * from './varlen.js';
export {
  infonce, infonceDense, refInfonce, refInfonceGrad, type InfonceOptions, type InfonceDenseOptions, type Reduction,
} from './infonce.js';
export {
  pairwiseSigmoidLoss, pairwiseSigmoidLossIds, bceNegSampling, multiLabelBce, csrTargets, refPairLoss, refPairGrad,
  refPairRow, refMultiLabelBce, refMultiLabelBceGrad, refBceElem, refCsrToDense, refSigmoid, refSoftplus,
  type CsrTargets, type PairwiseOptions, type BceNegSamplingOptions, type MultiLabelOptions,
} from './pairwise.js';
export * from './euclid_score.js';
export { topkScores, refTopkScores, defaultChunks, type TopkMode, type TopkOptions, type TopkResult, type RefTopkInput, type RefTopkResult } from './topk.js';
export { smallBmmNT, smallBmmNN } from './small_bmm.js';
export { gatherDot, refGatherDot } from './gather_dot.js';
