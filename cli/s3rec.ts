// seqrec finetune / seqrec eval --model s3rec: option parsing and printing around the models layer
// (models/s3rec_train.ts: finetuneS3Rec, evaluateS3Rec, loadS3RecModel).
//
//   seqrec finetune --data-dir DIR --dataset NAME [--ckpt FILE] [--out DIR] [--resume] [--epochs 200] ...
//   seqrec eval --model s3rec --ckpt FILE --data-dir DIR --dataset NAME [--protocol sampled|full] [--split test]
//
// With --json, the last line of stdout is one JSON object (`metrics` keyed HR@1 .. MRR for the sampled protocol,
// HR@5 .. NDCG@20 for full); progress and messages go to stderr.
import { join } from 'node:path';
import { destroyGpu, initGpu, manualSeed, packagePath } from '../engine/index.js';
import { formatMetricsTable, isDataError, loadS3RecDataset, type S3RecDataset } from '../models/data/index.js';
import { S3RecModel, S3REC_DEFAULTS, type S3RecConfig } from '../models/s3rec.js';
import {
  evaluateS3Rec, finetuneS3Rec, FINETUNE_DEFAULTS, loadS3RecModel, popularityS3Rec, type FullSemantics, type Protocol,
} from '../models/s3rec_train.js';
import type { ProgressEvent } from '../models/run.js';
import { formatHelp, parseOptions, UsageError, type OptSpec, type ParsedOptions } from './args.js';
import { finetuneCurvesSvg, LivePlot } from './plot.js';
import { formatDuration, phaseBars } from './progress.js';

const DATA_OPTS: OptSpec[] = [
  { name: 'data-dir', type: 'string', default: packagePath('data/sample') ?? 'data/sample', help: 'folder with NAME.txt, NAME_item2attributes.json (and NAME_sample.txt for the sampled protocol)' },
  { name: 'dataset', type: 'string', default: 'Beauty', help: 'dataset name (any dataset in the S3-Rec format)' },
];

const MODEL_OPTS: OptSpec[] = [
  { name: 'hidden-size', type: 'int', min: 1, default: S3REC_DEFAULTS.hiddenSize, help: 'hidden size (from the checkpoint when --ckpt is given)' },
  { name: 'layers', type: 'int', min: 0, default: S3REC_DEFAULTS.numHiddenLayers, help: 'encoder layers (from the checkpoint when --ckpt is given)' },
  { name: 'heads', type: 'int', min: 1, default: S3REC_DEFAULTS.numAttentionHeads, help: 'attention heads' },
  { name: 'max-len', type: 'int', min: 1, default: S3REC_DEFAULTS.maxSeqLength, help: 'max_seq_length (from the checkpoint when --ckpt is given)' },
  { name: 'act', type: 'choice', choices: ['gelu', 'relu'], default: S3REC_DEFAULTS.hiddenAct, help: "FFN activation: official GELU (erf), or the paper's ReLU" },
  { name: 'path', type: 'choice', choices: ['varlen', 'padded'], default: FINETUNE_DEFAULTS.path, help: 'encoder path: padding-free (exact, faster) or the padded official layout' },
];

const EVAL_OPTS: OptSpec[] = [
  { name: 'protocol', type: 'choice', choices: ['sampled', 'full'], default: FINETUNE_DEFAULTS.protocol, help: 'sampled: answer + 99 negatives (run_finetune_sample.py); full: all items (run_finetune_full.py)' },
  { name: 'full-semantics', type: 'choice', choices: ['official', 'corrected'], default: FINETUNE_DEFAULTS.fullSemantics, help: 'full ranking: official (pad and mask ids ranked, history scored 0) or corrected (excluded)' },
  { name: 'json', type: 'flag', help: 'print one JSON object as the last line of stdout' },
];

const FINETUNE_SPECS: OptSpec[] = [
  ...DATA_OPTS,
  { name: 'ckpt', type: 'string', help: 'pretrained checkpoint (safetensors, official tensor names); without it the model is SASRec' },
  { name: 'out', type: 'string', help: 'run folder: log.jsonl, last.safetensors (for --resume), best.safetensors' },
  { name: 'resume', type: 'flag', help: 'continue the run in --out from its last.safetensors' },
  { name: 'epochs', type: 'int', min: 0, default: FINETUNE_DEFAULTS.epochs, help: 'maximum epochs' },
  { name: 'patience', type: 'int', min: 1, default: FINETUNE_DEFAULTS.patience, help: 'early stopping: epochs without a strict improvement of the validation score' },
  { name: 'batch-size', type: 'int', min: 1, default: FINETUNE_DEFAULTS.batchSize, help: 'batch size' },
  { name: 'lr', type: 'number', min: 0, default: FINETUNE_DEFAULTS.lr, help: 'Adam learning rate' },
  { name: 'weight-decay', type: 'number', min: 0, default: FINETUNE_DEFAULTS.weightDecay, help: 'Adam weight decay' },
  { name: 'dropout', type: 'number', min: 0, max: 0.99, default: S3REC_DEFAULTS.hiddenDropoutProb, help: 'hidden dropout' },
  { name: 'attn-dropout', type: 'number', min: 0, max: 0.99, default: S3REC_DEFAULTS.attentionProbsDropoutProb, help: 'attention-probability dropout' },
  { name: 'seed', type: 'int', min: 0, default: FINETUNE_DEFAULTS.seed, help: 'seed of every random stream (init, order, negatives, dropout)' },
  { name: 'check-finite', type: 'int', min: 0, default: 0, metavar: 'N', help: 'check the loss and every parameter for NaN/Inf, stop with the first one named (reported every N steps; 0: off)' },
  { name: 'plot', type: 'string', metavar: 'FILE.svg', help: 'draw the training loss and the validation metrics per epoch into this SVG (rewritten after every epoch; with --resume, all epochs of the run)' },
  ...MODEL_OPTS,
  ...EVAL_OPTS,
];

const EVAL_SPECS: OptSpec[] = [
  ...DATA_OPTS,
  { name: 'ckpt', type: 'string', help: 'checkpoint to evaluate (safetensors, official tensor names), required' },
  { name: 'split', type: 'choice', choices: ['valid', 'test'], default: 'test', help: 'valid: answer items[-2]; test: items[-1]' },
  { name: 'heads', type: 'int', min: 1, default: S3REC_DEFAULTS.numAttentionHeads, help: 'attention heads (not visible in the tensor shapes)' },
  { name: 'act', type: 'choice', choices: ['gelu', 'relu'], default: S3REC_DEFAULTS.hiddenAct, help: 'FFN activation the checkpoint was trained with' },
  { name: 'path', type: 'choice', choices: ['varlen', 'padded'], default: FINETUNE_DEFAULTS.path, help: 'encoder path' },
  { name: 'popularity', type: 'flag', help: 'also print the popularity baseline on the same split' },
  ...EVAL_OPTS,
];

const FINETUNE_USAGE = 'seqrec finetune --data-dir DIR --dataset NAME [--ckpt FILE] [--out DIR [--resume]] [options]';
const EVAL_USAGE = 'seqrec eval --model s3rec --ckpt FILE --data-dir DIR --dataset NAME [--protocol sampled|full] [--split valid|test] [options]';

function str(o: ParsedOptions, k: string): string {
  return o[k] as string;
}
function num(o: ParsedOptions, k: string): number {
  return o[k] as number;
}

async function loadData(cmd: string, o: ParsedOptions, protocol: Protocol): Promise<S3RecDataset> {
  try {
    return await loadS3RecDataset(str(o, 'dataDir'), str(o, 'dataset'), { sample: protocol === 'sampled' ? 'require' : 'optional' });
  } catch (e) {
    if (isDataError(e)) throw new UsageError(`${cmd}: ${e.message}`);
    throw e;
  }
}

/** A progress bar per phase (train / valid / test). */
const progressPrinter = (enabled: boolean): ((e: ProgressEvent) => void) => phaseBars({ enabled, unit: (p) => (p === 'train' ? 'seq' : 'users') });

const fmtMetrics = (m: Record<string, number>): string => Object.entries(m).map(([k, v]) => `${k} ${v.toFixed(4)}`).join('  ');

export async function runFinetune(argv: string[]): Promise<number> {
  const cmd = 'seqrec finetune';
  const o = parseOptions(cmd, argv, FINETUNE_SPECS);
  if (o.help) {
    console.log(formatHelp(FINETUNE_USAGE, FINETUNE_SPECS, 'Official defaults (run_finetune_sample.py). Early stopping on validation MRR (sampled) or NDCG@20 (full);\nthe best model is tested once. Checkpoints in --out are atomic; --resume continues bit for bit.'));
    return 0;
  }
  if (o.resume && !o.out) throw new UsageError(`${cmd}: --resume needs --out DIR (the run folder to continue)`);
  const protocol = str(o, 'protocol') as Protocol;
  const json = o.json === true;
  const ds = await loadData(cmd, o, protocol);
  const ckptName = o.ckpt as string | undefined;
  const plot = o.plot
    ? new LivePlot(str(o, 'plot'), (recs) => finetuneCurvesSvg(recs, `S3-Rec fine-tuning, ${ds.name}${ckptName ? '' : ' (SASRec mode)'}`, protocol), {
        resumeLog: o.resume ? join(str(o, 'out'), 'log.jsonl') : undefined, warn: (m) => process.stderr.write(`${cmd}: ${m}\n`),
      })
    : null;
  await plot?.check(cmd);
  await initGpu();
  try {
    manualSeed(num(o, 'seed'));
    const overrides: Partial<S3RecConfig> = {
      numAttentionHeads: num(o, 'heads'), hiddenAct: str(o, 'act') as S3RecConfig['hiddenAct'],
      hiddenDropoutProb: num(o, 'dropout'), attentionProbsDropoutProb: num(o, 'attnDropout'),
    };
    const ckpt = ckptName;
    const model = ckpt
      ? await loadS3RecModel(ckpt, overrides, ds)
      : new S3RecModel({
          ...overrides, itemSize: ds.itemSize, attributeSize: ds.attributes.attributeSize, hiddenSize: num(o, 'hiddenSize'),
          numHiddenLayers: num(o, 'layers'), maxSeqLength: num(o, 'maxLen'),
        });
    const log = (m: string): void => void (json ? process.stderr.write(`${m}\n`) : console.error(m));
    log(`${ds.name}: ${ds.sequences.length} users, ${ds.numItems} items (item_size ${ds.itemSize}), ${model.numParameters().toLocaleString('en-US')} parameters; ${ckpt ? `pretrained: ${ckpt}` : 'no pretrained checkpoint: the model is SASRec'}`);
    const t0 = performance.now();
    const res = await finetuneS3Rec(model, ds, {
      epochs: num(o, 'epochs'), batchSize: num(o, 'batchSize'), lr: num(o, 'lr'), weightDecay: num(o, 'weightDecay'),
      seed: num(o, 'seed'), patience: num(o, 'patience'), protocol, fullSemantics: str(o, 'fullSemantics') as FullSemantics,
      path: str(o, 'path') as 'varlen' | 'padded', outDir: o.out as string | undefined, resume: o.resume === true,
      pretrained: ckpt ?? null, checkFinite: num(o, 'checkFinite'),
      hooks: {
        onProgress: progressPrinter(true),
        onEpoch: (r) => {
          log(`epoch ${r.epoch}: loss ${(r.loss as number).toFixed(4)}  valid ${fmtMetrics(r.valid as Record<string, number>)}  (${(r.trainSeconds as number).toFixed(1)} s train, ${(r.validSeconds as number).toFixed(1)} s valid)${r.best ? '  *' : ''}`);
          plot?.add(r);
        },
        onLog: (m) => (m.startsWith('no pretrained') ? undefined : log(m)),
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    const plotted = plot ? await plot.close() : 0;
    const summary = {
      model: 's3rec', dataset: ds.name, protocol, pretrained: ckpt ?? null, epochs: res.epochs, bestEpoch: res.bestEpoch,
      stoppedEarly: res.stoppedEarly, valid: res.bestValid, metrics: res.test ?? {}, trainSecondsPerEpoch: res.trainSecondsPerEpoch,
      validSecondsPerEpoch: res.validSecondsPerEpoch, seconds, peakGpuBytes: res.peakGpuBytes, out: (o.out as string | undefined) ?? null,
      ...(plot ? { plot: plotted > 0 ? plot.file : null } : {}),
    };
    if (json) console.log(JSON.stringify(summary));
    else {
      console.log(`\nS3-Rec fine-tuning on ${ds.name} (${ckpt ? 'from a pretrained checkpoint' : 'SASRec mode'}): ${res.epochs} epochs, best validation epoch ${res.bestEpoch}${res.stoppedEarly ? ' (early stop)' : ''}, ${formatDuration(seconds)}`);
      console.log(`per epoch: ${res.trainSecondsPerEpoch.toFixed(2)} s training, ${res.validSecondsPerEpoch.toFixed(2)} s validation (medians); peak GPU memory ${(res.peakGpuBytes / 2 ** 20).toFixed(1)} MiB\n`);
      const rows = [{ name: `valid (epoch ${res.bestEpoch})`, metrics: res.bestValid }];
      if (res.test) rows.push({ name: 'test', metrics: res.test });
      console.log(formatMetricsTable(rows, { title: `${protocol} protocol` }));
      if (o.out) console.log(`\nrun folder: ${o.out as string} (best.safetensors, last.safetensors, log.jsonl)`);
      if (plot) console.log(plotted > 0 ? `curves: ${plot.file} (${plotted} epochs)` : `curves: none written (no epoch finished)`);
    }
    model.dispose();
    return 0;
  } finally {
    await destroyGpu();
  }
}

export async function runEval(argv: string[]): Promise<number> {
  const cmd = 'seqrec eval';
  const o = parseOptions(cmd, argv, EVAL_SPECS);
  if (o.help) {
    console.log(formatHelp(EVAL_USAGE, EVAL_SPECS, 'Evaluates any checkpoint with the official tensor names (the released S3-Rec checkpoints included);\nthe model configuration is read from the tensor shapes.'));
    return 0;
  }
  if (!o.ckpt) throw new UsageError(`${cmd}: --ckpt FILE is required (seqrec eval --help)`);
  const protocol = str(o, 'protocol') as Protocol;
  const fullSemantics = str(o, 'fullSemantics') as FullSemantics;
  const split = str(o, 'split') as 'valid' | 'test';
  const ds = await loadData(cmd, o, protocol);
  await initGpu();
  try {
    const model = await loadS3RecModel(str(o, 'ckpt'), { numAttentionHeads: num(o, 'heads'), hiddenAct: str(o, 'act') as S3RecConfig['hiddenAct'] }, ds);
    const t0 = performance.now();
    const metrics = await evaluateS3Rec(model, ds, split, { protocol, fullSemantics, path: str(o, 'path') as 'varlen' | 'padded', hooks: { onProgress: progressPrinter(true) } });
    const seconds = (performance.now() - t0) / 1000;
    const pop = o.popularity ? popularityS3Rec(ds, split, protocol, fullSemantics) : null;
    if (o.json) console.log(JSON.stringify({ model: 's3rec', dataset: ds.name, ckpt: str(o, 'ckpt'), protocol, split, users: ds.sequences.length, metrics, ...(pop ? { popularity: pop } : {}), seconds }));
    else {
      const rows = [{ name: `S3-Rec (${split})`, metrics }];
      if (pop) rows.push({ name: `popularity (${split})`, metrics: pop });
      console.log(formatMetricsTable(rows, { title: `${ds.name}, ${protocol}${protocol === 'full' ? ` (${fullSemantics})` : ''}` }));
      console.log(`\n${ds.sequences.length} users in ${seconds.toFixed(2)} s`);
    }
    model.dispose();
    return 0;
  } finally {
    await destroyGpu();
  }
}
