// Shared by the loss benches (infonce, bce_neg_sampling, pairwise, multilabel_bce): generated batches, the float64 references,
// and the entry builder. Every run is forward + backward (upstream gradient 1) into both float inputs; validation
// checks the loss and 2048 sampled values of each gradient against the float64 reference.
//
// Shapes (S3REC_SPEC §4-§5) and masks. Batches are left-padded like the official loaders, with lengths uniform in
// [1, maxLen], so that the share of real positions matches Beauty (11.5% of fine-tuning slots and 16.3% of
// pretraining slots are real):
//   infonce     fine-tuning positions N = B·L = 256·50, C = 16 candidates (column 0 positive, 15 sampled
//               negatives), D = 64, V = 12103 items, tau = 0.1, mask = real positions (~12%).
//               `fused_allrows`: the same with every row valid (the worst case for the fused kernel).
//   bce         the official fine-tuning loss at N = 12800, D = 64, V = 12103; pos = 0 at padded positions.
//   pairwise    MIP (id form) at pretraining N = B·L = 100·50, D = 64, V = 12103, mask = masked positions (~5%).
//   multilabel  AAP at N = 5000, A = 638 attributes, D = 64, mask = unmasked real positions (~12%), ~2.5 positive
//               attributes per row. `fused_allrows`: every row valid.
// Variants: fused (this repo's kernel), composed (unfused engine ops + autograd: gatherRows with host ids, mul,
// sum, logSoftmax, slice, sigmoid, log, matmul), tfjs (tf.gather, tf.mul, tf.sum, tf.logSumExp, tf.sigmoid,
// tf.log, tf.matMul with tf.valueAndGrads). The composed and tfjs rows compute every row and mask afterwards, as
// the straightforward composition does; the composed BCE has no -100 clamp (no value here comes near it).
// GFLOP/s and GB/s count all N rows, also for the masked rows (the fused kernels skip masked rows).
import { ref, reshape, Tensor } from '../engine/index.js';
import {
  add, bceNegSampling, csrTargets, gatherRows, infonce, log, logSoftmax, matmul, mul, multiLabelBce, neg,
  pairwiseSigmoidLossIds, refCsrToDense, refInfonce, refInfonceGrad, refMultiLabelBce, refMultiLabelBceGrad, refPairGrad,
  refPairLoss, sigmoid, slice, sub, sum,
} from '../kernels/index.js';
import { engineVariant, maxAbs, tfjsVariant, validateClose, validateSampled, type HostTensor, type TfT } from './common.js';
import type { Tfjs } from './tfjs.js';
import type { BenchEntry, Outputs, Reference, Variant } from './types.js';

type F64 = ref.F64;
export type LossFamily = 'infonce' | 'bce' | 'pairwise' | 'multilabel';

export interface LossDims {
  B: number;
  L: number;
  D: number;
  /** Items (infonce, bce, pairwise) or attributes (multilabel: A). */
  V: number;
  /** Candidates per row (infonce). */
  C: number;
  /** Sequence lengths are uniform in [1, maxLen]. */
  maxLen: number;
}

const TAU = 0.1;

export interface LossIn {
  /** Differentiable inputs: infonce q, table; bce/pairwise h, table; multilabel x, attr. */
  a: HostTensor;
  t: HostTensor;
  /** infonce: cand [N, C]; bce/pairwise: pos, neg [N]. */
  ids0: HostTensor;
  ids1: HostTensor;
  /** Row weights [N] (bce: pos > 0). */
  mask: HostTensor;
  /** multilabel: positive attribute ids per row. */
  lists: number[][];
}

/** Left-padded batch of B sequences of L slots with lengths uniform in [1, maxLen]: 1 at real slots. */
function paddedValid(B: number, L: number, maxLen: number, rnd: () => number): Float32Array {
  const v = new Float32Array(B * L);
  for (let b = 0; b < B; b++) {
    const len = 1 + Math.floor(rnd() * maxLen);
    for (let t = L - len; t < L; t++) v[b * L + t] = 1;
  }
  return v;
}

function lossInputs(f: LossFamily, d: LossDims): LossIn {
  const rnd = ref.mulberry32(20241123);
  const N = d.B * d.L;
  const mk = (rows: number, s: number): HostTensor => ({ data: Float32Array.from({ length: rows * d.D }, () => (rnd() * 2 - 1) * s), shape: [rows, d.D] });
  const item = (): number => 1 + Math.floor(rnd() * (d.V - 1));
  const none: HostTensor = { data: new Int32Array(1), shape: [1] };
  if (f === 'infonce' || f === 'bce') {
    const valid = paddedValid(d.B, d.L, d.maxLen, rnd);
    const a = mk(N, 0.5);
    const t = mk(d.V, 0.5);
    if (f === 'infonce') {
      const cand = Int32Array.from({ length: N * d.C }, item);
      return { a, t, ids0: { data: cand, shape: [N, d.C] }, ids1: none, mask: { data: valid, shape: [N] }, lists: [] };
    }
    const pos = Int32Array.from({ length: N }, (_, n) => (valid[n] ? item() : 0));
    const negs = Int32Array.from({ length: N }, (_, n) => (valid[n] ? item() : 0));
    return { a, t, ids0: { data: pos, shape: [N] }, ids1: { data: negs, shape: [N] }, mask: { data: Float32Array.from(pos, (p) => (p > 0 ? 1 : 0)), shape: [N] }, lists: [] };
  }
  const valid = paddedValid(d.B, d.L, d.maxLen, rnd);
  // Pretraining item masking (§4.1): each real slot is masked with p = 0.2, the last slot of a sequence always.
  const masked = Float32Array.from(valid, (v, n) => (v && (n % d.L === d.L - 1 || rnd() < 0.2) ? 1 : 0));
  if (f === 'pairwise') {
    const a = mk(N, 0.5);
    const t = mk(d.V, 0.5);
    return { a, t, ids0: { data: Int32Array.from({ length: N }, item), shape: [N] }, ids1: { data: Int32Array.from({ length: N }, item), shape: [N] }, mask: { data: masked, shape: [N] }, lists: [] };
  }
  const aap = Float32Array.from(valid, (v, n) => (v && !masked[n] ? 1 : 0));
  const a = mk(N, 0.2);
  const t = mk(d.V, 0.2);
  const lists = Array.from({ length: N }, () => Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => 1 + Math.floor(rnd() * (d.V - 1))));
  return { a, t, ids0: none, ids1: none, mask: { data: aap, shape: [N] }, lists };
}

const f64 = (x: HostTensor): F64 => ({ data: Float64Array.from(x.data), shape: [...x.shape] });
const ones = (n: number): Float32Array => new Float32Array(n).fill(1);

/** The float64 loss and gradients (mask: the inputs' or, for 'allrows', every row). */
function lossReference(f: LossFamily, h: LossIn, allRows: boolean): Reference {
  const a = f64(h.a);
  const t = f64(h.t);
  const N = a.shape[0]!;
  const mask: F64 = { data: Float64Array.from(allRows ? ones(N) : h.mask.data), shape: [N] };
  let loss: number;
  let grads: F64[];
  if (f === 'infonce') {
    const cand = f64(h.ids0);
    const o = { temperature: TAU, mask, reduction: 'mean' as const };
    loss = refInfonce(a, t, cand, o).data[0]!;
    grads = refInfonceGrad(a, t, cand, o, 1);
  } else if (f === 'multilabel') {
    const T = refCsrToDense(h.lists, t.shape[0]!);
    loss = refMultiLabelBce(a, t, T, mask, 'sum').data[0]!;
    grads = refMultiLabelBceGrad(a, t, T, mask, 'sum', 1);
  } else {
    const x = {
      kind: f === 'bce' ? ('bce_neg_sampling' as const) : ('pairwise_sigmoid' as const),
      a,
      table: t,
      posIds: f64(h.ids0),
      negIds: f64(h.ids1),
      mask: f === 'bce' ? null : mask,
      reduction: f === 'bce' ? ('mean' as const) : ('sum' as const),
    };
    const g = refPairGrad(x, 1);
    loss = refPairLoss(x).data[0]!;
    grads = [g.da, g.dtable!];
  }
  return { out: [loss], da: grads[0]!.data, dt: grads[1]!.data };
}

/** The loss (atol 1e-5, rtol 2e-4) and 2048 sampled values of each gradient (atol 1e-4 of the gradient's max). */
function lossCheck(what: string, got: Outputs, want: Reference): void {
  validateClose(`${what} loss`, [got.out![0]!], want.out as ArrayLike<number>, { atol: 1e-5, rtol: 2e-4 });
  for (const k of ['da', 'dt']) {
    const w = want[k] as Float64Array;
    validateSampled(`${what} ${k}`, got[k]!, (j) => w[j]!, { atol: 1e-4 * maxAbs(w) + 1e-9, rtol: 1e-3 }, 2048);
  }
}

type Named = Record<string, Tensor>;
const msum = (h: LossIn): number => {
  let s = 0;
  for (const v of h.mask.data) s += v;
  return s;
};

/** This repo's fused losses. */
const fused: Record<LossFamily, (t: Named, h: LossIn) => Tensor> = {
  infonce: ({ a, t, ids0, mask }) => infonce(a!, t!, ids0!, { temperature: TAU, mask: mask! }),
  bce: ({ a, t, ids0, ids1 }) => bceNegSampling(a!, t!, ids0!, ids1!),
  pairwise: ({ a, t, ids0, ids1, mask }) => pairwiseSigmoidLossIds(a!, t!, ids0!, ids1!, { mask: mask! }),
  multilabel: ({ a, t, mask }, h) => multiLabelBce(a!, t!, csrTargets(h.lists), { mask: mask! }), // CSR targets built per run
};

/** The same math from unfused engine ops; autograd does the backward. */
const composed: Record<LossFamily, (t: Named, h: LossIn) => Tensor> = {
  infonce: ({ a, t, ids0, mask }, h) => {
    const N = h.ids0.shape[0]!;
    const D = h.a.shape[1]!;
    const G = gatherRows(t!, ids0!, { hostIdx: h.ids0.data as Int32Array }); // [N, C, D]
    const logits = mul(sum(mul(reshape(a!, [N, 1, D]), G), -1), 1 / TAU); // [N, C]
    const lp = reshape(slice(logSoftmax(logits), 1, 0, 1), [N]); // [N] log p(positive)
    return mul(sum(mul(lp, mask!)), -1 / msum(h)); // []
  },
  bce: ({ a, t, ids0, ids1, mask }, h) => {
    const sp = sum(mul(a!, gatherRows(t!, ids0!, { hostIdx: h.ids0.data as Int32Array })), -1); // [N]
    const sn = sum(mul(a!, gatherRows(t!, ids1!, { hostIdx: h.ids1.data as Int32Array })), -1); // [N]
    const lp = neg(log(add(sigmoid(sp), 1e-24))); // [N]
    const ln = neg(log(add(add(neg(sigmoid(sn)), 1), 1e-24))); // [N]
    return mul(sum(mul(add(lp, ln), mask!)), 1 / msum(h)); // []
  },
  pairwise: ({ a, t, ids0, ids1, mask }, h) => {
    const sp = sum(mul(a!, gatherRows(t!, ids0!, { hostIdx: h.ids0.data as Int32Array })), -1); // [N]
    const sn = sum(mul(a!, gatherRows(t!, ids1!, { hostIdx: h.ids1.data as Int32Array })), -1); // [N]
    return sum(mul(neg(log(sigmoid(sub(sigmoid(sp), sigmoid(sn))))), mask!)); // []
  },
  multilabel: ({ a, t, mask }, h) => {
    const N = h.a.shape[0]!;
    const A = h.t.shape[0]!;
    const T = refCsrToDense(h.lists, A);
    const tt = Tensor.from(Float32Array.from(T.data), [N, A]); // [N, A] dense targets, uploaded per run
    const t1 = Tensor.from(Float32Array.from(T.data, (v: number) => 1 - v), [N, A]); // [N, A]
    const p = sigmoid(matmul(a!, t!, { transB: true })); // [N, A]
    const l = neg(add(mul(tt, log(p)), mul(t1, log(add(neg(p), 1))))); // [N, A]
    return sum(mul(l, reshape(mask!, [N, 1]))); // []
  },
};

function tfjsLoss(f: LossFamily, tf: Tfjs, t: Record<string, TfT>, h: LossIn): TfT {
  const { a, mask } = t as Record<string, TfT>;
  const tab = t.t!;
  const N = h.a.shape[0]!;
  const m = msum(h);
  if (f === 'infonce') {
    const G = tf.gather(tab, t.ids0!); // [N, C, D]
    const logits = tf.mul(tf.sum(tf.mul(tf.expandDims(a!, 1), G), 2), 1 / TAU); // [N, C]
    const l = tf.sub(tf.logSumExp(logits, 1), tf.reshape(tf.slice(logits, [0, 0], [N, 1]), [N])); // [N]
    return tf.mul(tf.sum(tf.mul(l, mask!)), 1 / m);
  }
  if (f === 'multilabel') {
    const p = tf.sigmoid(tf.matMul(a!, tab, false, true)); // [N, A]
    const l = tf.neg(tf.add(tf.mul(t.dense!, tf.log(p)), tf.mul(tf.sub(1, t.dense!), tf.log(tf.sub(1, p))))); // [N, A]
    return tf.sum(tf.mul(l, tf.reshape(mask!, [N, 1])));
  }
  const sp = tf.sum(tf.mul(a!, tf.gather(tab, t.ids0!)), 1); // [N]
  const sn = tf.sum(tf.mul(a!, tf.gather(tab, t.ids1!)), 1); // [N]
  if (f === 'bce') {
    const l = tf.add(tf.neg(tf.log(tf.add(tf.sigmoid(sp), 1e-24))), tf.neg(tf.log(tf.add(tf.sub(1, tf.sigmoid(sn)), 1e-24))));
    return tf.mul(tf.sum(tf.mul(l, mask!)), 1 / m);
  }
  return tf.sum(tf.mul(tf.neg(tf.log(tf.sigmoid(tf.sub(tf.sigmoid(sp), tf.sigmoid(sn))))), mask!));
}

/**
 * The entry of one loss family: op (the kernel file), optional row name, dims, and whether it has an
 * all-rows-valid variant of the fused kernel.
 */
export function lossEntry(op: string, f: LossFamily, d: LossDims, o: { name?: string; allRows?: boolean } = {}): BenchEntry<LossIn> {
  const N = d.B * d.L;
  const { D, V, C } = d;
  const shape =
    f === 'infonce' ? `N${N} (B${d.B} L${d.L}) C${C} D${D} V${V}` : f === 'multilabel' ? `N${N} (B${d.B} L${d.L}) A${V} D${D}` : `N${N} (B${d.B} L${d.L}) D${D} V${V}`;
  const flops = f === 'infonce' ? 3 * 2 * N * C * D : f === 'multilabel' ? 3 * 2 * N * V * D : 3 * 2 * 2 * N * D;
  const bytes =
    f === 'infonce' ? 4 * (3 * N * C * D + 2 * N * D + V * D + N * C) : f === 'multilabel' ? 4 * (2 * N * V + 2 * N * D + 2 * V * D) : 4 * (6 * N * D + V * D);
  const grads = ['a', 't'];
  const tensors = (allRows: boolean) => (h: LossIn): Named => ({
    a: Tensor.from(h.a.data, h.a.shape), // [N, D]
    t: Tensor.from(h.t.data, h.t.shape), // [V, D] | [A, D]
    ids0: Tensor.from(h.ids0.data, h.ids0.shape, 'i32'), // [N, C] | [N]
    ids1: Tensor.from(h.ids1.data, h.ids1.shape, 'i32'), // [N]
    mask: Tensor.from(allRows ? ones(N) : h.mask.data, [N]), // [N]
  });
  const variants: Variant<LossIn>[] = [
    engineVariant('fused', 'fused', { tensors: tensors(false), grads, forward: (t, h) => fused[f](t, h) }),
    ...(o.allRows ? [engineVariant<LossIn>('fused_allrows', 'alt', { tensors: tensors(true), grads, refKey: 'allrows', forward: (t, h) => fused[f](t, h) })] : []),
    engineVariant('composed', 'composed', { tensors: tensors(false), grads, forward: (t, h) => composed[f](t, h) }),
    tfjsVariant<LossIn>({
      grads,
      tensors: (tf, h) => ({
        a: tf.tensor2d(h.a.data as Float32Array, h.a.shape as [number, number]),
        t: tf.tensor2d(h.t.data as Float32Array, h.t.shape as [number, number]),
        mask: tf.tensor1d(h.mask.data as Float32Array),
        ids0: tf.tensor(h.ids0.data, h.ids0.shape, 'int32'),
        ids1: tf.tensor(h.ids1.data, h.ids1.shape, 'int32'),
        ...(f === 'multilabel' ? { dense: tf.tensor2d(Float32Array.from(refCsrToDense(h.lists, V).data), [N, V]) } : {}),
      }),
      forward: (tf, t, h) => tfjsLoss(f, tf, t, h),
    }),
  ];
  return {
    op,
    ...(o.name ? { name: o.name } : {}),
    shape,
    dims: { B: d.B, L: d.L, N, D, V, ...(f === 'infonce' ? { C } : {}) },
    flops,
    bytes,
    inputs: () => lossInputs(f, d),
    reference: (h, key) => lossReference(f, h, key === 'allrows'),
    check: lossCheck,
    variants,
  };
}
