// Public API of the data layer (loaders, splits, sampling, batching, metrics, stats). See docs/DATA.md.

export { DataError, isDataError, parseNonNegInt } from './errors.js';
export { assertReadableFile, fileExists, pathExists, forEachLine, readTextFile, writeFileAtomic } from './io.js';
export type { S3RecSequences, ItemAttributes, S3RecDataset, SequenceLoadOptions, AttributeLoadOptions, S3RecDatasetOptions } from './s3rec.js';
export { loadS3RecSequences, loadItemAttributes, loadS3RecSample, loadS3RecDataset } from './s3rec.js';
export type { InteractionLogOptions, SequenceDataset, AttRecSplit } from './interactions.js';
export { loadInteractionLog, leaveLastOut, loadAttRecSplit } from './interactions.js';
export type { EvalStage, PretrainPrefixes, PretrainSampleOptions, PretrainSample, AttRecWindows } from './splits.js';
export {
  pySlice, s3recTrainExample, s3recEvalExample, pretrainPrefixes, prefixItems, longSequence, makePretrainSample,
  attrecWindows, attrecTestInputs,
} from './splits.js';
export type { IdSet, SampleFileOptions } from './sampling.js';
export {
  Rng, ItemSet, negSample, attrecNegatives, generateSampleNegatives, formatSampleFile, writeSampleFile,
} from './sampling.js';
export type {
  PaddedBatch, FinetuneTrainBatch, FinetuneBatchOptions, SampledEvalBatch, FullEvalBatch, PretrainBatch, AttRecBatch,
  PackedLayout,
} from './batching.js';
export {
  leftPadInto, leftPad, buildFinetuneTrainBatch, buildSampledEvalBatch, buildFullEvalBatch, buildPretrainBatch,
  attributeMultiHot, itemAttributeMatrix, buildAttRecBatch, attrecEpochNegatives, packedLayout, packPadded, packBatch,
  epochOrder, numBatches, batchIndices, Prefetcher, prefetch,
} from './batching.js';
export type { TieRule, FullRankOptions, RankMetricSpec } from './metrics.js';
export {
  sampledRanks, rankFullCatalogue, rankFullCatalogueBatch, rankFromTopK, ranksFromTopK, rankAttRec,
  SAMPLED_METRICS, FULL_METRICS, userRankMetrics, attrecUserMetrics, MetricAccumulator, sampledMetrics,
  fullRankingMetrics, formatMetricsTable,
} from './metrics.js';
export type { DatasetFormat, DatasetStats } from './stats.js';
export { sequenceStats, s3recStats, interactionStats, attrecSplitStats, formatStats } from './stats.js';
