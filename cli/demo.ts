// seqrec demo: the main job. On the bundled samples (data/sample):
//   1. S3-Rec on the Beauty sample (400 users): SASRec mode (fine-tuned from scratch) and S3-Rec proper (a few
//      epochs of the four self-supervised objectives, then the same fine-tuning), official hyper-parameters except
//      the batch size (64: the sample has 400 users) and the epoch budget; early stopping on validation MRR, test
//      evaluated once on the best model; sampled (answer + 99 negatives) and full-ranking (GPU top-K) protocols;
//   2. AttRec on the MovieLens-100k slice (100 users, the authors' split): validation-selected, full ranking over
//      the items each user has not trained on;
//   3. the popularity baseline of each dataset on the same splits,
// printed as one table. Deterministic for a seed (every random stream derives from it).
// The training curves (each model's loss and validation metrics per epoch, and the pretraining losses) go to an SVG
// (--plot FILE, default <tmpdir>/seqrec-demo/curves.svg), rewritten after every epoch; its path is printed on stderr.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { destroyGpu, initGpu, manualSeed, packagePath } from '../engine/index.js';
import { formatMetricsTable, isDataError, loadS3RecDataset, type S3RecDataset } from '../models/data/index.js';
import { S3RecModel } from '../models/s3rec.js';
import { evaluateS3Rec, finetuneS3Rec, popularityS3Rec } from '../models/s3rec_train.js';
import { pretrainS3Rec } from '../models/s3rec_pretrain.js';
import { attrecDemo } from '../models/attrec_train.js';
import { formatHelp, parseOptions, UsageError, type OptSpec } from './args.js';
import { formatDuration, phaseBars } from './progress.js';
import type { EpochRecord, ProgressEvent } from '../models/run.js';
import { lineChartSvg, stackSvg, LivePlot, type EpochRow, type Series } from './plot.js';

const SPECS: OptSpec[] = [
  { name: 'data-dir', type: 'string', default: packagePath('data/sample') ?? 'data/sample', help: 'folder of the S3-Rec-format sample' },
  { name: 'dataset', type: 'string', default: 'Beauty', help: 'S3-Rec dataset name' },
  { name: 'ml-dir', type: 'string', default: packagePath('data/sample/ml-100k-sample') ?? 'data/sample/ml-100k-sample', help: 'AttRec split folder (train.dat, test.dat)' },
  { name: 'pretrain-epochs', type: 'int', min: 0, default: 10, help: 'S3-Rec pretraining epochs before fine-tuning (0: SASRec mode only)' },
  { name: 'epochs', type: 'int', min: 1, default: 200, help: 'fine-tuning epoch budget (early stopping, patience 10)' },
  { name: 'batch-size', type: 'int', min: 1, default: 64, help: 'fine-tuning batch size' },
  { name: 'attrec-epochs', type: 'int', min: 0, default: 30, help: 'AttRec epoch budget (0: skip AttRec)' },
  { name: 'seed', type: 'int', min: 0, default: 42, help: 'seed of every random stream' },
  { name: 'plot', type: 'string', metavar: 'FILE.svg', default: join(tmpdir(), 'seqrec-demo', 'curves.svg'), help: 'training curves of every model (loss and validation metrics per epoch), rewritten after every epoch' },
  { name: 'json', type: 'flag', help: 'print the table rows as one JSON object (last line of stdout)' },
];

/** The demo's curves: one stream of epoch records per trained model. */
interface DemoCurves {
  finetune: Array<{ label: string; recs: EpochRow[] }>;
  pretrain: EpochRow[];
  attrec: EpochRow[];
}

const pts = (recs: readonly EpochRow[], get: (r: EpochRow) => unknown): Array<[number, number]> =>
  recs.map((r) => [r.epoch, typeof get(r) === 'number' ? (get(r) as number) : NaN]);
const metric = (field: string, k: string) => (r: EpochRow): unknown => (r[field] as Record<string, unknown> | undefined)?.[k];

/** Panels: S3-Rec fine-tuning loss and validation MRR / HR@10 per model, pretraining losses, AttRec loss and validation. */
export function demoCurvesSvg(c: DemoCurves, dataset: string): string {
  const W = { width: 600, height: 330 };
  const panels: string[] = [];
  const ft = c.finetune.filter((f) => f.recs.length > 0);
  if (ft.length) {
    panels.push(lineChartSvg({ title: `${dataset}: S3-Rec fine-tuning loss`, xLabel: 'epoch', yLabel: 'loss', series: ft.map((f) => ({ name: f.label, points: pts(f.recs, (r) => r.loss) })) }, W));
    const valid: Series[] = [];
    for (const f of ft) for (const k of ['MRR', 'HR@10']) valid.push({ name: `${f.label} ${k}`, points: pts(f.recs, metric('valid', k)) });
    panels.push(lineChartSvg({ title: `${dataset}: validation (sampled, 99 negatives)`, xLabel: 'epoch', yLabel: 'metric', series: valid }, W));
  }
  if (c.pretrain.length) {
    const keys = ['aap', 'mip', 'map', 'sp', 'total'];
    panels.push(lineChartSvg({ title: `${dataset}: S3-Rec pretraining losses`, xLabel: 'epoch', yLabel: 'loss', logY: true, series: keys.map((k) => ({ name: k.toUpperCase(), points: pts(c.pretrain, (r) => r[k]) })) }, W));
  }
  if (c.attrec.length) {
    panels.push(lineChartSvg({ title: 'ML-100k slice: AttRec training loss', xLabel: 'epoch', yLabel: 'loss', series: [{ name: 'loss', points: pts(c.attrec, (r) => r.loss) }] }, W));
    panels.push(lineChartSvg({ title: 'ML-100k slice: AttRec validation', xLabel: 'epoch', yLabel: 'metric', series: ['HR@50', 'MRR', 'AUC'].map((k) => ({ name: k, points: pts(c.attrec, metric('valid', k)) })) }, W));
  }
  if (panels.length === 0) throw new Error('no epoch finished');
  return stackSvg(panels, { columns: 2 });
}

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
  const plotFile = o.plot as string;
  const curves: DemoCurves = { finetune: [], pretrain: [], attrec: [] };
  // The records go into DemoCurves (several streams); LivePlot rewrites the file after each epoch of any of them.
  let tick = 0;
  const plot = new LivePlot(plotFile, () => demoCurvesSvg(curves, ds.name), { warn: say });
  await plot.check('seqrec demo');
  const onEpoch = (push: (r: EpochRow) => void) => (r: EpochRecord): void => {
    push(JSON.parse(JSON.stringify(r)) as EpochRow);
    plot.add({ epoch: tick++ });
  };
  await initGpu();
  const t0 = performance.now();
  const rows: Array<{ name: string; metrics: Record<string, number> }> = [];
  try {
    say(`${ds.name} sample: ${ds.sequences.length} users, ${ds.numItems} items, ${ds.attributes.numAttributes} attributes (${ds.files.sequences})`);
    rows.push({ name: `${ds.name}: popularity`, metrics: { ...popularityS3Rec(ds, 'test', 'sampled'), ...fullCols(popularityS3Rec(ds, 'test', 'full', 'corrected')) } });
    const cfg = { itemSize: ds.itemSize, attributeSize: ds.attributes.attributeSize };
    const ft = { epochs: o.epochs as number, batchSize: o.batchSize as number, seed, patience: 10 };

    const runFinetune = async (label: string, model: S3RecModel, curveLabel: string): Promise<void> => {
      const stream = { label: curveLabel, recs: [] as EpochRow[] };
      curves.finetune.push(stream);
      const res = await finetuneS3Rec(model, ds, { ...ft, hooks: { onProgress: bars(!json, `${label}`), onEpoch: onEpoch((r) => stream.recs.push(r)) } });
      const full = await evaluateS3Rec(model, ds, 'test', { protocol: 'full', fullSemantics: 'corrected' });
      say(`${label}: ${res.epochs} epochs (best ${res.bestEpoch}), ${res.trainSecondsPerEpoch.toFixed(2)} s/epoch`);
      rows.push({ name: `${ds.name}: ${label}`, metrics: { ...res.test!, ...fullCols(full) } });
    };

    manualSeed(seed);
    const sasrec = new S3RecModel(cfg);
    await runFinetune('S3-Rec, no pretraining (SASRec)', sasrec, 'SASRec mode');
    sasrec.dispose();

    if ((o.pretrainEpochs as number) > 0) {
      manualSeed(seed);
      const model = new S3RecModel(cfg);
      const pt = await pretrainS3Rec(model, ds, { epochs: o.pretrainEpochs as number, seed, hooks: { onProgress: bars(!json, 'pretrain'), onEpoch: onEpoch((r) => curves.pretrain.push(r)) } });
      say(`pretraining: ${o.pretrainEpochs as number} epochs, ${formatDuration(pt.seconds)}`);
      await runFinetune(`S3-Rec, ${o.pretrainEpochs as number} pretraining epochs`, model, `pretrained ${o.pretrainEpochs as number} ep`);
      model.dispose();
    }

    if ((o.attrecEpochs as number) > 0) {
      const ar = await attrecDemo({ dataDir: o.mlDir as string, epochs: o.attrecEpochs as number, seed, hooks: { onProgress: bars(!json, 'AttRec'), onEpoch: onEpoch((r) => curves.attrec.push(r)) } });
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
  const plotted = await plot.close();
  if (json) console.log(JSON.stringify({ seed, seconds, rows }));
  else {
    console.log(`\nTest split. Columns without "full": the sampled protocol (answer + 99 negatives, official S3-Rec);`);
    console.log(`"full": all items ranked on the GPU, the user's history, pad and mask ids excluded. ${formatDuration(seconds)} in all.\n`);
    console.log(formatMetricsTable(rows, { title: 'dataset: model' }));
  }
  if (plotted > 0) say(`training curves: ${plotFile}`);
  return 0;
}
