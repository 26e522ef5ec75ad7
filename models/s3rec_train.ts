// models/s3rec_train.ts — S3-Rec fine-tuning and evaluation as library functions (trainers.FinetuneTrainer,
// run_finetune_sample.py / run_finetune_full.py; S3REC_SPEC §5-§6). The CLI (cli/s3rec.ts) only parses options,
// calls these and prints.
//
// Fine-tuning (official defaults): one example per user (input items[:-3], next-item targets items[1:-2], one
//   negative per position from 1..itemSize-1 minus the user's full sequence, re-drawn every epoch), batch 256,
//   Adam lr 1e-3, after every epoch a validation pass; early stopping on validation MRR (sampled protocol) or
//   NDCG@20 (full protocol), patience 10, strict improvement; the best model is kept and the test split is
//   evaluated once, on it.
// Evaluation: sampled = the answer + the 99 negatives of <name>_sample.txt, ranked by <h_last, e_i>; full = every
//   item ranked on the GPU (kernels/topk.ts, only ranks are read back). Full-ranking semantics: 'official'
//   (run_finetune_full.py: pad 0 and mask_id are candidates, history items keep score 0) or 'corrected' (pad,
//   mask and history excluded).
// Determinism: every random stream of epoch e (user order, negatives, dropout) derives from (seed, e), so a run
//   resumed from last.safetensors equals an uninterrupted one bit for bit on the same adapter.
import {
  accumulateInPlace, backward, noGrad, readSafetensors, rt, scope, sync, Tensor, zeros, type TensorData,
} from '../engine/index.js';
import { applyCheckpoint, loadCheckpoint } from './checkpoint.js';
import { topkScores } from '../kernels/index.js';
import {
  batchIndices, buildFinetuneTrainBatch, buildFullEvalBatch, buildSampledEvalBatch, epochOrder, FULL_METRICS, ItemSet,
  MetricAccumulator, numBatches, prefetch, Rng, sampledRanks, SAMPLED_METRICS, s3recEvalExample, type EvalStage,
  type S3RecDataset,
} from './data/index.js';
import { Adam } from './optim.js';
import { RunDir, epochSeed, seedEngineForEpoch, peakGpuBytes, watchFinite, type EpochRecord, type RunState, type TrainHooks } from './run.js';
import { encoderBatch, scoreCandidates, S3RecModel, type EncoderBatch, type EncoderPath, type S3RecConfig } from './s3rec.js';

export type Protocol = 'sampled' | 'full';
export type FullSemantics = 'official' | 'corrected';

/** Metric keys, in the official print order. */
export const SAMPLED_KEYS = ['HR@1', 'HR@5', 'NDCG@5', 'HR@10', 'NDCG@10', 'MRR'] as const;
export const FULL_KEYS = ['HR@5', 'NDCG@5', 'HR@10', 'NDCG@10', 'HR@20', 'NDCG@20'] as const;

export interface EvalOptions {
  protocol?: Protocol;
  /** Full ranking only (default 'official'). */
  fullSemantics?: FullSemantics;
  /**
   * Users per evaluation batch (default 512 sampled, 256 full). Metrics do not depend on it (every user's rows are
   * computed alone). Bigger sampled batches give the encoder's matmuls more rows: per user, 512 took ~18% less time
   * than 256 on llvmpipe and 1024 ~25% less, but 1024 raised fine-tuning's peak GPU memory by ~60% (activations of
   * the evaluation batch); 512 is the compromise.
   */
  batchSize?: number;
  path?: EncoderPath;
  hooks?: TrainHooks;
  /** Users to evaluate (default all). */
  users?: ArrayLike<number>;
}

/** Metrics of `model` on the valid or test split (dropout off). */
export async function evaluateS3Rec(model: S3RecModel, ds: S3RecDataset, stage: EvalStage, o: EvalOptions = {}): Promise<Record<string, number>> {
  const protocol = o.protocol ?? 'sampled';
  if (protocol === 'sampled' && !ds.sampleNegatives) {
    throw new Error(`evaluate: the sampled protocol needs ${ds.files.sample} (99 negatives per user); generate one with 'seqrec data gen-sample' or use --protocol full`);
  }
  const wasTraining = model.training;
  model.eval();
  const L = model.cfg.maxSeqLength;
  const bs = o.batchSize ?? (protocol === 'sampled' ? 512 : 256);
  const users = o.users ? Int32Array.from(o.users) : Int32Array.from({ length: ds.sequences.length }, (_, i) => i);
  const acc = new MetricAccumulator();
  const steps = numBatches(users.length, bs);
  // Queue every batch's GPU work first and read the (small) results afterwards, one batch behind, so the GPU
  // never waits for the host.
  const pending: Array<{ t: Tensor; B: number }> = [];
  const drain = async (upTo: number): Promise<void> => {
    while (pending.length > upTo) {
      const { t, B } = pending.shift()!;
      const v = await t.toArray();
      t.dispose();
      if (protocol === 'sampled') acc.addRanks(sampledRanks(v, B, ds.sampleCount + 1), SAMPLED_METRICS);
      else acc.addRanks(v, FULL_METRICS);
    }
  };
  let done = 0;
  o.hooks?.onProgress?.({ phase: stage, epoch: 0, epochs: 0, step: 0, steps, samples: 0 });
  try {
    for (const idx of batchIndices(users, bs)) {
      const B = idx.length;
      let out: Tensor;
      if (protocol === 'sampled') {
        const b = buildSampledEvalBatch(ds.sequences, ds.sampleNegatives!, idx, stage, { maxLen: L, count: ds.sampleCount });
        const eb = encoderBatch(b.inputIds, B, L, o.path ?? 'varlen');
        out = noGrad(() =>
          scope(() => {
            const h = model.userStates(eb); // [B, H]
            const cands = Tensor.from(b.candidates, [B, b.numCandidates], 'i32'); // [B, C]
            return scoreCandidates(model, h, cands); // [B, C]
          }),
        );
        eb.dispose();
      } else {
        const b = buildFullEvalBatch(ds.sequences, idx, stage, { maxLen: L });
        const eb = encoderBatch(b.inputIds, B, L, o.path ?? 'varlen');
        const official = (o.fullSemantics ?? 'official') === 'official';
        out = noGrad(() =>
          scope(() => {
            const h = model.userStates(eb); // [B, H]
            const top = topkScores({
              mode: 'dot', query: h, table: model.itemEmbeddings.weight, k: 20,
              exclude: { offsets: b.historyOffsets, items: b.historyItems },
              historyMode: official ? 'zero' : 'exclude',
              excludeIds: official ? [] : [0, model.maskId],
              answer: b.answers,
            });
            top.ids.dispose();
            top.scores.dispose();
            return top.rank!; // [B]
          }),
        );
        eb.dispose();
      }
      pending.push({ t: out, B });
      rt().queue.flush();
      await drain(1);
      done++;
      o.hooks?.onProgress?.({ phase: stage, epoch: 0, epochs: 0, step: done, steps, samples: Math.min(users.length, done * bs) });
    }
    await drain(0);
  } finally {
    for (const p of pending) p.t.dispose();
    model.train(wasTraining);
  }
  const m = acc.means();
  const keys = protocol === 'sampled' ? SAMPLED_KEYS : FULL_KEYS;
  return Object.fromEntries(keys.map((k) => [k, m[k] ?? 0]));
}

// ------------------------------------------------------------------------------------------------ fine-tuning
export interface FinetuneOptions {
  epochs?: number;
  batchSize?: number;
  lr?: number;
  beta1?: number;
  beta2?: number;
  weightDecay?: number;
  seed?: number;
  /** Early-stopping patience in epochs (official 10). */
  patience?: number;
  /** Validation/test protocol: 'sampled' (official main protocol; stops on MRR) or 'full' (stops on NDCG@20). */
  protocol?: Protocol;
  fullSemantics?: FullSemantics;
  path?: EncoderPath;
  /** Run folder: log.jsonl, last.safetensors (resume), best.safetensors. Without it nothing is written. */
  outDir?: string;
  /** Continue from outDir/last.safetensors. */
  resume?: boolean;
  /** Skip the final test evaluation (default false). */
  skipTest?: boolean;
  hooks?: TrainHooks;
  /** Where the starting weights came from (for the log): a checkpoint path, or null for SASRec mode. */
  pretrained?: string | null;
  /** Read the running loss back every this many steps for onProgress (default 20; 0 = only at epoch end). */
  progressEvery?: number;
  /** Check the loss and every parameter for NaN/Inf after each step, reporting every N steps (0: off). */
  checkFinite?: number;
}

export const FINETUNE_DEFAULTS = {
  epochs: 200, batchSize: 256, lr: 1e-3, beta1: 0.9, beta2: 0.999, weightDecay: 0, seed: 42, patience: 10,
  protocol: 'sampled' as Protocol, fullSemantics: 'official' as FullSemantics, path: 'varlen' as EncoderPath,
};

export interface FinetuneEpoch extends EpochRecord {
  loss: number;
  valid: Record<string, number>;
  trainSeconds: number;
  validSeconds: number;
}

export interface FinetuneResult {
  /** Epochs run (including any before a resume). */
  epochs: number;
  bestEpoch: number;
  bestValid: Record<string, number>;
  /** Test metrics of the best model (null with skipTest). */
  test: Record<string, number> | null;
  history: FinetuneEpoch[];
  stoppedEarly: boolean;
  peakGpuBytes: number;
  /** Median seconds of a training pass and of a validation pass. */
  trainSecondsPerEpoch: number;
  validSecondsPerEpoch: number;
}

interface FinetuneState extends RunState<FinetuneEpoch> {
  best: number;
  bestEpoch: number;
  bad: number;
  stopped: boolean;
}

const median = (xs: number[]): number => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** The early-stopping score of a validation result. */
export function stoppingScore(m: Record<string, number>, protocol: Protocol): number {
  return protocol === 'sampled' ? m.MRR! : m['NDCG@20']!;
}

/**
 * Fine-tune `model` (already holding pretrained weights, or freshly initialised = SASRec mode) on `ds`. On return
 * the model holds the best-validation weights.
 */
export async function finetuneS3Rec(model: S3RecModel, ds: S3RecDataset, opts: FinetuneOptions = {}): Promise<FinetuneResult> {
  const o = { ...FINETUNE_DEFAULTS, ...opts };
  const hooks = o.hooks ?? {};
  const L = model.cfg.maxSeqLength;
  if (model.cfg.itemSize !== ds.itemSize) throw new Error(`finetune: the model has itemSize ${model.cfg.itemSize}, the dataset ${ds.itemSize} (max item ${ds.maxItem} + 2)`);
  const opt = new Adam(model, { lr: o.lr, betas: [o.beta1, o.beta2], weightDecay: o.weightDecay });
  const run = o.outDir ? new RunDir(o.outDir) : null;
  let state: FinetuneState = { epoch: 0, history: [], best: -Infinity, bestEpoch: -1, bad: 0, stopped: false };
  // The best weights live on the host between improvements (small: ~1M floats) when there is no run folder.
  let bestWeights: Map<string, TensorData> | null = null;
  try {
    if (run) {
      await run.create();
      if (o.resume) {
        ({ state } = await run.loadLast<FinetuneState>(model, opt));
        hooks.onLog?.(`resumed from ${run.last} after epoch ${state.epoch - 1} (best valid ${state.best.toFixed(4)} at epoch ${state.bestEpoch})`);
      } else await run.writeLog([]);
    }
    if (o.pretrained === null) hooks.onLog?.('no pretrained checkpoint: the model is SASRec');
    const users = ds.sequences.length;
    const steps = numBatches(users, o.batchSize);
    const scratch = new ItemSet(ds.itemSize);
    const watch = o.checkFinite ? watchFinite(o.checkFinite, model.stateDict()) : null;
    const lossSum = zeros([]);
    try {
      while (state.epoch < o.epochs && !state.stopped) {
        if (hooks.signal?.aborted) break;
        const epoch = state.epoch;
        const t0 = performance.now();
        seedEngineForEpoch(o.seed, epoch);
        const rng = new Rng(epochSeed(o.seed, epoch, 1));
        model.train();
        lossSum.write(new Float32Array([0]));
        let step = 0;
        hooks.onProgress?.({ phase: 'train', epoch, epochs: o.epochs, step: 0, steps, samples: 0 });
        const batches = prefetch(
          batchIndices(epochOrder(users, o.seed, epoch), o.batchSize),
          (idx) => {
            const b = buildFinetuneTrainBatch(ds.sequences, idx, { maxLen: L, itemSize: ds.itemSize, rng, scratch });
            return { b, eb: encoderBatch(b.inputIds, idx.length, L, o.path) };
          },
          ({ eb }) => eb.dispose(),
        );
        for (const { b, eb } of batches) {
          const loss = trainStep(model, opt, eb, b.targetPos, b.targetNeg, lossSum, !!watch);
          batches.prepareNext();
          rt().queue.flush();
          step++;
          if (watch) await watch.afterStep(epoch * steps + step, loss!);
          loss?.dispose();
          eb.dispose();
          if (hooks.onProgress && (step === steps || ((o.progressEvery ?? 20) > 0 && step % (o.progressEvery ?? 20) === 0))) {
            const loss = (await lossSum.item()) / step;
            hooks.onProgress({ phase: 'train', epoch, epochs: o.epochs, step, steps, samples: Math.min(users, step * o.batchSize), losses: { loss } });
          }
          if (hooks.signal?.aborted) break;
        }
        if (hooks.signal?.aborted) break;
        await watch?.flush();
        const loss = (await lossSum.item()) / Math.max(1, step);
        await sync();
        const t1 = performance.now();
        const valid = await evaluateS3Rec(model, ds, 'valid', { protocol: o.protocol, fullSemantics: o.fullSemantics, path: o.path, hooks: { onProgress: (e) => hooks.onProgress?.({ ...e, epoch, epochs: o.epochs }) } });
        const t2 = performance.now();
        const score = stoppingScore(valid, o.protocol);
        const improved = score > state.best;
        if (improved) {
          state.best = score;
          state.bestEpoch = epoch;
          state.bad = 0;
          if (run) await run.saveBest(model, { best_epoch: String(epoch), dataset: ds.name, [`valid_${o.protocol === 'sampled' ? 'MRR' : 'NDCG@20'}`]: String(score) });
          else bestWeights = await snapshot(model);
        } else if (++state.bad >= o.patience) state.stopped = true;
        const rec: FinetuneEpoch = {
          epoch, loss, valid, trainSeconds: (t1 - t0) / 1000, validSeconds: (t2 - t1) / 1000, seconds: (t2 - t0) / 1000,
          best: improved, peakGpuBytes: peakGpuBytes(),
        };
        state.history.push(rec);
        state.epoch = epoch + 1;
        if (run) {
          await run.saveLast(model, opt, state, { dataset: ds.name, stage: 'finetune' });
          await run.appendLog(rec);
        }
        hooks.onEpoch?.(rec);
      }
    } finally {
      lossSum.dispose();
    }
    // Restore the best weights, then test once.
    if (state.bestEpoch >= 0) {
      if (run) {
        await loadCheckpoint(run.best, { model });
      } else if (bestWeights) model.loadStateDict(bestWeights);
    }
    const test = o.skipTest || state.bestEpoch < 0 ? null : await evaluateS3Rec(model, ds, 'test', { protocol: o.protocol, fullSemantics: o.fullSemantics, path: o.path });
    const best = state.history.find((r) => r.epoch === state.bestEpoch);
    return {
      epochs: state.epoch,
      bestEpoch: state.bestEpoch,
      bestValid: best?.valid ?? {},
      test,
      history: state.history,
      stoppedEarly: state.stopped,
      peakGpuBytes: peakGpuBytes(),
      trainSecondsPerEpoch: median(state.history.map((r) => r.trainSeconds)),
      validSecondsPerEpoch: median(state.history.map((r) => r.validSeconds)),
    };
  } finally {
    opt.dispose();
  }
}

/**
 * One fine-tuning step (queued, nothing read back): forward, backward, Adam, loss added to `lossSum` on the GPU.
 * Returns the loss tensor when `keepLoss` (the caller disposes it), else null.
 */
export function trainStep(model: S3RecModel, opt: Adam, eb: EncoderBatch, targetPos: Int32Array, targetNeg: Int32Array, lossSum?: Tensor, keepLoss = false): Tensor | null {
  const loss = scope(() => model.finetuneLoss(eb, targetPos, targetNeg)); // []
  backward(loss);
  opt.step();
  opt.zeroGrad();
  if (lossSum) accumulateInPlace(lossSum, loss);
  if (keepLoss) return loss;
  loss.dispose();
  return null;
}

async function snapshot(model: S3RecModel): Promise<Map<string, TensorData>> {
  const out = new Map<string, TensorData>();
  for (const [k, t] of model.stateDict()) out.set(k, { dtype: t.dtype, shape: [...t.shape], data: await t.toArray() });
  return out;
}

/** Popularity baseline on the same split and protocols: items ranked by their count in items[:-2] of all users. */
export function popularityS3Rec(ds: S3RecDataset, stage: EvalStage, protocol: Protocol, fullSemantics: FullSemantics = 'official'): Record<string, number> {
  const counts = new Float64Array(ds.itemSize);
  for (const seq of ds.sequences) for (let i = 0; i < seq.length - 2; i++) counts[seq[i]!]!++;
  const acc = new MetricAccumulator();
  const C = ds.sampleCount + 1;
  const sc = new Float64Array(C);
  ds.sequences.forEach((seq, u) => {
    const { answer, history } = s3recEvalExample(seq, stage);
    if (protocol === 'sampled') {
      if (!ds.sampleNegatives) throw new Error(`popularity: the sampled protocol needs ${ds.files.sample}`);
      sc[0] = counts[answer]!;
      for (let j = 0; j < ds.sampleCount; j++) sc[j + 1] = counts[ds.sampleNegatives[u * ds.sampleCount + j]!]!;
      acc.addRanks(sampledRanks(sc, 1, C), SAMPLED_METRICS);
      return;
    }
    // Same order as the GPU top-K: higher score first, ties by smaller id.
    const hist = new Set(history);
    const official = fullSemantics === 'official';
    const s = (i: number): number => (hist.has(i) ? (official ? 0 : -Infinity) : counts[i]!);
    const sa = s(answer);
    let rank = 0;
    for (let i = 0; i < ds.itemSize; i++) {
      if (i === answer) continue;
      if (!official && (i === 0 || i === ds.maskId || hist.has(i))) continue;
      const si = s(i);
      if (si > sa || (si === sa && i < answer)) rank++;
    }
    acc.addRanks([rank], FULL_METRICS);
  });
  const m = acc.means();
  const keys = protocol === 'sampled' ? SAMPLED_KEYS : FULL_KEYS;
  return Object.fromEntries(keys.map((k) => [k, m[k] ?? 0]));
}

// ------------------------------------------------------------------------------------------------ checkpoints
/**
 * The model configuration a checkpoint with the official tensor names implies: itemSize and hiddenSize from
 * item_embeddings, attributeSize from attribute_embeddings, maxSeqLength from position_embeddings, the layer count
 * from item_encoder.layer.{i}. (Heads cannot be read from the shapes: they come from `overrides`, default 2.)
 */
export function configFromTensors(shapes: ReadonlyMap<string, readonly number[]>, file: string): Pick<S3RecConfig, 'itemSize' | 'attributeSize' | 'hiddenSize' | 'maxSeqLength' | 'numHiddenLayers'> {
  const need = (name: string): readonly number[] => {
    const s = shapes.get(name);
    if (!s || s.length !== 2) throw new Error(`${file}: not an S3-Rec checkpoint (no 2-D '${name}')`);
    return s;
  };
  const [itemSize, hiddenSize] = need('item_embeddings.weight') as [number, number];
  const [attributeSize] = need('attribute_embeddings.weight') as [number];
  const [maxSeqLength] = need('position_embeddings.weight') as [number];
  let layers = 0;
  for (const k of shapes.keys()) {
    const m = /^item_encoder\.layer\.(\d+)\./.exec(k);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  return { itemSize, attributeSize, hiddenSize, maxSeqLength, numHiddenLayers: layers };
}

/**
 * A model holding a checkpoint's weights (official names; strict: every model tensor present, nothing extra
 * besides optimizer state). The configuration comes from the tensor shapes, then `overrides` (heads, dropout,
 * activation); a dataset, when given, must match its itemSize (and attributeSize).
 */
export async function loadS3RecModel(file: string, overrides: Partial<S3RecConfig> = {}, ds?: S3RecDataset): Promise<S3RecModel> {
  const f = await readSafetensors(file);
  const shapes = new Map([...f.tensors].filter(([k]) => !k.startsWith('optimizer.')).map(([k, t]) => [k, t.shape] as const));
  const c = configFromTensors(shapes, file);
  if (ds && c.itemSize !== ds.itemSize) {
    throw new Error(`${file}: item_embeddings has ${c.itemSize} rows but dataset ${ds.name} needs ${ds.itemSize} (max item ${ds.maxItem} + 2): the checkpoint was trained on other data`);
  }
  if (ds && c.attributeSize !== ds.attributes.attributeSize) {
    throw new Error(`${file}: attribute_embeddings has ${c.attributeSize} rows but dataset ${ds.name} has attribute_size ${ds.attributes.attributeSize}`);
  }
  const model = new S3RecModel({ ...overrides, ...c });
  try {
    applyCheckpoint(f, { model }, file);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
