// Splits and training samples, exactly as the official code builds them.
//  - S3-Rec leave-one-out (S3REC_SPEC §2; `datasets.SASRecDataset`): train input items[:-3] -> targets
//    items[1:-2]; valid input items[:-2] -> answer items[-2]; test input items[:-1] -> answer items[-1].
//    Full-ranking history (run_finetune_full.py): valid masks items[:-2], test masks items[:-1].
//  - S3-Rec pretraining prefixes (§2; `run_pretrain.py`): per user `input = items[-(L+2):-2]` and one sample
//    per prefix input[:i+1]; `long_sequence` = all users' FULL sequences concatenated (§2 note).
//  - S3-Rec pretraining sample (§4.1; `datasets.PretrainDataset.__getitem__`): item masking with mask_p and
//    the last item always masked, neg_sample over set(prefix) (can return mask_id), segment SP construction.
//    The random draws happen in the official order: for each of the first n-1 items `random() < mask_p`
//    (+ a neg_sample when masked), the last item's neg_sample, then randint(1, n//2), randint(0, n-L),
//    randint(0, len(long_sequence)-L).
//  - AttRec windows (ATTREC_SPEC §3.4; `DataSet._sliding_window`): windows of L+T items from the end of each
//    training sequence backwards with step 1; input = first L, targets = last T. A sequence shorter than
//    L+T gives one window: input = its first L items, targets = its last T (they overlap, as in the
//    authors' numpy code); shorter than L is an error (the authors' code fails there too).

import type { Rng } from './sampling.js';
import { ItemSet, negSample } from './sampling.js';

/** Python `a[lo:hi]` for a typed array (negative indices count from the end, out of range clamps). */
export function pySlice(a: Int32Array, lo?: number, hi?: number): Int32Array {
  const n = a.length;
  const norm = (i: number | undefined, d: number): number => (i === undefined ? d : i < 0 ? Math.max(0, n + i) : Math.min(n, i));
  const s = norm(lo, 0);
  const e = norm(hi, n);
  return a.subarray(s, Math.max(s, e));
}

export type EvalStage = 'valid' | 'test';

/** S3-Rec training example of one user: input items[:-3], next-item targets items[1:-2] (same length). */
export function s3recTrainExample(seq: Int32Array): { input: Int32Array; target: Int32Array } {
  return { input: pySlice(seq, 0, -3), target: pySlice(seq, 1, -2) };
}

/**
 * S3-Rec evaluation example: valid -> input items[:-2], answer items[-2]; test -> input items[:-1],
 * answer items[-1]. `history` is what run_finetune_full.py masks for full ranking (= the input).
 */
export function s3recEvalExample(seq: Int32Array, stage: EvalStage): { input: Int32Array; answer: number; history: Int32Array } {
  if (seq.length < 3) throw new RangeError(`s3recEvalExample: a sequence of ${seq.length} items has no ${stage} item (need >= 3)`);
  const cut = stage === 'valid' ? -2 : -1;
  const input = pySlice(seq, 0, cut);
  return { input, answer: seq[seq.length + cut]!, history: input };
}

/** All pretraining samples: sample k is `sequences[user[k]].subarray(start[k], start[k] + length[k])`. */
export interface PretrainPrefixes {
  count: number;
  user: Int32Array;
  start: Int32Array;
  length: Int32Array;
}

/** One sample per prefix of `items[-(maxLen+2):-2]`, users in order, prefixes shortest first. */
export function pretrainPrefixes(sequences: readonly Int32Array[], maxLen = 50): PretrainPrefixes {
  let count = 0;
  const windows = sequences.map((s) => {
    const n = s.length;
    const end = Math.max(0, n - 2);
    const begin = Math.max(0, n - (maxLen + 2));
    const len = Math.max(0, end - begin);
    count += len;
    return [begin, len] as const;
  });
  const user = new Int32Array(count);
  const start = new Int32Array(count);
  const length = new Int32Array(count);
  let k = 0;
  windows.forEach(([begin, len], u) => {
    for (let i = 1; i <= len; i++, k++) {
      user[k] = u;
      start[k] = begin;
      length[k] = i;
    }
  });
  return { count, user, start, length };
}

/** The items of pretraining sample k (a view, no copy). */
export function prefixItems(sequences: readonly Int32Array[], prefixes: PretrainPrefixes, k: number): Int32Array {
  const s = prefixes.start[k]!;
  return sequences[prefixes.user[k]!]!.subarray(s, s + prefixes.length[k]!);
}

/** `long_sequence`: every user's FULL sequence concatenated in file order (pool of SP negative segments). */
export function longSequence(sequences: readonly Int32Array[]): Int32Array {
  let n = 0;
  for (const s of sequences) n += s.length;
  const out = new Int32Array(n);
  let o = 0;
  for (const s of sequences) {
    out.set(s, o);
    o += s.length;
  }
  return out;
}

export interface PretrainSampleOptions {
  itemSize: number;
  maskId: number;
  longSequence: Int32Array;
  rng: Rng;
  /** Probability of masking each of the first n-1 items (official mask_p = 0.2). */
  maskP?: number;
  /** Reusable exclusion set with capacity >= itemSize (allocated when omitted). */
  scratch?: ItemSet;
}

/** The six unpadded sequences of one pretraining sample (all of length n = prefix length). */
export interface PretrainSample {
  /** MIP/MAP/AAP input: items, with masked positions replaced by maskId (the last always). */
  masked: Int32Array;
  /** The original items (`pos_items`; also the AAP/MAP attribute source). */
  pos: Int32Array;
  /** neg_items: a sampled negative at masked positions, the item itself elsewhere. */
  neg: Int32Array;
  maskedSegment: Int32Array;
  posSegment: Int32Array;
  negSegment: Int32Array;
}

/** `PretrainDataset.__getitem__` for one prefix (S3REC_SPEC §4.1), unpadded. */
export function makePretrainSample(seq: Int32Array, opts: PretrainSampleOptions): PretrainSample {
  const { itemSize, maskId, rng } = opts;
  const long = opts.longSequence;
  const maskP = opts.maskP ?? 0.2;
  const n = seq.length;
  if (n === 0) throw new RangeError('makePretrainSample: empty prefix');
  const itemSet = (opts.scratch ?? new ItemSet(itemSize)).reset(seq);
  const masked = new Int32Array(n);
  const neg = new Int32Array(n);
  for (let i = 0; i < n - 1; i++) {
    const item = seq[i]!;
    if (rng.nextFloat() < maskP) {
      masked[i] = maskId;
      neg[i] = negSample(rng, itemSet, itemSize);
    } else {
      masked[i] = item;
      neg[i] = item;
    }
  }
  masked[n - 1] = maskId; // the official code always masks the last item of the prefix
  neg[n - 1] = negSample(rng, itemSet, itemSize);

  let maskedSegment: Int32Array;
  let posSegment: Int32Array;
  let negSegment: Int32Array;
  if (n < 2) {
    maskedSegment = seq.slice();
    posSegment = seq.slice();
    negSegment = seq.slice();
  } else {
    const L = rng.randint(1, n >> 1);
    const start = rng.randint(0, n - L);
    const negStart = rng.randint(0, long.length - L);
    maskedSegment = seq.slice();
    posSegment = new Int32Array(n).fill(maskId);
    negSegment = new Int32Array(n).fill(maskId);
    for (let j = 0; j < L; j++) {
      maskedSegment[start + j] = maskId;
      posSegment[start + j] = seq[start + j]!;
      negSegment[start + j] = long[negStart + j]!;
    }
  }
  return { masked, pos: seq.slice(), neg, maskedSegment, posSegment, negSegment };
}

/** AttRec training instances: `inputs [count*L]`, `targets [count*T]`, `user [count]` (user row). */
export interface AttRecWindows {
  count: number;
  L: number;
  T: number;
  user: Int32Array;
  inputs: Int32Array;
  targets: Int32Array;
}

/** Sliding windows of L+T (ATTREC_SPEC §3.4), users in row order, each user's windows from the end backwards. */
export function attrecWindows(sequences: readonly Int32Array[], L = 5, T = 3): AttRecWindows {
  const W = L + T;
  let count = 0;
  sequences.forEach((s, u) => {
    if (s.length < Math.max(L, T)) throw new RangeError(`attrecWindows: user row ${u} has ${s.length} training items, fewer than max(L=${L}, T=${T})`);
    count += s.length >= W ? s.length - W + 1 : 1;
  });
  const user = new Int32Array(count);
  const inputs = new Int32Array(count * L);
  const targets = new Int32Array(count * T);
  let k = 0;
  sequences.forEach((s, u) => {
    const n = s.length;
    if (n >= W) {
      for (let end = n; end - W >= 0; end--, k++) {
        user[k] = u;
        inputs.set(s.subarray(end - W, end - W + L), k * L);
        targets.set(s.subarray(end - T, end), k * T);
      }
    } else {
      user[k] = u;
      inputs.set(s.subarray(0, L), k * L);
      targets.set(s.subarray(n - T), k * T);
      k++;
    }
  });
  return { count, L, T, user, inputs, targets };
}

/** AttRec test inputs: the last L training items of every user, `[U*L]` (ATTREC_SPEC §3.4). */
export function attrecTestInputs(sequences: readonly Int32Array[], L = 5): Int32Array {
  const out = new Int32Array(sequences.length * L);
  sequences.forEach((s, u) => {
    if (s.length < L) throw new RangeError(`attrecTestInputs: user row ${u} has ${s.length} training items, fewer than L=${L}`);
    out.set(s.subarray(s.length - L), u * L);
  });
  return out;
}
