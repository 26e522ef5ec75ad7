// The functional API of the op library: `import * as F from 'seqrec-webgpu/kernels'`.
export * from './elementwise.js';
export * from './reduce.js';
export { matmul, linear, refMatmul, refMatmulGrad, pickVariant, MATMUL_VARIANTS, MATMUL_TUNING, type MatmulVariant, type MatmulOptions } from './matmul.js';
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
  pairwiseSigmoidLoss, pairwiseSigmoidLossIds, refPairwiseSigmoidRow, refPairwiseSigmoidLoss, refPairwiseSigmoidGrad,
  refPairLoss, refPairGrad, refPairRow, type PairwiseOptions, type PairKind, type RefPairInputs,
} from './pairwise.js';
export * from './bce_neg_sampling.js';
export * from './multilabel_bce.js';
export * from './euclid_score.js';
export { topkScores, refTopkScores, defaultChunks, type TopkMode, type TopkOptions, type TopkResult, type RefTopkInput, type RefTopkResult } from './topk.js';
export { smallBmmNT, smallBmmNN } from './small_bmm.js';
export { gatherDot, refGatherDot } from './gather_dot.js';
export {
  AttRecStepWorkspace, attrecStepBatch, attrecStepSupported, attrecStepUnsupported, refAttRecStep,
  type AttRecStepBatch, type AttRecStepDims, type AttRecStepHyper, type AttRecStepParams, type AttRecStepSections, type RefAttRecStepInput,
} from './attrec_step.js';
export { scaleShiftOp, refScaleShift } from './scale_shift.js';
export { biasGelu, refBiasGelu, refBiasGeluGrad } from './bias_gelu.js';
export {
  adamUpdate, adagradUpdate, sgdUpdate, optimUpdate, refAdam, refAdagrad, refSgd, OPTIM_RULES,
  type AdamHyper, type AdagradHyper, type SgdHyper, type OptimRule, type UpdateSlot,
} from './optim.js';
// The kernel toolkit (WGSL snippets and templates, kernel families, shared helpers) for writing kernels outside
// this folder; the float64 sigmoid / softplus also at the top level, as before.
export * as common from './common.js';
export { refSigmoid, refSoftplus } from './common.js';
