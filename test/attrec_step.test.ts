// attrec_step (kernels/attrec_step.ts): the fused AttRec training step (forward, hinge, backward, L2 and the
// Adagrad update in 13 dispatches) against
//   - its float64 reference refAttRecStep on fresh random inputs: odd sizes (D = 1, 7, 9, 150; L = 1, 3, 5; T = 1,
//     2, 3; B = 1, 2, 65 = the workgroup size + 1; a single item row besides padding), left-padded and fully padded
//     windows, repeated ids (rows summed over many windows), large magnitudes, two steps in a row (accumulators,
//     step counts), with the workspace's buffers poisoned (NaN) so every row the step reads must have been written;
//   - the numpy fixtures of test/fixtures/attrec (loss, and the parameters after one Adagrad step);
//   - the autograd path of models/attrec.ts on a larger batch over three steps (parameters and optimizer state);
// and the trainer's choice of path and its errors.
import { expect, it } from 'vitest';
import { fillInPlace, flags, manualSeed, ref, rt, scope, backward, sync, Tensor } from '../engine/index.js';
import { attrecStepBatch, attrecStepMeta, attrecStepSupported, attrecStepUnsupported, AttRecStepWorkspace, refAttRecStep, type AttRecStepDims, type AttRecStepHyper, type AttRecStepParams } from '../kernels/attrec_step.js';
import { AttRec, AttRecFusedStep, timeSignal, uploadAttRecBatch, disposeAttRecBatch, type AttRecConfig } from '../models/attrec.js';
import { Adagrad } from '../models/optim.js';
import { loadAttRecData, trainAttRec } from '../models/attrec_train.js';
import { packagePath } from '../engine/index.js';
import { caseSeed, describeGpu, expectClose, type Tol } from './harness.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const KEYS = ['P', 'V', 'Q', 'X', 'W'] as const;
type Key = (typeof KEYS)[number];
const STATE_NAME: Record<Key, string> = { P: 'P', V: 'V', Q: 'Q', X: 'X', W: 'linear_project.kernel' };

interface RandCase {
  name: string;
  dims: AttRecStepDims;
  /** Magnitude of the embeddings (W is Glorot-like, scaled by wScale). */
  scale: number;
  wScale?: number;
  /** Fraction of input slots left-padded (id 0); 'full' pads every input of window 0. */
  pad?: number | 'full';
  steps?: number;
  timeSignal?: 'concat' | 'interleaved' | 'none';
  /** Between steps, write parameters behind the step's back (Tensor.write to Q, a kernel to W, a copy into P):
   * the next step must pack them again (the write versions of engine/versions.ts), not reuse its copies. */
  writeBetween?: boolean;
}

const HYPER: AttRecStepHyper = { alpha: 0.2, margin: 0.5, regW: 0.01, regEmb: 0.001, lr: 0.05, eps: 0, weightDecay: 0 };

function f32(rnd: () => number, n: number, r: number): Float64Array {
  return Float64Array.from({ length: n }, () => Math.fround((rnd() * 2 - 1) * r));
}

/** A model whose tables hold the given values, and its Adagrad optimizer (acc0 0.05). */
function modelWith(d: AttRecStepDims, vals: Record<Key, Float64Array>, ts: RandCase['timeSignal'] = 'concat'): { model: AttRec; opt: Adagrad } {
  const model = new AttRec({ numUsers: d.U, numItems: d.N, dim: d.D, seqLen: d.L, projectTable: true, timeSignal: ts });
  model.loadStateDict(Object.fromEntries(KEYS.map((k) => [STATE_NAME[k], { dtype: 'f32' as const, shape: k === 'W' ? [d.D, d.D] : [k === 'P' || k === 'V' ? d.U : d.N, d.D], data: Float32Array.from(vals[k]) }])));
  return { model, opt: new Adagrad(model, { lr: HYPER.lr, initialAccumulatorValue: 0.05 }) };
}

async function stateOf(model: AttRec, opt: Adagrad): Promise<Record<Key, { p: Float32Array; acc: Float32Array }>> {
  const sd = opt.stateDict();
  const params = model.stateDict();
  const out = {} as Record<Key, { p: Float32Array; acc: Float32Array }>;
  for (const k of KEYS) {
    const a = sd.tensors.get(`${STATE_NAME[k]}.accumulator`);
    if (!a) throw new Error(`no accumulator for ${STATE_NAME[k]}`);
    out[k] = { p: (await params.get(STATE_NAME[k])!.toArray()) as Float32Array, acc: (a instanceof Tensor ? await a.toArray() : (a.data as Float32Array)) as Float32Array };
    if (a instanceof Tensor) a.dispose();
  }
  return out;
}

/** One case on the kernel-level API: AttRecStepWorkspace + attrecStepBatch, plain tensors for the tables and accumulators. */
async function randomCase(c: RandCase): Promise<void> {
  const rnd = ref.mulberry32(caseSeed(c.name));
  const d = c.dims;
  const { N, U, D, L, T, B } = d;
  const vals: Record<Key, Float64Array> = {
    P: f32(rnd, U * D, c.scale), V: f32(rnd, U * D, c.scale), Q: f32(rnd, N * D, c.scale), X: f32(rnd, N * D, c.scale),
    W: f32(rnd, D * D, (c.wScale ?? 1) * Math.sqrt(6 / (2 * D))),
  };
  const ts = timeSignal(L, D, c.timeSignal ?? 'concat');
  const acc = Object.fromEntries(KEYS.map((k) => [k, new Float64Array(vals[k].length).fill(0.05)])) as Record<Key, Float64Array>;
  expect(attrecStepSupported(d)).toBe(true);
  const shapes: Record<Key, number[]> = { P: [U, D], V: [U, D], Q: [N, D], X: [N, D], W: [D, D] };
  const params = Object.fromEntries(KEYS.map((k) => [k, Tensor.from(Float32Array.from(vals[k]), shapes[k])])) as Record<Key, Tensor>;
  // Each accumulator inside a larger NaN-poisoned arena at a 4-aligned offset: the step must touch exactly its region.
  const arenas = Object.fromEntries(KEYS.map((k) => {
    const n = vals[k].length;
    const a = new Float32Array(8 + Math.ceil(n / 4) * 4 + 8).fill(NaN);
    a.fill(0.05, 8, 8 + n);
    return [k, Tensor.from(a)];
  })) as Record<Key, Tensor>;
  const ws = new AttRecStepWorkspace(d, ts);
  // Items 1..N-1 (0 is padding), drawn from a small pool so rows repeat across windows.
  const pool = Math.max(1, Math.min(N - 1, 4));
  const item = (): number => 1 + Math.floor(rnd() * (rnd() < 0.5 ? pool : N - 1));
  const prevPoison = flags.poison;
  flags.poison = true; // the workspace's row buffer and every temporary start as NaN
  try {
    ws.resetLoss();
    let refLoss = 0;
    for (let step = 0; step < (c.steps ?? 1); step++) {
      const users = Int32Array.from({ length: B }, () => Math.floor(rnd() * U));
      const seq = Int32Array.from({ length: B * L }, () => item());
      for (let b = 0; b < B; b++) {
        const nPad = c.pad === 'full' && b === 0 ? L : typeof c.pad === 'number' && rnd() < c.pad ? Math.floor(rnd() * L) : 0;
        for (let i = 0; i < nPad; i++) seq[b * L + i] = 0;
      }
      const targets = Int32Array.from({ length: B * T }, () => item());
      const negatives = Int32Array.from({ length: B * T }, () => item());
      const batch = attrecStepBatch(users, seq, targets, negatives, d);
      ws.step({ ...params, acc: Object.fromEntries(KEYS.map((k) => [k, { arena: arenas[k], offset: 8 }])) as unknown as AttRecStepParams['acc'] }, batch, HYPER);
      batch.dispose();
      refLoss += refAttRecStep({ dims: d, ...vals, acc, timeSignal: ts, users, seq, targets, negatives }, HYPER).loss;
      if (c.writeBetween && step + 1 < (c.steps ?? 1)) {
        vals.Q = f32(rnd, N * D, c.scale);
        params.Q.write(Float32Array.from(vals.Q));
        fillInPlace(params.W, 0.03);
        vals.W.fill(Math.fround(0.03));
        const n = Math.min(U, N) * D; // the first rows of X into P
        rt().queue.copy(params.X.buffer, 0, params.P.buffer, 0, 4 * n);
        for (let i = 0; i < n; i++) vals.P[i] = vals.X[i]!;
      }
    }
    for (const k of KEYS) {
      const maxP = vals[k].reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      // p - lr g / sqrt(acc): each step moves p by at most lr, with the gradient's relative error (f32 chains of
      // O(D L) terms); the accumulator carries g^2.
      expectClose(`${c.name}: ${k} after ${c.steps ?? 1} step(s)`, await params[k].toArray(), vals[k], { atol: 2e-4 * HYPER.lr + 1e-6 * maxP, rtol: 1e-4 });
      const a = (await arenas[k].toArray()) as Float32Array;
      const n = vals[k].length;
      const maxA = acc[k].reduce((m, v) => Math.max(m, v), 0);
      expectClose(`${c.name}: ${k} accumulator`, a.subarray(8, 8 + n), acc[k], { atol: 1e-5 * maxA, rtol: 1e-3 });
      expect([...a.subarray(0, 8), ...a.subarray(8 + n)].every(Number.isNaN), `${c.name}: ${k}: the arena outside the accumulator was written`).toBe(true);
    }
    const loss = await ws.lossSum();
    expectClose(`${c.name}: loss`, [loss], [refLoss], { atol: 1e-5, rtol: 2e-4 });
  } finally {
    flags.poison = prevPoison;
    ws.dispose();
    for (const t of [...Object.values(params), ...Object.values(arenas)]) t.dispose();
    await sync();
  }
}

describeGpu('attrec_step', () => {
  const cases: RandCase[] = [
    { name: 'one window, D 1, L 1, T 1', dims: { N: 3, U: 1, D: 1, L: 1, T: 1, B: 1 }, scale: 0.5 },
    { name: 'D 7 (one zero compute column), L 3, T 2, B 2', dims: { N: 7, U: 3, D: 7, L: 3, T: 2, B: 2 }, scale: 0.5 },
    { name: 'D 9, B 65 (workgroup + 1), padded windows, two steps', dims: { N: 13, U: 5, D: 9, L: 5, T: 3, B: 65 }, scale: 0.5, pad: 0.5, steps: 2 },
    { name: 'a fully padded window, one real item row', dims: { N: 2, U: 2, D: 8, L: 5, T: 3, B: 3 }, scale: 0.5, pad: 'full' },
    { name: 'the authors\' sizes D 150 L 5 T 3, B 31, interleaved time signal', dims: { N: 31, U: 7, D: 150, L: 5, T: 3, B: 31 }, scale: 0.1, timeSignal: 'interleaved' },
    { name: 'D 16: a row of exactly one 4-vec4 update chunk, vec4 tables', dims: { N: 9, U: 4, D: 16, L: 4, T: 2, B: 9 }, scale: 0.5 },
    { name: 'D 17: a row of one chunk + 1 vec4, scalar tables', dims: { N: 9, U: 4, D: 17, L: 4, T: 2, B: 9 }, scale: 0.5, pad: 0.3 },
    { name: 'parameters written between steps (host write, kernel, copy): packed again', dims: { N: 13, U: 5, D: 10, L: 3, T: 2, B: 9 }, scale: 0.5, steps: 3, writeBetween: true },
    { name: 'large magnitudes (saturated softmax, every hinge active)', dims: { N: 11, U: 3, D: 12, L: 5, T: 3, B: 17 }, scale: 30, wScale: 0.05 },
  ];
  for (const c of cases) it(`matches the float64 reference: ${c.name}`, () => randomCase(c));

  it('matches the numpy fixtures (loss and parameters after one Adagrad step): default, left-padded, odd d', async () => {
    for (const name of ['default', 'padded', 'odd']) {
      const f = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'attrec', `${name}.json`), 'utf8')) as {
        config: AttRecConfig & { numUsers: number; numItems: number; dim: number; seqLen: number };
        adagrad: { lr: number; initialAccumulatorValue: number };
        batch: { B: number; T: number; users: number[]; seq: number[]; targets: number[]; negatives: number[] };
        params: Record<string, { shape: number[]; data: number[] }>;
        forward: { loss: number };
        grads: Record<string, number[]>;
        after_step: Record<string, number[]>;
      };
      const model = new AttRec({ ...f.config, projectTable: true });
      model.loadStateDict(Object.fromEntries(Object.entries(f.params).map(([k, v]) => [k, { dtype: 'f32' as const, shape: v.shape, data: Float32Array.from(v.data) }])));
      const opt = new Adagrad(model, { lr: f.adagrad.lr, initialAccumulatorValue: f.adagrad.initialAccumulatorValue });
      const fused = new AttRecFusedStep(model, opt, f.batch.B, f.batch.T);
      try {
        fused.resetLoss();
        const b = fused.batch(Int32Array.from(f.batch.users), Int32Array.from(f.batch.seq), Int32Array.from(f.batch.targets), Int32Array.from(f.batch.negatives));
        fused.step(b);
        b.dispose();
        expectClose(`${name}: loss`, [await fused.lossSum()], [f.forward.loss], { atol: 1e-6, rtol: 1e-5 });
        const got = await stateOf(model, opt);
        for (const k of KEYS) {
          const want = f.after_step[STATE_NAME[k]]!;
          expectClose(`${name}: ${k} after one step`, got[k].p, want, { atol: 1e-6 + 1e-4 * f.adagrad.lr, rtol: 1e-5 });
          const g = f.grads[STATE_NAME[k]]!;
          expectClose(`${name}: ${k} accumulator`, got[k].acc, g.map((v) => f.adagrad.initialAccumulatorValue + v * v), { atol: 1e-7, rtol: 1e-4 });
        }
      } finally {
        fused.dispose();
        opt.dispose();
        model.dispose();
        await sync();
      }
    }
  });

  it('equals the autograd path over three steps (B 200, D 150, 60 item rows: rows summed over many windows)', async () => {
    const d: AttRecStepDims = { N: 60, U: 25, D: 150, L: 5, T: 3, B: 200 };
    const rnd = ref.mulberry32(caseSeed('autograd'));
    const make = (): { model: AttRec; opt: Adagrad } => {
      manualSeed(7);
      const model = new AttRec({ numUsers: d.U, numItems: d.N, projectTable: true, initStd: 0.1 });
      return { model, opt: new Adagrad(model, { lr: 0.05, initialAccumulatorValue: 0.05 }) };
    };
    const a = make();
    const b = make();
    const fused = new AttRecFusedStep(b.model, b.opt, d.B, d.T);
    try {
      for (let step = 0; step < 3; step++) {
        const users = Int32Array.from({ length: d.B }, () => Math.floor(rnd() * d.U));
        const seq = Int32Array.from({ length: d.B * d.L }, () => 1 + Math.floor(rnd() * (d.N - 1)));
        const targets = Int32Array.from({ length: d.B * d.T }, () => 1 + Math.floor(rnd() * (d.N - 1)));
        const negatives = Int32Array.from({ length: d.B * d.T }, () => 1 + Math.floor(rnd() * (d.N - 1)));
        const gb = uploadAttRecBatch(users, seq, targets, negatives, d.L, d.T);
        const loss = scope(() => a.model.loss(gb));
        backward(loss);
        a.opt.step();
        a.model.zeroGrad();
        loss.dispose();
        disposeAttRecBatch(gb);
        const fb = fused.batch(users, seq, targets, negatives);
        fused.step(fb);
        fb.dispose();
      }
      const sa = await stateOf(a.model, a.opt);
      const sb = await stateOf(b.model, b.opt);
      for (const k of KEYS) {
        const maxP = sa[k].p.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        expectClose(`${k} after 3 steps`, sb[k].p, sa[k].p, { atol: 1e-5 * (maxP + 0.05), rtol: 1e-4 });
        const maxA = sa[k].acc.reduce((m, v) => Math.max(m, v), 0);
        expectClose(`${k} accumulator`, sb[k].acc, sa[k].acc, { atol: 1e-5 * maxA, rtol: 1e-3 });
      }
    } finally {
      fused.dispose();
      for (const x of [a, b]) x.opt.dispose(), x.model.dispose();
      await sync();
    }
  });

  it('the batch builder refuses ids out of range, naming the window; the CSRs hold every row once per destination', () => {
    const d: AttRecStepDims = { N: 5, U: 2, D: 4, L: 2, T: 1, B: 2 };
    const ok = attrecStepMeta(Int32Array.of(0, 1), Int32Array.of(1, 2, 0, 4), Int32Array.of(3, 3), Int32Array.of(2, 1), d);
    // The distinct inputs, ascending, and their slots; ids per window: user, inputs, their slots, candidates.
    expect(ok.inputs).toBe(4);
    expect([...ok.meta.subarray(ok.at.uniq, ok.at.uniq + 4)]).toEqual([0, 1, 2, 4]);
    expect([...ok.meta.subarray(ok.at.slot, ok.at.slot + d.N)]).toEqual([0, 1, 2, -1, 3]);
    expect([...ok.meta.subarray(0, 2 * 7)]).toEqual([0, 1, 2, 1, 2, 3, 2, 1, 0, 4, 0, 3, 3, 1]);
    // CSR A (the projection rows [time signal L | inputs]): 2 destinations per input slot.
    const { csrA, permA, csrB, permB } = ok.at;
    expect(ok.meta[csrA + d.L + ok.inputs]).toBe(2 * d.B * d.L);
    expect(ok.meta[csrB + 2 * d.N + d.U]).toBe(d.B * d.L + 2 * d.B * 2 * d.T + d.B);
    expect(permB + d.B * d.L + 4 * d.B * d.T + d.B).toBe(ok.meta.length);
    // Time-signal row 1 gathers the dpre rows of slot 1 of both windows (rows 1 and 3); input item 4 (slot 3)
    // only window 1's slot 1 (row 3).
    const seg = (r: number): number[] => [...ok.meta.subarray(permA + ok.meta[csrA + r]!, permA + ok.meta[csrA + r + 1]!)];
    expect(seg(1)).toEqual([1, 3]);
    expect(seg(d.L + 3)).toEqual([3]);
    expect(() => attrecStepMeta(Int32Array.of(0, 1), Int32Array.of(1, 2, 0, 5), Int32Array.of(3, 3), Int32Array.of(2, 1), d)).toThrow(/input id 5 of window 1 is outside \[0, 5\)/);
    expect(() => attrecStepMeta(Int32Array.of(0, 2), Int32Array.of(1, 2, 0, 4), Int32Array.of(3, 3), Int32Array.of(2, 1), d)).toThrow(/user id 2 of window 1/);
    expect(() => attrecStepMeta(Int32Array.of(0), Int32Array.of(1, 2, 0, 4), Int32Array.of(3, 3), Int32Array.of(2, 1), d)).toThrow(/do not hold B=2 windows/);
  });

  it('the workspace refuses a misplaced accumulator, a disposed batch and a batch of other sizes, naming them', async () => {
    const d: AttRecStepDims = { N: 6, U: 2, D: 5, L: 2, T: 1, B: 2 };
    const ws = new AttRecStepWorkspace(d, new Float64Array(d.L * d.D));
    const shapes: Record<Key, number[]> = { P: [2, 5], V: [2, 5], Q: [6, 5], X: [6, 5], W: [5, 5] };
    const params = Object.fromEntries(KEYS.map((k) => [k, Tensor.from(new Float32Array(shapes[k]![0]! * 5), shapes[k])])) as Record<Key, Tensor>;
    const arena = Tensor.from(new Float32Array(64).fill(0.05));
    const acc = (off: Partial<Record<Key, number>>) => Object.fromEntries(KEYS.map((k) => [k, { arena, offset: off[k] ?? 0 }])) as unknown as AttRecStepParams['acc'];
    const batch = attrecStepBatch(Int32Array.of(0, 1), Int32Array.of(1, 2, 3, 4), Int32Array.of(5, 5), Int32Array.of(1, 2), d);
    try {
      expect(() => ws.step({ ...params, acc: acc({ Q: 2 }) }, batch, HYPER)).toThrow(/accumulator of Q must be f32 at a 4-aligned offset/);
      expect(() => ws.step({ ...params, acc: acc({ X: 40 }) }, batch, HYPER)).toThrow(/accumulator of X .* with 30 floats from it \(offset 40, 64 floats\)/);
      const other = attrecStepBatch(Int32Array.of(0), Int32Array.of(1, 2), Int32Array.of(5), Int32Array.of(1), { ...d, B: 1 });
      expect(() => ws.step({ ...params, acc: acc({}) }, other, HYPER)).toThrow(/the batch was built for .*"B":1/);
      other.dispose();
      batch.dispose();
      expect(() => ws.step({ ...params, acc: acc({}) }, batch, HYPER)).toThrow(/the batch was disposed/);
    } finally {
      ws.dispose();
      for (const t of [...Object.values(params), arena]) t.dispose();
      await sync();
    }
  });

  it('the trainer takes the fused step by default and the autograd path where it does not apply; fusedStep true names why not', async () => {
    const data = await loadAttRecData(packagePath('data/sample/ml-100k-sample')!);
    const logs: string[] = [];
    const run = (extra: object) => trainAttRec(data, { epochs: 1, batchSize: 200, seed: 3, ...extra, hooks: { onLog: (s) => logs.push(s) } });
    const f = await run({});
    expect(logs.some((s) => s.includes('training step: fused'))).toBe(true);
    const g = await run({ fusedStep: false });
    expect(logs.some((s) => s.includes('training step: autograd (fusedStep false)'))).toBe(true);
    // One epoch of the two paths: the same loss and metrics up to f32 summation order.
    expect(Math.abs(f.history[0]!.loss - g.history[0]!.loss)).toBeLessThan(1e-4 * Math.abs(g.history[0]!.loss));
    for (const [k, v] of Object.entries(g.test)) expect(Math.abs(f.test[k]! - v)).toBeLessThan(0.02);
    const h = await run({ sharedQK: false });
    expect(logs.filter((s) => s.startsWith('training step')).at(-1)).toMatch(/autograd \(separate W_Q/);
    await expect(run({ fusedStep: true, diagonal: 'mask' })).rejects.toThrow(/fusedStep true, but the fused step does not cover the diagonal masked before the softmax/);
    // Sizes the kernels do not take: a time signal over the uniform-binding limit (L x D at the compute width).
    expect(attrecStepUnsupported({ N: 10, U: 3, D: 150, L: 5, T: 3, B: 1000 })).toBeNull();
    const D = 4 * (Math.floor(rt().device.limits.maxUniformBufferBindingSize / 80) + 1); // 5 rows of D / 4 vec4s: just over
    expect(attrecStepUnsupported({ N: 10, U: 3, D, L: 5, T: 1, B: 4 })).toMatch(new RegExp(`time signal at the compute width \\(L 5 x D ${D}: ${5 * D * 4} bytes\\) is over this device's maxUniformBufferBindingSize`));
    for (const r of [f, g, h]) r.optimizer.dispose(), r.model.dispose();
  });
});
