// End-to-end training steps beside the kernel rows, at the official shapes on generated data of realistic size:
//   e2e.s3rec.pretrain_step   one S3-Rec pretraining step (models/s3rec_pretrain.ts pretrainStep: the packed
//                             4-pass encoder, AAP + MIP + MAP + SP, backward, Adam), batch 100 (the official
//                             pretraining batch), L 50, hidden 64, 2 layers, 12,103 items, 638 attributes
//   e2e.s3rec.finetune_step   one S3-Rec fine-tuning step (models/s3rec_train.ts trainStep: varlen encoder, BCE
//                             with one sampled negative, backward, Adam), batch 256, L 50, hidden 64, 12,103 items
//   e2e.attrec.train_step     one AttRec step as trainAttRec runs it (the fused step, kernels/attrec_step.ts), batch
//                             1000 windows, L 5, T 3, d 150, 943 users, 1,683 item rows
//   e2e.attrec.train_step_autograd   the same step through the tape (model.loss, backward, Adagrad.step)
// Data: Beauty-like users (sequence lengths from Beauty's measured distribution, popularity-skewed item ids, 1-6
// attributes per item) and ML-100k-like users (20 + exponential lengths, mean ~106 ratings); the batch is built
// once, as the training loops' prefetchers do, outside the timed step (the pretraining step packs and uploads its
// encoder batch itself, as in training).
// Validation (there is no float64 reference of a whole model step at this size): the step runs twice from the
// same initial weights, optimizer state and RNG seed; the loss must be finite and bit-identical between the runs,
// every parameter after the step finite and bit-identical, and some parameters changed. The loss at
// initialisation is also checked against its analytic value where there is one: fine-tuning 2·ln 2 (scores near
// 0 at init std 0.02: -ln σ(0) - ln(1 - σ(0)), within 0.05); AttRec B·T·margin (every distance near 0 at init
// std 0.001, within 5%).
import { backward, manualSeed, ref, scope, type Tensor, zeros } from '../engine/index.js';
import {
  Adagrad, Adam, AttRec, AttRecFusedStep, buildWindows, data, disposeAttRecBatch, encoderBatch, PRETRAIN_WEIGHTS, PretrainBatcher, pretrainStep,
  S3RecModel, trainStep, uploadAttRecBatch, type Module, type PretrainHostBatch,
} from '../models/index.js';
import { beautyLength, skewedItem, storageB } from './common.js';
import type { BenchEntry, BenchSize, Instance, Outputs, Reference } from './types.js';

const SEED = 42;

// ------------------------------------------------------------------ S3-Rec
interface S3Cfg {
  users: number;
  items: number; // max item id
  attrs: number; // attributeSize (max attribute + 1)
  B: number;
  L: number;
  hidden: number;
  layers: number;
}

interface S3In {
  cfg: S3Cfg;
  itemSize: number;
  sequences: Int32Array[];
  attributes: Int32Array[];
}

const s3Memo = new Map<string, S3In>();
function s3Data(cfg: S3Cfg): S3In {
  const key = JSON.stringify(cfg);
  let h = s3Memo.get(key);
  if (h) return h;
  const rnd = ref.mulberry32(SEED);
  // Full sequences: the fine-tuning input is items[:-3], so a Beauty fine-tuning length n means n + 3 items.
  const sequences = Array.from({ length: cfg.users }, () => Int32Array.from({ length: beautyLength(rnd, cfg.L) + 3 }, () => skewedItem(rnd, cfg.items + 1)));
  const attributes = Array.from({ length: cfg.items + 2 }, (_, i) =>
    i === 0 || i > cfg.items ? new Int32Array(0) : Int32Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => 1 + Math.floor(rnd() * (cfg.attrs - 1))),
  );
  h = { cfg, itemSize: cfg.items + 2, sequences, attributes };
  s3Memo.set(key, h);
  return h;
}

const newS3Model = (h: S3In): S3RecModel => {
  manualSeed(SEED);
  return new S3RecModel({ itemSize: h.itemSize, attributeSize: h.cfg.attrs, hiddenSize: h.cfg.hidden, numHiddenLayers: h.cfg.layers, maxSeqLength: h.cfg.L });
};

async function params(m: Module): Promise<Float32Array[]> {
  return Promise.all([...m.stateDict().values()].map(async (t) => (await t.toArray()) as Float32Array));
}

const flat = (xs: Float32Array[]): Float32Array => {
  const out = new Float32Array(xs.reduce((a, x) => a + x.length, 0));
  let o = 0;
  for (const x of xs) {
    out.set(x, o);
    o += x.length;
  }
  return out;
};

/** Run `step` once on a fresh model (same seeds every time): the loss, every parameter after, and how many changed. */
async function freshStep<M extends Module>(make: () => M, step: (m: M) => Promise<number>): Promise<Outputs> {
  const m = make();
  try {
    m.train();
    const before = flat(await params(m));
    manualSeed(SEED + 1); // the step's dropout stream
    const loss = await step(m);
    const after = flat(await params(m));
    let changed = 0;
    for (let i = 0; i < after.length; i++) if (after[i] !== before[i]) changed++;
    return { loss: [loss], params: after, changed: [changed] };
  } finally {
    m.dispose();
  }
}

const bits = (a: ArrayLike<number>): Uint32Array => new Uint32Array(Float32Array.from(a).buffer);

/** Finite, bit-identical to the first run, some parameters changed, and the analytic initial loss where known. */
function stepCheck(expected?: { loss: number; tol: number; what: string }) {
  return (what: string, got: Outputs, want: Reference): void => {
    const loss = got.loss![0]!;
    if (!Number.isFinite(loss)) throw new Error(`${what}: the loss is ${loss}`);
    const w = want.loss as ArrayLike<number>;
    if (bits([loss])[0] !== bits(w)[0]) throw new Error(`${what}: loss ${loss} differs from the first run's ${w[0]} (same weights, batch and seed)`);
    const gp = got.params!;
    const wp = want.params as ArrayLike<number>;
    if (gp.length !== wp.length) throw new Error(`${what}: ${gp.length} parameter values, the first run had ${wp.length}`);
    const gb = bits(gp);
    const wb = bits(wp);
    for (let i = 0; i < gb.length; i++) {
      if (!Number.isFinite(gp[i]!)) throw new Error(`${what}: parameter value [${i}] is ${gp[i]} after the step`);
      if (gb[i] !== wb[i]) throw new Error(`${what}: parameter value [${i}] = ${gp[i]} differs from the first run's ${wp[i]}`);
    }
    if (!(got.changed![0]! > 0)) throw new Error(`${what}: the step changed no parameter`);
    if (expected && !(Math.abs(loss - expected.loss) <= expected.tol)) {
      throw new Error(`${what}: initial loss ${loss}, expected ${expected.what} = ${expected.loss} within ${expected.tol}`);
    }
  };
}

function finetuneEntry(cfg: S3Cfg): BenchEntry<S3In & { batch: data.FinetuneTrainBatch }> {
  return {
    op: 'e2e',
    name: 'e2e.s3rec',
    shape: `fine-tuning B${cfg.B} L${cfg.L} H${cfg.hidden} x${cfg.layers} V${cfg.items + 2} (Beauty-like)`,
    dims: { B: cfg.B, L: cfg.L, H: cfg.hidden, layers: cfg.layers, V: cfg.items + 2 },
    inputs: () => {
      const h = s3Data(cfg);
      const users = Int32Array.from({ length: cfg.B }, (_, i) => i);
      const batch = data.buildFinetuneTrainBatch(h.sequences, users, { maxLen: cfg.L, itemSize: h.itemSize, rng: new data.Rng(SEED) });
      return { ...h, batch };
    },
    reference: (h) => finetuneRun(h),
    check: stepCheck({ loss: 2 * Math.LN2, tol: 0.05, what: '2 ln 2' }),
    variants: [
      {
        name: 'finetune_step',
        kind: 'step',
        setup(h): Instance {
          const model = newS3Model(h);
          model.train();
          const opt = new Adam(model, { lr: 1e-3 });
          const eb = encoderBatch(h.batch.inputIds, cfg.B, cfg.L, 'varlen');
          return {
            run: () => void trainStep(model, opt, eb, h.batch.targetPos, h.batch.targetNeg),
            outputs: () => finetuneRun(h),
            dispose() {
              eb.dispose();
              opt.dispose();
              model.dispose();
            },
          };
        },
      },
    ],
  };
}

function finetuneRun(h: S3In & { batch: data.FinetuneTrainBatch }): Promise<Outputs> {
  const { B, L } = h.cfg;
  return freshStep(
    () => newS3Model(h),
    async (model) => {
      const opt = new Adam(model, { lr: 1e-3 });
      const eb = encoderBatch(h.batch.inputIds, B, L, 'varlen');
      try {
        const loss = trainStep(model, opt, eb, h.batch.targetPos, h.batch.targetNeg, undefined, true)!;
        const v = await loss.item();
        loss.dispose();
        return v;
      } finally {
        eb.dispose();
        opt.dispose();
      }
    },
  );
}

function pretrainBatchOf(h: S3In): PretrainHostBatch {
  const { B, L } = h.cfg;
  const prefixes = data.pretrainPrefixes(h.sequences, L);
  const bt = new PretrainBatcher(h.sequences, prefixes, {
    itemSize: h.itemSize, maskId: h.itemSize - 1, longSequence: data.longSequence(h.sequences), maskP: 0.2, maxLen: L, batchSize: B,
  });
  return bt.build(data.epochOrder(prefixes.count, SEED, 0).subarray(0, B), new data.Rng(SEED));
}

const PRE_OPTS = { objective: 'official' as const, path: 'varlen' as const, weights: PRETRAIN_WEIGHTS, temperature: 1 };

function pretrainRun(h: S3In & { batch: PretrainHostBatch }): Promise<Outputs> {
  return freshStep(
    () => newS3Model(h),
    async (model) => {
      const opt = new Adam(model, { lr: 1e-3 });
      const sums = [0, 1, 2, 3].map(() => zeros([])); // aap, mip, map, sp
      try {
        pretrainStep(model, opt, h.batch, h.attributes, PRE_OPTS, sums);
        const [aap, mip, map, sp] = await Promise.all(sums.map((s) => s.item()));
        const w = PRETRAIN_WEIGHTS;
        return w.aap * aap! + w.mip * mip! + w.map * map! + w.sp * sp!;
      } finally {
        for (const s of sums) s.dispose();
        opt.dispose();
      }
    },
  );
}

type PreIn = S3In & { batch: PretrainHostBatch };

function pretrainEntry(cfg: S3Cfg): BenchEntry<PreIn> {
  return {
    op: 'e2e',
    name: 'e2e.s3rec',
    shape: `pretraining B${cfg.B} L${cfg.L} H${cfg.hidden} x${cfg.layers} V${cfg.items + 2} A${cfg.attrs} (Beauty-like)`,
    dims: { B: cfg.B, L: cfg.L, H: cfg.hidden, layers: cfg.layers, V: cfg.items + 2, A: cfg.attrs },
    inputs: () => {
      const h = s3Data(cfg);
      return { ...h, batch: pretrainBatchOf(h) };
    },
    reference: (h) => pretrainRun(h),
    check: stepCheck(),
    // The step as the library runs it, and with every weight read from a storage binding (MATMUL_TUNING.uniformB off).
    variants: [pretrainVariant('pretrain_step', (f) => f()), pretrainVariant('pretrain_step_storage_b', storageB)],
  };
}

/** A pretraining-step variant whose work (the step and its validation run) is recorded inside `wrap`. */
function pretrainVariant(name: string, wrap: <T>(f: () => T) => T): BenchEntry<PreIn>['variants'][number] {
  return {
    name,
    kind: 'step',
    setup(h): Instance {
      const model = newS3Model(h);
      model.train();
      const opt = new Adam(model, { lr: 1e-3 });
      return {
        run: () => wrap(() => pretrainStep(model, opt, h.batch, h.attributes, PRE_OPTS)),
        outputs: () => wrap(() => pretrainRun(h)),
        dispose() {
          opt.dispose();
          model.dispose();
        },
      };
    },
  };
}

// ------------------------------------------------------------------ AttRec
interface AttCfg {
  users: number;
  items: number; // max item id (numItems = items + 1)
  B: number;
  L: number;
  T: number;
  d: number;
}

interface AttIn {
  cfg: AttCfg;
  users: Int32Array;
  inputs: Int32Array;
  targets: Int32Array;
  negatives: Int32Array;
}

function attInputs(cfg: AttCfg): AttIn {
  const rnd = ref.mulberry32(SEED);
  // ML-100k-like: every user rated >= 20 items, ~106 on average (exponential tail), popularity-skewed ids.
  const seqs = Array.from({ length: cfg.users }, () => {
    const n = Math.min(cfg.items, 20 + Math.floor(-86 * Math.log(1 - rnd())));
    return Int32Array.from({ length: n }, () => skewedItem(rnd, cfg.items + 1));
  });
  const windows = buildWindows(seqs, cfg.L, cfg.T);
  const idx = data.epochOrder(windows.count, SEED, 0).subarray(0, cfg.B);
  const b = data.buildAttRecBatch(windows, idx, { numItems: cfg.items + 1, rng: new data.Rng(SEED) });
  return { cfg, users: b.users, inputs: b.inputs, targets: b.targets, negatives: b.negatives };
}

const newAttRec = (c: AttCfg): AttRec => {
  manualSeed(SEED);
  return new AttRec({ numUsers: c.users, numItems: c.items + 1, dim: c.d, seqLen: c.L });
};

function attrecRun(h: AttIn, fused: boolean): Promise<Outputs> {
  const { L, T, B } = h.cfg;
  return freshStep(
    () => newAttRec(h.cfg),
    async (model) => {
      const opt = new Adagrad(model, { lr: 0.05, initialAccumulatorValue: 0.05 });
      if (fused) {
        const f = new AttRecFusedStep(model, opt, B, T);
        const fb = f.batch(h.users, h.inputs, h.targets, h.negatives);
        try {
          f.resetLoss();
          f.step(fb);
          return await f.lossSum();
        } finally {
          fb.dispose();
          f.dispose();
          opt.dispose();
        }
      }
      const b = uploadAttRecBatch(h.users, h.inputs, h.targets, h.negatives, L, T);
      try {
        const loss: Tensor = scope(() => model.loss(b)); // []
        backward(loss);
        opt.step();
        model.zeroGrad();
        const v = await loss.item();
        loss.dispose();
        return v;
      } finally {
        disposeAttRecBatch(b);
        opt.dispose();
      }
    },
  );
}

function attrecEntry(cfg: AttCfg): BenchEntry<AttIn> {
  return {
    op: 'e2e',
    name: 'e2e.attrec',
    shape: `B${cfg.B} L${cfg.L} T${cfg.T} d${cfg.d} users${cfg.users} V${cfg.items + 1} (ML-100k-like)`,
    dims: { B: cfg.B, L: cfg.L, T: cfg.T, d: cfg.d, users: cfg.users, V: cfg.items + 1 },
    inputs: () => attInputs(cfg),
    reference: (h, key) => attrecRun(h, key === 'fused'),
    // Hinge summed over the batch: every distance is ~0 at init, so the loss is ~B·T·margin (0.5).
    check: stepCheck({ loss: cfg.B * cfg.T * 0.5, tol: 0.05 * cfg.B * cfg.T * 0.5, what: 'B·T·margin' }),
    variants: [
      {
        name: 'train_step',
        kind: 'step',
        refKey: 'fused',
        setup(h): Instance {
          const model = newAttRec(cfg);
          model.train();
          const opt = new Adagrad(model, { lr: 0.05, initialAccumulatorValue: 0.05 });
          const f = new AttRecFusedStep(model, opt, cfg.B, cfg.T);
          const fb = f.batch(h.users, h.inputs, h.targets, h.negatives);
          return {
            run: () => f.step(fb),
            outputs: () => attrecRun(h, true),
            dispose() {
              fb.dispose();
              f.dispose();
              opt.dispose();
              model.dispose();
            },
          };
        },
      },
      {
        name: 'train_step_autograd',
        kind: 'step',
        setup(h): Instance {
          const model = newAttRec(cfg);
          model.train();
          const opt = new Adagrad(model, { lr: 0.05, initialAccumulatorValue: 0.05 });
          const b = uploadAttRecBatch(h.users, h.inputs, h.targets, h.negatives, cfg.L, cfg.T);
          return {
            run() {
              const loss = scope(() => model.loss(b)); // []
              backward(loss);
              opt.step();
              model.zeroGrad();
              loss.dispose();
            },
            outputs: () => attrecRun(h, false),
            dispose() {
              disposeAttRecBatch(b);
              opt.dispose();
              model.dispose();
            },
          };
        },
      },
    ],
  };
}

export function entries(size: BenchSize): BenchEntry[] {
  const tiny = size === 'tiny';
  const s3 = (B: number): S3Cfg =>
    tiny ? { users: 40, items: 60, attrs: 12, B: Math.min(B, 8), L: 10, hidden: 16, layers: 1 } : { users: 2000, items: 12101, attrs: 638, B, L: 50, hidden: 64, layers: 2 };
  return [
    pretrainEntry(s3(100)),
    finetuneEntry(s3(256)),
    attrecEntry(tiny ? { users: 20, items: 40, B: 16, L: 5, T: 3, d: 12 } : { users: 943, items: 1682, B: 1000, L: 5, T: 3, d: 150 }),
  ];
}
