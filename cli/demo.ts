// seqrec demo: the main job. On the bundled samples (data/sample):
//   1. S3-Rec on the Beauty sample (400 users): SASRec mode (fine-tuned from scratch) and S3-Rec proper (a few
//      epochs of the four self-supervised objectives, then the same fine-tuning), official hyper-parameters except
//      the batch size (64: the sample has 400 users) and the epoch budget; early stopping on validation MRR, test
//      evaluated once on the best model; sampled (answer + 99 negatives) and full-ranking (GPU top-K) protocols;
//   2. AttRec on the MovieLens-100k slice (100 users, the authors' split): validation-selected, full ranking over
//      the items each user has not trained on;
//   3. the popularity baseline of each dataset on the same splits,
// printed as one table. Deterministic for a seed (every random stream derives from it).
import { destroyGpu, initGpu, manualSeed } from '../engine/index.js';
import { formatMetricsTable, isDataError, loadS3RecDataset, type S3RecDataset } from '../models/data/index.js';
import { S3RecModel } from '../models/s3rec.js';
import { evaluateS3Rec, finetuneS3Rec, popularityS3Rec } from '../models/s3rec_train.js';
import { pretrainS3Rec } from '../models/s3rec_pretrain.js';
import { attrecDemo } from '../models/attrec_train.js';
import { formatHelp, parseOptions, UsageError, type OptSpec } from './args.js';
import { formatDuration, phaseBars } from './progress.js';
import type { ProgressEvent } from '../models/run.js';

const SPECS: OptSpec[] = [
  { name: 'data-dir', type: 'string', default: 'data/sample', help: 'folder of the S3-Rec-format sample' },
  { name: 'dataset', type: 'string', default: 'Beauty', help: 'S3-Rec dataset name' },
  { name: 'ml-dir', type: 'string', default: 'data/sample/ml-100k-sample', help: 'AttRec split folder (train.dat, test.dat)' },
  { name: 'pretrain-epochs', type: 'int', min: 0, default: 10, help: 'S3-Rec pretraining epochs before fine-tuning (0: SASRec mode only)' },
  { name: 'epochs', type: 'int', min: 1, default: 200, help: 'fine-tuning epoch budget (early stopping, patience 10)' },
  { name: 'batch-size', type: 'int', min: 1, default: 64, help: 'fine-tuning batch size' },
  { name: 'attrec-epochs', type: 'int', min: 0, default: 30, help: 'AttRec epoch budget (0: skip AttRec)' },
  { name: 'seed', type: 'int', min: 0, default: 42, help: 'seed of every random stream' },
  { name: 'json', type: 'flag', help: 'print the table rows as one JSON object (last line of stdout)' },
];

const S3REC_COLS: Record<string, string> = { 'HR@10': 'full HR@10', 'NDCG@10': 'full NDCG@10', 'HR@20': 'full HR@20', 'NDCG@20': 'full NDCG@20' };

function fullCols(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) if (S3REC_COLS[k]) out[S3REC_COLS[k]] = v;
  return out;
}

const bars = (enabled: boolean, prefix: string): ((e: ProgressEvent) => void) => phaseBars({ enabled, prefix, everySec: 30 });

export async function runDemo(argv: string[]): Promise<number> {
  const o = parseOptions('seqrec demo', argv, SPECS);
  if (o.help) {
    console.log(formatHelp('seqrec demo [options]', SPECS, 'Trains and evaluates S3-Rec (SASRec mode and pretrained) and AttRec on the bundled samples and prints one metrics table.'));
    return 0;
  }
  const seed = o.seed as number;
  const json = o.json === true;
  const say = (m: string): void => void process.stderr.write(`${m}\n`);
  let ds: S3RecDataset;
  try {
    ds = await loadS3RecDataset(o.dataDir as string, o.dataset as string, { sample: 'require' });
  } catch (e) {
    if (isDataError(e)) throw new UsageError(`seqrec demo: ${e.message}`);
    throw e;
  }
  await initGpu();
  const t0 = performance.now();
  const rows: Array<{ name: string; metrics: Record<string, number> }> = [];
  try {
    say(`${ds.name} sample: ${ds.sequences.length} users, ${ds.numItems} items, ${ds.attributes.numAttributes} attributes (${ds.files.sequences})`);
    rows.push({ name: `${ds.name}: popularity`, metrics: { ...popularityS3Rec(ds, 'test', 'sampled'), ...fullCols(popularityS3Rec(ds, 'test', 'full', 'corrected')) } });
    const cfg = { itemSize: ds.itemSize, attributeSize: ds.attributes.attributeSize };
    const ft = { epochs: o.epochs as number, batchSize: o.batchSize as number, seed, patience: 10 };

    const runFinetune = async (label: string, model: S3RecModel): Promise<void> => {
      const res = await finetuneS3Rec(model, ds, { ...ft, hooks: { onProgress: bars(!json, `${label}`) } });
      const full = await evaluateS3Rec(model, ds, 'test', { protocol: 'full', fullSemantics: 'corrected' });
      say(`${label}: ${res.epochs} epochs (best ${res.bestEpoch}), ${res.trainSecondsPerEpoch.toFixed(2)} s/epoch`);
      rows.push({ name: `${ds.name}: ${label}`, metrics: { ...res.test!, ...fullCols(full) } });
    };

    manualSeed(seed);
    const sasrec = new S3RecModel(cfg);
    await runFinetune('S3-Rec, no pretraining (SASRec)', sasrec);
    sasrec.dispose();

    if ((o.pretrainEpochs as number) > 0) {
      manualSeed(seed);
      const model = new S3RecModel(cfg);
      const pt = await pretrainS3Rec(model, ds, { epochs: o.pretrainEpochs as number, seed, hooks: { onProgress: bars(!json, 'pretrain') } });
      say(`pretraining: ${o.pretrainEpochs as number} epochs, ${formatDuration(pt.seconds)}`);
      await runFinetune(`S3-Rec, ${o.pretrainEpochs as number} pretraining epochs`, model);
      model.dispose();
    }

    if ((o.attrecEpochs as number) > 0) {
      const ar = await attrecDemo({ dataDir: o.mlDir as string, epochs: o.attrecEpochs as number, seed, hooks: { onProgress: bars(!json, 'AttRec') } });
      for (const r of ar.rows) {
        const m: Record<string, number> = {};
        for (const [k, v] of Object.entries(r.metrics)) m[k === 'AUC' ? 'full AUC' : `full ${k}`] = v;
        rows.push({ name: `ML-100k slice: ${r.name}`, metrics: m });
      }
    }
  } finally {
    await destroyGpu();
  }
  const seconds = (performance.now() - t0) / 1000;
  if (json) console.log(JSON.stringify({ seed, seconds, rows }));
  else {
    console.log(`\nTest split. Columns without "full": the sampled protocol (answer + 99 negatives, official S3-Rec);`);
    console.log(`"full": all items ranked on the GPU, the user's history, pad and mask ids excluded. ${formatDuration(seconds)} in all.\n`);
    console.log(formatMetricsTable(rows, { title: 'dataset: model' }));
  }
  return 0;
}
