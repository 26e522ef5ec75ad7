// Host-side (CPU) benchmarks of the data pipeline with benny: the work the training loop does between GPU
// steps must stay well under a step's GPU time so the prefetcher hides it. `npm run bench:host [-- --data-dir DIR]`
// (default: the bundled sample; ../shared/data/s3rec for full Beauty).
import b from 'benny';
import {
  batchIndices, buildFinetuneTrainBatch, buildPretrainBatch, buildSampledEvalBatch, epochOrder, loadS3RecDataset, longSequence,
  pretrainPrefixes, Rng, sampledRanks,
} from '../models/data/index.js';

const args = process.argv.slice(2);
const dirAt = args.indexOf('--data-dir');
const dir = dirAt >= 0 ? args[dirAt + 1]! : 'data/sample';
const ds = await loadS3RecDataset(dir, 'Beauty', { sample: 'require' });
const U = ds.sequences.length;
const users = Array.from(epochOrder(U, 42, 0).subarray(0, Math.min(256, U)));
const rng = new Rng(42);
const prefixes = pretrainPrefixes(ds.sequences, 50);
const long = longSequence(ds.sequences);
const preIdx = [...batchIndices(epochOrder(prefixes.count, 42, 0), 100)][0]!;
const scores = Float32Array.from({ length: 256 * 100 }, (_, i) => Math.sin(i));

await b.suite(
  `data pipeline (${dir}, ${U} users)`,
  b.add('finetune batch B256 L50 (negatives drawn)', () => {
    buildFinetuneTrainBatch(ds.sequences, users, { itemSize: ds.itemSize, rng });
  }),
  b.add('sampled eval batch B256 x 100 candidates', () => {
    buildSampledEvalBatch(ds.sequences, ds.sampleNegatives!, users, 'test');
  }),
  b.add('pretrain batch B100 (masking, SP segments)', () => {
    buildPretrainBatch(ds.sequences, prefixes, preIdx, { itemSize: ds.itemSize, maskId: ds.maskId, longSequence: long, rng });
  }),
  b.add('sampled ranks B256 x 100', () => {
    sampledRanks(scores, 256, 100);
  }),
  b.cycle(),
  b.complete(),
);
