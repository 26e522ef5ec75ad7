// Batches for the GPU, as flat typed arrays ready for `Tensor.from(data, shape)` (this layer never imports
// the engine; uploads are callbacks).
//  - Left-padded batches `[B*L]`: `x = [0]*pad + x; x = x[-L:]` (S3REC_SPEC §2, §11), so the last real item
//    sits in slot L-1 and position ids are always 0..L-1 (as `datasets.py` does).
//  - Packed (varlen) batches: the same real tokens back to back, `offsets [B+1]` (cumulative lengths),
//    `positions [total]` = each token's slot in the padded layout (position embeddings stay those of the
//    official left-padded layout) and `seqIndex [total]` = its row.
//  - Seeded per-epoch shuffles (RandomSampler) and fixed-size batches (drop_last as each protocol does).
//  - Prefetcher: keeps batch i+1 built AND uploaded while the GPU runs step i (see `Prefetcher`).
// Per-protocol builders: S3-Rec fine-tuning train (`SASRecDataset`, one negative per target position
// from neg_sample over the user's full sequence, §5), S3-Rec evaluation (sampled 1+99 and full ranking, §6),
// S3-Rec pretraining (§4.1), AttRec windows with 3 negatives per instance (ATTREC_SPEC §2.6).

import type { PretrainPrefixes, PretrainSampleOptions, AttRecWindows, EvalStage } from './splits.js';
import { makePretrainSample, prefixItems, s3recEvalExample, s3recTrainExample } from './splits.js';
import { ItemSet, Rng, attrecNegativesAt, negSample } from './sampling.js';

/** Common fields of left-padded batches: `size` rows of `maxLen` slots, `lengths[b]` real (right-aligned) slots. */
export interface PaddedBatch {
  size: number;
  maxLen: number;
  lengths: Int32Array;
}

/**
 * Writes the last `L` items of `seq` right-aligned into row `row` of `out` (`[*, L]`), zeros before them.
 * Returns the number of real slots, min(len, L).
 */
export function leftPadInto(out: Int32Array, row: number, L: number, seq: ArrayLike<number>): number {
  const n = Math.min(seq.length, L);
  const base = row * L;
  out.fill(0, base, base + L - n);
  const skip = seq.length - n;
  for (let j = 0; j < n; j++) out[base + L - n + j] = seq[skip + j]!;
  return n;
}

/** Left-pads each sequence to L (keeping the last L items): `ids [B*L]`, `lengths [B]`. */
export function leftPad(seqs: readonly ArrayLike<number>[], L: number): { ids: Int32Array; lengths: Int32Array } {
  const ids = new Int32Array(seqs.length * L);
  const lengths = new Int32Array(seqs.length);
  seqs.forEach((s, b) => (lengths[b] = leftPadInto(ids, b, L, s)));
  return { ids, lengths };
}

// ---------------------------------------------------------------------------------------------------------
// S3-Rec fine-tuning

export interface FinetuneTrainBatch extends PaddedBatch {
  /** User rows of this batch. */
  users: Int32Array;
  /** `[B*L]` items[:-3], left-padded. */
  inputIds: Int32Array;
  /** `[B*L]` items[1:-2], aligned with inputIds (0 at padding). */
  targetPos: Int32Array;
  /** `[B*L]` one negative per real target position (0 at padding). */
  targetNeg: Int32Array;
}

export interface FinetuneBatchOptions {
  /** max_seq_length (50). */
  maxLen?: number;
  /** max_item + 2; negatives are drawn from 1..itemSize-1 (mask_id included, as officially). */
  itemSize: number;
  rng: Rng;
  scratch?: ItemSet;
}

/**
 * One fine-tuning batch (`SASRecDataset` train mode): negatives `neg_sample(set(full sequence), item_size)`
 * drawn fresh at every call (the official code re-draws each epoch). Negatives are drawn only for the
 * positions kept after truncation to L (the official code also draws, then drops, the truncated ones;
 * same distribution).
 */
export function buildFinetuneTrainBatch(sequences: readonly Int32Array[], users: ArrayLike<number>, opts: FinetuneBatchOptions): FinetuneTrainBatch {
  const L = opts.maxLen ?? 50;
  const B = users.length;
  const inputIds = new Int32Array(B * L);
  const targetPos = new Int32Array(B * L);
  const targetNeg = new Int32Array(B * L);
  const lengths = new Int32Array(B);
  const set = opts.scratch ?? new ItemSet(opts.itemSize);
  for (let b = 0; b < B; b++) {
    const seq = sequences[users[b]!]!;
    const { input, target } = s3recTrainExample(seq);
    const n = leftPadInto(inputIds, b, L, input);
    leftPadInto(targetPos, b, L, target);
    lengths[b] = n;
    set.reset(seq);
    for (let j = L - n; j < L; j++) targetNeg[b * L + j] = negSample(opts.rng, set, opts.itemSize);
  }
  return { size: B, maxLen: L, lengths, users: Int32Array.from(users), inputIds, targetPos, targetNeg };
}

export interface SampledEvalBatch extends PaddedBatch {
  users: Int32Array;
  /** `[B*L]` items[:-2] (valid) or items[:-1] (test), left-padded. */
  inputIds: Int32Array;
  /** `[B]` items[-2] or items[-1]. */
  answers: Int32Array;
  /** `[B*(1+count)]`: official layout `[answer] + negatives`, i.e. column 0 is the ground truth. */
  candidates: Int32Array;
  numCandidates: number;
}

/** Sampled-protocol evaluation batch (run_finetune_sample.py): the same 99 negatives for valid and test. */
export function buildSampledEvalBatch(sequences: readonly Int32Array[], sampleNegatives: Int32Array, users: ArrayLike<number>, stage: EvalStage, opts: { maxLen?: number; count?: number } = {}): SampledEvalBatch {
  const L = opts.maxLen ?? 50;
  const count = opts.count ?? 99;
  const C = count + 1;
  const B = users.length;
  const inputIds = new Int32Array(B * L);
  const answers = new Int32Array(B);
  const candidates = new Int32Array(B * C);
  const lengths = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    const u = users[b]!;
    const { input, answer } = s3recEvalExample(sequences[u]!, stage);
    lengths[b] = leftPadInto(inputIds, b, L, input);
    answers[b] = answer;
    candidates[b * C] = answer;
    candidates.set(sampleNegatives.subarray(u * count, (u + 1) * count), b * C + 1);
  }
  return { size: B, maxLen: L, lengths, users: Int32Array.from(users), inputIds, answers, candidates, numCandidates: C };
}

export interface FullEvalBatch extends PaddedBatch {
  users: Int32Array;
  inputIds: Int32Array;
  answers: Int32Array;
  /** CSR of the items excluded from ranking (the whole input, not only the last L): row b is
   *  historyItems[historyOffsets[b] .. historyOffsets[b+1]). */
  historyOffsets: Int32Array;
  historyItems: Int32Array;
}

/** Full-ranking evaluation batch (run_finetune_full.py): history = items[:-2] (valid) / items[:-1] (test). */
export function buildFullEvalBatch(sequences: readonly Int32Array[], users: ArrayLike<number>, stage: EvalStage, opts: { maxLen?: number } = {}): FullEvalBatch {
  const L = opts.maxLen ?? 50;
  const B = users.length;
  const inputIds = new Int32Array(B * L);
  const answers = new Int32Array(B);
  const lengths = new Int32Array(B);
  const historyOffsets = new Int32Array(B + 1);
  const hist: Int32Array[] = [];
  for (let b = 0; b < B; b++) {
    const { input, answer, history } = s3recEvalExample(sequences[users[b]!]!, stage);
    lengths[b] = leftPadInto(inputIds, b, L, input);
    answers[b] = answer;
    hist.push(history);
    historyOffsets[b + 1] = historyOffsets[b]! + history.length;
  }
  const historyItems = new Int32Array(historyOffsets[B]!);
  hist.forEach((h, b) => historyItems.set(h, historyOffsets[b]!));
  return { size: B, maxLen: L, lengths, users: Int32Array.from(users), inputIds, answers, historyOffsets, historyItems };
}

// ---------------------------------------------------------------------------------------------------------
// S3-Rec pretraining

export interface PretrainBatch extends PaddedBatch {
  /** Indices of the pretraining samples (into PretrainPrefixes). */
  samples: Int32Array;
  /** `[B*L]` each, left-padded with 0 (S3REC_SPEC §4.1). */
  masked: Int32Array;
  pos: Int32Array;
  neg: Int32Array;
  maskedSegment: Int32Array;
  posSegment: Int32Array;
  negSegment: Int32Array;
}

/** Builds the pretraining batch of samples `sampleIdx` (fresh masks/negatives at every call, as each epoch). */
export function buildPretrainBatch(sequences: readonly Int32Array[], prefixes: PretrainPrefixes, sampleIdx: ArrayLike<number>, opts: PretrainSampleOptions & { maxLen?: number }): PretrainBatch {
  const L = opts.maxLen ?? 50;
  const B = sampleIdx.length;
  const mk = (): Int32Array => new Int32Array(B * L);
  const batch: PretrainBatch = {
    size: B, maxLen: L, lengths: new Int32Array(B), samples: Int32Array.from(sampleIdx),
    masked: mk(), pos: mk(), neg: mk(), maskedSegment: mk(), posSegment: mk(), negSegment: mk(),
  };
  const scratch = opts.scratch ?? new ItemSet(opts.itemSize);
  for (let b = 0; b < B; b++) {
    const s = makePretrainSample(prefixItems(sequences, prefixes, sampleIdx[b]!), { ...opts, scratch });
    batch.lengths[b] = leftPadInto(batch.masked, b, L, s.masked);
    leftPadInto(batch.pos, b, L, s.pos);
    leftPadInto(batch.neg, b, L, s.neg);
    leftPadInto(batch.maskedSegment, b, L, s.maskedSegment);
    leftPadInto(batch.posSegment, b, L, s.posSegment);
    leftPadInto(batch.negSegment, b, L, s.negSegment);
  }
  return batch;
}

/**
 * AAP/MAP targets: `[N*A]` multi-hot of the attributes of each id in `ids` (pad id 0 -> all zeros),
 * as float32 (the BCE target). Beauty: 100x50x638 floats = 12.8 MB per batch; `itemAttributeMatrix`
 * + a GPU gather by `pos` avoids shipping it every step.
 */
export function attributeMultiHot(ids: Int32Array, attributes: readonly Int32Array[], attributeSize: number): Float32Array {
  const out = new Float32Array(ids.length * attributeSize);
  for (let t = 0; t < ids.length; t++) {
    const list = attributes[ids[t]!];
    if (!list) continue;
    for (let k = 0; k < list.length; k++) out[t * attributeSize + list[k]!] = 1;
  }
  return out;
}

/** `[itemSize*A]` multi-hot rows for every item id (rows 0 and maskId are zero): upload once, gather by id. */
export function itemAttributeMatrix(attributes: readonly Int32Array[], attributeSize: number): Float32Array {
  const ids = new Int32Array(attributes.length);
  for (let i = 0; i < ids.length; i++) ids[i] = i;
  const m = attributeMultiHot(ids, attributes, attributeSize);
  m.fill(0, 0, attributeSize);
  return m;
}

// ---------------------------------------------------------------------------------------------------------
// AttRec

export interface AttRecBatch {
  size: number;
  L: number;
  T: number;
  /** User rows `[B]`. */
  users: Int32Array;
  /** `[B*L]` oldest first (no padding: every window is full). */
  inputs: Int32Array;
  /** `[B*T]`. */
  targets: Int32Array;
  /** `[B*T]`: negatives[k] pairs with targets[k] (ATTREC_SPEC §2.5). */
  negatives: Int32Array;
}

/** AttRec batch of window indices `idx`, negatives drawn from {1..numItems-1} minus the instance's targets. */
export function buildAttRecBatch(windows: AttRecWindows, idx: ArrayLike<number>, opts: { numItems: number; rng: Rng }): AttRecBatch {
  const { L, T } = windows;
  const B = idx.length;
  const users = new Int32Array(B);
  const inputs = new Int32Array(B * L);
  const targets = new Int32Array(B * T);
  const negatives = new Int32Array(B * T);
  const win = windows.inputs;
  const tgt = windows.targets;
  for (let b = 0; b < B; b++) {
    const k = idx[b]!;
    users[b] = windows.user[k]!;
    for (let i = 0; i < L; i++) inputs[b * L + i] = win[k * L + i]!;
    for (let j = 0; j < T; j++) targets[b * T + j] = tgt[k * T + j]!;
    attrecNegativesAt(opts.rng, targets, b * T, T, opts.numItems, negatives, b * T, T);
  }
  return { size: B, L, T, users, inputs, targets, negatives };
}

/**
 * AttRec per-epoch negatives for ALL windows at once (the authors re-sample once per epoch,
 * ATTREC_SPEC §2.6): `[count*T]`.
 */
export function attrecEpochNegatives(windows: AttRecWindows, numItems: number, rng: Rng): Int32Array {
  const out = new Int32Array(windows.count * windows.T);
  for (let k = 0; k < windows.count; k++) {
    attrecNegativesAt(rng, windows.targets, k * windows.T, windows.T, numItems, out, k * windows.T, windows.T);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Packed (varlen) layout

export interface PackedLayout {
  size: number;
  maxLen: number;
  /** Number of real tokens. */
  total: number;
  /** `[B+1]` cumulative lengths: row b's tokens are [offsets[b], offsets[b+1]). */
  offsets: Int32Array;
  /** `[total]` slot of each token in the left-padded layout (last real token of a row = maxLen-1). */
  positions: Int32Array;
  /** `[total]` row of each token. */
  seqIndex: Int32Array;
}

/** The packed layout of a left-padded batch with `lengths` real slots per row. */
export function packedLayout(lengths: Int32Array, maxLen: number): PackedLayout {
  const B = lengths.length;
  const offsets = new Int32Array(B + 1);
  for (let b = 0; b < B; b++) {
    const n = lengths[b]!;
    if (n < 0 || n > maxLen) throw new RangeError(`packedLayout: length ${n} of row ${b} outside 0..${maxLen}`);
    offsets[b + 1] = offsets[b]! + n;
  }
  const total = offsets[B]!;
  const positions = new Int32Array(total);
  const seqIndex = new Int32Array(total);
  for (let b = 0; b < B; b++) {
    const n = lengths[b]!;
    for (let j = 0; j < n; j++) {
      positions[offsets[b]! + j] = maxLen - n + j;
      seqIndex[offsets[b]! + j] = b;
    }
  }
  return { size: B, maxLen, total, offsets, positions, seqIndex };
}

/** Gathers the real tokens of a left-padded `[B*L]` array into `[total]`. */
export function packPadded(padded: Int32Array, layout: PackedLayout): Int32Array {
  if (padded.length !== layout.size * layout.maxLen) throw new RangeError(`packPadded: ${padded.length} values for ${layout.size}x${layout.maxLen}`);
  const out = new Int32Array(layout.total);
  for (let t = 0; t < layout.total; t++) out[t] = padded[layout.seqIndex[t]! * layout.maxLen + layout.positions[t]!]!;
  return out;
}

type Int32Keys<T> = { [K in keyof T]: T[K] extends Int32Array ? K : never }[keyof T];

/** Packs the named `[B*L]` fields of a padded batch: `{ ...layout, [field]: Int32Array[total] }`. */
export function packBatch<T extends PaddedBatch, K extends Int32Keys<T>>(batch: T, fields: readonly K[]): PackedLayout & { [P in K]: Int32Array } {
  const layout = packedLayout(batch.lengths, batch.maxLen);
  const out = { ...layout } as PackedLayout & { [P in K]: Int32Array };
  for (const f of fields) (out as Record<K, Int32Array>)[f] = packPadded(batch[f] as Int32Array, layout);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Shuffling and batch order

/** The sample order of epoch `epoch`: a permutation of 0..n-1 from `Rng.derive(seed, epoch)`, independent
 *  of anything else drawn (RandomSampler). */
export function epochOrder(n: number, seed: number, epoch: number): Int32Array {
  return Rng.derive(seed, 0x5348, epoch).permutation(n);
}

export function numBatches(n: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

/** Consecutive chunks of `order` (views): S3-Rec keeps the last partial batch (DataLoader default),
 *  AttRec drops it (`total_batch = int(n / batch_size)`). */
export function* batchIndices(order: Int32Array, batchSize: number, dropLast = false): Generator<Int32Array> {
  const nb = numBatches(order.length, batchSize, dropLast);
  for (let i = 0; i < nb; i++) yield order.subarray(i * batchSize, Math.min(order.length, (i + 1) * batchSize));
}

// ---------------------------------------------------------------------------------------------------------
// Prefetch

/**
 * Keeps the next batch built and uploaded one step ahead. JS is single-threaded, so overlap means: the loop
 * queues step i's GPU work WITHOUT awaiting, calls `prepareNext()` (the CPU builds batch i+1 and its
 * `upload` issues queue.writeBuffer, which the GPU orders after step i), and only then awaits step i.
 *
 * ```ts
 * const batches = prefetch(batchIndices(order, 256), (idx) => toGpu(buildFinetuneTrainBatch(seqs, idx, o)), disposeGpu);
 * for (const b of batches) {
 *   const loss = trainStep(b);   // queued, not awaited
 *   batches.prepareNext();       // batch i+1 built + uploaded while the GPU runs step i
 *   log(await loss.read());
 *   disposeGpu(b);
 * }
 * ```
 * If `prepareNext()` is never called the next batch is built when it is requested (still correct, no overlap).
 * On early exit (`break`), a prepared but never handed-out batch is passed to `dispose`.
 */
export class Prefetcher<T, U> implements Iterable<U> {
  private readonly source: Iterator<T>;
  private ready: { value: U } | undefined;
  private done = false;
  private started = false;

  constructor(batches: Iterable<T>, private readonly upload: (b: T) => U, private readonly dispose?: (u: U) => void) {
    this.source = batches[Symbol.iterator]();
  }

  /** Builds and uploads the next batch now, unless it is already prepared or the source is exhausted. */
  prepareNext(): void {
    if (this.ready || this.done) return;
    const r = this.source.next();
    if (r.done) {
      this.done = true;
      return;
    }
    this.ready = { value: this.upload(r.value) };
  }

  /** Whether a batch is built and waiting. */
  get hasPrepared(): boolean {
    return this.ready !== undefined;
  }

  [Symbol.iterator](): Iterator<U> {
    if (this.started) throw new Error('Prefetcher can be iterated only once');
    this.started = true;
    return {
      next: (): IteratorResult<U> => {
        this.prepareNext();
        const r = this.ready;
        this.ready = undefined;
        return r ? { value: r.value, done: false } : { value: undefined, done: true };
      },
      return: (): IteratorResult<U> => {
        if (this.ready && this.dispose) this.dispose(this.ready.value);
        this.ready = undefined;
        this.done = true;
        this.source.return?.();
        return { value: undefined, done: true };
      },
    };
  }
}

/** `new Prefetcher(batches, upload, dispose)`. */
export function prefetch<T, U>(batches: Iterable<T>, upload: (b: T) => U, dispose?: (u: U) => void): Prefetcher<T, U> {
  return new Prefetcher(batches, upload, dispose);
}
