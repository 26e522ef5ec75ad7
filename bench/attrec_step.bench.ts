// attrec_step (kernels/attrec_step.ts): one whole AttRec training step (forward, hinge, backward, L2, Adagrad) at
// ML-100k's sizes (batch 1000 windows, L 5, T 3, d 150, 943 users, 1,683 item rows, popularity-skewed ids), fused
// (the trainer's default) against the same step through the tape (models/attrec.ts loss + backward +
// Adagrad.step: 'composed'). Both are validated against the float64 reference refAttRecStep: the loss and every
// parameter after the step.
import { manualSeed, ref, scope, backward, type Tensor } from '../engine/index.js';
import { refAttRecStep, type AttRecStepDims } from '../kernels/index.js';
import { Adagrad, AttRec, AttRecFusedStep, disposeAttRecBatch, timeSignal, uploadAttRecBatch } from '../models/index.js';
import { skewedItem } from './common.js';
import type { BenchEntry, BenchSize, Instance, Outputs } from './types.js';

const SEED = 42;
const KEYS = ['P', 'V', 'Q', 'X', 'W'] as const;
const HYPER = { alpha: 0.2, margin: 0.5, regW: 0.01, regEmb: 0.001, lr: 0.05, eps: 0, weightDecay: 0 };

interface In {
  d: AttRecStepDims;
  users: Int32Array;
  seq: Int32Array;
  targets: Int32Array;
  negatives: Int32Array;
  /** The initial parameters (float32 values), shared by every variant and the reference. */
  init: Record<(typeof KEYS)[number], Float32Array>;
}

function inputs(d: AttRecStepDims): In {
  const rnd = ref.mulberry32(SEED);
  const item = (): number => skewedItem(rnd, d.N);
  const draw = (n: number, r: number): Float32Array => Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * r);
  // Embeddings of trained magnitude (~0.1) rather than the init's 0.001, so the hinges are mixed and z is not all 0.
  return {
    d,
    users: Int32Array.from({ length: d.B }, () => Math.floor(rnd() * d.U)),
    seq: Int32Array.from({ length: d.B * d.L }, item),
    targets: Int32Array.from({ length: d.B * d.T }, item),
    negatives: Int32Array.from({ length: d.B * d.T }, item),
    init: { P: draw(d.U * d.D, 0.1), V: draw(d.U * d.D, 0.1), Q: draw(d.N * d.D, 0.1), X: draw(d.N * d.D, 0.1), W: draw(d.D * d.D, Math.sqrt(3 / d.D)) },
  };
}

function model(h: In): { m: AttRec; opt: Adagrad } {
  manualSeed(SEED);
  const { d } = h;
  const m = new AttRec({ numUsers: d.U, numItems: d.N, dim: d.D, seqLen: d.L, projectTable: true });
  const names = { P: 'P', V: 'V', Q: 'Q', X: 'X', W: 'linear_project.kernel' } as const;
  m.loadStateDict(Object.fromEntries(KEYS.map((k) => [names[k], { dtype: 'f32' as const, shape: k === 'W' ? [d.D, d.D] : [k === 'P' || k === 'V' ? d.U : d.N, d.D], data: h.init[k] }])));
  m.train();
  return { m, opt: new Adagrad(m, { lr: HYPER.lr, initialAccumulatorValue: 0.05 }) };
}

async function paramsOut(m: AttRec, loss: number): Promise<Outputs> {
  const out: Outputs = { loss: [loss] };
  for (const k of KEYS) out[k] = (await (k === 'W' ? m.W : m[k]).toArray()) as Float32Array;
  return out;
}

function entry(d: AttRecStepDims): BenchEntry<In> {
  const K = 2 * d.T;
  return {
    op: 'attrec_step',
    shape: `B${d.B} L${d.L} T${d.T} d${d.D} users${d.U} V${d.N}`,
    dims: { ...d },
    // The projection of the distinct inputs (~min(N, B L) rows), forward + two backward products, and the
    // per-window work; bytes: the tables read and written once (parameters, accumulators) and the window rows.
    flops: 3 * 2 * Math.min(d.N, d.B * d.L) * d.D * d.D + d.B * (d.L * d.L * d.D * 4 + K * d.D * 8),
    bytes: 4 * (5 * (2 * d.N + 2 * d.U) * d.D + 2 * d.B * (2 * d.L + 2 * K + 1) * d.D),
    inputs: () => inputs(d),
    reference: (h) => {
      const x = {
        dims: d, users: h.users, seq: h.seq, targets: h.targets, negatives: h.negatives, timeSignal: timeSignal(d.L, d.D),
        ...(Object.fromEntries(KEYS.map((k) => [k, Float64Array.from(h.init[k])])) as Record<(typeof KEYS)[number], Float64Array>),
        acc: Object.fromEntries(KEYS.map((k) => [k, new Float64Array(h.init[k].length).fill(0.05)])) as Record<(typeof KEYS)[number], Float64Array>,
      };
      const { loss } = refAttRecStep(x, HYPER);
      return { loss: [loss], P: x.P, V: x.V, Q: x.Q, X: x.X, W: x.W };
    },
    // One Adagrad step moves a parameter by at most lr, with the gradient's f32 error (chains of O(L D) terms).
    tol: { loss: { atol: 1e-3, rtol: 1e-4 }, P: { atol: 2e-5, rtol: 1e-4 }, V: { atol: 2e-5, rtol: 1e-4 }, Q: { atol: 2e-5, rtol: 1e-4 }, X: { atol: 2e-5, rtol: 1e-4 }, W: { atol: 2e-5, rtol: 1e-4 } },
    variants: [
      {
        name: 'fused',
        kind: 'fused',
        setup(h): Instance {
          const { m, opt } = model(h);
          const f = new AttRecFusedStep(m, opt, d.B, d.T);
          const b = f.batch(h.users, h.seq, h.targets, h.negatives);
          return {
            run: () => f.step(b),
            async outputs() {
              const { m: m2, opt: o2 } = model(h);
              const f2 = new AttRecFusedStep(m2, o2, d.B, d.T);
              try {
                f2.resetLoss();
                f2.step(b);
                return await paramsOut(m2, await f2.lossSum());
              } finally {
                f2.dispose();
                o2.dispose();
                m2.dispose();
              }
            },
            dispose() {
              b.dispose();
              f.dispose();
              opt.dispose();
              m.dispose();
            },
          };
        },
      },
      {
        name: 'composed',
        kind: 'composed',
        setup(h): Instance {
          const { m, opt } = model(h);
          const b = uploadAttRecBatch(h.users, h.seq, h.targets, h.negatives, d.L, d.T);
          const step = (mm: AttRec, o: Adagrad): Tensor => {
            const loss = scope(() => mm.loss(b)); // []
            backward(loss);
            o.step();
            mm.zeroGrad();
            return loss;
          };
          return {
            run: () => step(m, opt).dispose(),
            async outputs() {
              const { m: m2, opt: o2 } = model(h);
              try {
                const loss = step(m2, o2);
                const v = await loss.item();
                loss.dispose();
                return await paramsOut(m2, v);
              } finally {
                o2.dispose();
                m2.dispose();
              }
            },
            dispose() {
              disposeAttRecBatch(b);
              opt.dispose();
              m.dispose();
            },
          };
        },
      },
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  return [entry(size === 'tiny' ? { N: 41, U: 20, D: 12, L: 5, T: 3, B: 16 } : { N: 1683, U: 943, D: 150, L: 5, T: 3, B: 1000 })];
}
