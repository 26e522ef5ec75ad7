// seqrec pretrain: S3-Rec self-supervised pretraining (AAP, MIP, MAP, SP) around models/s3rec_pretrain.ts.
//
//   seqrec pretrain --data-dir DIR --dataset NAME [--out DIR] [--epochs 300] [--save-every 10] [--resume] [--json]
//
// Any dataset in the S3-Rec format (NAME.txt + NAME_item2attributes.json; no sample file needed). Every
// hyper-parameter defaults to the official code's value (run_pretrain.py) and can be overridden; `--preset paper`
// switches to the paper's setting (batch 200, 100 epochs, InfoNCE objective, heads without bias, ReLU FFN) for
// every option not given explicitly. The run folder (--out, default runs/pretrain-<dataset>) receives
// <dataset>-epochs-<k>.safetensors every --save-every epochs and after the last one (official tensor names:
// `seqrec finetune --ckpt FILE` loads them), last.safetensors (for --resume) and log.jsonl (one line per epoch).
// Progress (a bar per epoch with each loss, throughput and ETA) and messages go to stderr; with --json the last
// line of stdout is one JSON object (final losses, epochs, seconds per epoch, peak GPU memory, checkpoints) and
// nothing else is printed on stdout. Ctrl-C stops after the current step; the last finished epoch stays saved.
import { join } from 'node:path';
import { destroyGpu, initGpu, manualSeed, packagePath } from '../engine/index.js';
import { isDataError, loadS3RecDataset, pretrainPrefixes, type S3RecDataset } from '../models/data/index.js';
import { S3RecModel, S3REC_DEFAULTS, PRETRAIN_WEIGHTS, type S3RecConfig } from '../models/s3rec.js';
import {
  pretrainS3Rec, PRETRAIN_DEFAULTS, PAPER_PRESET, type PretrainObjective, type PretrainPreset,
} from '../models/s3rec_pretrain.js';
import type { ProgressEvent } from '../models/run.js';
import { formatHelp, parseOptions, UsageError, type OptSpec, type ParsedOptions } from './args.js';
import { LivePlot, pretrainCurvesSvg } from './plot.js';
import { formatDuration, ProgressBar } from './progress.js';

const D = PRETRAIN_DEFAULTS;
const P = PAPER_PRESET;

export const PRETRAIN_SPECS: OptSpec[] = [
  { name: 'data-dir', type: 'string', default: packagePath('data/sample') ?? 'data/sample', help: 'folder with NAME.txt and NAME_item2attributes.json' },
  { name: 'dataset', type: 'string', default: 'Beauty', help: 'dataset name (any dataset in the S3-Rec format)' },
  { name: 'out', type: 'string', metavar: 'DIR', help: 'run folder: checkpoints, last.safetensors, log.jsonl (default runs/pretrain-<dataset>)' },
  { name: 'resume', type: 'flag', help: 'continue the run in --out from its last.safetensors (same options)' },
  { name: 'preset', type: 'choice', choices: ['official', 'paper'], default: 'official', help: `official code, or the paper: batch ${P.batchSize}, ${P.epochs} epochs, infonce, no head bias, relu (explicit options win)` },
  { name: 'epochs', type: 'int', min: 0, help: `pretraining epochs (default ${D.epochs}; paper ${P.epochs})` },
  { name: 'save-every', type: 'int', min: 0, default: D.saveEvery, help: 'write <dataset>-epochs-<k>.safetensors every N epochs (and after the last; 0: only after the last)' },
  { name: 'batch-size', type: 'int', min: 1, help: `samples (prefixes) per batch (default ${D.batchSize}; paper ${P.batchSize})` },
  { name: 'lr', type: 'number', min: 0, default: D.lr, help: 'Adam learning rate' },
  { name: 'beta1', type: 'number', min: 0, max: 0.999999, default: D.beta1, help: 'Adam beta1' },
  { name: 'beta2', type: 'number', min: 0, max: 0.999999, default: D.beta2, help: 'Adam beta2' },
  { name: 'weight-decay', type: 'number', min: 0, default: D.weightDecay, help: 'Adam weight decay' },
  { name: 'mask-p', type: 'number', min: 0, max: 1, default: D.maskP, help: 'probability of masking each item but the last (always masked)' },
  { name: 'aap-weight', type: 'number', default: PRETRAIN_WEIGHTS.aap, help: 'AAP loss weight' },
  { name: 'mip-weight', type: 'number', default: PRETRAIN_WEIGHTS.mip, help: 'MIP loss weight' },
  { name: 'map-weight', type: 'number', default: PRETRAIN_WEIGHTS.map, help: 'MAP loss weight' },
  { name: 'sp-weight', type: 'number', default: PRETRAIN_WEIGHTS.sp, help: 'SP loss weight' },
  { name: 'objective', type: 'choice', choices: ['official', 'infonce'], help: "official: BCE over all attributes + double-sigmoid pairwise; infonce: paper Eq. 10-12 over sampled negatives (default official; paper infonce)" },
  { name: 'negatives', type: 'int', min: 1, default: D.negatives, help: 'infonce: sampled negatives per row for MIP, AAP and MAP (SP uses the batch)' },
  { name: 'temperature', type: 'number', min: 1e-6, default: D.temperature, help: 'infonce: logits divided by this' },
  { name: 'head-bias', type: 'choice', choices: ['true', 'false'], help: 'bias in the aap/mip/map/sp_norm heads (default true; paper false: kept at 0, not optimized)' },
  { name: 'seed', type: 'int', min: 0, default: D.seed, help: 'seed of every random stream (init, order, masks, negatives, dropout)' },
  { name: 'check-finite', type: 'int', min: 0, default: 0, metavar: 'N', help: 'check every parameter (and the loss) for NaN/Inf after each step, stop with the first one named (reported every N steps; 0: off)' },
  { name: 'hidden-size', type: 'int', min: 1, default: S3REC_DEFAULTS.hiddenSize, help: 'hidden size' },
  { name: 'layers', type: 'int', min: 0, default: S3REC_DEFAULTS.numHiddenLayers, help: 'encoder layers' },
  { name: 'heads', type: 'int', min: 1, default: S3REC_DEFAULTS.numAttentionHeads, help: 'attention heads' },
  { name: 'max-len', type: 'int', min: 1, default: S3REC_DEFAULTS.maxSeqLength, help: 'max_seq_length' },
  { name: 'act', type: 'choice', choices: ['gelu', 'relu'], help: 'FFN activation (default gelu; paper relu)' },
  { name: 'dropout', type: 'number', min: 0, max: 0.99, default: S3REC_DEFAULTS.hiddenDropoutProb, help: 'hidden dropout' },
  { name: 'attn-dropout', type: 'number', min: 0, max: 0.99, default: S3REC_DEFAULTS.attentionProbsDropoutProb, help: 'attention-probability dropout' },
  { name: 'path', type: 'choice', choices: ['varlen', 'padded'], default: D.path, help: 'encoder path: padding-free (exact, faster) or the padded official layout' },
  { name: 'steps-per-epoch', type: 'int', min: 1, help: 'run at most N steps per epoch (timing, smoke tests; the averages use the steps run)' },
  { name: 'progress-every', type: 'int', min: 0, default: D.progressEvery, help: 'read the running losses back every N steps for the progress bar (0: at epoch end only)' },
  { name: 'plot', type: 'string', metavar: 'FILE.svg', help: 'draw the AAP, MIP, MAP, SP and total losses per epoch into this SVG (rewritten after every epoch; with --resume, all epochs of the run)' },
  { name: 'json', type: 'flag', help: 'print one JSON object as the last line of stdout (and nothing else there)' },
];

const USAGE = 'seqrec pretrain --data-dir DIR --dataset NAME [--out DIR] [--epochs N] [--save-every N] [--resume] [--json] [options]';
const NOTES = `Official defaults (run_pretrain.py): batch 100, Adam 1e-3, 300 epochs, mask_p 0.2 (last item always masked),
loss 0.2 AAP + MIP + MAP + 0.5 SP; a checkpoint with the official tensor names every 10 epochs.
Files in --out: <dataset>-epochs-<k>.safetensors (seqrec finetune --ckpt FILE), last.safetensors (--resume,
bit-identical continuation), log.jsonl (one line per epoch: aap, mip, map, sp averaged as the official log,
i.e. summed loss / (batches * batch size), total, seconds).`;

const str = (o: ParsedOptions, k: string): string => o[k] as string;
const num = (o: ParsedOptions, k: string): number => o[k] as number;

async function loadData(cmd: string, o: ParsedOptions): Promise<S3RecDataset> {
  try {
    return await loadS3RecDataset(str(o, 'dataDir'), str(o, 'dataset'), { sample: 'optional' });
  } catch (e) {
    if (isDataError(e)) throw new UsageError(`${cmd}: ${e.message}`);
    throw e;
  }
}

const fmtLosses = (r: Record<string, unknown>): string => ['aap', 'mip', 'map', 'sp', 'total'].map((k) => `${k} ${(r[k] as number).toFixed(4)}`).join('  ');

/** The progress bar of each epoch, redrawn from the library's events (stderr). */
function progressPrinter(): (e: ProgressEvent) => void {
  let bar: ProgressBar | null = null;
  let epoch = -1;
  return (e) => {
    if (e.epoch !== epoch || !bar) {
      bar?.close();
      epoch = e.epoch;
      bar = new ProgressBar(`epoch ${e.epoch + 1}/${e.epochs} pretrain`, e.steps, { unit: 'seq' });
    }
    const l = e.losses ?? {};
    const fields: Record<string, number> = {};
    for (const k of ['aap', 'mip', 'map', 'sp', 'total']) if (l[k] !== undefined) fields[k] = l[k]!;
    bar.update(e.step, e.samples, fields);
    if (e.step >= e.steps) bar = null;
  };
}

export async function runPretrain(argv: string[]): Promise<number> {
  const cmd = 'seqrec pretrain';
  const o = parseOptions(cmd, argv, PRETRAIN_SPECS);
  if (o.help) {
    console.log(formatHelp(USAGE, PRETRAIN_SPECS, NOTES));
    return 0;
  }
  const preset = str(o, 'preset') as PretrainPreset;
  const paper = preset === 'paper';
  const json = o.json === true;
  const ds = await loadData(cmd, o);
  const L = num(o, 'maxLen');
  if (pretrainPrefixes(ds.sequences, L).count === 0) throw new UsageError(`${cmd}: ${ds.files.sequences} has no pretraining samples (every sequence has fewer than 3 items)`);
  const out = (o.out as string | undefined) ?? join('runs', `pretrain-${ds.name}`);
  const log = (m: string): void => void process.stderr.write(`${m}\n`);
  const plot = o.plot
    ? new LivePlot(str(o, 'plot'), (recs) => pretrainCurvesSvg(recs, `S3-Rec pretraining, ${ds.name}`), { resumeLog: o.resume ? join(out, 'log.jsonl') : undefined, warn: (m) => log(`${cmd}: ${m}`) })
    : null;
  await plot?.check(cmd);
  await initGpu();
  const ac = new AbortController();
  const onSigint = (): void => {
    log(`\n${cmd}: interrupted: stopping after this step (the last finished epoch stays saved in ${out})`);
    ac.abort();
  };
  process.once('SIGINT', onSigint);
  try {
    manualSeed(num(o, 'seed'));
    const cfg: Partial<S3RecConfig> & Pick<S3RecConfig, 'itemSize' | 'attributeSize'> = {
      itemSize: ds.itemSize, attributeSize: ds.attributes.attributeSize, hiddenSize: num(o, 'hiddenSize'),
      numHiddenLayers: num(o, 'layers'), numAttentionHeads: num(o, 'heads'), maxSeqLength: L,
      hiddenAct: ((o.act as string | undefined) ?? (paper ? 'relu' : S3REC_DEFAULTS.hiddenAct)) as S3RecConfig['hiddenAct'],
      hiddenDropoutProb: num(o, 'dropout'), attentionProbsDropoutProb: num(o, 'attnDropout'),
    };
    let model: S3RecModel;
    try {
      model = new S3RecModel(cfg);
    } catch (e) {
      throw new UsageError(`${cmd}: ${(e as Error).message}`);
    }
    const objective = o.objective as PretrainObjective | undefined;
    const headBias = o.headBias === undefined ? undefined : o.headBias === 'true';
    log(`${ds.name}: ${ds.sequences.length} users, ${ds.numItems} items (item_size ${ds.itemSize}), attribute_size ${ds.attributes.attributeSize}, ${pretrainPrefixes(ds.sequences, L).count.toLocaleString('en-US')} pretraining samples; ${model.numParameters().toLocaleString('en-US')} parameters; run folder ${out}`);
    const res = await pretrainS3Rec(model, ds, {
      preset, epochs: o.epochs as number | undefined, batchSize: o.batchSize as number | undefined, lr: num(o, 'lr'),
      beta1: num(o, 'beta1'), beta2: num(o, 'beta2'), weightDecay: num(o, 'weightDecay'), maskP: num(o, 'maskP'),
      weights: { aap: num(o, 'aapWeight'), mip: num(o, 'mipWeight'), map: num(o, 'mapWeight'), sp: num(o, 'spWeight') },
      seed: num(o, 'seed'), objective, negatives: num(o, 'negatives'), temperature: num(o, 'temperature'), headBias,
      path: str(o, 'path') as 'varlen' | 'padded', outDir: out, saveEvery: num(o, 'saveEvery'), resume: o.resume === true,
      stepsPerEpoch: o.stepsPerEpoch as number | undefined, progressEvery: num(o, 'progressEvery'), checkFinite: num(o, 'checkFinite'),
      hooks: {
        onProgress: progressPrinter(),
        onEpoch: (r) => {
          log(`epoch ${r.epoch}: ${fmtLosses(r)}  (${r.seconds.toFixed(1)} s)${r.checkpoint ? `  -> ${r.checkpoint as string}` : ''}`);
          plot?.add(r);
        },
        onLog: log,
        signal: ac.signal,
      },
    });
    const plotted = plot ? await plot.close() : 0;
    const final = res.final ? { aap: res.final.aap, mip: res.final.mip, map: res.final.map, sp: res.final.sp, total: res.final.total } : null;
    const summary = {
      model: 's3rec', stage: 'pretrain', dataset: ds.name, preset, objective: objective ?? (paper ? P.objective : D.objective),
      epochs: res.epochs, aborted: res.aborted, final, secondsPerEpoch: res.secondsPerEpoch, seconds: res.seconds,
      peakGpuBytes: res.peakGpuBytes, checkpoints: res.checkpoints, last: res.checkpoints[res.checkpoints.length - 1] ?? null,
      out, log: join(out, 'log.jsonl'), ...(plot ? { plot: plotted > 0 ? plot.file : null } : {}),
    };
    if (json) console.log(JSON.stringify(summary));
    else {
      console.log(`S3-Rec pretraining on ${ds.name}: ${res.epochs} epochs${res.aborted ? ' (interrupted)' : ''}, ${formatDuration(res.seconds)} (${res.secondsPerEpoch.toFixed(2)} s per epoch, median); peak GPU memory ${(res.peakGpuBytes / 2 ** 20).toFixed(1)} MiB`);
      if (final) console.log(`final losses: ${fmtLosses(final)}`);
      if (plot) console.log(plotted > 0 ? `curves: ${plot.file} (${plotted} epochs)` : 'curves: none written (no epoch finished)');
      if (res.checkpoints.length) console.log(`checkpoints: ${res.checkpoints.join(', ')}\nfine-tune with: seqrec finetune --data-dir ${str(o, 'dataDir')} --dataset ${ds.name} --ckpt ${res.checkpoints[res.checkpoints.length - 1]!}`);
    }
    model.dispose();
    return res.aborted ? 130 : 0;
  } finally {
    process.removeListener('SIGINT', onSigint);
    await destroyGpu();
  }
}
