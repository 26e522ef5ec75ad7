// models/s3rec_pretrain.ts — S3-Rec self-supervised pretraining as a library function (run_pretrain.py +
// trainers.PretrainTrainer + datasets.PretrainDataset; S3REC_SPEC §2, §4, §10). The CLI (cli/s3rec_pretrain.ts)
// only parses options, calls pretrainS3Rec and prints.
//
// Official run (defaults): one sample per prefix of each user's items[-(L+2):-2] (pretrainPrefixes), shuffled
//   every epoch (epochOrder); each sample re-drawn every epoch (makePretrainSample: mask_p 0.2 with the last item
//   always masked, one negative per masked item from 1..itemSize-1 minus the prefix, an SP segment of length
//   randint(1, n//2) and a negative segment from long_sequence); batch 100 (last partial batch kept), Adam
//   lr 1e-3 betas (0.9, 0.999), 300 epochs; loss = 0.2 AAP + 1 MIP + 1 MAP + 0.5 SP (sums over the batch,
//   models/s3rec.ts pretrainLosses); a checkpoint with the official tensor names every 10 epochs:
//   `<out>/<dataset>-epochs-<k>.safetensors` (k = epochs done, as run_pretrain.py's `epoch + 1`), plus one after
//   the last epoch (so `--epochs 37` leaves its final weights), all written atomically. An abort (hooks.signal)
//   stops after the current step, puts the model back to the last finished epoch (from last.safetensors) and
//   writes that epoch's checkpoint if it has none.
// Log (log.jsonl, one line per epoch; onEpoch): aap, mip, map, sp = each loss summed over the epoch divided by
//   (num_batches * batch_size), exactly as the official trainer logs `*_loss_avg`; total = the weighted sum of
//   those four; seconds; cpuSeconds (this process, llvmpipe's threads included); steps; samples; peakGpuBytes;
//   checkpoint (when one was written).
// Determinism: every random stream of epoch e derives from (seed, e): the order (epochOrder), the samples (stream
//   1), the InfoNCE negatives (stream 2, separate so the official stream is the same under both objectives) and
//   dropout (seedEngineForEpoch). last.safetensors (model + Adam + RNG + run state) is written after every epoch;
//   `resume` continues from it bit for bit (same adapter).
// Speed: the four encoder passes run as ONE padding-free packed batch whose last layer computes its
//   out-projection, FFN and LayerNorms only for the rows a loss reads (encodePretrain: every token of the masked
//   pass, one read-out row per segment sequence: 3/4 of the tokens skip them; the losses and gradients equal
//   models/s3rec.ts pretrainLosses, test/s3rec_pretrain.test.ts), AAP/MAP targets are CSR, nothing is read back
//   inside a step (the four loss sums accumulate on the GPU; read at progress intervals and at epoch end), and
//   the next batch is built on the host (prefetch) right after the current step's work is submitted. The host
//   builder (PretrainBatcher) writes the six padded sequences straight into reused buffers with the random
//   draws of makePretrainSample in the same order (~1 ms per LastFM batch of 100). On Mesa llvmpipe (Dawn's GL
//   backend) a submit executes the GPU work before it returns, so host and GPU work do not overlap there;
//   on a real GPU they do.
//
// Paper variants (S3REC_SPEC §10; named options):
//   objective 'infonce' (paper Eq. 10-12, InfoNCE with sampled negatives; kernels/infonce.ts, reduction 'sum'
//     over rows so the logged averages keep the official scale). Rows and candidates:
//     MIP: every masked position; candidates = [the original item, the official negative (neg_items), K-1 more
//       negatives drawn the official way (1..itemSize-1 minus the prefix's items)]; K = `negatives` (default 99).
//     AAP (unmasked real positions, aap_norm) / MAP (masked positions, map_norm): the paper's expectation over
//       the item's attributes a in A_i is estimated with ONE positive attribute drawn uniformly from A_i (distinct
//       ids) per position and epoch; candidates = [a, K attributes drawn uniformly from 1..A-1 minus A_i]
//       (with replacement). Positions whose item has no attribute, or whose attributes cover all of 1..A-1, are
//       skipped. As in the official code the query is the contextual encoder output at the position (the paper's
//       Eq. 10 uses the item embedding e_i).
//     SP: query sp_norm(ctx_b) for each sample b; candidates = every positive segment of the batch and every
//       negative segment (in-batch negatives, kernels/infonce.ts infonceDense): 2B - 1 negatives, among them the
//       official negative segment of sample b.
//     Scores are the raw bilinear forms <W x, y> (+ bias when headBias) divided by `temperature` (default 1);
//     the paper's sigma() around f is not applied inside the softmax (it would bound every logit to (0, 1) and
//     make the softmax nearly uniform).
//   headBias false: the bilinear heads without bias (paper): the four *_norm.bias tensors are zeroed and get no
//     gradient (requireGrad off during pretraining), so Adam never updates them (no state) and they stay exactly
//     0; they are still saved (zeros) so checkpoints keep the official names.
//   preset 'paper': batch 200, 100 epochs, objective 'infonce', headBias false (explicit options win). The paper's
//     ReLU FFN is a model option (S3RecConfig.hiddenAct 'relu'; the CLI's --preset paper sets it too).
import { joinPath as join } from './data/paths.js';
import { accumulateInPlace, backward, rt, scope, sync, Tensor, zeros } from '../engine/index.js';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import {
  add, concat, infonce, infonceDense, mul, multiLabelBce, pairwiseSigmoidLoss, pairwiseSigmoidLossIds, slice,
} from '../kernels/index.js';
import {
  batchIndices, epochOrder, ItemSet, longSequence, negSample, numBatches, prefetch, pretrainPrefixes, Rng,
  type PretrainPrefixes, type S3RecDataset,
} from './data/index.js';
import { Adam } from './optim.js';
import { RunDir, epochSeed, seedEngineForEpoch, peakGpuBytes, watchFinite, type EpochRecord, type RunState, type TrainHooks } from './run.js';
import { PRETRAIN_WEIGHTS, pretrainBatch, S3RecModel, type EncoderBatch, type EncoderPath, type PretrainSequences, type PretrainWeights } from './s3rec.js';

export type PretrainObjective = 'official' | 'infonce';
export type PretrainPreset = 'official' | 'paper';

export interface PretrainOptions {
  /** Official 300 (paper 100). */
  epochs?: number;
  /** Official 100 (paper 200). */
  batchSize?: number;
  lr?: number;
  beta1?: number;
  beta2?: number;
  weightDecay?: number;
  /** Probability of masking each of the first n-1 items of a prefix (the last is always masked). */
  maskP?: number;
  /** Loss weights (official and paper: AAP 0.2, MIP 1, MAP 1, SP 0.5). */
  weights?: Partial<PretrainWeights>;
  seed?: number;
  /** 'official' (BCE over all attributes, double-sigmoid pairwise) or 'infonce' (paper Eq. 10-12; header). */
  objective?: PretrainObjective;
  /** InfoNCE: sampled negatives per row for MIP, AAP and MAP (default 99). */
  negatives?: number;
  /** InfoNCE: logits are divided by this (default 1). */
  temperature?: number;
  /** false: bilinear heads without bias (paper): *_norm.bias kept at 0, not optimized. */
  headBias?: boolean;
  /** 'paper': batch 200, 100 epochs, infonce, no head bias (explicit options win). */
  preset?: PretrainPreset;
  path?: EncoderPath;
  /** Run folder: log.jsonl, last.safetensors (resume), <dataset>-epochs-<k>.safetensors. Without it nothing is written. */
  outDir?: string;
  /** A checkpoint every this many epochs (official 10; 0 = only after the last epoch). */
  saveEvery?: number;
  /** Continue from outDir/last.safetensors. */
  resume?: boolean;
  hooks?: TrainHooks;
  /** Read the running losses back every this many steps for onProgress (default 20; 0 = only at epoch end). */
  progressEvery?: number;
  /** Run at most this many steps per epoch (timing, smoke tests); the averages then use the steps run. */
  stepsPerEpoch?: number;
  /** Check every parameter for NaN/Inf after each step, reporting every N steps (0: off). */
  checkFinite?: number;
}

export const PRETRAIN_DEFAULTS = {
  epochs: 300, batchSize: 100, lr: 1e-3, beta1: 0.9, beta2: 0.999, weightDecay: 0, maskP: 0.2, seed: 42,
  objective: 'official' as PretrainObjective, negatives: 99, temperature: 1, headBias: true, path: 'varlen' as EncoderPath,
  saveEvery: 10, progressEvery: 20,
};

/** The paper's pretraining setting (S3REC_SPEC §4.3, §10): batch 200, 100 epochs, InfoNCE, heads without bias. */
export const PAPER_PRESET = { batchSize: 200, epochs: 100, objective: 'infonce' as PretrainObjective, headBias: false };

export interface PretrainEpoch extends EpochRecord {
  aap: number;
  mip: number;
  map: number;
  sp: number;
  total: number;
  steps: number;
  samples: number;
  /** CPU seconds of this process over the epoch (host + llvmpipe's threads; on a shared machine a steadier
   *  measure of the work than the wall time). */
  cpuSeconds: number;
  peakGpuBytes: number;
  /** The checkpoint written after this epoch, if any. */
  checkpoint?: string;
}

export interface PretrainResult {
  /** Epochs finished (including any before a resume). */
  epochs: number;
  history: PretrainEpoch[];
  /** The last epoch's averaged losses (null when no epoch ran). */
  final: PretrainEpoch | null;
  /** Every checkpoint written by this run and the ones before a resume, in order. */
  checkpoints: string[];
  /** Median seconds of an epoch. */
  secondsPerEpoch: number;
  /** Wall seconds of this call. */
  seconds: number;
  peakGpuBytes: number;
  aborted: boolean;
}

interface PretrainState extends RunState<PretrainEpoch> {
  checkpoints: string[];
}

const LOSS_KEYS = ['aap', 'mip', 'map', 'sp'] as const;

const median = (xs: number[]): number => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** The checkpoint name the official code uses (`<name>-epochs-<k>.pt`), as safetensors. */
export function pretrainCheckpointName(dataset: string, epochsDone: number): string {
  return `${dataset}-epochs-${epochsDone}.safetensors`;
}

export type ResolvedPretrainOptions = typeof PRETRAIN_DEFAULTS & Pick<PretrainOptions, 'outDir' | 'hooks' | 'stepsPerEpoch' | 'resume'> & {
  weights: PretrainWeights;
  preset: PretrainPreset;
};

/** Options with the preset and the defaults applied (explicit options win over the preset). */
export function resolvePretrainOptions(opts: PretrainOptions = {}): ResolvedPretrainOptions {
  const preset = opts.preset ?? 'official';
  const defined = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as PretrainOptions;
  const o = { ...PRETRAIN_DEFAULTS, ...(preset === 'paper' ? PAPER_PRESET : {}), ...defined };
  const weights = { ...PRETRAIN_WEIGHTS, ...(opts.weights ?? {}) };
  const int = (k: string, v: number, min: number): void => {
    if (!Number.isInteger(v) || v < min) throw new Error(`pretrain: ${k} must be an integer >= ${min}, got ${v}`);
  };
  int('epochs', o.epochs, 0);
  int('batchSize', o.batchSize, 1);
  int('negatives', o.negatives, 1);
  int('saveEvery', o.saveEvery, 0);
  int('progressEvery', o.progressEvery, 0);
  if (o.stepsPerEpoch !== undefined) int('stepsPerEpoch', o.stepsPerEpoch, 1);
  if (!(o.maskP >= 0 && o.maskP <= 1)) throw new Error(`pretrain: maskP must be in [0, 1], got ${o.maskP}`);
  if (!(o.lr >= 0) || !(o.weightDecay >= 0)) throw new Error('pretrain: lr and weightDecay must be >= 0');
  if (!(o.temperature > 0) || !Number.isFinite(o.temperature)) throw new Error(`pretrain: temperature must be > 0, got ${o.temperature}`);
  if (o.objective !== 'official' && o.objective !== 'infonce') throw new Error(`pretrain: objective must be 'official' or 'infonce', got '${String(o.objective)}'`);
  for (const k of LOSS_KEYS) if (!Number.isFinite(weights[k])) throw new Error(`pretrain: weight ${k} must be a number`);
  return { ...o, weights, preset };
}

// ------------------------------------------------------------------------------------------------ host batches
/** One pretraining batch on the host: the six left-padded sequences [B*L] (views into the builder's buffers). */
export interface PretrainHostBatch extends PretrainSequences {
  /** Real length of each sample (= prefix length). */
  lengths: Int32Array;
  /** InfoNCE extras (objective 'infonce'), per padded slot; see InfonceExtras. */
  infonce: InfonceExtras | null;
}

/** Host InfoNCE candidates, per padded slot [B*L] (mapped to encoder rows at the step). */
export interface InfonceExtras {
  K: number;
  /** Masked slots: K item negatives each, at itemNeg[s*K .. s*K+K) (column 0 = the official negative). */
  itemNeg: Int32Array;
  /** Real slots: the sampled positive attribute (0 = none: the slot is skipped). */
  attrPos: Int32Array;
  /** Real slots with attrPos > 0: K attribute negatives at attrNeg[s*K ..). */
  attrNeg: Int32Array;
}

/**
 * Builds pretraining batches exactly as buildPretrainBatch(makePretrainSample) does (same random draws in the same
 * order, S3REC_SPEC §4.1), but writes straight into reused padded buffers: no per-sample allocation. `ring`
 * buffer sets rotate, so a batch stays valid while the next `ring - 1` are built (the prefetcher holds 2).
 */
export class PretrainBatcher {
  /** Ring of buffer sets: six padded sequences [cap] each, lengths, InfoNCE extras. */
  private readonly sets: Array<{ seqs: Int32Array[]; lengths: Int32Array; infonce: InfonceExtras | null }>;
  private next = 0;
  private readonly scratch: ItemSet;
  private readonly attrScratch: ItemSet | null;
  /** Distinct attribute ids of each item, in [1, A) (InfoNCE positives). */
  private readonly attrDistinct: Int32Array[] | null;

  constructor(
    private readonly sequences: readonly Int32Array[],
    private readonly prefixes: PretrainPrefixes,
    private readonly o: {
      itemSize: number; maskId: number; longSequence: Int32Array; maskP: number; maxLen: number; batchSize: number;
      /** InfoNCE: negatives per row, item attributes, attribute_size. */
      infonce?: { K: number; attributes: readonly Int32Array[]; attributeSize: number };
      /** Buffer sets in rotation (default 3). */
      ring?: number;
    },
  ) {
    const cap = o.batchSize * o.maxLen;
    const K = o.infonce?.K ?? 0;
    this.sets = Array.from({ length: Math.max(2, o.ring ?? 3) }, () => ({
      seqs: Array.from({ length: 6 }, () => new Int32Array(cap)),
      lengths: new Int32Array(o.batchSize),
      infonce: o.infonce ? { K, itemNeg: new Int32Array(cap * K), attrPos: new Int32Array(cap), attrNeg: new Int32Array(cap * K) } : null,
    }));
    this.scratch = new ItemSet(o.itemSize);
    if (o.infonce) {
      const A = o.infonce.attributeSize;
      this.attrScratch = new ItemSet(A);
      this.attrDistinct = o.infonce.attributes.map((l) => {
        const s = new Set<number>();
        for (const a of l ?? []) if (a >= 1 && a < A) s.add(a);
        return Int32Array.from([...s].sort((x, y) => x - y));
      });
    } else {
      this.attrScratch = null;
      this.attrDistinct = null;
    }
  }

  /**
   * The batch of samples `idx` (prefix indices). rng: the official sample stream (draws in makePretrainSample's
   * order); rngNce: the InfoNCE candidates (objective 'infonce' only).
   */
  build(idx: ArrayLike<number>, rng: Rng, rngNce?: Rng): PretrainHostBatch {
    const set = this.sets[this.next]!;
    this.next = (this.next + 1) % this.sets.length;
    const B = idx.length;
    const L = this.o.maxLen;
    if (B > set.lengths.length) throw new Error(`PretrainBatcher: a batch of ${B} samples > capacity ${set.lengths.length}`);
    const n4 = B * L;
    const [masked, pos, neg, mSeg, pSeg, nSeg] = set.seqs.map((a) => a.subarray(0, n4).fill(0)) as [Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array];
    const lengths = set.lengths.subarray(0, B);
    const { itemSize, maskId, maskP } = this.o;
    const long = this.o.longSequence;
    const items = this.scratch;
    const pre = this.prefixes;
    for (let r = 0; r < B; r++) {
      const k = idx[r]!;
      const seq = this.sequences[pre.user[k]!]!;
      const s0 = pre.start[k]!;
      const n = pre.length[k]!;
      if (n > L || n < 1) throw new Error(`PretrainBatcher: sample ${k} has ${n} items (1..${L} expected: pretrainPrefixes(sequences, ${L}))`);
      const o0 = r * L + (L - n); // left padding
      lengths[r] = n;
      items.reset(seq.subarray(s0, s0 + n)); // item_set = set(prefix)
      for (let i = 0; i < n - 1; i++) {
        const item = seq[s0 + i]!;
        pos[o0 + i] = item;
        mSeg[o0 + i] = item;
        if (rng.nextFloat() < maskP) {
          masked[o0 + i] = maskId;
          neg[o0 + i] = negSample(rng, items, itemSize);
        } else {
          masked[o0 + i] = item;
          neg[o0 + i] = item;
        }
      }
      const lastItem = seq[s0 + n - 1]!;
      pos[o0 + n - 1] = lastItem;
      mSeg[o0 + n - 1] = lastItem;
      masked[o0 + n - 1] = maskId; // the last item is always masked
      neg[o0 + n - 1] = negSample(rng, items, itemSize);
      if (n < 2) {
        pSeg[o0] = lastItem;
        nSeg[o0] = lastItem;
      } else {
        const len = rng.randint(1, n >> 1);
        const start = rng.randint(0, n - len);
        const negStart = rng.randint(0, long.length - len);
        pSeg.fill(maskId, o0, o0 + n);
        nSeg.fill(maskId, o0, o0 + n);
        for (let j = 0; j < len; j++) {
          mSeg[o0 + start + j] = maskId;
          pSeg[o0 + start + j] = seq[s0 + start + j]!;
          nSeg[o0 + start + j] = long[negStart + j]!;
        }
      }
      if (set.infonce && rngNce) this.infonceRow(set.infonce, o0, n, rngNce, pos, masked, neg);
    }
    return { B, L, lengths, masked, pos, neg, maskedSegment: mSeg, posSegment: pSeg, negSegment: nSeg, infonce: set.infonce };
  }

  /** InfoNCE candidates for the real slots [o0, o0 + n) of one sample (the item set is the prefix's, in `scratch`). */
  private infonceRow(x: InfonceExtras, o0: number, n: number, rng: Rng, pos: Int32Array, masked: Int32Array, neg: Int32Array): void {
    const K = x.K;
    const { itemSize, maskId } = this.o;
    const A = this.o.infonce!.attributeSize;
    const aset = this.attrScratch!;
    for (let s = o0; s < o0 + n; s++) {
      if (masked[s] === maskId) {
        x.itemNeg[s * K] = neg[s]!;
        for (let j = 1; j < K; j++) x.itemNeg[s * K + j] = negSample(rng, this.scratch, itemSize);
      }
      const attrs = this.attrDistinct![pos[s]!];
      if (!attrs || attrs.length === 0 || attrs.length >= A - 1) {
        x.attrPos[s] = 0;
        continue;
      }
      x.attrPos[s] = attrs[rng.randint(0, attrs.length - 1)]!;
      aset.reset(attrs);
      for (let j = 0; j < K; j++) {
        let a: number;
        do a = rng.randint(1, A - 1);
        while (aset.has(a));
        x.attrNeg[s * K + j] = a;
      }
    }
    // Slots of this row that are not real keep stale values: they are never read (only real slots map to rows).
  }
}

// ------------------------------------------------------------------------------------------------ losses
export interface StepLosses {
  aap: Tensor;
  mip: Tensor;
  map: Tensor;
  sp: Tensor;
  total: Tensor;
  /** The packed encoder batch (the backward pass reads it): dispose() it after backward. */
  batch: { dispose(): void };
  /** Disposes the five loss scalars (not the batch). */
  dispose(): void;
}

/** The four passes in one packed batch with the pruned last layer: S3RecModel.encodePretrain. */
export function encodePretrain(model: S3RecModel, eb: EncoderBatch, B: number): { h: Tensor; N: number } {
  return model.encodePretrain(eb, B);
}

/** Slot (index into the padded [B*L] arrays) of each encoder row of the masked pass. */
function slotsOfRows(eb: EncoderBatch, B: number): Int32Array {
  const N = eb.packed ? eb.packed.plan.offsets[B]! : B * eb.L;
  if (!eb.packed) return Int32Array.from({ length: N }, (_, i) => i);
  return eb.packed.plan.padIndex.slice(0, N);
}

function weighted(l: { aap: Tensor; mip: Tensor; map: Tensor; sp: Tensor }, w: PretrainWeights): Tensor {
  return add(add(mul(l.aap, w.aap), mul(l.mip, w.mip)), add(mul(l.map, w.map), mul(l.sp, w.sp))); // []
}

function withBatch(eb: EncoderBatch, fn: () => { aap: Tensor; mip: Tensor; map: Tensor; sp: Tensor; total: Tensor }): StepLosses {
  let ok = false;
  try {
    const res = scope(fn);
    ok = true;
    return {
      ...res,
      batch: eb,
      dispose() {
        for (const k of [...LOSS_KEYS, 'total'] as const) res[k].dispose();
      },
    };
  } finally {
    if (!ok) eb.dispose();
  }
}

/**
 * The official pretraining losses (S3REC_SPEC §4.2; the same as models/s3rec.ts pretrainLosses, official sums)
 * over encodePretrain's pruned last layer: AAP/MAP = multi-label BCE over all attributes (CSR targets), MIP/SP =
 * the double-sigmoid pairwise loss.
 */
export function officialPretrainLosses(model: S3RecModel, b: PretrainHostBatch, attributes: readonly (Int32Array | undefined)[], o: { path: EncoderPath; weights: PretrainWeights }): StepLosses {
  const r = model.pretrainLosses({ ...b, attributes }, o);
  return {
    ...r,
    dispose() {
      for (const k of [...LOSS_KEYS, 'total'] as const) r[k].dispose();
    },
  };
}

/**
 * Paper InfoNCE pretraining losses (objective 'infonce'; header): the same pruned packed encoder pass, then
 * AAP/MAP/MIP over sampled candidates (infonce) and SP over the batch's segments (infonceDense). Sums over rows.
 */
export function infoncePretrainLosses(model: S3RecModel, b: PretrainHostBatch, o: { path: EncoderPath; weights: PretrainWeights; temperature: number }): StepLosses {
  const { B } = b;
  const x = b.infonce;
  if (!x) throw new Error('infoncePretrainLosses: the batch has no InfoNCE candidates (build it with the infonce option)');
  const K = x.K;
  const C = K + 1;
  const maskId = model.maskId;
  const eb = pretrainBatch(b, o.path);
  return withBatch(eb, () => {
    const { h, N } = encodePretrain(model, eb, B); // [N + 3B, H]
    const slot = slotsOfRows(eb, B);
    const seq = slice(h, 0, 0, N); // [N, H]
    const itemCand = new Int32Array(N * C);
    const attrCand = new Int32Array(N * C);
    const mipW = new Float32Array(N);
    const aapW = new Float32Array(N);
    const mapW = new Float32Array(N);
    for (let n = 0; n < N; n++) {
      const s = slot[n]!;
      const m = b.masked[s]!;
      if (m === 0) continue; // padded path: pad slots
      const isMasked = m === maskId;
      if (isMasked) {
        mipW[n] = 1;
        itemCand[n * C] = b.pos[s]!;
        itemCand.set(x.itemNeg.subarray(s * K, s * K + K), n * C + 1);
      }
      const a = x.attrPos[s]!;
      if (a > 0) {
        (isMasked ? mapW : aapW)[n] = 1;
        attrCand[n * C] = a;
        attrCand.set(x.attrNeg.subarray(s * K, s * K + K), n * C + 1);
      }
    }
    const tau = o.temperature;
    const itemT = Tensor.from(itemCand, [N, C], 'i32'); // [N, C]
    const attrT = Tensor.from(attrCand, [N, C], 'i32'); // [N, C]
    const mipM = Tensor.from(mipW, [N]); // [N]
    const aapM = Tensor.from(aapW, [N]); // [N]
    const mapM = Tensor.from(mapW, [N]); // [N]
    const attrW = model.attributeEmbeddings.weight; // [A, H]
    const aap = infonce(model.aapNorm.forward(seq), attrW, attrT, { mask: aapM, reduction: 'sum', temperature: tau }); // []
    const mip = infonce(model.mipNorm.forward(seq), model.itemEmbeddings.weight, itemT, { mask: mipM, reduction: 'sum', temperature: tau }); // []
    const map = infonce(model.mapNorm.forward(seq), attrW, attrT, { mask: mapM, reduction: 'sum', temperature: tau }); // []
    const ctxRows = slice(h, 0, N, N + B); // [B, H]
    const segs = slice(h, 0, N + B, N + 3 * B); // [2B, H]: positive segments, then negative segments
    const targets = Tensor.from(Int32Array.from({ length: B }, (_, i) => i), [B], 'i32'); // [B]: sample b's positive
    const sp = infonceDense(model.spNorm.forward(ctxRows), segs, targets, { reduction: 'sum', temperature: tau }); // []
    const l = { aap, mip, map, sp };
    return { ...l, total: weighted(l, o.weights) };
  });
}

/**
 * One pretraining step (queued; nothing read back): losses, backward, Adam; the four loss sums are added to
 * `sums` (GPU scalars, order aap, mip, map, sp) when given.
 */
export function pretrainStep(
  model: S3RecModel, opt: Adam, b: PretrainHostBatch, attributes: readonly Int32Array[],
  o: { objective: PretrainObjective; path: EncoderPath; weights: PretrainWeights; temperature: number }, sums?: Tensor[],
): void {
  const l = o.objective === 'infonce' ? infoncePretrainLosses(model, b, o) : officialPretrainLosses(model, b, attributes, o);
  try {
    backward(l.total);
    opt.step();
    opt.zeroGrad();
    if (sums) LOSS_KEYS.forEach((k, i) => accumulateInPlace(sums[i]!, l[k]));
  } finally {
    l.dispose();
    l.batch.dispose();
  }
}

// ------------------------------------------------------------------------------------------------ the loop
/** process.cpuUsage() in Node; NaN elsewhere (a browser has no per-process CPU clock). */
type CpuUsage = { user: number; system: number };
const cpuUsage = (prev?: CpuUsage): CpuUsage => {
  const proc = (globalThis as { process?: { cpuUsage?: (p?: CpuUsage) => CpuUsage } }).process;
  return proc?.cpuUsage ? proc.cpuUsage(prev) : { user: NaN, system: NaN };
};

/** One macrotask turn (setImmediate in Node, a 0 ms timeout elsewhere). */
const yieldToEventLoop = (): Promise<void> =>
  new Promise((r) => (typeof setImmediate === 'function' ? setImmediate(r) : setTimeout(r, 0)));

/** The four *_norm heads. */
function heads(model: S3RecModel): Array<{ bias: Tensor | null }> {
  return [model.aapNorm, model.mipNorm, model.mapNorm, model.spNorm];
}

/**
 * Pretrain `model` on `ds` (S3-Rec's four self-supervised objectives). Returns the per-epoch history; the model
 * holds the last epoch's weights.
 */
export async function pretrainS3Rec(model: S3RecModel, ds: S3RecDataset, opts: PretrainOptions = {}): Promise<PretrainResult> {
  const tStart = performance.now();
  const o = resolvePretrainOptions(opts);
  const hooks = o.hooks ?? {};
  const L = model.cfg.maxSeqLength;
  if (model.cfg.itemSize !== ds.itemSize) throw new Error(`pretrain: the model has itemSize ${model.cfg.itemSize}, the dataset ${ds.itemSize} (max item ${ds.maxItem} + 2)`);
  if (model.cfg.attributeSize !== ds.attributes.attributeSize) {
    throw new Error(`pretrain: the model has attributeSize ${model.cfg.attributeSize}, dataset ${ds.name} ${ds.attributes.attributeSize} (max attribute + 1)`);
  }
  const prefixes = pretrainPrefixes(ds.sequences, L);
  if (prefixes.count === 0) throw new Error(`pretrain: dataset ${ds.name} has no pretraining samples (every sequence has fewer than 3 items)`);
  const attributes = ds.attributes.attributes;
  const biasWasTrainable = heads(model).map((h) => h.bias?.requiresGrad ?? false);
  if (!o.headBias) {
    for (const h of heads(model)) {
      if (!h.bias) continue;
      h.bias.write(new Float32Array(h.bias.size));
      h.bias.requireGrad(false);
    }
  }
  const opt = new Adam(model, { lr: o.lr, betas: [o.beta1, o.beta2], weightDecay: o.weightDecay });
  const run = o.outDir ? new RunDir(o.outDir) : null;
  let state: PretrainState = { epoch: 0, history: [], checkpoints: [] };
  const sums = LOSS_KEYS.map(() => zeros([]));
  let aborted = false;
  const writeCheckpoint = async (epochsDone: number): Promise<string> => {
    const file = join(run!.dir, pretrainCheckpointName(ds.name, epochsDone));
    await saveCheckpoint(file, {
      model,
      metadata: {
        dataset: ds.name, stage: 'pretrain', epochs: String(epochsDone), objective: o.objective,
        head_bias: String(o.headBias), batch_size: String(o.batchSize), seed: String(o.seed), hidden_act: model.cfg.hiddenAct,
        num_attention_heads: String(model.cfg.numAttentionHeads),
      },
    });
    if (!state.checkpoints.includes(file)) state.checkpoints.push(file);
    return file;
  };
  try {
    if (run) {
      await run.create();
      if (o.resume) {
        ({ state } = await run.loadLast<PretrainState>(model, opt));
        state.checkpoints ??= [];
        if (!o.headBias) for (const h of heads(model)) h.bias?.write(new Float32Array(h.bias.size));
        hooks.onLog?.(`resumed from ${run.last} after epoch ${state.epoch - 1}`);
      } else await run.writeLog([]);
    }
    const batcher = new PretrainBatcher(ds.sequences, prefixes, {
      itemSize: ds.itemSize, maskId: ds.maskId, longSequence: longSequence(ds.sequences), maskP: o.maskP, maxLen: L,
      batchSize: o.batchSize,
      infonce: o.objective === 'infonce' ? { K: o.negatives, attributes, attributeSize: ds.attributes.attributeSize } : undefined,
    });
    const allSteps = numBatches(prefixes.count, o.batchSize);
    const steps = Math.min(allSteps, o.stepsPerEpoch ?? allSteps);
    const stepOpts = { objective: o.objective, path: o.path, weights: o.weights, temperature: o.temperature };
    const readSums = async (): Promise<number[]> => Promise.all(sums.map((t) => t.item()));
    const averages = (v: number[], nb: number): Record<(typeof LOSS_KEYS)[number] | 'total', number> => {
      const den = Math.max(1, nb) * o.batchSize; // official: num_batches * pre_batch_size
      const r = { aap: v[0]! / den, mip: v[1]! / den, map: v[2]! / den, sp: v[3]! / den, total: 0 };
      r.total = o.weights.aap * r.aap + o.weights.mip * r.mip + o.weights.map * r.map + o.weights.sp * r.sp;
      return r;
    };
    let lastSaved = state.epoch;
    while (state.epoch < o.epochs) {
      if (hooks.signal?.aborted) {
        aborted = true;
        break;
      }
      const epoch = state.epoch;
      const t0 = performance.now();
      const c0 = cpuUsage();
      seedEngineForEpoch(o.seed, epoch);
      const rng = new Rng(epochSeed(o.seed, epoch, 1));
      const rngNce = o.objective === 'infonce' ? new Rng(epochSeed(o.seed, epoch, 2)) : undefined;
      model.train();
      for (const t of sums) t.write(new Float32Array([0]));
      let step = 0;
      let samples = 0;
      hooks.onProgress?.({ phase: 'pretrain', epoch, epochs: o.epochs, step: 0, steps, samples: 0 });
      const order = epochOrder(prefixes.count, o.seed, epoch);
      const watch = opts.checkFinite ? watchFinite(opts.checkFinite, model.stateDict()) : null;
      const batches = prefetch(
        (function* () {
          let k = 0;
          for (const idx of batchIndices(order, o.batchSize)) {
            if (k++ >= steps) return;
            yield idx;
          }
        })(),
        (idx) => batcher.build(idx, rng, rngNce),
      );
      for (const b of batches) {
        pretrainStep(model, opt, b, attributes, stepOpts, sums);
        // Build the next batch on the host while the GPU runs this step (submitted by the flush).
        rt().queue.flush();
        batches.prepareNext();
        step++;
        if (watch) await watch.afterStep(epoch * steps + step);
        samples += b.B;
        const pe = o.progressEvery;
        if (hooks.onProgress && step < steps && pe > 0 && step % pe === 0) {
          const avg = averages(await readSums(), step);
          hooks.onProgress({ phase: 'pretrain', epoch, epochs: o.epochs, step, steps, samples, losses: avg });
        }
        // Let the event loop run (signal handlers, a browser's UI): the step itself never awaits.
        else if (hooks.signal) await yieldToEventLoop();
        if (hooks.signal?.aborted) break;
      }
      if (hooks.signal?.aborted && step < steps) {
        aborted = true;
        break;
      }
      const avg = averages(await readSums(), step);
      await sync();
      hooks.onProgress?.({ phase: 'pretrain', epoch, epochs: o.epochs, step, steps, samples, losses: avg });
      const cpu = cpuUsage(c0);
      const rec: PretrainEpoch = {
        epoch, ...avg, seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6, steps: step, samples,
        peakGpuBytes: peakGpuBytes(),
      };
      state.epoch = epoch + 1;
      if (run && ((o.saveEvery > 0 && state.epoch % o.saveEvery === 0) || state.epoch === o.epochs)) {
        rec.checkpoint = await writeCheckpoint(state.epoch);
        lastSaved = state.epoch;
      }
      state.history.push(rec);
      if (run) {
        await run.saveLast(model, opt, state, { dataset: ds.name, stage: 'pretrain' });
        await run.appendLog(rec);
      }
      hooks.onEpoch?.(rec);
    }
    // Aborted inside an epoch: the model is put back to the last finished epoch (last.safetensors; the partial
    // epoch's updates are dropped, its log line was never written), and that epoch gets its checkpoint if it has
    // none yet. Without a run folder the model keeps the partial epoch's updates.
    if (run && aborted && state.epoch > 0 && (await run.exists(run.last))) {
      await loadCheckpoint(run.last, { model });
      if (state.epoch > lastSaved) {
        const file = await writeCheckpoint(state.epoch);
        const rec = state.history[state.history.length - 1];
        if (rec) rec.checkpoint = file;
        await run.writeLog(state.history);
      }
    }
    return {
      epochs: state.epoch,
      history: state.history,
      final: state.history[state.history.length - 1] ?? null,
      checkpoints: [...state.checkpoints],
      secondsPerEpoch: median(state.history.map((r) => r.seconds)),
      seconds: (performance.now() - tStart) / 1000,
      peakGpuBytes: peakGpuBytes(),
      aborted,
    };
  } finally {
    for (const t of sums) t.dispose();
    opt.dispose();
    heads(model).forEach((h, i) => h.bias?.requireGrad(biasWasTrainable[i]!));
  }
}
