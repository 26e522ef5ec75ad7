// seqrec train --model attrec / seqrec eval --model attrec: AttRec training and evaluation (models/attrec_train.ts).
// Defaults are the authors' code as it runs (ATTREC_SPEC §4.1); every hyperparameter and paper variant is an
// option. stdout: the result table (or, with --json, exactly one JSON line); stderr: progress and messages.
import { backward, destroyGpu, formatProfile, initGpu, profileKernels, scope } from '../engine/index.js';
import { AttRecFusedStep, disposeAttRecBatch, uploadAttRecBatch } from '../models/attrec.js';
import {
  attrecSplits, buildWindows, evaluateAttRec, loadAttRecCheckpoint, loadAttRecData, popularityAttRec, trainAttRec, ATTREC_TRAIN_DEFAULTS,
  type AttRecTrainOptions, type AttRecEpochRecord,
} from '../models/attrec_train.js';
import { buildAttRecBatch, epochOrder, formatMetricsTable, isDataError, Rng } from '../models/data/index.js';
import { join } from 'node:path';
import { formatHelp, parseOptions, UsageError, type OptSpec, type ParsedOptions } from './args.js';
import { attrecCurvesSvg, LivePlot } from './plot.js';
import { ProgressBar, formatDuration } from './progress.js';

const DATA_NOTES = `datasets (--data-dir DIR, --dataset NAME), resolved in this order:
  no --dataset          DIR/train.dat + DIR/test.dat: an AttRec split folder used as-is (the authors' ML-100k
                        split: --data-dir ../shared/data/ml-100k/attrec-split)
  DIR/NAME.txt          S3-Rec format ('user item item ...', oldest first): the last item is the test item
  DIR/NAME/train.dat    an AttRec split folder DIR/NAME (train.dat + test.dat)
  DIR/NAME[.dat|.data|.csv|.tsv|.inter]
                        an interaction log 'user item rating timestamp' (separator: --sep): leave-last-out by
                        timestamp as the authors' data_preprocess (ties: the first such line is the test item)
protocols:
  validation  each user's last training item is the validation answer, the model trains on the rest; the epoch
              is picked (and training stopped, --patience) on validation --select; test is reported at that epoch
  authors     train on all training items, evaluate test every epoch, best epoch picked ON TEST
              (reported as "best on test (authors' protocol)"; --patience then counts test epochs)
short sequences (S3-Rec data, logs): a user with L..L+T-1 training items gets one overlapping window (as the
authors' code), with 2..L-1 one left-padded window (pad keys masked, m = mean over the real rows); with fewer than
2 no window, but the user is still evaluated (from a padded input).
evaluation: full ranking on the GPU over {1..N-1} minus the user's training items; HR@50, MRR (whole list), AUC;
ties: equal distances rank by item id (the authors' stable sort over candidates in id order).`;

const DATA_OPTS: OptSpec[] = [
  { name: 'data-dir', type: 'string', help: 'dataset folder (see "datasets" below)', metavar: 'DIR' },
  { name: 'dataset', type: 'string', help: 'dataset name inside --data-dir (omit for an AttRec split folder)', metavar: 'NAME' },
  { name: 'sep', type: 'string', help: 'interaction-log separator: auto, tab, comma, space or a literal string (default auto)' },
];

const D = ATTREC_TRAIN_DEFAULTS;
const TRAIN_OPTS: OptSpec[] = [
  ...DATA_OPTS,
  { name: 'protocol', type: 'choice', choices: ['validation', 'authors'], default: D.protocol, help: 'model selection protocol' },
  { name: 'epochs', type: 'int', min: 0, default: D.epochs, help: 'maximum epochs' },
  { name: 'patience', type: 'int', min: 0, default: D.patience, help: 'stop after N epochs without improvement of --select (0: never)' },
  { name: 'select', type: 'choice', choices: ['HR@50', 'MRR', 'AUC'], default: D.select, help: 'selection metric' },
  { name: 'dim', type: 'int', min: 1, default: 150, help: 'd (num_factor)' },
  { name: 'seq-len', type: 'int', min: 1, default: 5, help: 'L, input items per window' },
  { name: 'targets', type: 'int', min: 1, default: D.targets, help: 'T, target items (and negatives) per window' },
  { name: 'batch-size', type: 'int', min: 1, default: D.batchSize, help: 'windows per batch (the remainder of an epoch is dropped)' },
  { name: 'lr', type: 'number', min: 0, default: D.lr, help: 'Adagrad learning rate' },
  { name: 'init-acc', type: 'number', min: 0, default: D.initialAccumulator, help: 'Adagrad initial accumulator value' },
  { name: 'alpha', type: 'number', min: 0, max: 1, default: 0.2, help: 'omega: weight of the long-term distance (short-term: 1 - alpha)' },
  { name: 'margin', type: 'number', min: 0, default: 0.5, help: 'hinge margin' },
  { name: 'reg-w', type: 'number', min: 0, default: 0.01, help: 'L2 scale of the projection: reg * sum(W^2) / 2' },
  { name: 'reg-emb', type: 'number', min: 0, default: 0.001, help: 'L2 scale of P, V, X, Q (whole tables, every step)' },
  { name: 'init-std', type: 'number', min: 0, default: 0.001, help: 'std of the truncated-normal embedding init' },
  { name: 'separate-qk', type: 'flag', help: 'paper: separate W_Q and W_K (authors: one shared projection, Q\' = K\')' },
  { name: 'diagonal', type: 'choice', choices: ['zero', 'mask'], default: 'zero', help: 'zero: zeroed after the softmax, not renormalised (authors); mask: masked before it (paper)' },
  { name: 'time-signal', type: 'choice', choices: ['concat', 'interleaved', 'none'], default: 'concat', help: 'concat: tensor2tensor sin|cos halves (authors); interleaved: the paper formula' },
  { name: 'dropout', type: 'number', min: 0, max: 0.99, default: 0, help: 'dropout on the ReLU projection while training (paper option)' },
  { name: 'clip', type: 'flag', help: 'paper: clip rows of P, X, Q to the unit ball after every step' },
  { name: 'negatives', type: 'choice', choices: ['authors', 'paper'], default: D.negatives, help: 'authors: all items minus the window\'s targets; paper: items the user never interacted with' },
  { name: 'attention', type: 'choice', choices: ['composed', 'fused'], default: 'composed', help: 'attention implementation (same math; fused: kernels/attention_masked.ts)' },
  { name: 'project-table', type: 'choice', choices: ['auto', 'on', 'off'], default: 'auto', help: 'autograd path: project the item table instead of batch rows (same math; auto: when items < batch*L)' },
  { name: 'fused-step', type: 'choice', choices: ['auto', 'on', 'off'], default: 'auto', help: "the fused training step (kernels/attrec_step.ts: the same math in 13 dispatches instead of ~100): auto = wherever it applies (the authors' model), on = an error where it does not, off = the autograd path" },
  { name: 'seed', type: 'int', min: 0, default: D.seed, help: 'seed of every random stream (init, shuffles, negatives, dropout)' },
  { name: 'check-finite', type: 'int', min: 0, default: 0, metavar: 'N', help: 'check every parameter (and the loss) for NaN/Inf after each step, stop with the first one named (reported every N steps; 0: off)' },
  { name: 'out', type: 'string', help: 'run folder: log.jsonl, last.safetensors, best.safetensors', metavar: 'DIR' },
  { name: 'resume', type: 'flag', help: 'continue from --out/last.safetensors (bit-identical to an uninterrupted run)' },
  { name: 'plot', type: 'string', metavar: 'FILE.svg', help: "draw the training loss and the validation HR@50, MRR, AUC (test under --protocol authors) per epoch into this SVG (rewritten after every epoch; with --resume, all epochs)" },
  { name: 'json', type: 'flag', help: 'print one JSON line on stdout (metrics has HR@50, MRR, AUC) and nothing else' },
  { name: 'profile', type: 'flag', help: 'after training, print a per-kernel profile of one training step on stderr' },
];

const EVAL_OPTS: OptSpec[] = [
  { name: 'ckpt', type: 'string', help: 'checkpoint written by seqrec train --model attrec (best.safetensors or last.safetensors)', metavar: 'FILE' },
  ...DATA_OPTS,
  { name: 'split', type: 'choice', choices: ['test', 'valid'], default: 'test', help: 'test (history: all training items) or valid (the last training item held out)' },
  { name: 'json', type: 'flag', help: 'print one JSON line on stdout and nothing else' },
];

function need(cmd: string, o: ParsedOptions, name: string): string {
  const v = o[name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())];
  if (typeof v !== 'string') throw new UsageError(`${cmd}: --${name} is required (${cmd} --help)`);
  return v;
}

async function loadData(cmd: string, o: ParsedOptions) {
  return loadAttRecData(need(cmd, o, 'data-dir'), o.dataset as string | undefined, o.sep ? { sep: o.sep as string } : {});
}

function fail(cmd: string, e: unknown): number {
  if (isDataError(e)) {
    console.error(`${cmd}: ${e.message}`);
    return 1;
  }
  throw e;
}

const mb = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;

export async function runAttRecTrain(argv: string[]): Promise<number> {
  const cmd = 'seqrec train --model attrec';
  const o = parseOptions(cmd, argv, TRAIN_OPTS);
  if (o.help) {
    console.log(formatHelp(`${cmd} --data-dir DIR [--dataset NAME] [options]`, TRAIN_OPTS, DATA_NOTES));
    return 0;
  }
  if (o.resume && !o.out) throw new UsageError(`${cmd}: --resume needs --out (the run folder to resume from)`);
  let data;
  try {
    data = await loadData(cmd, o);
  } catch (e) {
    return fail(cmd, e);
  }
  const json = o.json as boolean;
  const log = (m: string): void => {
    if (!json) console.error(m);
  };
  const plot = o.plot
    ? new LivePlot(o.plot as string, (recs) => attrecCurvesSvg(recs, `AttRec, ${data.name}`), {
        resumeLog: o.resume ? join(o.out as string, 'log.jsonl') : undefined, warn: (m) => console.error(`${cmd}: ${m}`),
      })
    : null;
  await plot?.check(cmd);
  let bar: ProgressBar | null = null;
  const opts: AttRecTrainOptions = {
    protocol: o.protocol as 'validation' | 'authors', epochs: o.epochs as number, patience: o.patience as number, select: o.select as 'HR@50',
    dim: o.dim as number, seqLen: o.seqLen as number, targets: o.targets as number, batchSize: o.batchSize as number, lr: o.lr as number,
    initialAccumulator: o.initAcc as number, alpha: o.alpha as number, margin: o.margin as number, regW: o.regW as number, regEmb: o.regEmb as number,
    initStd: o.initStd as number, sharedQK: !o.separateQk, diagonal: o.diagonal as 'zero', timeSignal: o.timeSignal as 'concat', projDropout: o.dropout as number,
    clip: o.clip as boolean, negatives: o.negatives as 'authors', attention: o.attention as 'composed', seed: o.seed as number, checkFinite: o.checkFinite as number,
    projectTable: o.projectTable === 'auto' ? 'auto' : o.projectTable === 'on', fusedStep: o.fusedStep === 'auto' ? 'auto' : o.fusedStep === 'on',
    ...(o.out ? { out: o.out as string } : {}), resume: o.resume as boolean,
    hooks: {
      onLog: log,
      onProgress: (e) => {
        if (json || e.phase !== 'train') return;
        if (e.step === 0 || !bar) bar = new ProgressBar(`epoch ${e.epoch + 1}/${e.epochs}`, e.steps, { unit: 'windows' });
        bar.update(e.step, e.samples, e.losses ? { loss: e.losses.loss! } : {});
        if (e.step >= e.steps) bar = null;
      },
      onEpoch: (rec) => {
        const r = rec as AttRecEpochRecord;
        const f = (m?: Record<string, number>): string => (m ? `HR@50 ${m['HR@50']!.toFixed(4)} MRR ${m.MRR!.toFixed(4)} AUC ${m.AUC!.toFixed(4)}` : '');
        log(`epoch ${r.epoch}: loss ${r.loss.toFixed(3)}, train ${r.trainSeconds.toFixed(2)} s, eval ${r.evalSeconds.toFixed(2)} s${r.valid ? ` | valid ${f(r.valid)}` : ''} | test ${f(r.test)}`);
        plot?.add(r);
      },
    },
  };
  const gpu = await initGpu();
  try {
    log(`device: ${gpu.info.description || gpu.info.vendor} (${gpu.info.backend})`);
    const r = await trainAttRec(data, opts);
    if (o.profile) {
      const prof = await profileOneStep(data, opts, r.model, r.optimizer);
      console.error(`per-kernel profile of one training step (B=${opts.batchSize}, engine/profile.ts):\n${formatProfile(prof, 30)}`);
    }
    r.optimizer.dispose();
    r.model.dispose();
    const plotted = plot ? await plot.close() : 0;
    const summary = {
      secondsPerEpoch: r.secondsPerEpoch, secondsPerEval: r.secondsPerEval, peakGpuBytes: r.peakGpuBytes, seconds: r.seconds,
      epochs: r.history.length,
    };
    if (json) {
      console.log(JSON.stringify({
        model: 'attrec', dataset: r.data.name, format: r.data.format, protocol: r.protocol, bestEpoch: r.bestEpoch, metrics: r.test,
        ...(r.valid ? { valid: r.valid } : {}), popularity: r.popularity, rows: r.rows, data: r.data, config: r.config, train: r.train, ...summary,
        ...(o.out ? { out: o.out } : {}), ...(plot ? { plot: plotted > 0 ? plot.file : null } : {}),
      }));
    } else {
      console.log(`\nAttRec on ${r.data.name} (${r.data.users} users, ${r.data.items} items, ${r.data.windows} windows), protocol ${r.protocol}, ${r.history.length} epochs`);
      console.log('full ranking over the items each user has not trained on (GPU top-K); ties by item id\n');
      const rows = r.valid ? [...r.rows, { name: `AttRec (valid, epoch ${r.bestEpoch})`, metrics: r.valid }, { name: 'popularity (valid)', metrics: r.popularity.valid! }] : r.rows;
      console.log(formatMetricsTable(rows, { title: 'model' }));
      console.log(`\n${formatDuration(r.seconds)} total; ${r.secondsPerEpoch.toFixed(2)} s per training epoch (median), ${r.secondsPerEval.toFixed(2)} s per full evaluation of ${r.data.users} users; peak GPU memory ${mb(r.peakGpuBytes)}${o.out ? `; run folder ${String(o.out)}` : ''}`);
      if (plot) console.log(plotted > 0 ? `curves: ${plot.file} (${plotted} epochs)` : 'curves: none written (no epoch finished)');
    }
    return 0;
  } catch (e) {
    return fail(cmd, e);
  } finally {
    await destroyGpu();
  }
}

/** One more training step (two: one warms the pipelines) on a fresh batch of epoch 1 (the model is advanced; it is not saved afterwards). */
async function profileOneStep(data: Awaited<ReturnType<typeof loadAttRecData>>, opts: AttRecTrainOptions, model: import('../models/attrec.js').AttRec, opt: import('../models/optim.js').Adagrad) {
  const T = opts.targets ?? 3;
  const splits = attrecSplits(data, opts.protocol ?? 'validation');
  const w = buildWindows(splits.trainSeqs, model.cfg.seqLen, T);
  const B = Math.min(opts.batchSize ?? 1000, w.count);
  const hb = buildAttRecBatch(w, epochOrder(w.count, opts.seed ?? 42, 1).subarray(0, B), { numItems: model.cfg.numItems, rng: new Rng(1) });
  model.train();
  if (opts.fusedStep !== false && model.fusedStepBlocker(B, T) === null) {
    // The trainer's fused step (kernels/attrec_step.ts).
    const fused = new AttRecFusedStep(model, opt, B, T);
    const fb = fused.batch(hb.users, hb.inputs, hb.targets, hb.negatives);
    try {
      fused.step(fb); // warm (pipelines compiled)
      return await profileKernels(() => fused.step(fb));
    } finally {
      fb.dispose();
      fused.dispose();
    }
  }
  const b = uploadAttRecBatch(hb.users, hb.inputs, hb.targets, hb.negatives, model.cfg.seqLen, T);
  const step = (): void => {
    const loss = scope(() => model.loss(b));
    backward(loss);
    opt.step();
    model.zeroGrad();
    loss.dispose();
  };
  step(); // warm (pipelines compiled)
  const prof = await profileKernels(step);
  disposeAttRecBatch(b);
  return prof;
}

export async function runAttRecEval(argv: string[]): Promise<number> {
  const cmd = 'seqrec eval --model attrec';
  const o = parseOptions(cmd, argv, EVAL_OPTS);
  if (o.help) {
    console.log(formatHelp(`${cmd} --ckpt FILE --data-dir DIR [--dataset NAME] [options]`, EVAL_OPTS, DATA_NOTES));
    return 0;
  }
  const ckpt = need(cmd, o, 'ckpt');
  let data;
  try {
    data = await loadData(cmd, o);
  } catch (e) {
    return fail(cmd, e);
  }
  await initGpu();
  try {
    const { model, metadata } = await loadAttRecCheckpoint(ckpt);
    try {
      if (model.cfg.numUsers !== data.numUsers || model.cfg.numItems !== data.numItems) {
        console.error(`${cmd}: ${ckpt} was trained on ${model.cfg.numUsers} users / ${model.cfg.numItems} item rows, the data has ${data.numUsers} / ${data.numItems} (another dataset?)`);
        return 1;
      }
      model.eval();
      const splits = attrecSplits(data, o.split === 'valid' ? 'validation' : 'authors');
      const stage = o.split === 'valid' ? splits.valid! : splits.test;
      const r = await evaluateAttRec(model, stage);
      const pop = popularityAttRec(stage, data.numItems);
      if (o.json) {
        console.log(JSON.stringify({ model: 'attrec', ckpt, dataset: data.name, split: o.split, epoch: metadata.best_epoch ? Number(metadata.best_epoch) : metadata.epoch ? Number(metadata.epoch) : null, metrics: r.metrics, popularity: pop, seconds: r.seconds }));
      } else {
        console.log(`AttRec ${ckpt}${(metadata.best_epoch ?? metadata.epoch) ? ` (epoch ${metadata.best_epoch ?? metadata.epoch})` : ''} on ${data.name}, ${o.split} split, ${data.numUsers} users, ${r.seconds.toFixed(2)} s\n`);
        console.log(formatMetricsTable([{ name: `popularity (${String(o.split)})`, metrics: pop }, { name: `AttRec (${String(o.split)})`, metrics: r.metrics }], { title: 'model' }));
      }
      return 0;
    } finally {
      model.dispose();
    }
  } catch (e) {
    return fail(cmd, e);
  } finally {
    await destroyGpu();
  }
}
