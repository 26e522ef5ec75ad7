// models/attrec_train.ts — AttRec training and evaluation as library functions (the CLI `seqrec train --model
// attrec` / `seqrec eval --model attrec` and the demo call these; a program linking the package can too).
//
// Data (loadAttRecData): an AttRec split folder (train.dat + test.dat, used as-is: ATTREC_SPEC §3), an interaction
// log (leave-last-one-out by timestamp, the authors' data_preprocess: `leaveLastOut`) or an S3-Rec-format
// NAME.txt (the last item of each sequence is the test item). Tables have numItems = max item id + 1 rows (id 0
// unused), so on ML-100k the 2 test-only items get their own untrained rows 1681/1682 and the candidate sets
// have the authors' sizes (their phantom rows 1681/1682 are candidates too).
// Protocols:
//   'validation' (default, honest): each user's last training item is held out as the validation answer and the
//     model trains on the rest; model selection and early stopping (patience) use the validation metric
//     (`select`, default HR@50); the reported test metrics are those of the selected epoch. Test input = the last L
//     items of the FULL training sequence (validation item included), candidates exclude all of it.
//   'authors': train on the full training sequences, evaluate test every epoch, pick the best epoch ON TEST
//     (reported as "best on test (authors' protocol)"; DeepRec issue #8: that is how the published numbers arise).
// Training (ATTREC_SPEC §2.5-2.6): sliding windows L=5 -> T=3 (`attrecWindows`), one fresh shuffle per epoch
// (`epochOrder`), batches of 1000 with the remainder dropped, 3 negatives per window re-drawn every epoch
// (authors: {1..N-1} minus the window's targets, uniform with replacement; paper: items the user never interacted
// with in training), hinge loss summed over the batch + whole-table L2, Adagrad(lr 0.05, acc0 0.05); optional
// unit-ball clipping after every step. Every random stream of epoch e comes from (seed, e) (models/run.ts), so a
// run resumed from last.safetensors is bit-identical to an uninterrupted one.
// Short sequences (interaction logs, S3-Rec datasets): a user with n training items, 2 <= n < max(L, T), gets
// one window whose input is the left-padded sequence (0 = pad) and whose targets are its last T items (the
// first one repeated when n < T), as the authors' overlapping window for 5 <= n < 8; users with fewer than 2
// training items get no window (they are still evaluated, from a padded input).
// Evaluation (ATTREC_SPEC §5): full ranking on the GPU (`topkScores`, mode 'euclid', history excluded via CSR, id 0
// excluded, `answer` -> rank; no [B, V] readback). Candidates: {1..N-1} minus the user's training items (the
// answer stays a candidate). Tie rule: topkScores' rank counts the candidates with a strictly smaller distance
// plus those with an EQUAL distance and a SMALLER id. The authors rank with Python's stable
// `sorted(zip(ids, scores), key=score, reverse=True)` over candidates listed in id order, which puts equal scores
// in id order too: the two rules are the same (test: 'tie rule'). HR@50, MRR over the whole list,
// AUC = (|cands| - 1 - rank) / (|cands| - 1) (`attrecUserMetrics`), means over users.
// Popularity: training counts of the same history, same candidates and the same tie rule.
import { basenamePath as basename, joinPath as join } from './data/paths.js';
import { accumulateInPlace, backward, initGpu, manualSeed, noGrad, packagePath, readSafetensors, rt, scope, sync, Tensor, zeros } from '../engine/index.js';
import { loadCheckpoint } from './checkpoint.js';
import { topkScores } from '../kernels/index.js';
import { AttRec, AttRecFusedStep, disposeAttRecBatch, uploadAttRecBatch, resolveAttRecConfig, padInfo, type AttRecConfig, type AttRecGpuBatch, type ResolvedAttRecConfig } from './attrec.js';
import { Adagrad } from './optim.js';
import type { AttRecStepBatch } from '../kernels/attrec_step.js';
import {
  attrecTestInputs, attrecWindows, batchIndices, buildAttRecBatch, DataError, epochOrder, fileExists, ItemSet, leaveLastOut, loadAttRecSplit,
  loadInteractionLog, loadS3RecSequences, MetricAccumulator, negSample, pathExists, prefetch, Rng, type AttRecWindows,
} from './data/index.js';
import { epochSeed, peakGpuBytes, RunDir, seedEngineForEpoch, watchFinite, type EpochRecord, type RunState, type TrainHooks } from './run.js';

// ------------------------------------------------------------------------------------------------ data
export type AttRecDataFormat = 'attrec-split' | 'interactions' | 's3rec';

export interface AttRecData {
  name: string;
  format: AttRecDataFormat;
  /** Files read. */
  files: string[];
  numUsers: number;
  /** Item table rows: max item id + 1 (id 0 unused). */
  numItems: number;
  /** Each user's training items (everything but the test item), oldest first. */
  train: Int32Array[];
  /** Each user's test item. */
  test: Int32Array;
}

const LOG_EXTS = ['', '.dat', '.data', '.csv', '.tsv', '.inter'];

/**
 * Resolve and load a dataset (rules in order):
 *   no dataset (or '.'):      DIR/train.dat + DIR/test.dat            -> the AttRec split folder itself
 *   DIR/NAME.txt exists:      S3-Rec format                           -> the last item of each line is the test item
 *   DIR/NAME/train.dat:       AttRec split folder DIR/NAME
 *   DIR/NAME[.dat|.data|.csv|.tsv|.inter]: interaction log 'user item rating timestamp' -> leaveLastOut
 */
export async function loadAttRecData(dataDir: string, dataset?: string, opts: { sep?: string } = {}): Promise<AttRecData> {
  if (!(await pathExists(dataDir))) throw new DataError(dataDir, undefined, 'data directory not found');
  if (dataset === undefined || dataset === '' || dataset === '.') {
    const tr = join(dataDir, 'train.dat');
    if (!(await fileExists(tr))) throw new DataError(tr, undefined, 'file not found (without --dataset, --data-dir must be an AttRec split folder with train.dat and test.dat)');
    return fromSplit(basename(dataDir), tr, join(dataDir, 'test.dat'), opts);
  }
  const txt = join(dataDir, `${dataset}.txt`);
  if (await fileExists(txt)) {
    const s = await loadS3RecSequences(txt, { minLength: 2 });
    return {
      name: dataset, format: 's3rec', files: [txt], numUsers: s.sequences.length, numItems: s.maxItem + 1,
      train: s.sequences.map((q) => q.subarray(0, q.length - 1)), test: Int32Array.from(s.sequences, (q) => q[q.length - 1]!),
    };
  }
  if (await fileExists(join(dataDir, dataset, 'train.dat'))) return fromSplit(dataset, join(dataDir, dataset, 'train.dat'), join(dataDir, dataset, 'test.dat'), opts);
  for (const ext of LOG_EXTS) {
    const f = join(dataDir, dataset + ext);
    if (await fileExists(f)) {
      const log = await loadInteractionLog(f, { ...(opts.sep ? { sep: opts.sep } : {}), minLength: 2 });
      const { train, testItems } = leaveLastOut(log);
      return { name: dataset, format: 'interactions', files: [f], numUsers: train.length, numItems: log.maxItem + 1, train, test: testItems };
    }
  }
  throw new DataError(join(dataDir, `${dataset}.txt`), undefined,
    `file not found (no S3-Rec ${dataset}.txt, AttRec split ${dataset}/train.dat or interaction log ${dataset}[.dat|.data|.csv|.tsv|.inter] in ${dataDir})`);
}

async function fromSplit(name: string, tr: string, te: string, opts: { sep?: string }): Promise<AttRecData> {
  const s = await loadAttRecSplit(tr, te, opts.sep ? { sep: opts.sep } : {});
  return { name, format: 'attrec-split', files: [tr, te], numUsers: s.sequences.length, numItems: s.maxItem + 1, train: s.sequences, test: s.testItems };
}

/** What one protocol trains on and evaluates. */
export interface AttRecSplits {
  /** Sequences the model trains on. */
  trainSeqs: Int32Array[];
  /** Validation stage (protocol 'validation'): history = trainSeqs, answer = the held-out last training item. */
  valid: EvalStage | null;
  /** Test stage: history = the full training sequences, answer = the test item. */
  test: EvalStage;
}

export interface EvalStage {
  name: 'valid' | 'test';
  /** History per user: the input is its last L items, the candidates exclude all of it. */
  history: Int32Array[];
  answers: Int32Array;
}

export function attrecSplits(data: AttRecData, protocol: 'validation' | 'authors'): AttRecSplits {
  const test: EvalStage = { name: 'test', history: data.train, answers: data.test };
  if (protocol === 'authors') return { trainSeqs: data.train, valid: null, test };
  const trainSeqs = data.train.map((s) => s.subarray(0, Math.max(0, s.length - 1)));
  const answers = Int32Array.from(data.train, (s) => (s.length ? s[s.length - 1]! : 0));
  return { trainSeqs, valid: { name: 'valid', history: trainSeqs, answers }, test };
}

/** Training windows (see the header for short sequences): attrecWindows for the users it accepts, one padded window for 2 <= n < max(L, T). */
export function buildWindows(seqs: readonly Int32Array[], L: number, T: number): AttRecWindows {
  const long: number[] = [];
  const short: number[] = [];
  seqs.forEach((s, u) => (s.length >= Math.max(L, T) ? long.push(u) : s.length >= 2 ? short.push(u) : undefined));
  if (short.length === 0 && long.length === seqs.length) return attrecWindows(seqs, L, T);
  const w = attrecWindows(long.map((u) => seqs[u]!), L, T);
  const count = w.count + short.length;
  const user = new Int32Array(count);
  const inputs = new Int32Array(count * L);
  const targets = new Int32Array(count * T);
  for (let k = 0; k < w.count; k++) user[k] = long[w.user[k]!]!;
  inputs.set(w.inputs);
  targets.set(w.targets);
  short.forEach((u, i) => {
    const s = seqs[u]!;
    const k = w.count + i;
    user[k] = u;
    const inp = s.subarray(0, Math.min(L, s.length)); // the first L items (n > L only when T > L)
    inputs.set(inp, k * L + (L - inp.length)); // left padding with 0
    for (let j = 0; j < T; j++) targets[k * T + j] = s[Math.max(0, s.length - T + j)]!;
  });
  return { count, L, T, user, inputs, targets };
}

/** Last L items of each history, left-padded with 0 ([U*L]). */
export function lastInputs(history: readonly Int32Array[], L: number): Int32Array {
  if (history.every((s) => s.length >= L)) return attrecTestInputs(history, L);
  const out = new Int32Array(history.length * L);
  history.forEach((s, u) => {
    const tail = s.subarray(Math.max(0, s.length - L));
    out.set(tail, u * L + (L - tail.length));
  });
  return out;
}

// ------------------------------------------------------------------------------------------------ evaluation
export interface EvalResult {
  metrics: Record<string, number>;
  /** 0-based rank of each user's answer, and the size of each user's candidate list. */
  ranks: Int32Array;
  candidates: Int32Array;
  seconds: number;
}

/** Candidates of each user: |{1..N-1} \ history| with the answer kept. */
export function candidateCounts(stage: EvalStage, numItems: number): Int32Array {
  const set = new ItemSet(numItems);
  return Int32Array.from(stage.history, (h, u) => {
    set.reset();
    for (const i of h) if (i >= 1 && i < numItems && i !== stage.answers[u]) set.add(i);
    return numItems - 1 - set.size;
  });
}

/** Full-ranking evaluation of a stage on the GPU (see the header: candidates, tie rule, metrics). */
export async function evaluateAttRec(model: AttRec, stage: EvalStage, o: { blockUsers?: number } = {}): Promise<EvalResult> {
  const t0 = performance.now();
  const { seqLen: L, numItems } = model.cfg;
  const U = stage.history.length;
  const inputs = lastInputs(stage.history, L);
  const bs = o.blockUsers ?? 2048;
  const rankTs: Tensor[] = [];
  for (let start = 0; start < U; start += bs) {
    const n = Math.min(bs, U - start);
    const hist = stage.history.slice(start, start + n);
    const offsets = new Int32Array(n + 1);
    hist.forEach((h, i) => (offsets[i + 1] = offsets[i]! + h.length));
    const items = new Int32Array(offsets[n]!);
    hist.forEach((h, i) => items.set(h, offsets[i]!));
    const seq = inputs.subarray(start * L, (start + n) * L);
    rankTs.push(
      noGrad(() =>
        scope(() => {
          const usersT = Tensor.from(Int32Array.from({ length: n }, (_, i) => start + i), [n], 'i32'); // [n]
          const seqT = Tensor.from(seq, [n, L], 'i32'); // [n, L]
          const pads = padInfo(seq, n, L);
          const { u, m, X, Q } = model.rankingInputs(usersT, seqT, pads ? { hostSeq: seq, rowMask: Tensor.from(pads.mask, [n, L, 1]), rowCount: Tensor.from(pads.count, [n, 1]) } : { hostSeq: seq }); // [n, Dp], [N, Dp]
          const top = topkScores({
            mode: 'euclid', query: { u, m }, table: { X, Q }, k: 1, alpha: model.cfg.alpha,
            exclude: { offsets, items }, excludeIds: [0], answer: stage.answers.subarray(start, start + n),
          });
          top.ids.dispose();
          top.scores.dispose();
          return top.rank!; // [n]
        }),
      ),
    );
  }
  const ranks = new Int32Array(U);
  let at = 0;
  for (const r of rankTs) {
    const a = (await r.toArray()) as Int32Array;
    ranks.set(a, at);
    at += a.length;
    r.dispose();
  }
  const candidates = candidateCounts(stage, numItems);
  const metrics = new MetricAccumulator().addAttRec(ranks, candidates).means();
  return { metrics, ranks, candidates, seconds: (performance.now() - t0) / 1000 };
}

/** Popularity baseline: training counts of the stage's histories, the same candidates and tie rule. */
export function popularityAttRec(stage: EvalStage, numItems: number, counts?: Float64Array): Record<string, number> {
  const c = counts ?? new Float64Array(numItems);
  if (!counts) for (const h of stage.history) for (const i of h) c[i]!++;
  const set = new ItemSet(numItems);
  const ranks = new Int32Array(stage.history.length);
  stage.history.forEach((h, u) => {
    set.reset(h);
    const a = stage.answers[u]!;
    let r = 0;
    for (let i = 1; i < numItems; i++) {
      if (i === a || set.has(i)) continue;
      if (c[i]! > c[a]! || (c[i] === c[a] && i < a)) r++;
    }
    ranks[u] = r;
  });
  return new MetricAccumulator().addAttRec(ranks, candidateCounts(stage, numItems)).means();
}

// ------------------------------------------------------------------------------------------------ training
export interface AttRecTrainOptions extends Omit<AttRecConfig, 'numUsers' | 'numItems'> {
  /** T targets (and negatives) per window. Default 3. */
  targets?: number;
  /** Default 1000 (the remainder of each epoch is dropped). */
  batchSize?: number;
  /** Adagrad. Defaults 0.05 / 0.05. */
  lr?: number;
  initialAccumulator?: number;
  /** Maximum epochs. Default 30. */
  epochs?: number;
  /** Stop after this many evaluated epochs without improvement of the selection metric (0: never). Default 5. */
  patience?: number;
  /** Check the loss and every parameter for NaN/Inf after each step, reporting every N steps (0: off). */
  checkFinite?: number;
  /** Default 'validation'. */
  protocol?: 'validation' | 'authors';
  /** Selection metric. Default 'HR@50'. */
  select?: 'HR@50' | 'MRR' | 'AUC';
  /** 'authors' (default) or 'paper' (items the user never interacted with in training). */
  negatives?: 'authors' | 'paper';
  /** Clip rows of P, X, Q to the unit ball after every step (paper). Default false. */
  clip?: boolean;
  seed?: number;
  /** Run folder (log.jsonl, last.safetensors, best.safetensors); none = nothing written. */
  out?: string;
  /** Continue from out/last.safetensors. */
  resume?: boolean;
  hooks?: TrainHooks;
  /** Read the running loss back every this many steps (progress, and a bound on how far the host runs ahead). Default 10. */
  readEvery?: number;
  /**
   * The fused training step (kernels/attrec_step.ts, the same math in 12 dispatches instead of ~100): 'auto'
   * (default) wherever it applies (the authors' model: AttRec.fusedStepBlocker), true (an error where it does not),
   * false (always the autograd path).
   */
  fusedStep?: boolean | 'auto';
}

export interface AttRecEpochRecord extends EpochRecord {
  loss: number;
  /** Seconds of the training part of the epoch (no evaluation). */
  trainSeconds: number;
  evalSeconds: number;
  /** Seconds since the start of the run (training + evaluation), resumed runs included. */
  elapsed: number;
  valid?: Record<string, number>;
  test: Record<string, number>;
}

export interface AttRecRunState extends RunState<AttRecEpochRecord> {
  bestEpoch: number;
  bestValue: number;
  sinceBest: number;
  stopped: boolean;
}

export interface AttRecTrainResult {
  data: { name: string; format: AttRecDataFormat; users: number; items: number; windows: number; batchesPerEpoch: number };
  config: ResolvedAttRecConfig;
  /** The training options used (defaults filled in). */
  train: TrainDefaults;
  protocol: 'validation' | 'authors';
  /** The epoch picked (on validation, or on test for the authors' protocol), 1-based; 0 = no epoch ran. */
  bestEpoch: number;
  /** Test metrics of the picked epoch, and validation metrics of it (validation protocol). */
  test: Record<string, number>;
  valid?: Record<string, number>;
  popularity: { test: Record<string, number>; valid?: Record<string, number> };
  history: AttRecEpochRecord[];
  /** Rows for a table: popularity and AttRec (test). */
  rows: Array<{ name: string; metrics: Record<string, number> }>;
  /** Median training seconds per epoch, median seconds per full test evaluation. */
  secondsPerEpoch: number;
  secondsPerEval: number;
  peakGpuBytes: number;
  seconds: number;
  model: AttRec;
  optimizer: Adagrad;
}

type TrainDefaults = Required<Pick<AttRecTrainOptions, 'targets' | 'batchSize' | 'lr' | 'initialAccumulator' | 'epochs' | 'patience' | 'protocol' | 'select' | 'negatives' | 'clip' | 'seed' | 'readEvery'>>;

export const ATTREC_TRAIN_DEFAULTS: Readonly<TrainDefaults> = {
  targets: 3, batchSize: 1000, lr: 0.05, initialAccumulator: 0.05, epochs: 30, patience: 5, protocol: 'validation', select: 'HR@50',
  negatives: 'authors', clip: false, seed: 42, readEvery: 10,
};

/** The checkpoint metadata key holding the model config (JSON). */
export const ATTREC_META = 'attrec_config';

function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

/** Paper rule: T draws per window (into out [B*T]) from {1..N-1} minus the user's training items. */
export function paperNegatives(out: Int32Array, users: Int32Array, trainSeqs: readonly Int32Array[], numItems: number, T: number, rng: Rng, set: ItemSet): void {
  for (let b = 0; b < users.length; b++) {
    set.reset(trainSeqs[users[b]!]!);
    for (let k = 0; k < T; k++) out[b * T + k] = negSample(rng, set, numItems);
  }
}

/**
 * Train (and evaluate every epoch) AttRec on `data`. The returned model and optimizer are the LAST epoch's (the
 * caller disposes them); the picked epoch's weights are in out/best.safetensors when `out` is given.
 */
export async function trainAttRec(data: AttRecData, options: AttRecTrainOptions = {}): Promise<AttRecTrainResult> {
  const o = { ...ATTREC_TRAIN_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as AttRecTrainOptions & TrainDefaults;
  const t0 = performance.now();
  const hooks = o.hooks ?? {};
  const T = o.targets;
  const cfg = resolveAttRecConfig({ ...options, numUsers: data.numUsers, numItems: data.numItems });
  const L = cfg.seqLen;
  const splits = attrecSplits(data, o.protocol);
  const windows = buildWindows(splits.trainSeqs, L, T);
  const steps = Math.floor(windows.count / o.batchSize);
  if (steps === 0) throw new Error(`AttRec: ${windows.count} training windows are fewer than one batch of ${o.batchSize} (the remainder is dropped): lower --batch-size`);
  const selStage = splits.valid ?? splits.test;

  manualSeed(o.seed);
  const model = new AttRec(cfg);
  const opt = new Adagrad(model, { lr: o.lr, initialAccumulatorValue: o.initialAccumulator });
  const run = o.out ? new RunDir(o.out) : null;
  const meta = { [ATTREC_META]: JSON.stringify(cfg), protocol: o.protocol, dataset: data.name };
  let state: AttRecRunState = { epoch: 0, history: [], bestEpoch: 0, bestValue: -Infinity, sinceBest: 0, stopped: false };
  if (run) {
    await run.create();
    if (o.resume) {
      state = (await run.loadLast<AttRecRunState>(model, opt)).state;
      hooks.onLog?.(`resumed from ${run.last} after epoch ${state.epoch}`);
    } else await run.writeLog([]);
  } else if (o.resume) throw new Error('--resume needs --out (the run folder to resume from)');

  const popTest = popularityAttRec(splits.test, cfg.numItems);
  const popValid = splits.valid ? popularityAttRec(splits.valid, cfg.numItems) : undefined;
  hooks.onLog?.(`data: ${data.name} (${data.format}), ${data.numUsers} users, ${data.numItems - 1} item ids, ${windows.count} windows, ${steps} batches of ${o.batchSize} per epoch`);

  const fusedWhy = o.fusedStep === false ? 'fusedStep false' : model.fusedStepBlocker(o.batchSize, T);
  if (o.fusedStep === true && fusedWhy) throw new Error(`AttRec: fusedStep true, but the fused step does not cover ${fusedWhy}`);
  const fused = fusedWhy === null ? new AttRecFusedStep(model, opt, o.batchSize, T) : null;
  hooks.onLog?.(fused ? 'training step: fused (kernels/attrec_step.ts)' : `training step: autograd (${fusedWhy})`);
  const lossSum = zeros([]); // [] summed on the GPU (autograd path)
  const set = new ItemSet(cfg.numItems);
  const elapsed0 = state.history.at(-1)?.elapsed ?? 0;
  const tRun = performance.now();
  try {
    for (let epoch = state.epoch + 1; epoch <= o.epochs && !state.stopped; epoch++) {
      if (hooks.signal?.aborted) break;
      const te = performance.now();
      seedEngineForEpoch(o.seed, epoch);
      const rng = new Rng(epochSeed(o.seed, epoch, 1));
      model.train();
      if (fused) fused.resetLoss();
      else lossSum.write(new Float32Array([0]));
      const batches = prefetch(
        batchIndices(epochOrder(windows.count, o.seed, epoch), o.batchSize, true),
        (idx): TrainBatch => {
          const hb = buildAttRecBatch(windows, idx, { numItems: cfg.numItems, rng });
          if (o.negatives === 'paper') paperNegatives(hb.negatives, hb.users, splits.trainSeqs, cfg.numItems, T, rng, set);
          return fused ? { fused: fused.batch(hb.users, hb.inputs, hb.targets, hb.negatives) } : { gpu: uploadAttRecBatch(hb.users, hb.inputs, hb.targets, hb.negatives, L, T) };
        },
        disposeTrainBatch,
      );
      let step = 0;
      let aborted = false;
      const watch = options.checkFinite ? watchFinite(options.checkFinite, model.stateDict()) : null;
      hooks.onProgress?.({ phase: 'train', epoch: epoch - 1, epochs: o.epochs, step: 0, steps, samples: 0 });
      for (const b of batches) {
        let loss: Tensor | undefined;
        if ('fused' in b) fused!.step(b.fused);
        else {
          loss = scope(() => model.loss(b.gpu)); // []
          backward(loss);
          opt.step();
          model.zeroGrad();
          accumulateInPlace(lossSum, loss);
        }
        if (o.clip) model.clipToUnitBall();
        step++;
        if (watch) await watch.afterStep(epoch * steps + step, loss); // fused: the parameters only (a bad loss spreads to them)
        loss?.dispose();
        batches.prepareNext(); // batch i+1 built and uploaded while the GPU runs step i
        rt().queue.flush();
        disposeTrainBatch(b);
        if (step % o.readEvery === 0 || step === steps) {
          const s = fused ? await fused.lossSum() : await lossSum.item();
          hooks.onProgress?.({ phase: 'train', epoch: epoch - 1, epochs: o.epochs, step, steps, samples: step * o.batchSize, losses: { loss: s / step } });
        }
        if (hooks.signal?.aborted) {
          aborted = true;
          break;
        }
      }
      if (aborted) break;
      const loss = (fused ? await fused.lossSum() : await lossSum.item()) / steps;
      const trainSeconds = (performance.now() - te) / 1000;
      model.eval();
      const tv = performance.now();
      const valid = splits.valid ? await evaluateAttRec(model, splits.valid) : null;
      const test = await evaluateAttRec(model, splits.test);
      hooks.onProgress?.({ phase: 'eval', epoch: epoch - 1, epochs: o.epochs, step: 1, steps: 1, samples: data.numUsers });
      const evalSeconds = (performance.now() - tv) / 1000;
      const rec: AttRecEpochRecord = {
        epoch, seconds: (performance.now() - te) / 1000, loss, trainSeconds, evalSeconds,
        elapsed: elapsed0 + (performance.now() - tRun) / 1000, ...(valid ? { valid: valid.metrics } : {}), test: test.metrics,
      };
      const value = (valid ?? test).metrics[o.select]!;
      state.history.push(rec);
      state.epoch = epoch;
      if (value > state.bestValue) {
        state.bestValue = value;
        state.bestEpoch = epoch;
        state.sinceBest = 0;
        if (run) await run.saveBest(model, { ...meta, best_epoch: String(epoch) });
      } else state.sinceBest++;
      if (o.patience > 0 && state.sinceBest >= o.patience) {
        state.stopped = true;
        hooks.onLog?.(`early stop after epoch ${epoch}: ${splits.valid ? 'validation' : 'test'} ${o.select} did not improve for ${o.patience} epochs (best ${state.bestValue.toFixed(4)} at epoch ${state.bestEpoch})`);
      }
      if (run) {
        await run.appendLog(rec);
        await run.saveLast(model, opt, state, meta);
      }
      hooks.onEpoch?.(rec);
    }
  } finally {
    lossSum.dispose();
    fused?.dispose();
  }
  await sync();
  const best = state.history.find((r) => r.epoch === state.bestEpoch);
  let testBest = best?.test;
  if (!testBest) {
    // No epoch ran (epochs 0, or aborted in the first one): report the model as it is.
    model.eval();
    testBest = (await evaluateAttRec(model, splits.test)).metrics;
  }
  const rows: Array<{ name: string; metrics: Record<string, number> }> = [
    { name: 'popularity (test)', metrics: popTest },
    {
      name: o.protocol === 'authors' ? `AttRec best on test (authors' protocol, epoch ${state.bestEpoch})` : `AttRec (test, epoch ${state.bestEpoch} picked on validation ${o.select})`,
      metrics: testBest,
    },
  ];
  return {
    data: { name: data.name, format: data.format, users: data.numUsers, items: data.numItems - 1, windows: windows.count, batchesPerEpoch: steps },
    config: cfg, protocol: o.protocol,
    train: Object.fromEntries(Object.keys(ATTREC_TRAIN_DEFAULTS).map((k) => [k, (o as unknown as Record<string, unknown>)[k]])) as TrainDefaults, bestEpoch: state.bestEpoch, test: testBest, ...(best?.valid ? { valid: best.valid } : {}),
    popularity: { test: popTest, ...(popValid ? { valid: popValid } : {}) }, history: state.history, rows,
    secondsPerEpoch: median(state.history.map((r) => r.trainSeconds)), secondsPerEval: median(state.history.map((r) => r.evalSeconds / (splits.valid ? 2 : 1))),
    peakGpuBytes: peakGpuBytes(), seconds: (performance.now() - t0) / 1000, model, optimizer: opt,
  };
}

/** A training batch of either path. */
type TrainBatch = { gpu: AttRecGpuBatch } | { fused: AttRecStepBatch };
function disposeTrainBatch(b: TrainBatch): void {
  if ('fused' in b) b.fused.dispose();
  else disposeAttRecBatch(b.gpu);
}

/** A model rebuilt from a checkpoint written by trainAttRec (config from its metadata). */
export async function loadAttRecCheckpoint(file: string): Promise<{ model: AttRec; metadata: Record<string, string> }> {
  const f = await readSafetensors(file);
  const raw = f.metadata[ATTREC_META];
  if (!raw) throw new DataError(file, undefined, `not an AttRec checkpoint (metadata '${ATTREC_META}' is missing)`);
  const cfg = JSON.parse(raw) as AttRecConfig;
  const model = new AttRec(cfg);
  try {
    const info = await loadCheckpoint(file, { model });
    return { model, metadata: info.metadata };
  } catch (e) {
    model.dispose();
    throw e;
  }
}

// ------------------------------------------------------------------------------------------------ demo
/**
 * The demo's AttRec part: the bundled 100-user ML-100k slice, validation protocol, a few epochs. Returns the
 * rows of the demo table (popularity and AttRec on test, validation-selected; keys HR@50, MRR, AUC).
 */
export async function attrecDemo(opts: { dataDir?: string; epochs?: number; seed?: number; hooks?: TrainHooks } = {}): Promise<{ rows: Array<{ name: string; metrics: Record<string, number> }>; seconds: number }> {
  const t0 = performance.now();
  const data = await loadAttRecData(opts.dataDir ?? packagePath('data/sample/ml-100k-sample') ?? 'data/sample/ml-100k-sample');
  await initGpu(); // the current device if there is one
  const r = await trainAttRec(data, {
    epochs: opts.epochs ?? 5, seed: opts.seed ?? 42, patience: 0, ...(opts.hooks ? { hooks: opts.hooks } : {}),
  });
  r.optimizer.dispose();
  r.model.dispose();
  return { rows: r.rows, seconds: (performance.now() - t0) / 1000 };
}
