// AttRec (models/attrec.ts, models/attrec_train.ts): the model's forward (time signal, short-term m, distances),
// loss and the gradient of EVERY parameter against float64 fixtures from an independent numpy implementation
// (test/fixtures/attrec/gen_attrec_fixtures.py: the authors' default, a left-padded batch, the paper variants, odd
// d), the Adagrad step (and unit-ball clipping) after it, the time-signal values of the spec, the evaluation's tie
// rule / AUC on a hand-made case, loss decrease on the bundled slice, and --resume determinism.
//
// Tolerances come from f32 rounding: a value computed through chains of n rounding steps (reductions included) on
// magnitudes up to `scale` is off by at most ~n * 2^-24 * scale; each check states its n and scale, times a
// safety factor of 4 (rounding errors rarely align, but never trust a single ulp bound).
import { spawnSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { backward, formatProfile, manualSeed, profileKernels, scope, sync } from '../engine/index.js';
import { AttRec, timeSignal, uploadAttRecBatch, disposeAttRecBatch, type AttRecConfig } from '../models/attrec.js';
import { Adagrad } from '../models/optim.js';
import {
  attrecDemo, attrecSplits, buildWindows, evaluateAttRec, loadAttRecData, paperNegatives, popularityAttRec, trainAttRec, type EvalStage,
} from '../models/attrec_train.js';
import { buildAttRecBatch, ItemSet, Rng } from '../models/data/index.js';
import { describeGpu, expectClose, type Tol } from './harness.js';

const EPS32 = 2 ** -24;
/** |got - want| <= 4 * n * 2^-24 * scale + 4 * n * 2^-24 * |want|: n rounding steps on values up to `scale`. */
const f32Tol = (n: number, scale: number): Tol => ({ atol: 4 * n * EPS32 * scale, rtol: 4 * n * EPS32 });
const maxAbs = (a: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};

interface Fixture {
  magic: string;
  version: number;
  name: string;
  config: { numUsers: number; numItems: number; dim: number; seqLen: number; alpha: number; margin: number; regW: number; regEmb: number; sharedQK: boolean; diagonal: 'zero' | 'mask'; timeSignal: 'concat' | 'interleaved' };
  clip: boolean;
  adagrad: { lr: number; initialAccumulatorValue: number };
  batch: { B: number; T: number; users: number[]; seq: number[]; targets: number[]; negatives: number[] };
  params: Record<string, { shape: number[]; data: number[] }>;
  forward: { ts: number[]; m: number[]; y: number[]; hinge: number; l2: number; loss: number };
  grads: Record<string, number[]>;
  after_step: Record<string, number[]>;
}

/** The model's time signal [L, Dp] without its zero padding columns: [L, D]. */
async function timeSignalOf(model: AttRec): Promise<Float32Array> {
  const { seqLen: L, dim: D } = model.cfg;
  const all = (await model.ts.toArray()) as Float32Array;
  const out = new Float32Array(L * D);
  for (let p = 0; p < L; p++) {
    out.set(all.subarray(p * model.Dp, p * model.Dp + D), p * D);
    for (let c = D; c < model.Dp; c++) if (all[p * model.Dp + c] !== 0) throw new Error(`time signal padding column ${c} is not 0`);
  }
  return out;
}

const FIXTURES = join(import.meta.dirname, 'fixtures', 'attrec');
function fixture(name: string): Fixture {
  const f = JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8')) as Fixture;
  if (f.magic !== 'seqrec-attrec-fixture' || f.version !== 1) throw new Error(`${name}.json: not a version-1 AttRec fixture (regenerate: python3 test/fixtures/attrec/gen_attrec_fixtures.py)`);
  return f;
}

function modelFrom(f: Fixture, extra: Partial<AttRecConfig> = {}): AttRec {
  const model = new AttRec({ ...f.config, ...extra });
  model.loadStateDict(Object.fromEntries(Object.entries(f.params).map(([k, v]) => [k, { dtype: 'f32' as const, shape: v.shape, data: Float32Array.from(v.data) }])));
  return model;
}

function batchFrom(f: Fixture) {
  const { B, T } = f.batch;
  return uploadAttRecBatch(Int32Array.from(f.batch.users), Int32Array.from(f.batch.seq), Int32Array.from(f.batch.targets), Int32Array.from(f.batch.negatives), f.config.seqLen, T);
}

/** Forward, loss, every parameter gradient and one Adagrad step (+ clipping) of one fixture. */
async function checkFixture(name: string, extra: Partial<AttRecConfig> = {}): Promise<void> {
  const f = fixture(name);
  const model = modelFrom(f, extra);
  const b = batchFrom(f);
  const D = f.config.dim;
  const L = f.config.seqLen;
  const tag = `${name} ${JSON.stringify(extra)}`;
  try {
    expectClose(`${tag} time signal`, await timeSignalOf(model), f.forward.ts, f32Tol(2, 1)); // one f32 rounding of sin/cos
    const m = scope(() => model.shortTerm(b.seq, { hostSeq: b.hostSeq, ...(b.rowMask ? { rowMask: b.rowMask, rowCount: b.rowCount! } : {}) })); // [B, D]
    // m: projection (D terms), logits (D), softmax (L), S @ E (L), mean (L): n = 2D + 3L + 4 roundings.
    expectClose(`${tag} short-term m`, await m.toArray(), f.forward.m, f32Tol(2 * D + 3 * L + 4, maxAbs(f.forward.m) + 1));
    const y = scope(() => model.scores(b.users, m, b.cands)); // [B, 2T]
    // y: m's error enters through 2 |m - Q| (~2 scale) plus D squared differences.
    expectClose(`${tag} distances y`, await y.toArray(), f.forward.y, f32Tol(2 * (2 * D + 3 * L + 4) + D + 2, maxAbs(f.forward.y)));
    m.dispose();
    y.dispose();
    const loss = scope(() => model.loss(b)); // []
    const nTerms = f.batch.B * f.batch.T;
    const lossGot = await loss.item();
    // loss: B*T hinge terms (each with y's error) + the L2 sums over the tables.
    const tolLoss = f32Tol(nTerms * (2 * (2 * D + 3 * L + 4) + D + 4) + 4 * (f.config.numItems * D), Math.abs(f.forward.loss));
    expectClose(`${tag} loss`, [lossGot], [f.forward.loss], tolLoss);
    backward(loss);
    for (const [pname, t] of model.stateDict()) {
      const want = f.grads[pname];
      if (!want) throw new Error(`${tag}: the fixture has no gradient for ${pname}`);
      if (!t.grad) throw new Error(`${tag}: no gradient reached ${pname}`);
      // Gradients run the forward chain backwards and accumulate over the B*L positions and 2T candidates:
      // n = forward chain + B*L*2T accumulations.
      expectClose(`${tag} grad ${pname}`, await t.grad.toArray(), want, f32Tol(4 * (2 * D + 3 * L + 4) + f.batch.B * L * 2 * f.batch.T, maxAbs(want)));
    }
    const opt = new Adagrad(model, { lr: f.adagrad.lr, initialAccumulatorValue: f.adagrad.initialAccumulatorValue });
    opt.step();
    if (f.clip) model.clipToUnitBall();
    for (const [pname, t] of model.stateDict()) {
      // p - lr g / sqrt(0.05 + g^2): the step is at most lr in size and carries the gradient's relative error.
      expectClose(`${tag} after one Adagrad step: ${pname}`, await t.toArray(), f.after_step[pname]!, f32Tol(8 * D + 16, maxAbs(f.after_step[pname]!) + f.adagrad.lr));
    }
    opt.dispose();
  } finally {
    disposeAttRecBatch(b);
    model.dispose();
    await sync();
  }
}

describeGpu('attrec model vs the numpy fixtures', () => {
  it("authors' default (shared projection, diagonal zeroed after the softmax, concat time signal), projecting batch rows", () => checkFixture('default', { projectTable: false }));
  it("authors' default, projecting the whole item table (math-identical path)", () => checkFixture('default', { projectTable: true }));
  it("authors' default with the fused attention kernel (kernels/attention_masked.ts AttRec mode)", () => checkFixture('default', { attention: 'fused' }));
  it('left-padded rows (pad keys masked, mean over real rows), fused and composed attention', async () => {
    await checkFixture('padded', { projectTable: false });
    await checkFixture('padded', { projectTable: true });
    await checkFixture('padded', { attention: 'fused' });
  });
  it('paper variants: separate W_Q / W_K, diagonal masked before the softmax, interleaved time signal, omega 0.3, unit-ball clipping', async () => {
    await checkFixture('paper', { projectTable: false });
    await checkFixture('paper', { projectTable: true });
  });
  it('odd d = 7 (zero time-signal column), with and without the vec4 padding of the compute width', async () => {
    await checkFixture('odd');
    await checkFixture('odd', { padDim: false });
    await checkFixture('default', { padDim: false, attention: 'fused' });
  });
});

describeGpu('attrec time signal', () => {
  it('the spec values: L=3, d=8 and d=150, L=5 (tensor2tensor concat layout)', async () => {
    const ts = timeSignal(3, 8, 'concat');
    const want = [
      [0, 0, 0, 0, 1, 1, 1, 1],
      [0.841471, 0.046399, 0.002154, 0.0001, 0.540302, 0.998923, 0.999998, 1],
      [0.909297, 0.092699, 0.004309, 0.0002, -0.416147, 0.995694, 0.999991, 1],
    ].flat();
    expectClose('TS L=3 d=8', ts, want, { atol: 5e-7, rtol: 0 }); // the spec prints 6 decimals
    const big = timeSignal(5, 150, 'concat');
    expectClose('TS[1, 0:3] d=150', big.subarray(150, 153), [0.841471, 0.772628, 0.703021], { atol: 5e-7, rtol: 0 });
    expectClose('TS[1, 75:78] d=150', big.subarray(225, 228), [0.540302, 0.634859, 0.711169], { atol: 5e-7, rtol: 0 });
    // Odd d: the last column is 0 at every position; interleaved: sin at even channels, cos at odd ones.
    const odd = timeSignal(4, 7, 'concat');
    for (let p = 0; p < 4; p++) expect(odd[p * 7 + 6]).toBe(0);
    const il = timeSignal(3, 6, 'interleaved');
    expect(il[6 + 0]).toBeCloseTo(Math.sin(1), 12);
    expect(il[6 + 1]).toBeCloseTo(Math.cos(1), 12);
    expect(il[12 + 2]).toBeCloseTo(Math.sin(2 / 1e4 ** (2 / 6)), 12);
    expect(il[12 + 3]).toBeCloseTo(Math.cos(2 / 1e4 ** (2 / 6)), 12);
    // And the model uploads exactly these values (f32).
    manualSeed(1);
    const model = new AttRec({ numUsers: 2, numItems: 5, dim: 150, seqLen: 5 });
    expectClose('model.ts', await timeSignalOf(model), Float32Array.from(big), { atol: 0, rtol: 0 });
    model.dispose();
  });
});

describeGpu('attrec variants', () => {
  it('projection dropout: active only while training, identity in eval mode; the same seed gives the same mask', async () => {
    const f = fixture('default');
    const plain = modelFrom(f);
    const drop = modelFrom(f, { projDropout: 0.5 });
    const b = batchFrom(f);
    const m = async (model: AttRec): Promise<Float32Array> => {
      const t = scope(() => model.shortTerm(b.seq, { hostSeq: b.hostSeq })); // [B, D]
      const a = (await t.toArray()) as Float32Array;
      t.dispose();
      return a;
    };
    try {
      plain.eval();
      drop.eval();
      const ref = await m(plain);
      expect(Buffer.from((await m(drop)).buffer).equals(Buffer.from(ref.buffer))).toBe(true); // eval: no dropout
      drop.train();
      manualSeed(3);
      const d1 = await m(drop);
      expect(maxAbs(d1.map((v, i) => v - ref[i]!))).toBeGreaterThan(1e-3); // a different m while training
      manualSeed(3);
      expect(Buffer.from((await m(drop)).buffer).equals(Buffer.from(d1.buffer))).toBe(true); // same seed, same mask
    } finally {
      disposeAttRecBatch(b);
      plain.dispose();
      drop.dispose();
      await sync();
    }
  });

  it('profileKernels (engine/profile.ts): per-kernel rows of one training step; the pool works normally afterwards', async () => {
    const f = fixture('default');
    const model = modelFrom(f);
    const b = batchFrom(f);
    const opt = new Adagrad(model, { lr: 0.05, initialAccumulatorValue: 0.05 });
    const step = (): void => {
      const loss = scope(() => model.loss(b));
      backward(loss);
      opt.step();
      model.zeroGrad();
      loss.dispose();
    };
    try {
      step();
      const prof = await profileKernels(step, { reps: 1 });
      const rows = prof.rows;
      const names = rows.map((r) => r.kernel);
      for (const k of ['euclid_score', 'small_bmm_nt', 'adagrad']) expect(names.some((n) => n.startsWith(k)), k).toBe(true);
      expect(rows.every((r) => r.count >= 1 && r.ms >= 0)).toBe(true);
      expect(formatProfile(prof)).toMatch(/^kernel +calls +ms +%/);
      step(); // buffers released during the profile went back to the pool
      await expect(profileKernels(() => { throw new Error('boom'); })).rejects.toThrow('boom');
      step();
      await sync();
    } finally {
      opt.dispose();
      disposeAttRecBatch(b);
      model.dispose();
    }
  });

  it('config errors name the option', () => {
    expect(() => new AttRec({ numUsers: 2, numItems: 5, alpha: 1.5 })).toThrow(/alpha must be in \[0, 1\]/);
    expect(() => new AttRec({ numUsers: 2, numItems: 5, diagonal: 'x' as 'zero' })).toThrow(/diagonal must be/);
    expect(() => new AttRec({ numUsers: 0, numItems: 5 })).toThrow(/numUsers must be an integer >= 1/);
  });
});

// ------------------------------------------------------------------------------------------------ evaluation
describeGpu('attrec evaluation', () => {
  it('ranks at the padded compute width (vec4 rows) equal the unpadded ones', async () => {
    const data = await loadAttRecData(SLICE);
    const stage = attrecSplits(data, 'authors').test;
    const ranks: Int32Array[] = [];
    for (const padDim of [true, false]) {
      manualSeed(11);
      const model = new AttRec({ numUsers: data.numUsers, numItems: data.numItems, dim: 18, initStd: 0.5, padDim });
      model.eval();
      ranks.push((await evaluateAttRec(model, stage)).ranks);
      model.dispose();
    }
    expect(ranks[0]!.some((r) => r > 0)).toBe(true);
    expect(Array.from(ranks[0]!)).toEqual(Array.from(ranks[1]!));
    await sync();
  });

  it("tie rule and AUC: equal distances rank by item id (the authors' stable sort over candidates in id order)", async () => {
    // 2 users, items 1..9 (table of 10 rows), d = 4, L = 5. All tables zero except chosen X rows: the distance of
    // item j is alpha ||P[u] - X[j]||^2 + (1 - alpha) ||m - Q[j]||^2 = 0.2 ||X[j]||^2 (P = Q = 0 -> m = 0).
    const N = 10;
    const Dm = 4;
    const model = new AttRec({ numUsers: 3, numItems: N, dim: Dm, seqLen: 5 });
    const X = new Float32Array(N * Dm);
    X[3 * Dm] = 0.5; // item 3 farther than the tied rest
    X[7 * Dm] = 0.5; // item 7 tied with item 3
    X[8 * Dm] = 0.25; // item 8 between
    const zero = (r: number): Float32Array => new Float32Array(r * Dm);
    model.loadStateDict({
      P: { dtype: 'f32', shape: [3, Dm], data: zero(3) }, V: { dtype: 'f32', shape: [3, Dm], data: zero(3) },
      Q: { dtype: 'f32', shape: [N, Dm], data: zero(N) }, X: { dtype: 'f32', shape: [N, Dm], data: X },
      'linear_project.kernel': { dtype: 'f32', shape: [Dm, Dm], data: zero(Dm) },
    });
    model.eval();
    // user 0: history [2, 5, 9, 1, 6], answer 7; user 1: history [4, 4, 2, 1, 3], answer 8; user 2: [1, 2, 4, 5, 6] -> 3
    const stage: EvalStage = {
      name: 'test', history: [Int32Array.from([2, 5, 9, 1, 6]), Int32Array.from([4, 4, 2, 1, 3]), Int32Array.from([1, 2, 4, 5, 6])], answers: Int32Array.from([7, 8, 3]),
    };
    const r = await evaluateAttRec(model, stage);
    // The authors' rule written out: candidates in id order, stable sort by score (= -distance) descending.
    const dist = (j: number): number => 0.2 * X[j * Dm]! ** 2;
    const want = stage.history.map((h, u) => {
      const cands = Array.from({ length: N - 1 }, (_, k) => k + 1).filter((j) => !h.includes(j) || j === stage.answers[u]);
      const ranked = cands.map((j) => ({ j, s: -dist(j) })).sort((a, b) => b.s - a.s); // Array.prototype.sort is stable
      return { rank: ranked.findIndex((x) => x.j === stage.answers[u]), cands: cands.length };
    });
    // user 0: candidates 3, 4, 7, 8; 4 (d 0) first, 8 (0.0125), then 3 and 7 tied at 0.05 -> 3 before 7: rank 3.
    expect(want[0]).toEqual({ rank: 3, cands: 4 });
    // user 1: candidates 5, 6, 7, 8, 9; 5, 6, 9 at 0 come first, then 8: rank 3.
    expect(want[1]).toEqual({ rank: 3, cands: 5 });
    // user 2: candidates 3, 7, 8, 9; 9, 8, then 3 tied with 7 and ahead of it (a pessimistic rule would give 3).
    expect(want[2]).toEqual({ rank: 2, cands: 4 });
    expect(Array.from(r.ranks)).toEqual(want.map((w) => w.rank));
    expect(Array.from(r.candidates)).toEqual(want.map((w) => w.cands));
    // AUC = (|cands| - 1 - rank) / (|cands| - 1); MRR = 1 / (rank + 1); HR@50 = 1.
    expect(r.metrics.AUC).toBeCloseTo((0 / 3 + 1 / 4 + 1 / 3) / 3, 12);
    expect(r.metrics.MRR).toBeCloseTo((1 / 4 + 1 / 4 + 1 / 3) / 3, 12);
    expect(r.metrics['HR@50']).toBe(1);
    // Popularity uses the same rule (counts of the histories; ties by id), checked against the same stable sort.
    const pop = popularityAttRec(stage, N);
    const counts = new Float64Array(N);
    for (const h of stage.history) for (const i of h) counts[i]!++;
    const popWant = stage.history.map((h, u) => {
      const a = stage.answers[u]!;
      const cands = Array.from({ length: N - 1 }, (_, k) => k + 1).filter((j) => !h.includes(j) || j === a);
      return cands.map((j) => ({ j, s: counts[j]! })).sort((x, y) => y.s - x.s).findIndex((x) => x.j === a);
    });
    const cc = [4, 5, 4];
    expect(pop.MRR).toBeCloseTo(popWant.reduce((s, r) => s + 1 / (r + 1), 0) / 3, 12);
    expect(pop.AUC).toBeCloseTo(popWant.reduce((s, r, u) => s + (cc[u]! - 1 - r) / (cc[u]! - 1), 0) / 3, 12);
    model.dispose();
    await sync();
  });
});

// ------------------------------------------------------------------------------------------------ training
const SLICE = join(import.meta.dirname, '..', 'data', 'sample', 'ml-100k-sample');
const SMALL = { dim: 32, epochs: 3, patience: 0, seed: 7 } as const;

describeGpu('attrec training', () => {
  it('the loss decreases on the bundled ML-100k slice over 3 epochs, and validation HR@50 beats popularity', async () => {
    const data = await loadAttRecData(SLICE);
    expect(data.numUsers).toBe(100);
    const r = await trainAttRec(data, SMALL);
    try {
      const losses = r.history.map((h) => h.loss);
      expect(losses.every(Number.isFinite)).toBe(true);
      expect(losses[1]!).toBeLessThan(losses[0]!);
      expect(losses[2]!).toBeLessThan(losses[1]!);
      const bestValid = Math.max(...r.history.map((h) => h.valid!['HR@50']!));
      expect(bestValid).toBeGreaterThan(r.popularity.valid!['HR@50']!);
    } finally {
      r.optimizer.dispose();
      r.model.dispose();
      await sync();
    }
  });

  it('--resume: 2 epochs straight == 1 epoch, resume, 1 epoch (metrics and weights bit-identical)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attrec-resume-'));
    try {
      const data = await loadAttRecData(SLICE);
      const opts = { ...SMALL, epochs: 2, negatives: 'paper' as const, projDropout: 0.1 };
      const straight = await trainAttRec(data, { ...opts, out: join(dir, 'a') });
      const wa = new Map<string, Float32Array>();
      for (const [k, t] of straight.model.stateDict()) wa.set(k, (await t.toArray()) as Float32Array);
      straight.model.dispose();
      straight.optimizer.dispose();
      const first = await trainAttRec(data, { ...opts, epochs: 1, out: join(dir, 'b') });
      first.model.dispose();
      first.optimizer.dispose();
      manualSeed(999); // resuming must not depend on the engine RNG state before it
      const resumed = await trainAttRec(data, { ...opts, out: join(dir, 'b'), resume: true });
      expect(resumed.history.map((h) => h.epoch)).toEqual([1, 2]);
      expect(resumed.history.map((h) => [h.loss, h.valid, h.test])).toEqual(straight.history.map((h) => [h.loss, h.valid, h.test]));
      for (const [k, t] of resumed.model.stateDict()) {
        expect(Buffer.from(((await t.toArray()) as Float32Array).buffer).equals(Buffer.from(wa.get(k)!.buffer)), k).toBe(true);
      }
      expect(readFileSync(join(dir, 'b', 'log.jsonl'), 'utf8').trim().split('\n')).toHaveLength(2);
      resumed.model.dispose();
      resumed.optimizer.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await sync();
    }
  });

  it('S3-Rec-format data with short sequences (padded windows and inputs) trains to finite metrics', async () => {
    const data = await loadAttRecData(join(import.meta.dirname, '..', 'data', 'sample'), 'Beauty');
    expect(data.format).toBe('s3rec');
    const r = await trainAttRec(data, { ...SMALL, epochs: 1, dim: 16, batchSize: 256 });
    try {
      expect(Number.isFinite(r.history[0]!.loss)).toBe(true);
      for (const v of Object.values(r.test)) expect(Number.isFinite(v)).toBe(true);
    } finally {
      r.optimizer.dispose();
      r.model.dispose();
      await sync();
    }
  });

  it("negative rules: authors' = {1..N-1} minus the window's targets (history allowed); paper = never an item of the user's training sequence", async () => {
    const data = await loadAttRecData(SLICE);
    const seqs = attrecSplits(data, 'validation').trainSeqs;
    const w = buildWindows(seqs, 5, 3);
    const idx = Int32Array.from({ length: 2000 }, (_, i) => i);
    const hb = buildAttRecBatch(w, idx, { numItems: data.numItems, rng: new Rng(5) });
    let inHistory = 0;
    for (let b = 0; b < 2000; b++) {
      const tg = hb.targets.subarray(b * 3, b * 3 + 3);
      const hist = new Set(seqs[hb.users[b]!]);
      for (let k = 0; k < 3; k++) {
        const n = hb.negatives[b * 3 + k]!;
        expect(n >= 1 && n < data.numItems && !tg.includes(n)).toBe(true);
        if (hist.has(n)) inHistory++;
      }
    }
    expect(inHistory).toBeGreaterThan(0); // the authors' rule does not exclude the history
    const neg = new Int32Array(2000 * 3);
    paperNegatives(neg, hb.users, seqs, data.numItems, 3, new Rng(6), new ItemSet(data.numItems));
    for (let b = 0; b < 2000; b++) {
      const hist = new Set(seqs[hb.users[b]!]);
      for (let k = 0; k < 3; k++) expect(neg[b * 3 + k]! >= 1 && !hist.has(neg[b * 3 + k]!)).toBe(true);
    }
  });

  it('data resolution errors name the file', async () => {
    await expect(loadAttRecData(join(tmpdir(), 'no-such-attrec-dir'))).rejects.toThrow(/no-such-attrec-dir: data directory not found/);
    await expect(loadAttRecData(SLICE, 'Nope')).rejects.toThrow(/Nope\.txt: file not found \(no S3-Rec Nope\.txt, AttRec split Nope\/train\.dat/);
  });
});

// ------------------------------------------------------------------------------------------------ CLI
describeGpu('attrec CLI (child process)', () => {
  const cli = (args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'cli', 'seqrec.ts'), ...args], { encoding: 'utf8', env: { ...process.env, EGL_PLATFORM: 'surfaceless' } });

  it('train --json: the last stdout line is one JSON object with HR@50, MRR, AUC; eval --ckpt reproduces the picked epoch', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attrec-cli-'));
    try {
      const r = cli(['train', '--model', 'attrec', '--data-dir', SLICE, '--epochs', '2', '--dim', '16', '--patience', '0', '--out', dir, '--json']);
      expect(r.status, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines).toHaveLength(1);
      const out = JSON.parse(lines[0]!) as { metrics: Record<string, number>; bestEpoch: number };
      for (const k of ['HR@50', 'MRR', 'AUC']) expect(Number.isFinite(out.metrics[k])).toBe(true);
      const e = cli(['eval', '--model', 'attrec', '--ckpt', join(dir, 'best.safetensors'), '--data-dir', SLICE, '--json']);
      expect(e.status, e.stderr).toBe(0);
      const ev = JSON.parse(e.stdout.trim().split('\n').at(-1)!) as { metrics: Record<string, number>; epoch: number };
      expect(ev.epoch).toBe(out.bestEpoch);
      expect(ev.metrics).toEqual(out.metrics);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad input: unknown option (exit 2), bad value naming the option (exit 2), missing data (exit 1, names the file)', () => {
    const a = cli(['train', '--model', 'attrec', '--data-dir', SLICE, '--bogus']);
    expect(a.status).toBe(2);
    expect(a.stderr).toMatch(/unknown option '--bogus'/);
    const b = cli(['train', '--model', 'attrec', '--data-dir', SLICE, '--alpha', '2']);
    expect(b.status).toBe(2);
    expect(b.stderr).toMatch(/--alpha must be a number >= 0 and <= 1, got '2'/);
    const c = cli(['train', '--model', 'attrec', '--data-dir', join(tmpdir(), 'no-such-attrec-dir')]);
    expect(c.status).toBe(1);
    expect(c.stderr).toMatch(/no-such-attrec-dir: data directory not found/);
    const d = cli(['eval', '--model', 'attrec', '--data-dir', SLICE]);
    expect(d.status).toBe(2);
    expect(d.stderr).toMatch(/--ckpt is required/);
  });
});

describeGpu('attrec demo', () => {
  it('attrecDemo: popularity and AttRec rows with HR@50, MRR, AUC; deterministic for a seed', async () => {
    const a = await attrecDemo({ epochs: 2, seed: 3 });
    const b = await attrecDemo({ epochs: 2, seed: 3 });
    expect(a.rows.map((r) => r.name)).toEqual(['popularity (test)', expect.stringMatching(/^AttRec \(test, epoch [12] picked on validation HR@50\)$/)]);
    for (const r of a.rows) for (const k of ['HR@50', 'MRR', 'AUC']) expect(Number.isFinite(r.metrics[k])).toBe(true);
    expect(b.rows).toEqual(a.rows);
    expect(a.seconds).toBeLessThan(60);
  });
});
