// S3-Rec parity against the official code: models/s3rec.ts (padded and varlen encoder paths) against float64
// PyTorch fixtures written by test/fixtures/s3rec/gen_s3rec_fixtures.py, a faithful re-implementation of
// RUCAIBox/CIKM2020-S3Rec models.py S3RecModel + modules.py + trainers.FinetuneTrainer.cross_entropy
// (S3REC_SPEC §3-§5, §11) with dropout 0, a tiny config (H 16, 2 heads, 2 layers, L 6, 12 items, 7 attributes)
// and a wide init (N(0, 0.3)) so that every nonlinearity and every parameter gradient is exercised.
//   finetune.json: causal encoder (additive -10000), the fine-tuning BCE loss, every parameter gradient, and the
//     full-ranking eval scores h_last @ item_embeddings.weight^T.
//   pretrain.json: the four bidirectional encoder passes (additive -1e8), AAP / MIP / MAP / SP (official sums),
//     the joint loss 0.2 AAP + MIP + MAP + 0.5 SP, every parameter gradient of the joint loss, and each single
//     loss's gradients (used to localise a joint-gradient mismatch).
// The fixture parameters are float32 values (the reference cast them to float64), so both sides start from the
// same numbers; the differences come only from f32 arithmetic on this side.
// Regenerate the fixtures: python3 test/fixtures/s3rec/gen_s3rec_fixtures.py (torch + numpy, no network).
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { backward, noGrad, scope, sync } from '../engine/index.js';
import { matmul } from '../kernels/index.js';
import { encoderBatch, S3RecModel, type EncoderBatch, type EncoderPath, type PretrainInputs } from '../models/s3rec.js';
import { describeGpu, expectClose, type Tol } from './harness.js';

// ------------------------------------------------------------------------------------------------ fixtures
interface Arr {
  shape: number[];
  data: number[];
}

interface FixtureConfig {
  itemSize: number;
  attributeSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  maxSeqLength: number;
  maskId: number;
  layerNormEps: number;
  lossWeights: { aap: number; mip: number; map: number; sp: number };
}

interface FixtureBase {
  magic: string;
  version: number;
  generator: string;
  regenerate: string;
  case: string;
  config: FixtureConfig;
  params: Record<string, Arr>;
}

interface FinetuneFixture extends FixtureBase {
  inputs: { batch: number; lengths: number[]; input_ids: Arr; target_pos: Arr; target_neg: Arr };
  outputs: {
    sequence_output: Arr;
    loss: number;
    num_targets: number;
    eval_scores: Arr;
    grads: Record<string, Arr>;
    grads_absent: string[];
  };
}

const SEQ_KEYS = ['masked_item_sequence', 'pos_items', 'neg_items', 'masked_segment_sequence', 'pos_segment', 'neg_segment'] as const;
const LOSSES = ['aap', 'mip', 'map', 'sp'] as const;
type LossName = (typeof LOSSES)[number];
type GradSet = 'joint' | LossName;

interface PretrainFixture extends FixtureBase {
  inputs: { batch: number; prefix_lengths: number[]; item2attributes: Record<string, number[]>; attributes: Arr } & Record<
    (typeof SEQ_KEYS)[number],
    Arr
  >;
  outputs: Record<`${LossName}_loss` | 'joint_loss', number> &
    Record<'encoder_masked_item' | 'encoder_masked_segment' | 'encoder_pos_segment' | 'encoder_neg_segment', Arr> &
    Record<`grads_${GradSet}`, Record<string, Arr>> &
    Record<`grads_${GradSet}_absent`, string[]>;
}

function loadFixture<T extends FixtureBase>(file: string, kind: string): T {
  const fx = JSON.parse(readFileSync(new URL(`./fixtures/s3rec/${file}`, import.meta.url), 'utf8')) as T;
  if (fx.magic !== 'seqrec-s3rec-fixture' || fx.version !== 1 || fx.case !== kind) {
    throw new Error(`${file}: not a version-1 S3-Rec ${kind} fixture (regenerate: ${fx.regenerate ?? 'python3 test/fixtures/s3rec/gen_s3rec_fixtures.py'})`);
  }
  return fx;
}

const FT = loadFixture<FinetuneFixture>('finetune.json', 'finetune');
const PT = loadFixture<PretrainFixture>('pretrain.json', 'pretrain');
const PATHS: EncoderPath[] = ['padded', 'varlen'];

function makeModel(fx: FixtureBase): S3RecModel {
  const c = fx.config;
  expect(c.intermediateSize).toBe(4 * c.hiddenSize); // the model hard-codes 4H, as the official code
  const model = new S3RecModel({
    itemSize: c.itemSize,
    attributeSize: c.attributeSize,
    hiddenSize: c.hiddenSize,
    numHiddenLayers: c.numHiddenLayers,
    numAttentionHeads: c.numAttentionHeads,
    maxSeqLength: c.maxSeqLength,
    hiddenDropoutProb: 0,
    attentionProbsDropoutProb: 0,
    hiddenAct: 'gelu',
    layerNormEps: c.layerNormEps,
  });
  expect(model.maskId).toBe(c.maskId);
  const dict = new Map(
    Object.entries(fx.params).map(([k, v]) => [k, { dtype: 'f32' as const, shape: v.shape, data: Float32Array.from(v.data) }]),
  );
  model.loadStateDict(dict, { strict: true }); // throws on a missing, unexpected or mis-shaped name
  return model;
}

// ------------------------------------------------------------------------------------------------ tolerances
// f32 unit roundoff u = 2^-24 ~ 6e-8. The longest reduction of the forward is 64 terms (dense_2, 4H), whose
// worst-case relative error is ~K u = 3.8e-6 of the sum of |terms|; each post-LN sub-layer renormalises, so the
// error after 2 layers x 2 sub-layers stays ~1e-5 of the tensor's scale (its max |value|): atol = 1e-5 * scale.
// rtol 1e-4 covers the relative amplification of LayerNorm's 1/sigma (sigma ~0.3-2 here), GELU and softmax on
// entries smaller than the scale.
// Gradients are 10x looser: every weight gradient is a further reduction over the encoder rows (24 slots in
// fine-tuning, 96 in the 4 pretraining passes) and over the 7 attributes, the attention backward subtracts
// delta_i = dO_i . O_i (cancellation) and the embedding/LayerNorm backward add more sums. Their scale is the max
// |grad| over the tensors of the same module (weight and bias of one Linear/LayerNorm): a gradient that is zero
// in exact arithmetic (the key biases: softmax is shift invariant) is f32 noise of the size of its sibling
// weight's terms, never of its own (1e-17) value.
const fwdTol = (ref: ArrayLike<number>): Tol => ({ atol: 1e-5 * maxAbs(ref), rtol: 1e-4 });
const gradTol = (scale: number): Tol => ({ atol: 1e-4 * scale, rtol: 1e-3 });
// A loss is one scalar: f32 exp/log (~1e-7 relative each) summed over <= 56 BCE terms, plus the encoder's error.
const lossTol = (ref: number): Tol => ({ atol: 1e-5 * Math.abs(ref), rtol: 1e-4 });

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** Largest |got - want| / (atol + rtol |want|): < 1 passes; printed so the headroom is visible. */
function usage(got: ArrayLike<number>, want: ArrayLike<number>, tol: Tol): number {
  let m = 0;
  for (let i = 0; i < want.length; i++) m = Math.max(m, Math.abs(got[i]! - want[i]!) / (tol.atol + tol.rtol * Math.abs(want[i]!)));
  return m;
}

const moduleOf = (name: string): string => name.slice(0, name.lastIndexOf('.'));

/** Per-module gradient scale (see the tolerance comment). */
function gradScales(grads: Record<string, Arr>): Map<string, number> {
  const s = new Map<string, number>();
  for (const [n, g] of Object.entries(grads)) s.set(moduleOf(n), Math.max(s.get(moduleOf(n)) ?? 0, maxAbs(g.data)));
  return s;
}

interface GradReport {
  errors: string[];
  worst: { name: string; usage: number };
}

/**
 * Every parameter's gradient against the reference: absent ones (torch gives None: the loss never reads them) must
 * have no gradient or an all-zero one; item_embeddings row 0 must be exactly 0 (padding_idx). Collects errors.
 */
async function compareGrads(what: string, model: S3RecModel, want: Record<string, Arr>, absent: readonly string[]): Promise<GradReport> {
  const scales = gradScales(want);
  const errors: string[] = [];
  const worst = { name: '', usage: 0 };
  const names = model.namedParameters().map(([n]) => n);
  expect(new Set(names)).toEqual(new Set(Object.keys(want)));
  const H = model.cfg.hiddenSize;
  for (const [name, p] of model.namedParameters()) {
    const w = want[name]!;
    if (absent.includes(name)) {
      if (p.grad) {
        const g = await p.grad.toArray();
        if (maxAbs(g) !== 0) errors.push(`${what} ${name}: the reference loss does not reach it, but its gradient is non-zero (max |g| ${maxAbs(g)})`);
      }
      continue;
    }
    if (!p.grad) {
      errors.push(`${what} ${name}: no gradient (the reference has max |g| ${maxAbs(w.data)})`);
      continue;
    }
    const g = await p.grad.toArray();
    const tol = gradTol(scales.get(moduleOf(name))!);
    const u = usage(g, w.data, tol);
    if (u > worst.usage) Object.assign(worst, { name, usage: u });
    try {
      expectClose(`${what} grad ${name}`, g, w.data, tol);
    } catch (e) {
      errors.push((e as Error).message);
    }
    if (name === 'item_embeddings.weight') {
      const row0 = maxAbs(g.subarray(0, H));
      if (row0 !== 0) errors.push(`${what} ${name}: the padding row 0 has a non-zero gradient (max |g| ${row0}); padding_idx=0 gives exactly 0`);
    }
  }
  return { errors, worst };
}

const i32 = (a: Arr): Int32Array => Int32Array.from(a.data);

/** Encoder rows [N, H] of `eb` as the padded [B*L, H] rows they stand for: (padded row index, values). */
async function encoderRows(model: S3RecModel, eb: EncoderBatch, causal: boolean): Promise<{ rows: Int32Array; values: Float32Array }> {
  const out = noGrad(() => scope(() => model.encode(eb, causal)));
  const values = (await out.toArray()) as Float32Array;
  out.dispose();
  const rows = eb.packed ? eb.packed.plan.padIndex : Int32Array.from({ length: eb.B * eb.L }, (_, i) => i);
  expect(values.length).toBe(rows.length * model.cfg.hiddenSize);
  return { rows, values };
}

/** Compare encoder rows with the reference [B, L, H] at the rows the path computes (padded: all; varlen: real). */
function compareEncoder(what: string, got: { rows: Int32Array; values: Float32Array }, want: Arr, H: number): number {
  const w = new Float64Array(got.values.length);
  for (let r = 0; r < got.rows.length; r++) for (let h = 0; h < H; h++) w[r * H + h] = want.data[got.rows[r]! * H + h]!;
  const tol = fwdTol(want.data); // scale from the whole reference tensor
  expectClose(what, got.values, w, tol);
  return usage(got.values, w, tol);
}

const fmt = (u: number): string => u.toFixed(3);
type PretrainWeights = Record<LossName, number>;

// ------------------------------------------------------------------------------------------------ fine-tuning
describeGpu('S3-Rec parity: fine-tuning (official finetune() + cross_entropy)', () => {
  const { B, L, H } = { B: FT.inputs.batch, L: FT.config.maxSeqLength, H: FT.config.hiddenSize };
  const ids = i32(FT.inputs.input_ids);
  const tp = i32(FT.inputs.target_pos);
  const tn = i32(FT.inputs.target_neg);

  it('the fixture parameters load strictly and read back bit-exact', async () => {
    const model = makeModel(FT);
    try {
      for (const [name, t] of model.stateDict()) {
        const got = await t.toArray();
        expect(Array.from(got), name).toEqual(Array.from(Float32Array.from(FT.params[name]!.data)));
      }
      // A wrong name or shape is refused (the check the strict load relies on).
      const bad = new Map(Object.entries(FT.params).map(([k, v]) => [k, { dtype: 'f32' as const, shape: v.shape, data: Float32Array.from(v.data) }]));
      bad.delete('sp_norm.bias');
      expect(() => model.loadStateDict(bad, { strict: true })).toThrow(/sp_norm\.bias/);
    } finally {
      model.dispose();
      await sync();
    }
  });

  for (const path of PATHS) {
    it(`${path}: encoder output (causal, -10000) ${path === 'padded' ? 'at every slot, pad rows included' : 'at every real token'}`, async () => {
      const model = makeModel(FT);
      const eb = encoderBatch(ids, B, L, path);
      try {
        model.train(); // dropout p = 0: train and eval are the same function
        const got = await encoderRows(model, eb, true);
        if (path === 'varlen') expect(got.rows.length).toBe(FT.inputs.lengths.reduce((a, b) => a + b, 0));
        const u = compareEncoder(`finetune ${path} sequence_output`, got, FT.outputs.sequence_output, H);
        console.log(`[s3rec parity] finetune ${path} encoder: tolerance used ${fmt(u)}`);
      } finally {
        eb.dispose();
        model.dispose();
        await sync();
      }
    });

    it(`${path}: fine-tuning loss and every parameter gradient`, async () => {
      const model = makeModel(FT);
      const eb = encoderBatch(ids, B, L, path);
      try {
        model.train();
        model.zeroGrad();
        const loss = scope(() => model.finetuneLoss(eb, tp, tn));
        const lv = await loss.item();
        backward(loss);
        loss.dispose();
        expectClose(`finetune ${path} loss`, [lv], [FT.outputs.loss], lossTol(FT.outputs.loss));
        const rep = await compareGrads(`finetune ${path}`, model, FT.outputs.grads, FT.outputs.grads_absent);
        console.log(
          `[s3rec parity] finetune ${path}: loss ${lv} (ref ${FT.outputs.loss}); worst grad ${rep.worst.name} tolerance used ${fmt(rep.worst.usage)}`,
        );
        if (rep.errors.length) throw new Error(`${rep.errors.length} gradient mismatch(es):\n${rep.errors.join('\n')}`);
      } finally {
        model.zeroGrad();
        eb.dispose();
        model.dispose();
        await sync();
      }
    });

    it(`${path}: eval scores h_last @ item_embeddings.weight^T (all item_size rows)`, async () => {
      const model = makeModel(FT);
      const eb = encoderBatch(ids, B, L, path);
      try {
        model.eval();
        const s = noGrad(() => scope(() => matmul(model.userStates(eb), model.itemEmbeddings.weight, { transB: true }))); // [B, V]
        expect(s.shape).toEqual(FT.outputs.eval_scores.shape);
        const got = await s.toArray();
        s.dispose();
        // One more 16-term dot over the encoder output: the forward tolerance with the scores' own scale.
        const tol = fwdTol(FT.outputs.eval_scores.data);
        expectClose(`finetune ${path} eval scores`, got, FT.outputs.eval_scores.data, tol);
        console.log(`[s3rec parity] finetune ${path} eval scores: tolerance used ${fmt(usage(got, FT.outputs.eval_scores.data, tol))}`);
      } finally {
        eb.dispose();
        model.dispose();
        await sync();
      }
    });
  }
});

// ------------------------------------------------------------------------------------------------ pretraining
describeGpu('S3-Rec parity: pretraining (official pretrain(): AAP, MIP, MAP, SP)', () => {
  const { B, L, H, A } = { B: PT.inputs.batch, L: PT.config.maxSeqLength, H: PT.config.hiddenSize, A: PT.config.attributeSize };
  const attributes: Array<Int32Array | undefined> = new Array(PT.config.itemSize).fill(undefined);
  for (const [item, list] of Object.entries(PT.inputs.item2attributes)) attributes[Number(item)] = Int32Array.from(list);
  const inputs: PretrainInputs = {
    B,
    L,
    masked: i32(PT.inputs.masked_item_sequence),
    pos: i32(PT.inputs.pos_items),
    neg: i32(PT.inputs.neg_items),
    maskedSegment: i32(PT.inputs.masked_segment_sequence),
    posSegment: i32(PT.inputs.pos_segment),
    negSegment: i32(PT.inputs.neg_segment),
    attributes,
  };

  it('the fixture is self-consistent (attribute multi-hot = item2attributes of pos_items; last slot masked)', () => {
    const pos = inputs.pos;
    for (let r = 0; r < B * L; r++) {
      for (let a = 0; a < A; a++) {
        const want = pos[r]! > 0 && (attributes[pos[r]!] ?? new Int32Array(0)).includes(a) ? 1 : 0;
        expect(PT.inputs.attributes.data[r * A + a]).toBe(want);
      }
    }
    for (let b = 0; b < B; b++) expect(inputs.masked[b * L + L - 1]).toBe(PT.config.maskId);
  });

  const passes = [
    ['masked_item_sequence', 'encoder_masked_item'],
    ['masked_segment_sequence', 'encoder_masked_segment'],
    ['pos_segment', 'encoder_pos_segment'],
    ['neg_segment', 'encoder_neg_segment'],
  ] as const;

  for (const path of PATHS) {
    it(`${path}: the 4 bidirectional encoder passes (-1e8 on pad keys)`, async () => {
      const model = makeModel(PT);
      try {
        model.train();
        const used: string[] = [];
        for (const [seqKey, outKey] of passes) {
          const eb = encoderBatch(i32(PT.inputs[seqKey]), B, L, path);
          try {
            const got = await encoderRows(model, eb, false);
            used.push(`${outKey} ${fmt(compareEncoder(`pretrain ${path} ${outKey}`, got, PT.outputs[outKey], H))}`);
          } finally {
            eb.dispose();
          }
        }
        console.log(`[s3rec parity] pretrain ${path} encoders: tolerance used ${used.join(', ')}`);
      } finally {
        model.dispose();
        await sync();
      }
    });

    it(`${path}: AAP, MIP, MAP, SP, the joint loss and every parameter gradient of the joint loss`, async () => {
      const model = makeModel(PT);
      try {
        model.train();
        model.zeroGrad();
        // Not wrapped in scope(): the losses come with their packed batch (losses.batch), whose layout tensors the
        // varlen backward (attention_varlen, the row gathers) still reads; it is disposed after backward.
        const losses = model.pretrainLosses(inputs, { path });
        const got: Record<string, number> = {};
        for (const k of [...LOSSES, 'total'] as const) got[k] = await losses[k].item();
        backward(losses.total);
        for (const k of [...LOSSES, 'total'] as const) losses[k].dispose();
        losses.batch.dispose();
        const errors: string[] = [];
        for (const k of LOSSES) {
          try {
            expectClose(`pretrain ${path} ${k}_loss`, [got[k]!], [PT.outputs[`${k}_loss`]], lossTol(PT.outputs[`${k}_loss`]));
          } catch (e) {
            errors.push((e as Error).message);
          }
        }
        try {
          expectClose(`pretrain ${path} joint loss`, [got.total!], [PT.outputs.joint_loss], lossTol(PT.outputs.joint_loss));
        } catch (e) {
          errors.push((e as Error).message);
        }
        const rep = await compareGrads(`pretrain ${path} joint`, model, PT.outputs.grads_joint, PT.outputs.grads_joint_absent);
        errors.push(...rep.errors);
        console.log(
          `[s3rec parity] pretrain ${path}: aap ${got.aap} mip ${got.mip} map ${got.map} sp ${got.sp} total ${got.total} ` +
            `(ref ${PT.outputs.aap_loss} ${PT.outputs.mip_loss} ${PT.outputs.map_loss} ${PT.outputs.sp_loss} ${PT.outputs.joint_loss}); ` +
            `worst grad ${rep.worst.name} tolerance used ${fmt(rep.worst.usage)}`,
        );
        if (rep.errors.length) {
          // Localise: the gradient of each loss alone (weights one-hot), against the reference's single-loss grads.
          const diag: string[] = [];
          for (const k of LOSSES) {
            model.zeroGrad();
            const weights: PretrainWeights = { aap: 0, mip: 0, map: 0, sp: 0, [k]: 1 };
            const ls = model.pretrainLosses(inputs, { path, weights });
            backward(ls.total);
            for (const k2 of [...LOSSES, 'total'] as const) ls[k2].dispose();
            ls.batch.dispose();
            const r = await compareGrads(`pretrain ${path} ${k}-only`, model, PT.outputs[`grads_${k}`], PT.outputs[`grads_${k}_absent`]);
            diag.push(r.errors.length ? `  ${k}: ${r.errors.length} mismatching tensor(s):\n    ${r.errors.join('\n    ')}` : `  ${k}: all gradients match`);
          }
          errors.push(`single-loss gradients (to localise the joint mismatch):\n${diag.join('\n')}`);
        }
        if (errors.length) throw new Error(`pretrain ${path}: ${errors.length} mismatch(es):\n${errors.join('\n')}`);
      } finally {
        model.zeroGrad();
        model.dispose();
        await sync();
      }
    });
  }
});
