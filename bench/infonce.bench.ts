// The fused loss kernels of kernels/infonce.ts and kernels/pairwise.ts against the same math composed from this
// engine's unfused ops and against @tensorflow/tfjs-backend-webgpu on the same adapter. Every run() is forward +
// backward (upstream gradient 1) into every float input; validate() checks the loss and sampled gradients of
// every row against the float64 reference.
//
// Shapes (S3REC_SPEC §4-§5) and masks. Batches are left-padded like the official loaders; sequence lengths are
// drawn so the share of real positions matches Beauty (measured from Beauty.txt: 11.5% of fine-tuning slots and
// 16.3% of pretraining slots are real):
//   infonce     fine-tuning positions N = B·L = 256·50, C = 16 candidates (column 0 positive, 15 sampled
//               negatives), D = 64, V = 12103 items, tau = 0.1, mask = real positions (~12%).
//               `infonce.fused_allrows`: the same with every row valid (the worst case for the fused kernel).
//   bce_ft      the official fine-tuning loss at N = 12800, D = 64, V = 12103; pos = 0 at padded positions.
//   pairwise    MIP (id form) at pretraining N = B·L = 100·50, D = 64, V = 12103, mask = masked positions (~5%).
//   multilabel  AAP at N = 5000, A = 638 attributes, D = 64, mask = unmasked real positions (~12%), ~2.5 positive
//               attributes per row. `multilabel.fused_allrows`: every row valid.
// Rows: <family>.fused (this repo's fused kernel), <family>.composed (unfused engine ops + autograd: gatherRows
// with host ids, mul, sum, logSoftmax, slice, sigmoid, log, matmul), <family>.tfjs (tf.gather, tf.mul, tf.sum,
// tf.logSumExp, tf.sigmoid, tf.log, tf.matMul with tf.grads). The composed and tfjs rows compute every row and
// mask afterwards, as the straightforward composition does; the composed BCE has no -100 clamp (loss.ts's bce
// is not used so that the rows only need elementwise ops; no value here comes near the clamp).
// GFLOP/s and GB/s count all N rows, also for the masked rows (the fused kernels skip masked rows).
//
// Measured 2026-11-23 (npm run bench -- infonce bce_ft pairwise multilabel --reps 9; llvmpipe, 2 cores shared
// with other jobs, load average 5-8, so absolute times are inflated; rows of one family ran interleaved):
//   family       fused ms   fused_allrows ms   composed ms   tfjs ms   fused vs composed / vs tfjs
//   infonce         47.4         143.8            3347.9      5393.0    70.6x / 113.8x (all rows 23x / 37.5x)
//   bce_ft          16.7            -               239.7       309.2    14.4x / 18.6x
//   pairwise         5.4            -                59.5       101.1    11.0x / 18.7x
//   multilabel      55.8         286.6            2370.8      2307.7    42.5x / 41.4x (all rows 8.3x / 8.1x)
// In the compositions most time goes to reduce_sum_rows over [N*C, 64] and to the broadcast mul / broadcast_to
// kernels of the backward; the fused kernels are bound by the random row gathers from the [V, D] table.
import { backward, ref, reshape, Tensor } from '../engine/index.js';
import { add, log, mul, neg, sigmoid, sub } from '../kernels/elementwise.js';
import { infonce, refInfonce, refInfonceGrad } from '../kernels/infonce.js';
import { matmul } from '../kernels/matmul.js';
import {
  bceNegSampling,
  csrTargets,
  multiLabelBce,
  pairwiseSigmoidLossIds,
  refCsrToDense,
  refMultiLabelBce,
  refMultiLabelBceGrad,
  refPairGrad,
  refPairLoss,
} from '../kernels/pairwise.js';
import { sum } from '../kernels/reduce.js';
import { gatherRows, slice } from '../kernels/shape.js';
import { logSoftmax } from '../kernels/softmax.js';
import { validateClose, validateSampled } from './common.js';
import { getTfjs, tfjsSync, type Tfjs } from './tfjs.js';
import type { BenchCase, BenchInstance } from './types.js';

type F64 = ref.F64;
type Family = 'infonce' | 'bce_ft' | 'pairwise' | 'multilabel';

// ------------------------------------------------------------------ host data
interface Host {
  family: Family;
  shape: string;
  /** Differentiable inputs (f32 host copies): infonce q, table; bce/pairwise h, table; multilabel x, attr. */
  params: F64[];
  /** Integer inputs: infonce cand [N, C]; bce/pairwise pos, neg [N]. */
  ids: Int32Array[];
  /** Row weights [N] (bce: pos > 0). */
  mask: Float64Array;
  /** multilabel: positive attribute ids per row. */
  lists: number[][];
  dims: { N: number; D: number; V: number; C: number };
  flops: number;
  bytes: number;
}

/** Left-padded batch of B sequences of L slots with lengths uniform in [1, maxLen]: 1 at real slots. */
function paddedValid(B: number, L: number, maxLen: number, rnd: () => number): Float64Array {
  const v = new Float64Array(B * L);
  for (let b = 0; b < B; b++) {
    const len = 1 + Math.floor(rnd() * maxLen);
    for (let t = L - len; t < L; t++) v[b * L + t] = 1;
  }
  return v;
}

const TAU = 0.1;
const D = 64;
const V = 12103;

function host(family: Family, allRows = false): Host {
  const rnd = ref.mulberry32(20241123);
  const mk = (shape: number[], s: number): F64 => ({ data: Float64Array.from({ length: shape[0]! * shape[1]! }, () => Math.fround((rnd() * 2 - 1) * s)), shape });
  const item = (): number => 1 + Math.floor(rnd() * (V - 1));
  if (family === 'infonce' || family === 'bce_ft') {
    const N = 256 * 50;
    const C = family === 'infonce' ? 16 : 2;
    const valid = allRows ? new Float64Array(N).fill(1) : paddedValid(256, 50, 11, rnd);
    const params = [mk([N, D], 0.5), mk([V, D], 0.5)];
    if (family === 'infonce') {
      const cand = Int32Array.from({ length: N * C }, item);
      return {
        family,
        shape: `N${N} (B256 L50) C${C} D${D} V${V}`,
        params,
        ids: [cand],
        mask: valid,
        lists: [],
        dims: { N, D, V, C },
        flops: 3 * 2 * N * C * D,
        bytes: 4 * (3 * N * C * D + 2 * N * D + V * D + N * C),
      };
    }
    const pos = Int32Array.from({ length: N }, (_, n) => (valid[n] ? item() : 0));
    const negs = Int32Array.from({ length: N }, (_, n) => (valid[n] ? item() : 0));
    return {
      family,
      shape: `N${N} (B256 L50) D${D} V${V}`,
      params,
      ids: [pos, negs],
      mask: Float64Array.from(pos, (p) => (p > 0 ? 1 : 0)),
      lists: [],
      dims: { N, D, V, C },
      flops: 3 * 2 * 2 * N * D,
      bytes: 4 * (6 * N * D + V * D),
    };
  }
  const N = 100 * 50;
  const valid = paddedValid(100, 50, 16, rnd);
  // Pretraining item masking (§4.1): each real slot is masked with p = 0.2, the last slot of a sequence always.
  const masked = Float64Array.from(valid, (v, n) => (v && (n % 50 === 49 || rnd() < 0.2) ? 1 : 0));
  if (family === 'pairwise') {
    return {
      family,
      shape: `N${N} (B100 L50) D${D} V${V}`,
      params: [mk([N, D], 0.5), mk([V, D], 0.5)],
      ids: [Int32Array.from({ length: N }, item), Int32Array.from({ length: N }, item)],
      mask: masked,
      lists: [],
      dims: { N, D, V, C: 2 },
      flops: 3 * 2 * 2 * N * D,
      bytes: 4 * (6 * N * D + V * D),
    };
  }
  const A = 638;
  const aap = allRows ? new Float64Array(N).fill(1) : Float64Array.from(valid, (v, n) => (v && !masked[n] ? 1 : 0));
  const lists = Array.from({ length: N }, () => Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => 1 + Math.floor(rnd() * (A - 1))));
  return {
    family,
    shape: `N${N} (B100 L50) A${A} D${D}`,
    params: [mk([N, D], 0.2), mk([A, D], 0.2)],
    ids: [],
    mask: aap,
    lists,
    dims: { N, D, V: A, C: A },
    flops: 3 * 2 * N * A * D,
    bytes: 4 * (2 * N * A + 2 * N * D + 2 * A * D),
  };
}

// ------------------------------------------------------------------ reference and validation
interface Want {
  loss: number;
  grads: F64[];
}

function reference(h: Host): Want {
  const [a, t] = h.params as [F64, F64];
  const { N, C } = h.dims;
  const mask: F64 = { data: h.mask, shape: [N] };
  if (h.family === 'infonce') {
    const cand: F64 = { data: Float64Array.from(h.ids[0]!), shape: [N, C] };
    const o = { temperature: TAU, mask, reduction: 'mean' as const };
    return { loss: refInfonce(a, t, cand, o).data[0]!, grads: refInfonceGrad(a, t, cand, o, 1) };
  }
  if (h.family === 'multilabel') {
    const T = refCsrToDense(h.lists, t.shape[0]!);
    return { loss: refMultiLabelBce(a, t, T, mask, 'sum').data[0]!, grads: refMultiLabelBceGrad(a, t, T, mask, 'sum', 1) };
  }
  const x = {
    kind: h.family === 'bce_ft' ? ('bce_neg_sampling' as const) : ('pairwise_sigmoid' as const),
    a,
    table: t,
    posIds: { data: Float64Array.from(h.ids[0]!), shape: [N] },
    negIds: { data: Float64Array.from(h.ids[1]!), shape: [N] },
    mask: h.family === 'bce_ft' ? null : mask,
    reduction: h.family === 'bce_ft' ? ('mean' as const) : ('sum' as const),
  };
  const g = refPairGrad(x, 1);
  return { loss: refPairLoss(x).data[0]!, grads: [g.da, g.dtable!] };
}

const wantCache = new Map<string, Want>();
function wantFor(h: Host): Want {
  const k = `${h.family}|${h.mask.reduce((a, b) => a + b, 0)}`;
  let w = wantCache.get(k);
  if (!w) {
    w = reference(h);
    wantCache.set(k, w);
  }
  return w;
}

function validate(what: string, h: Host, loss: number, grads: ArrayLike<number>[]): void {
  const w = wantFor(h);
  validateClose(`${what} loss`, [loss], [w.loss], { atol: 1e-5, rtol: 2e-4 });
  grads.forEach((g, i) => {
    const want = w.grads[i]!.data;
    let scale = 0;
    for (const v of want) scale = Math.max(scale, Math.abs(v));
    validateSampled(`${what} grad[${i}]`, g, (j) => want[j]!, { atol: 1e-4 * scale + 1e-9, rtol: 1e-3 }, 2048);
  });
}

// ------------------------------------------------------------------ engine rows (fused, composed)
type EngineLoss = (params: Tensor[], ids: Tensor[], mask: Tensor, h: Host) => Tensor;

function engineCase(name: string, family: Family, f: EngineLoss, allRows = false): BenchCase {
  const h0 = host(family, allRows);
  return {
    name,
    shape: h0.shape,
    flops: h0.flops,
    bytes: h0.bytes,
    setup(): BenchInstance {
      const h = host(family, allRows);
      const params = h.params.map((p) => Tensor.from(Float32Array.from(p.data), p.shape).requireGrad());
      const ids = h.ids.map((x) => Tensor.from(x, x.length === h.dims.N * h.dims.C && family === 'infonce' ? [h.dims.N, h.dims.C] : [x.length]));
      const mask = Tensor.from(Float32Array.from(h.mask)); // [N]
      let last: Tensor | null = null;
      const clear = (): void => {
        for (const p of params) {
          p.grad?.dispose();
          p.grad = null;
        }
        last?.dispose();
        last = null;
      };
      const run = (): void => {
        clear();
        last = f(params, ids, mask, h);
        backward(last);
      };
      return {
        run,
        async validate() {
          run();
          const loss = (await last!.toArray())[0]!;
          validate(name, h, loss, await Promise.all(params.map((p) => p.grad!.toArray())));
        },
        dispose() {
          clear();
          for (const t of [...params, ...ids, mask]) t.dispose();
        },
      };
    },
  };
}

const fused: Record<Family, EngineLoss> = {
  infonce: ([q, t], [cand], mask) => infonce(q!, t!, cand!, { temperature: TAU, mask }),
  bce_ft: ([h, t], [pos, negs]) => bceNegSampling(h!, t!, pos!, negs!),
  pairwise: ([h, t], [pos, negs], mask) => pairwiseSigmoidLossIds(h!, t!, pos!, negs!, { mask }),
  multilabel: ([x, a], _ids, mask, h) => {
    const targets = csrTargets(h.lists);
    const l = multiLabelBce(x!, a!, targets, { mask });
    targets.offsets.dispose();
    targets.ids.dispose();
    return l;
  },
};

const msum = (h: Host): number => h.mask.reduce((s, v) => s + v, 0);

/** The same math from unfused engine ops; autograd does the backward. */
const composed: Record<Family, EngineLoss> = {
  infonce: ([q, t], [cand], mask, h) => {
    const { N, C } = h.dims;
    const G = gatherRows(t!, cand!, { hostIdx: h.ids[0]! }); // [N, C, D]
    const q3 = reshape(q!, [N, 1, D]); // [N, 1, D]
    const logits = mul(sum(mul(q3, G), -1), 1 / TAU); // [N, C]
    const lp = reshape(slice(logSoftmax(logits), 1, 0, 1), [N]); // [N] log p(positive)
    return mul(sum(mul(lp, mask)), -1 / msum(h)); // []
  },
  bce_ft: ([hh, t], [pos, negs], mask, h) => {
    const sp = sum(mul(hh!, gatherRows(t!, pos!, { hostIdx: h.ids[0]! })), -1); // [N]
    const sn = sum(mul(hh!, gatherRows(t!, negs!, { hostIdx: h.ids[1]! })), -1); // [N]
    const lp = neg(log(add(sigmoid(sp), 1e-24))); // [N]
    const ln = neg(log(add(add(neg(sigmoid(sn)), 1), 1e-24))); // [N]
    return mul(sum(mul(add(lp, ln), mask)), 1 / msum(h)); // []
  },
  pairwise: ([hh, t], [pos, negs], mask, h) => {
    const sp = sum(mul(hh!, gatherRows(t!, pos!, { hostIdx: h.ids[0]! })), -1); // [N]
    const sn = sum(mul(hh!, gatherRows(t!, negs!, { hostIdx: h.ids[1]! })), -1); // [N]
    const l = neg(log(sigmoid(sub(sigmoid(sp), sigmoid(sn))))); // [N]
    return sum(mul(l, mask)); // []
  },
  multilabel: ([x, a], _ids, mask, h) => {
    const { N } = h.dims;
    const A = a!.shape[0]!;
    const T = refCsrToDense(h.lists, A);
    const t = Tensor.from(Float32Array.from(T.data), [N, A]); // [N, A]
    const t1 = Tensor.from(Float32Array.from(T.data, (v) => 1 - v), [N, A]); // [N, A]
    const p = sigmoid(matmul(x!, a!, { transB: true })); // [N, A]
    const l = neg(add(mul(t, log(p)), mul(t1, log(add(neg(p), 1))))); // [N, A]
    const out = sum(mul(l, reshape(mask, [N, 1]))); // []
    t.dispose();
    t1.dispose();
    return out;
  },
};

// ------------------------------------------------------------------ tfjs rows
type TfT = ReturnType<Tfjs['tensor']>;

function tfjsCase(family: Family): BenchCase {
  const h0 = host(family);
  return {
    name: `${family}.tfjs`,
    shape: h0.shape,
    flops: h0.flops,
    bytes: h0.bytes,
    async setup(): Promise<BenchInstance> {
      const tf = await getTfjs();
      const h = host(family);
      const { N, C } = h.dims;
      const [pa, pt] = h.params.map((p) => tf.tensor2d(Float32Array.from(p.data), p.shape as [number, number])) as [TfT, TfT];
      const mask = tf.tensor1d(Float32Array.from(h.mask));
      const m = msum(h);
      const ids = h.ids.map((x) => (family === 'infonce' ? tf.tensor2d(x, [N, C], 'int32') : tf.tensor1d(x, 'int32')));
      const A = family === 'multilabel' ? h.params[1]!.shape[0]! : 0;
      const T = family === 'multilabel' ? refCsrToDense(h.lists, A) : null;
      const tt = T ? tf.tensor2d(Float32Array.from(T.data), [N, A]) : null;
      const f = (a: TfT, t: TfT): TfT => {
        if (family === 'infonce') {
          const G = tf.gather(t, ids[0]!); // [N, C, D]
          const logits = tf.mul(tf.sum(tf.mul(tf.expandDims(a, 1), G), 2), 1 / TAU); // [N, C]
          const l = tf.sub(tf.logSumExp(logits, 1), tf.reshape(tf.slice(logits, [0, 0], [N, 1]), [N])); // [N]
          return tf.mul(tf.sum(tf.mul(l, mask)), 1 / m);
        }
        if (family === 'multilabel') {
          const p = tf.sigmoid(tf.matMul(a, t, false, true)); // [N, A]
          const l = tf.neg(tf.add(tf.mul(tt!, tf.log(p)), tf.mul(tf.sub(1, tt!), tf.log(tf.sub(1, p))))); // [N, A]
          return tf.sum(tf.mul(l, tf.reshape(mask, [N, 1])));
        }
        const sp = tf.sum(tf.mul(a, tf.gather(t, ids[0]!)), 1); // [N]
        const sn = tf.sum(tf.mul(a, tf.gather(t, ids[1]!)), 1); // [N]
        if (family === 'bce_ft') {
          const l = tf.add(tf.neg(tf.log(tf.add(tf.sigmoid(sp), 1e-24))), tf.neg(tf.log(tf.add(tf.sub(1, tf.sigmoid(sn)), 1e-24))));
          return tf.mul(tf.sum(tf.mul(l, mask)), 1 / m);
        }
        return tf.sum(tf.mul(tf.neg(tf.log(tf.sigmoid(tf.sub(tf.sigmoid(sp), tf.sigmoid(sn))))), mask));
      };
      const g = tf.valueAndGrads((a: TfT, t: TfT) => f(a, t) as ReturnType<Tfjs['scalar']>);
      let outs: TfT[] = [];
      const run = async (): Promise<void> => {
        for (const t of outs) t.dispose();
        outs = tf.tidy(() => {
          const r = g([pa, pt]);
          return [r.value, ...r.grads];
        });
        await tfjsSync();
      };
      return {
        run,
        async validate() {
          await run();
          const vals = await Promise.all(outs.map(async (t) => Float64Array.from(await t.data())));
          validate(`${family}.tfjs`, h, vals[0]![0]!, vals.slice(1));
        },
        dispose() {
          for (const t of [...outs, pa, pt, mask, ...ids, ...(tt ? [tt] : [])]) t.dispose();
        },
      };
    },
  };
}

export const cases: BenchCase[] = [
  engineCase('infonce.fused', 'infonce', fused.infonce),
  engineCase('infonce.fused_allrows', 'infonce', fused.infonce, true),
  engineCase('infonce.composed', 'infonce', composed.infonce),
  tfjsCase('infonce'),
  engineCase('bce_ft.fused', 'bce_ft', fused.bce_ft),
  engineCase('bce_ft.composed', 'bce_ft', composed.bce_ft),
  tfjsCase('bce_ft'),
  engineCase('pairwise.fused', 'pairwise', fused.pairwise),
  engineCase('pairwise.composed', 'pairwise', composed.pairwise),
  tfjsCase('pairwise'),
  engineCase('multilabel.fused', 'multilabel', fused.multilabel),
  engineCase('multilabel.fused_allrows', 'multilabel', fused.multilabel, true),
  engineCase('multilabel.composed', 'multilabel', composed.multilabel),
  tfjsCase('multilabel'),
];
